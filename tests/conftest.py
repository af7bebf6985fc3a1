"""Shared fixtures: the real speech recordings and helpers to run the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_audio() -> Path:
    candidates = [
        os.environ.get("VOICE_AGENT_SHARED_AUDIO", ""),
        REPO.parent / "shared" / "audio",
        "/work/shared/audio",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "jfk.flac").is_file():
            return Path(candidate)
    raise RuntimeError(
        "real speech recordings not found: set VOICE_AGENT_SHARED_AUDIO to the shared/audio folder"
    )


SHARED_AUDIO = _shared_audio()
DEMO = REPO / "demo" / "conversation.wav"


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    return SHARED_AUDIO


@pytest.fixture(scope="session")
def tiny_phi4mm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Phi-4-multimodal in the real checkpoint's layout (built, never fetched)."""
    from tests.tiny_phi4mm import build_tiny_phi4mm

    return build_tiny_phi4mm(tmp_path_factory.mktemp("tiny-phi4mm"))


NETWORK_NAMESPACE = (
    "ip link set lo up; ip link add va type veth peer name vb; "
    "ip addr add 10.250.0.1/24 dev va; ip addr add 10.250.0.2/24 dev vb; "
    "ip link set va up; ip link set vb up; ip route add default via 10.250.0.2 dev va"
)
"""Set-up of a network namespace for WebRTC tests: aiortc and Chromium advertise the machine's
own interface in their ICE candidates, so calls are kept where only this veth pair exists
(Chromium gathers no candidate on a loopback interface)."""


def isolated(command: str) -> list[str]:
    """``command`` (a shell line) run in a network namespace of its own (needs root)."""
    return ["unshare", "-n", "bash", "-c", f"{NETWORK_NAMESPACE}; exec {command}"]


def run_isolated(script: str, out: Path, timeout: float) -> dict[str, Any]:
    """``python SCRIPT OUT`` in a network namespace of its own, and the OUT/result.json it
    writes, with ``problem``: what it and the server (OUT/server.log) said if it failed."""
    run = subprocess.run(
        isolated(f"{sys.executable} {script} {out}"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    server_log = (out / "server.log").read_text() if (out / "server.log").exists() else ""
    assert (out / "result.json").exists(), run.stdout + run.stderr + server_log
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    result["problem"] = "" if run.returncode == 0 else run.stderr[-3000:] + server_log[-3000:]
    return result


def voice_agent(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the installed CLI the way a user does."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def start_serve(
    *args: str, stderr: Any = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``voice-agent serve ARGS``, returned once it says where it serves (that line checked);
    ``env`` is added to this process's environment."""
    server = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    assert server.stdout is not None
    ready = server.stdout.readline()
    if "serving on" not in ready:
        server.kill()
        raise RuntimeError(f"voice-agent serve did not start: {ready!r}")
    return server


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout_s: float) -> bool:
    """Whether ``predicate()`` came true within ``timeout_s`` (checked every 0.2 s: for
    scripts watching other processes, which send no events)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def free_udp_port() -> int:
    """A loopback UDP port nothing listens on (SIP, RTP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Broker:
    """A real Mosquitto on a free loopback port, stopped and started by PID."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._config = folder / "mosquitto.conf"
        # persistent sessions survive a restart, as on a real deployment
        self._config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {folder}/\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["mosquitto", "-c", str(self._config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        raise RuntimeError("mosquitto is not installed (bash .ci/setup installs it)")
    running = Broker(tmp_path)
    running.start()
    yield running
    running.stop()


JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
"""What jfk.flac says."""
NUMBERS = "zero one two three four five six seven eight nine".split()


def words(text: str) -> str:
    """What a word error rate compares: lower case, no punctuation, digits spelled out."""
    text = re.sub(r"\b(\d)\b", lambda m: NUMBERS[int(m.group(1))], text.lower())
    return " ".join(re.sub(r"[^a-z' ]", " ", text).split())

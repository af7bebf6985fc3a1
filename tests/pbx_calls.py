"""The agent behind a real PBX: Kamailio with the README's recipe (demo/pbx/kamailio.cfg) as
registrar and proxy, ``voice-agent serve --sip`` registered with it as extension "agent", and
baresip phones calling the extension through it, all inside a network namespace of its own.

Run by tests/test_pbx.py as ``python tests/pbx_calls.py OUT_DIR`` (``conftest.isolated``).
Writes OUT_DIR/result.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import SHARED_AUDIO, start_serve, wait_until  # noqa: E402
from tests.sip_calls import (  # noqa: E402
    CALL_TIMEOUT_S,
    HOST,
    SIP_PORT,
    WEB_PORT,
    Phone,
    answered,
    call_profile,
    microphone_wav,
    records,
)

PBX = "10.250.0.2"
"""The namespace's other address (conftest.NETWORK_NAMESPACE): the PBX's host."""
EXTENSION = f"sip:agent@{PBX}"
PASSWORD = "horse-battery-staple-7"
"""No spaces: baresip reads an account's auth_pass to the first."""
EXPIRES = 10
"""What the agent asks for, and the least Kamailio grants here (the recipe's default is 60)."""


def start_pbx(
    out_dir: Path, run: int, address: str = f"{PBX}:5060", password: str = PASSWORD
) -> subprocess.Popen[bytes]:
    """Kamailio on ``address``, with the recipe as the README gives it."""
    run_dir = out_dir / f"kamailio-run{run}"
    run_dir.mkdir()
    log = out_dir / f"kamailio{run}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["kamailio", "-DD", "-E", "-f", str(REPO / "demo/pbx/kamailio.cfg"),
             "-l", f"udp:{address}", "-Y", str(run_dir), "-A", f"MIN_EXPIRES={EXPIRES}"],
            env={"AGENT_PASSWORD": password, "PATH": "/usr/sbin:/usr/bin:/bin"},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its worker processes go with it
        )  # fmt: skip
    assert wait_until(lambda: b"Listening on" in log.read_bytes(), 10), log.read_text()
    return process


def stop_pbx(process: subprocess.Popen[bytes]) -> None:
    """Kamailio and every worker it forked (a worker outlives a parent that was killed)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def probe() -> int:
    """What an OPTIONS to the extension through the PBX is answered: 480 while the agent is
    not registered, the agent's own 200 once the PBX can reach it."""
    call_id = uuid.uuid4().hex
    request = (
        f"OPTIONS {EXTENSION} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:5999;branch=z9hG4bK{call_id[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{HOST}>;tag={call_id[:8]}\r\nTo: <{EXTENSION}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 5999))
        sock.settimeout(2)
        sock.sendto(request.encode(), (PBX, 5060))
        try:
            while True:
                status = int(sock.recv(65536).split(b" ", 2)[1])
                if status >= 200:
                    return status
        except TimeoutError:
            return 0


def agent_profile(out_dir: Path) -> Path:
    """The call profile, registered with the PBX, taking only calls that answer a challenge."""
    path = call_profile(out_dir)
    path.write_text(
        path.read_text()
        + f'\n[sip]\nregistrar = "{PBX}"\nexpires = {EXPIRES}\nauthenticate_calls = true\n'
    )
    return path


def main(out_dir: Path) -> None:
    result: dict[str, Any] = {}
    logs = out_dir / "logs"
    jfk = microphone_wav(SHARED_AUDIO / "jfk.flac", out_dir / "jfk-8k.wav")
    server_log_path = out_dir / "server.log"
    server_said = lambda text: text in server_log_path.read_text()  # noqa: E731
    pbxes = [start_pbx(out_dir, 1)]
    try:
        with server_log_path.open("w") as server_log:
            server = start_serve(
                "--profile", str(agent_profile(out_dir)),
                "--sip", f"{HOST}:{SIP_PORT}", "--sip-allow", f"{PBX}/32",
                "--port", str(WEB_PORT), "--max-sessions", "1", "--log-dir", str(logs),
                stderr=server_log, env={"VOICE_AGENT_SIP_PASSWORD": PASSWORD},
            )  # fmt: skip
            caller = Phone(out_dir / "caller", jfk, 5080, credentials=("agent", PASSWORD))
            stranger = Phone(out_dir / "stranger", jfk, 5090)
            try:
                started = time.monotonic()
                result["registered"] = wait_until(
                    lambda: server_said(f"registered {EXTENSION}"), 10
                )
                result["registered_s"] = time.monotonic() - started
                # a caller who knows the password, through the PBX: greeted, then answered
                caller.dial(EXTENSION)
                result["answered"] = wait_until(lambda: answered(logs) is not None, CALL_TIMEOUT_S)
                caller.hang_up()
                # one who does not: refused, and no conversation begun
                stranger.dial(EXTENSION)
                result["stranger_refused"] = stranger.wait_for("401", 15)
                stranger.quit()
                result["sessions"] = len(records(logs))
                # the PBX restarted knows no binding: the agent's renewal restores it
                stop_pbx(pbxes[0])
                pbxes.append(start_pbx(out_dir, 2))
                restarted = time.monotonic()
                result["probe_after_restart"] = probe()
                result["reachable_again"] = wait_until(lambda: probe() == 200, EXPIRES + 5)
                result["reachable_again_s"] = time.monotonic() - restarted
            finally:
                server.send_signal(signal.SIGTERM)
                result["server_exit"] = server.wait(30)
                caller.quit()
                stranger.quit()
            result["probe_after_stop"] = probe()
    finally:
        for pbx in pbxes:
            stop_pbx(pbx)
    result["server_log"] = server_log_path.read_text()
    result["caller"] = caller.seen()
    result["stranger"] = stranger.seen()
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

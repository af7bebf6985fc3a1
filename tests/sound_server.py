"""A real PulseAudio server for the desktop tests: a null sink as the speaker, a second null
sink whose monitor is remapped as the microphone (what is played into ``feed`` is heard), and
helpers to speak into the microphone, record the speaker and unplug the microphone."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MICROPHONE = "module-remap-source source_name=mic master=feed.monitor"


@dataclass
class SoundServer:
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PULSE_SERVER": f"unix:{self.folder}/native"}

    def pactl(self, *args: str) -> str:
        run = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stdout

    def speak(self, path: Path) -> subprocess.Popen[bytes]:
        """Play ``path`` into the microphone."""
        return subprocess.Popen(["paplay", "-d", "feed", str(path)], env=self.env)

    def record_speaker(self, path: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["parec", "-d", "speaker.monitor", "--file-format=wav", str(path)], env=self.env
        )

    def echo(self, delay_ms: int, gain_db: float) -> None:
        """The room: what the speaker plays is heard by the microphone ``delay_ms`` later,
        ``gain_db`` quieter (a loudspeaker on the desk, a laptop's microphone)."""
        self.pactl(
            "load-module", "module-loopback", "source=speaker.monitor", "sink=feed",
            f"latency_msec={delay_ms}", "source_dont_move=true", "sink_dont_move=true",
        )  # fmt: skip
        for line in self.pactl("list", "short", "sink-inputs").splitlines():
            if "module-loopback" in line:
                self.pactl("set-sink-input-volume", line.split()[0], f"{gain_db}dB")

    def unplug_microphone(self) -> None:
        modules = self.pactl("list", "short", "modules").splitlines()
        self.pactl("unload-module", next(m.split()[0] for m in modules if "source_name=mic" in m))

    def plug_microphone(self) -> None:
        self.pactl("load-module", *MICROPHONE.split())


@contextmanager
def sound_server(folder: Path) -> Iterator[SoundServer]:
    if shutil.which("pulseaudio") is None:
        raise AssertionError("Debian's pulseaudio is missing: .ci/setup installs it")
    modules = [
        f"module-native-protocol-unix socket={folder}/native auth-anonymous=1",
        "module-null-sink sink_name=speaker",
        "module-null-sink sink_name=feed",
        MICROPHONE,
    ]
    command = ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no"]
    for module in modules:
        command += ["-L", module]
    env = {**os.environ, "HOME": str(folder), "XDG_RUNTIME_DIR": str(folder)}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    server = SoundServer(folder, process)
    deadline = time.monotonic() + 20
    while not (folder / "native").exists():
        assert process.poll() is None and time.monotonic() < deadline, "pulseaudio did not start"
        time.sleep(0.1)
    server.pactl("set-default-source", "mic")
    server.pactl("set-default-sink", "speaker")
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)

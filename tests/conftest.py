"""Shared fixtures: the real speech recordings and helpers to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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

"""``run-file``: a recorded conversation played into a live session, as if it were a call."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from livekit.agents import Agent, AgentSession

from audio import FileAudioInput, Timeline, TimelineAudioOutput, load_audio

from .control import ControlledSession
from .events import EventLog
from .profile import Profile

logger = logging.getLogger("voice_agent")

SAMPLE_RATE = 24000
IDLE_TIMEOUT_S = 120.0


class OutputDirError(ValueError):
    pass


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    summary: dict[str, Any]


def prepare_out_dir(path: Path) -> None:
    """Create the folder and prove it is writable before any model loads."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OutputDirError(f"{path}: cannot write there ({e.strerror or e})") from None


async def _wait_until_idle(session: AgentSession, settle_s: float, closed: asyncio.Event) -> bool:
    """True once user and agent have both been quiet for ``settle_s`` (or the session ended);
    False on timeout."""
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    quiet_since: float | None = None
    while time.monotonic() < deadline and not closed.is_set():
        quiet = session.user_state == "listening" and session.agent_state in ("listening", "idle")
        now = time.monotonic()
        quiet_since = (quiet_since or now) if quiet else None
        if quiet_since is not None and now - quiet_since >= settle_s:
            return True
        await asyncio.sleep(0.05)
    return False


async def run_file(
    input_path: Path, out_dir: Path, profile: Profile, *, speed: float = 1.0, echo: bool = True
) -> RunResult:
    samples = load_audio(input_path, SAMPLE_RATE)
    prepare_out_dir(out_dir)
    controlled = await ControlledSession.start(profile)
    try:
        logger.info("playing %s (%.1f s) at %gx", input_path, len(samples) / SAMPLE_RATE, speed)
        summary = await play_conversation(
            controlled.session,
            controlled.agent,
            samples,
            out_dir,
            speed=speed,
            settle_s=profile.vad.min_silence_s + profile.endpointing.max_delay + 1.0,
            echo=echo,
            source=str(input_path),
        )
    finally:
        await controlled.aclose()
    return RunResult(out_dir=out_dir, summary=summary)


async def play_conversation(
    session: AgentSession,
    agent: Agent,
    samples: np.ndarray,
    out_dir: Path,
    *,
    speed: float,
    settle_s: float,
    echo: bool,
    source: str,
) -> dict[str, Any]:
    """Plays ``samples`` (24 kHz mono) into the session and writes the three outputs."""
    timeline = Timeline(speed)
    audio_in = FileAudioInput(samples, SAMPLE_RATE, timeline)
    audio_out = TimelineAudioOutput(timeline, sample_rate=SAMPLE_RATE)
    session.input.audio = audio_in
    session.output.audio = audio_out
    log = EventLog(out_dir / "events.jsonl", timeline, echo=sys.stdout if echo else None)
    log.attach(session, audio_out)
    closed = asyncio.Event()
    session.on("close", lambda _: closed.set())
    await session.start(agent, record=False)
    waiters = {
        asyncio.ensure_future(audio_in.finished.wait()),
        asyncio.ensure_future(closed.wait()),
    }
    _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
    if not closed.is_set() and not await _wait_until_idle(session, settle_s, closed):
        log.write("error", source="run-file", message="the agent did not finish within the timeout")
    audio_in.close()
    await session.aclose()
    await audio_out.aclose()

    agent_track = audio_out.render(len(samples))
    user_track = np.concatenate([samples, np.zeros(len(agent_track) - len(samples), np.int16)])
    sf.write(out_dir / "agent.wav", agent_track, SAMPLE_RATE, subtype="PCM_16")
    sf.write(
        out_dir / "conversation.wav",
        np.stack([user_track, agent_track], axis=1),
        SAMPLE_RATE,
        subtype="PCM_16",
    )
    summary = log.summary(
        input=source,
        input_duration_s=round(audio_in.duration, 3),
        agent_speech_s=round(float(np.count_nonzero(agent_track)) / SAMPLE_RATE, 3),
        files=["agent.wav", "conversation.wav", "events.jsonl"],
    )
    log.close()
    return summary

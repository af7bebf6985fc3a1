"""``run-file``: a recorded conversation played into a live session, as if it were a call."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from livekit.agents import Agent, AgentSession

from audio import FileAudioInput, Timeline, TimelineAudioOutput, load_audio

from ..control import ControlledSession
from ..events import EventLog
from ..profile import Profile
from ..signals import StopSignals, first_of, unless_stopped
from ..vision import FrameFiles, TimelineVideoInput

logger = logging.getLogger("voice_agent")

SAMPLE_RATE = 24000
IDLE_TIMEOUT_S = 120.0
CLOSE_TIMEOUT_S = 3.0
"""LiveKit waits up to 2 s for the last transcript as a session closes."""
STOP_DRAIN_S = 1.0
"""After a stop signal, MQTT events get this long to leave: the whole stop stays under 5 s."""


class OutputDirError(ValueError):
    pass


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    summary: dict[str, Any]
    stopped_by: signal.Signals | None = None


def prepare_out_dir(path: Path) -> None:
    """Create the folder and prove it is writable before any model loads."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OutputDirError(f"{path}: cannot write there ({e.strerror or e})") from None


async def _wait_until_idle(
    session: AgentSession, settle_s: float, busy: Callable[[], bool], *ends: asyncio.Event
) -> bool:
    """True once user and agent have both been quiet for ``settle_s`` (or one of ``ends``
    happened); False on timeout. A reply being written or synthesised counts as the agent's:
    a realtime engine stays "listening" until its first audio frame plays."""
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    quiet_since: float | None = None
    while time.monotonic() < deadline and not any(end.is_set() for end in ends):
        quiet = (
            session.user_state == "listening"
            and session.agent_state in ("listening", "idle")
            and session.current_speech is None
            and not busy()
        )
        now = time.monotonic()
        quiet_since = (quiet_since or now) if quiet else None
        if quiet_since is not None and now - quiet_since >= settle_s:
            return True
        await asyncio.sleep(0.05)
    return any(end.is_set() for end in ends)


async def run_file(
    input_path: Path,
    out_dir: Path,
    profile: Profile,
    *,
    speed: float = 1.0,
    echo: bool = True,
    frames: FrameFiles | None = None,
) -> RunResult:
    """``frames``: images and a video shown along the recording (opened already, so a bad
    file was refused before anything loaded)."""
    samples = load_audio(input_path, SAMPLE_RATE)
    prepare_out_dir(out_dir)
    with StopSignals() as stop:
        controlled = await unless_stopped(stop, ControlledSession.start(profile))
        try:
            logger.info("playing %s (%.1f s) at %gx", input_path, len(samples) / SAMPLE_RATE, speed)
            summary = await play_conversation(
                controlled,
                controlled.agent,
                samples,
                out_dir,
                speed=speed,
                settle_s=profile.vad.min_silence_s + profile.endpointing.max_delay + 1.0,
                echo=echo,
                source=str(input_path),
                stop=stop,
                frames=frames,
            )
        finally:
            await controlled.aclose(drain_s=STOP_DRAIN_S if stop.received else 3.0)
    return RunResult(out_dir=out_dir, summary=summary, stopped_by=stop.received)


async def play_conversation(
    controlled: ControlledSession,
    agent: Agent,
    samples: np.ndarray,
    out_dir: Path,
    *,
    speed: float,
    settle_s: float,
    echo: bool,
    source: str,
    stop: StopSignals | None = None,
    frames: FrameFiles | None = None,
) -> dict[str, Any]:
    """Plays ``samples`` (24 kHz mono) into the session and writes the three outputs; a stop
    signal ends it early and the outputs hold the conversation up to there."""
    session = controlled.session
    timeline = Timeline(speed)
    audio_in = FileAudioInput(samples, SAMPLE_RATE, timeline)
    audio_out = TimelineAudioOutput(timeline, sample_rate=SAMPLE_RATE, path=out_dir / "agent.wav")
    session.input.audio = audio_in
    session.output.audio = audio_out
    video_in = None
    if frames:
        video_in = TimelineVideoInput(frames, timeline.now, timeline.wall_delay)
        session.input.video = video_in
        session.frame_sampler.clock = timeline.now
    log = EventLog(out_dir / "events.jsonl", timeline, echo=sys.stdout if echo else None)
    log.attach(session, audio_out)
    report = lambda record: log.write("error", **record)  # noqa: E731
    if controlled.bridge is not None:
        controlled.bridge.on("error", report)
    closed = asyncio.Event()
    stopped = stop.event if stop is not None else asyncio.Event()
    session.on("close", lambda _: closed.set())
    await session.start(agent, record=False)
    controlled.control.start()
    await first_of(audio_in.finished.wait(), closed.wait(), stopped.wait())
    timeline.change_speed(1.0)  # what follows the recording is not sped up: it is the answer
    busy = lambda: controlled.control.busy  # noqa: E731
    if not await _wait_until_idle(session, settle_s, busy, closed, stopped):
        log.write("error", source="run-file", message="the agent did not finish within the timeout")
    heard = audio_in.samples_sent if stopped.is_set() else len(samples)
    audio_in.close()
    if video_in is not None:
        video_in.close()
    try:
        await asyncio.wait_for(session.aclose(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.write("error", source="run-file", message="the session did not close in time")
    await controlled.control.aclose()  # what it could not carry out goes into this log
    if controlled.bridge is not None:
        controlled.bridge.off("error", report)
    length = await audio_out.aclose(min_samples=heard)
    _write_conversation(out_dir / "conversation.wav", samples[:heard], out_dir / "agent.wav")
    summary = log.summary(
        input=source,
        input_duration_s=round(audio_in.duration, 3),
        agent_speech_s=round(audio_out.voiced_s, 3),
        files=["agent.wav", "conversation.wav", "events.jsonl"],
        **({"interrupted": True, "signal": stop.received.name} if stop and stop.received else {}),
    )
    log.close()
    logger.debug("wrote %.1f s of conversation", length / SAMPLE_RATE)
    return summary


def _write_conversation(path: Path, user: np.ndarray, agent_path: Path) -> None:
    """Stereo: left the user, right the agent; block by block, so an hour costs no memory."""
    block = SAMPLE_RATE * 10
    with (
        sf.SoundFile(agent_path) as agent,
        sf.SoundFile(path, "w", SAMPLE_RATE, 2, subtype="PCM_16", format="WAV") as out,
    ):
        for start in range(0, max(agent.frames, len(user)), block):
            right = agent.read(block, dtype="int16")
            left = user[start : start + len(right)]
            left = np.concatenate([left, np.zeros(len(right) - len(left), np.int16)])
            out.write(np.stack([left, right], axis=1))

"""A recorded conversation as the session's microphone and speaker.

The input plays a decoded recording into the session in real time (or faster); the output
"plays" the agent's speech at the same pace and writes it onto the input's timeline, so the
two tracks line up as they would have in a live call.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from livekit import rtc
from livekit.agents.voice import io

from .pcm import samples_to_frame
from .speaker import FRAME_MS, SpeakerOutput


@dataclass(frozen=True)
class _Pace:
    mono: float
    wall: float
    position: float
    speed: float


class Timeline:
    """Seconds of the input recording, as a clock; ``speed`` > 1 plays it faster.

    The pace can change on the way (``change_speed``): positions already passed keep their
    times, so events stamped before the change still land where they happened."""

    def __init__(self, speed: float = 1.0) -> None:
        self._paces: list[_Pace] = []
        self.speed = speed
        self.start()

    def start(self) -> None:
        self._paces = [_Pace(time.monotonic(), time.time(), 0.0, self._checked(self.speed))]

    def change_speed(self, speed: float) -> None:
        position = self.now()
        self.speed = self._checked(speed)
        self._paces.append(_Pace(time.monotonic(), time.time(), position, speed))

    def now(self) -> float:
        pace = self._paces[-1]
        return pace.position + (time.monotonic() - pace.mono) * pace.speed

    def at(self, wall_time: float) -> float:
        """Timeline position of a ``time.time()`` instant (LiveKit stamps events that way)."""
        pace = next((p for p in reversed(self._paces) if p.wall <= wall_time), self._paces[0])
        return pace.position + (wall_time - pace.wall) * pace.speed

    def wall_delay(self, seconds: float) -> float:
        """Timeline seconds as wall-clock seconds, at the present pace."""
        return seconds / self.speed

    @staticmethod
    def _checked(speed: float) -> float:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError("speed must be a positive number")
        return speed


class FileAudioInput(io.AudioInput):
    """Plays samples into the session; after the recording ends it sends silence until closed."""

    def __init__(
        self, samples: np.ndarray, sample_rate: int, timeline: Timeline, *, frame_ms: int = 20
    ) -> None:
        super().__init__(label="file")
        self._samples = samples
        self._sample_rate = sample_rate
        self._timeline = timeline
        self._frame_len = sample_rate * frame_ms // 1000
        self._index = 0
        self._closed = False
        self._muted = False
        self.finished = asyncio.Event()
        """Set once the whole recording has been sent."""

    @property
    def duration(self) -> float:
        return len(self._samples) / self._sample_rate

    @property
    def samples_sent(self) -> int:
        """How much of the recording the session has been given so far."""
        return min(len(self._samples), self._index * self._frame_len)

    def close(self) -> None:
        self._closed = True

    def on_attached(self) -> None:
        self._muted = False

    def on_detached(self) -> None:
        """Muted: the recording plays on, but the session hears silence, as from a muted mic."""
        self._muted = True

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        if self._index == 0:
            self._timeline.start()
        start = self._index * self._frame_len
        due = self._timeline.wall_delay(start / self._sample_rate)
        await asyncio.sleep(max(0.0, due - self._timeline.wall_delay(self._timeline.now())))
        chunk = self._samples[start : start + self._frame_len]
        if self._muted:
            chunk = np.zeros_like(chunk)
        if len(chunk) < self._frame_len:
            self.finished.set()
            chunk = np.concatenate([chunk, np.zeros(self._frame_len - len(chunk), np.int16)])
        self._index += 1
        return samples_to_frame(chunk, self._sample_rate)


class TimelineAudioOutput(SpeakerOutput):
    """A speaker that writes what it played to ``path`` (mono 16-bit WAV), placed on the
    timeline of the input. It writes as it plays, so a long session holds no audio in memory
    and a stopped one keeps what was said."""

    def __init__(self, timeline: Timeline, *, sample_rate: int, path: Path) -> None:
        super().__init__("timeline", sample_rate=sample_rate)
        self._timeline = timeline
        self._track = sf.SoundFile(path, "w", sample_rate, 1, subtype="PCM_16", format="WAV")
        self._cursor = 0  # where the next frame goes; placements never overlap
        self._written = 0
        self._due = 0.0  # long past: the first frame starts a fresh run at the present

    async def aclose(self, *, min_samples: int = 0) -> int:
        """Stop playing and close the file, padded with silence to ``min_samples``; the
        track's length in samples (longer if the agent spoke past that)."""
        await self.stop()
        if not self._track.closed:
            self._silence_until(min_samples)
            self._track.close()
        return self._written

    def _silence_until(self, position: int) -> None:
        while self._written < position:
            gap = min(position - self._written, self.rate)
            self._track.write(np.zeros(gap, np.int16))
            self._written += gap

    async def _emit(self, samples: np.ndarray) -> None:
        now = time.monotonic()
        if now - self._due > FRAME_MS / 1000:  # starting, or resuming: play from now
            self._due = now
            self._cursor = max(self._cursor, round(self._timeline.now() * self.rate))
        self._silence_until(self._cursor)
        self._track.write(samples)
        self._cursor = self._written = self._cursor + len(samples)
        self._due += self._timeline.wall_delay(len(samples) / self.rate)
        await asyncio.sleep(self._due - time.monotonic())

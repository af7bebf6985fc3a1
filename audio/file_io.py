"""A recorded conversation as the session's microphone and speaker.

The input plays a decoded recording into the session in real time (or faster); the output
"plays" the agent's speech at the same pace and writes it onto the input's timeline, so the
two tracks line up as they would have in a live call.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents.utils.audio import AudioByteStream
from livekit.agents.voice import io

from .pcm import frame_to_mono, samples_to_frame

OUTPUT_FRAME_MS = 20


class Timeline:
    """Seconds of the input recording, as a clock; ``speed`` > 1 plays it faster."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._mono0 = 0.0
        self._wall0 = 0.0

    def start(self) -> None:
        self._mono0 = time.monotonic()
        self._wall0 = time.time()

    def now(self) -> float:
        return (time.monotonic() - self._mono0) * self.speed

    def at(self, wall_time: float) -> float:
        """Timeline position of a ``time.time()`` instant (LiveKit stamps events that way)."""
        return (wall_time - self._wall0) * self.speed

    def wall_delay(self, seconds: float) -> float:
        """Timeline seconds as wall-clock seconds."""
        return seconds / self.speed


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


@dataclass
class _SegmentEnd:
    pass


class TimelineAudioOutput(io.AudioOutput):
    """A speaker that keeps what it played, placed on the timeline of the input."""

    def __init__(self, timeline: Timeline, *, sample_rate: int) -> None:
        super().__init__(
            label="timeline",
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=sample_rate,
        )
        self._timeline = timeline
        self._rate = sample_rate
        self._chunker = AudioByteStream(
            sample_rate, 1, samples_per_channel=sample_rate * OUTPUT_FRAME_MS // 1000
        )
        self._queue: asyncio.Queue[rtc.AudioFrame | _SegmentEnd] = asyncio.Queue()
        self._state_changed = asyncio.Event()
        self._paused = False
        self._interrupted = False
        self._playout: asyncio.Task[None] | None = None
        self._writes: list[tuple[int, np.ndarray]] = []
        self._cursor = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._playout is None:
            self._playout = asyncio.create_task(self._play())
        for chunk in self._chunker.push(frame.data):
            self._queue.put_nowait(chunk)

    def flush(self) -> None:
        super().flush()
        for chunk in self._chunker.flush():
            self._queue.put_nowait(chunk)
        self._queue.put_nowait(_SegmentEnd())

    def clear_buffer(self) -> None:
        self._chunker.clear()
        if self._pending_playback_count > 0:  # a later segment must not inherit the flag
            self._interrupted = True
            self._state_changed.set()

    def pause(self) -> None:
        super().pause()
        self._paused = True

    def resume(self) -> None:
        super().resume()
        self._paused = False
        self._state_changed.set()

    def render(self, num_samples: int) -> np.ndarray:
        """The agent's track: ``num_samples`` long at least, longer if it spoke past the end."""
        end = max([num_samples] + [start + len(s) for start, s in self._writes])
        track = np.zeros(end, dtype=np.int32)
        for start, samples in self._writes:
            track[start : start + len(samples)] += samples
        return np.clip(track, -32768, 32767).astype(np.int16)

    async def aclose(self) -> None:
        if self._playout is not None:
            self._playout.cancel()

    async def _play(self) -> None:
        played = 0.0
        due = 0.0  # long past: the first frame starts a fresh run at the present
        while True:
            item = await self._queue.get()
            if isinstance(item, _SegmentEnd):
                interrupted, self._interrupted = self._interrupted, False
                self.on_playback_finished(playback_position=played, interrupted=interrupted)
                played = 0.0
                continue
            while self._paused and not self._interrupted:
                self._state_changed.clear()
                await self._state_changed.wait()
            if self._interrupted:
                continue
            now = time.monotonic()
            if now - due > OUTPUT_FRAME_MS / 1000:  # starting, or resuming: play from now
                due = now
                self._cursor = max(self._cursor, round(self._timeline.now() * self._rate))
            if played == 0.0:
                self.on_playback_started(created_at=time.time())
            samples = frame_to_mono(item)
            self._writes.append((self._cursor, samples.copy()))
            self._cursor += len(samples)
            played += item.duration
            due += self._timeline.wall_delay(item.duration)
            await asyncio.sleep(due - time.monotonic())

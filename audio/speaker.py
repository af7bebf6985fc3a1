"""The agent's speaker: segments played frame by frame, paused, cleared on barge-in.

LiveKit hands an ``io.AudioOutput`` whole segments of speech and expects to hear when each
started and how much of it was played. That bookkeeping is the same wherever the sound goes (a
file on a timeline, a WebRTC track); a subclass only says how one frame is played.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents.utils.audio import AudioByteStream
from livekit.agents.voice import io

from .pcm import frame_to_mono

FRAME_MS = 20


@dataclass
class _SegmentEnd:
    pass


class SpeakerOutput(io.AudioOutput):
    """Plays each frame through ``_emit``, which returns when the next one may follow."""

    def __init__(self, label: str, *, sample_rate: int) -> None:
        super().__init__(
            label=label,
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=sample_rate,
        )
        self.rate = sample_rate
        """``sample_rate``, never None here."""
        self._chunker = AudioByteStream(
            sample_rate, 1, samples_per_channel=sample_rate * FRAME_MS // 1000
        )
        self._queue: asyncio.Queue[rtc.AudioFrame | _SegmentEnd] = asyncio.Queue()
        self._state_changed = asyncio.Event()
        self._paused = False
        self._interrupted = False
        self._playout: asyncio.Task[None] | None = None
        self._voiced_samples = 0
        self._segment_open = False
        """A frame was captured since the last flush: LiveKit counts a segment only then."""

    @property
    def voiced_s(self) -> float:
        """Seconds of the agent's speech that are not silent."""
        return self._voiced_samples / self.rate

    async def _emit(self, samples: np.ndarray) -> None:
        """Play one frame of int16 mono samples; return when the next one is due."""
        raise NotImplementedError

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._segment_open = True
        if self._playout is None:
            self._playout = asyncio.create_task(self._play(), name=f"{self.label}-playout")
        for chunk in self._chunker.push(frame.data):
            self._queue.put_nowait(chunk)

    def flush(self) -> None:
        super().flush()
        if not self._segment_open:
            return  # a reply cut before its first frame: no segment, so no end to report
        self._segment_open = False
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

    async def stop(self) -> None:
        """Play nothing more."""
        if self._playout is not None:
            self._playout.cancel()
            await asyncio.gather(self._playout, return_exceptions=True)

    async def _play(self) -> None:
        played = 0.0
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
            if played == 0.0:
                self.on_playback_started(created_at=time.time())
            samples = frame_to_mono(item)
            self._voiced_samples += int(np.count_nonzero(samples))
            played += item.duration
            await self._emit(samples)

"""A sound card's microphone and speaker as a session's audio, with WebRTC's audio processing
(LiveKit's ``AudioProcessingModule``: echo cancellation, noise suppression, gain) between them.

The card's callbacks run on PortAudio's threads: the speaker's takes what the session queued
(and hands it to the echo canceller as the reference), the microphone's cleans what it heard
and passes it to the session's loop. Both are stopped before that loop ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc

from .speaker import SpeakerOutput

logger = logging.getLogger("voice_agent")

RATE = 24000
APM_FRAME = RATE // 100
"""The audio processing takes 10 ms at a time."""
BLOCK = 4 * APM_FRAME
"""40 ms per callback: short enough for a quick barge-in, long enough not to underrun on a
busy two-core machine."""
LEAD_S = 0.12
"""How far ahead of the speaker the session's speech is queued."""


@dataclass(frozen=True)
class AudioProcessing:
    echo_cancellation: bool = True
    noise_suppression: bool = True
    auto_gain_control: bool = True


class CardSpeaker(SpeakerOutput):
    """The session's speaker: frames queued for the card's callback, LEAD_S ahead."""

    def __init__(self) -> None:
        super().__init__("sound card", sample_rate=RATE)
        self._queued = bytearray()
        self._lock = threading.Lock()

    async def _emit(self, samples: np.ndarray) -> None:
        with self._lock:
            self._queued += samples.astype(np.int16).tobytes()
            ahead_s = len(self._queued) / 2 / RATE
        await asyncio.sleep(max(0.0, ahead_s - LEAD_S))

    def clear_buffer(self) -> None:
        super().clear_buffer()
        with self._lock:
            self._queued.clear()

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` samples to play (silence where nothing is queued)."""
        with self._lock:
            taken = bytes(self._queued[: 2 * count])
            del self._queued[: 2 * count]
        samples = np.zeros(count, np.int16)
        samples[: len(taken) // 2] = np.frombuffer(taken, np.int16)
        return samples


class SoundCard:
    """The two streams, opened on PortAudio's devices (None: its default)."""

    def __init__(
        self,
        input_device: int | None,
        output_device: int | None,
        processing: AudioProcessing,
        on_heard: Callable[[rtc.AudioFrame], None],
    ) -> None:
        """``on_heard``: takes each cleaned 10 ms of the microphone, on the loop running now."""
        import sounddevice as sd

        self._loop = asyncio.get_running_loop()
        self._on_heard = on_heard
        self.speaker = CardSpeaker()
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=processing.echo_cancellation,
            noise_suppression=processing.noise_suppression,
            high_pass_filter=processing.echo_cancellation or processing.noise_suppression,
            auto_gain_control=processing.auto_gain_control,
        )
        self._output_delay_s = 0.0
        self._closed = False
        common: dict[str, Any] = {"samplerate": RATE, "channels": 1, "dtype": "int16"}
        self._output = sd.OutputStream(
            device=output_device, blocksize=BLOCK, callback=self._play, **common
        )
        self._input = sd.InputStream(
            device=input_device, blocksize=BLOCK, callback=self._hear, **common
        )

    def start(self) -> None:
        self._output.start()
        self._input.start()

    def close(self) -> None:
        """Stop both streams (their callbacks must not reach a loop that has ended)."""
        self._closed = True
        for stream in (self._input, self._output):
            stream.stop()
            stream.close()

    def _play(self, out: np.ndarray, frames: int, time: Any, status: Any) -> None:
        self._output_delay_s = time.outputBufferDacTime - time.currentTime
        samples = self.speaker.take(frames)
        out[:, 0] = samples
        for start in range(0, frames - APM_FRAME + 1, APM_FRAME):
            self._apm.process_reverse_stream(_frame(samples[start : start + APM_FRAME]))

    def _hear(self, heard: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if self._closed:
            return
        delay_s = self._output_delay_s + (time.currentTime - time.inputBufferAdcTime)
        try:
            self._apm.set_stream_delay_ms(int(delay_s * 1000))
        except RuntimeError:
            pass  # a delay the canceller cannot take: it estimates its own
        for start in range(0, frames - APM_FRAME + 1, APM_FRAME):
            frame = _frame(heard[start : start + APM_FRAME, 0])
            self._apm.process_stream(frame)
            try:
                self._loop.call_soon_threadsafe(self._on_heard, frame)
            except RuntimeError:  # the loop has ended
                return


def _frame(samples: np.ndarray) -> rtc.AudioFrame:
    return rtc.AudioFrame(samples.tobytes(), RATE, 1, len(samples))

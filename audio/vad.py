"""Voice activity detection with Google's WebRTC VAD as a LiveKit ``vad.VAD`` plugin."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad
from livekit import rtc
from livekit.agents import vad

from .pcm import frame_to_mono, samples_to_frame

VAD_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class WebRTCVADOptions:
    aggressiveness: int = 3
    """0 (lenient) … 3 (strict); 3 rejects most background noise."""
    frame_ms: int = 30
    """10, 20 or 30: the window webrtcvad judges at once."""
    min_speech_s: float = 0.1
    """Voiced audio needed before START_OF_SPEECH, so clicks don't start turns."""
    min_silence_s: float = 0.3
    """Hangover: silence needed before END_OF_SPEECH, so short pauses don't end turns."""
    padding_s: float = 0.3
    """Pre-roll kept before the detected start, so the first syllable reaches the STT."""
    min_level_dbfs: float = -45.0
    """Windows quieter than this are silence whatever webrtcvad says: it adapts to the noise
    floor only after a while and takes steady noise at the start of a stream for speech."""
    max_buffered_speech_s: float = 60.0

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError("VAD aggressiveness must be 0, 1, 2 or 3")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("VAD frame_ms must be 10, 20 or 30")
        if min(self.min_speech_s, self.min_silence_s, self.padding_s) < 0:
            raise ValueError("VAD durations must not be negative")


class WebRTCVAD(vad.VAD):
    def __init__(self, options: WebRTCVADOptions | None = None) -> None:
        self._opts = options or WebRTCVADOptions()
        super().__init__(
            capabilities=vad.VADCapabilities(update_interval=self._opts.frame_ms / 1000)
        )

    @property
    def model(self) -> str:
        return f"webrtcvad-{self._opts.aggressiveness}"

    @property
    def provider(self) -> str:
        return "webrtc"

    @property
    def options(self) -> WebRTCVADOptions:
        return self._opts

    def stream(self) -> WebRTCVADStream:
        return WebRTCVADStream(self, self._opts)


class WebRTCVADStream(vad.VADStream):
    """Judges fixed windows of 16 kHz audio; one INFERENCE_DONE per pushed frame."""

    def __init__(self, owner: WebRTCVAD, opts: WebRTCVADOptions) -> None:
        # state first: the base class starts _main_task immediately
        self._opts = opts
        self._detector = webrtcvad.Vad(opts.aggressiveness)
        self._window = VAD_SAMPLE_RATE * opts.frame_ms // 1000
        self._window_s = opts.frame_ms / 1000
        self._min_speech_w = max(1, round(opts.min_speech_s / self._window_s))
        self._min_silence_w = max(1, round(opts.min_silence_s / self._window_s))
        self._max_speech_w = round(opts.max_buffered_speech_s / self._window_s)
        self._min_power = (32768 * 10 ** (opts.min_level_dbfs / 20)) ** 2
        self._resampler: rtc.AudioResampler | None = None
        self._input_rate = 0
        self._reset()
        super().__init__(owner)

    def _reset(self) -> None:
        # durations are counted in windows: integer bookkeeping keeps the hot loop cheap
        self._pending = b""
        self._preroll: deque[bytes] = deque(
            maxlen=max(1, round(self._opts.padding_s / self._window_s))
        )
        self._speech: list[bytes] = []
        self._speaking = False
        self._samples_index = 0
        self._speech_w = 0  # windows in the published speech segment
        self._silence_w = 0  # unvoiced windows since the segment's last voiced one
        self._raw_speech_w = 0  # consecutive voiced windows
        self._raw_silence_w = 0  # consecutive unvoiced windows

    async def _main_task(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                if self._resampler is not None:  # what the resampler still holds is audio too
                    tail = b"".join(bytes(f.data) for f in self._resampler.flush())
                    self._process(samples_to_frame(np.zeros(0, np.int16), VAD_SAMPLE_RATE), tail)
                if self._speaking:
                    self._publish(vad.VADEventType.END_OF_SPEECH, 0.0)
                self._resampler = None
                self._input_rate = 0
                self._reset()
                continue
            self._process(item)

    def _to_vad_rate(self, frame: rtc.AudioFrame) -> bytes:
        mono = frame_to_mono(frame)
        if frame.sample_rate == VAD_SAMPLE_RATE:
            return mono.tobytes()
        if self._input_rate != frame.sample_rate:
            self._input_rate = frame.sample_rate
            self._resampler = rtc.AudioResampler(frame.sample_rate, VAD_SAMPLE_RATE)
        assert self._resampler is not None
        out = self._resampler.push(samples_to_frame(mono, frame.sample_rate))
        return b"".join(bytes(f.data) for f in out)

    def _process(self, frame: rtc.AudioFrame, audio: bytes | None = None) -> None:
        started = time.perf_counter()
        audio = self._pending + (self._to_vad_rate(frame) if audio is None else audio)
        size = self._window * 2
        count = len(audio) // size
        self._pending = audio[count * size :]
        if not count:
            return
        samples = np.frombuffer(audio, dtype=np.int16, count=count * self._window)
        power = np.square(samples.reshape(count, self._window), dtype=np.float32).mean(axis=1)
        loud = (power >= self._min_power).tolist()
        is_speech = self._detector.is_speech
        for i in range(count):
            window = audio[i * size : (i + 1) * size]
            self._advance(window, loud[i] and is_speech(window, VAD_SAMPLE_RATE), started)
        self._emit(
            vad.VADEventType.INFERENCE_DONE,
            inference_duration=time.perf_counter() - started,
            frames=[frame],
            probability=1.0 if self._raw_speech_w else 0.0,
        )

    def _advance(self, window: bytes, voiced: bool, started: float) -> None:
        self._samples_index += self._window
        if voiced:
            self._raw_speech_w += 1
            self._raw_silence_w = 0
        else:
            self._raw_silence_w += 1
            self._raw_speech_w = 0

        if self._speaking:
            if len(self._speech) < self._max_speech_w:
                self._speech.append(window)
            self._speech_w += 1
            self._silence_w = 0 if voiced else self._silence_w + 1
            if self._silence_w >= self._min_silence_w:
                self._publish(vad.VADEventType.END_OF_SPEECH, time.perf_counter() - started)
            return

        self._preroll.append(window)
        if voiced and self._raw_speech_w >= self._min_speech_w:
            self._speaking = True
            self._speech = list(self._preroll)
            self._preroll.clear()
            self._speech_w = self._raw_speech_w
            self._silence_w = 0
            self._publish(vad.VADEventType.START_OF_SPEECH, time.perf_counter() - started)

    def _publish(self, kind: vad.VADEventType, inference_duration: float) -> None:
        speech = b"".join(self._speech)
        frame = rtc.AudioFrame(speech, VAD_SAMPLE_RATE, 1, len(speech) // 2)
        self._emit(kind, inference_duration=inference_duration, frames=[frame])
        if kind == vad.VADEventType.END_OF_SPEECH:
            self._speaking = False
            self._speech = []
            self._speech_w = 0

    def _emit(
        self,
        kind: vad.VADEventType,
        *,
        inference_duration: float,
        frames: list[rtc.AudioFrame],
        probability: float = 0.0,
    ) -> None:
        self._event_ch.send_nowait(
            vad.VADEvent(
                type=kind,
                samples_index=self._samples_index,
                timestamp=time.time(),
                speech_duration=self._speech_w * self._window_s,
                silence_duration=self._silence_w * self._window_s,
                frames=frames,
                probability=probability,
                inference_duration=inference_duration,
                speaking=self._speaking,
                raw_accumulated_silence=self._raw_silence_w * self._window_s,
                raw_accumulated_speech=self._raw_speech_w * self._window_s,
            )
        )

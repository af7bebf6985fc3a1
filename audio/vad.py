"""Voice activity detection with Google's WebRTC VAD as a LiveKit ``vad.VAD`` plugin."""

from __future__ import annotations

import time
from collections.abc import Callable

from livekit import rtc
from livekit.agents import vad

from .pcm import frame_to_mono, samples_to_frame
from .segmenter import VAD_SAMPLE_RATE, SegmenterOptions, SpeechSegmenter, Transition

WebRTCVADOptions = SegmenterOptions


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

    def stream(self, *, on_pause: Callable[[Transition], None] | None = None) -> WebRTCVADStream:
        """``on_pause`` hears each pause inside an utterance (LiveKit's events have none)."""
        return WebRTCVADStream(self, self._opts, on_pause=on_pause)


class WebRTCVADStream(vad.VADStream):
    """Resamples what arrives to 16 kHz; one INFERENCE_DONE per pushed frame."""

    def __init__(
        self,
        owner: WebRTCVAD,
        opts: WebRTCVADOptions,
        *,
        on_pause: Callable[[Transition], None] | None = None,
    ) -> None:
        # state first: the base class starts _main_task immediately
        self._on_pause = on_pause
        self._segmenter = SpeechSegmenter(opts)
        self._resampler: rtc.AudioResampler | None = None
        self._input_rate = 0
        super().__init__(owner)

    async def _main_task(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                if self._resampler is not None:  # what the resampler still holds is audio too
                    tail = b"".join(bytes(f.data) for f in self._resampler.flush())
                    self._judge(
                        tail, frame=rtc.AudioFrame(tail, VAD_SAMPLE_RATE, 1, len(tail) // 2)
                    )
                if (last := self._segmenter.finish()) is not None:
                    self._publish(last, 0.0)
                self._resampler = None
                self._input_rate = 0
                continue
            self._judge(self._to_vad_rate(item), frame=item)

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

    def _judge(self, audio: bytes, *, frame: rtc.AudioFrame) -> None:
        started = time.perf_counter()
        judged = self._segmenter.samples_index
        for transition in self._segmenter.feed(audio):
            if transition.kind != "pause":
                self._publish(transition, time.perf_counter() - started)
            elif self._on_pause is not None:
                self._on_pause(transition)
        if self._segmenter.samples_index == judged:
            return
        s = self._segmenter
        self._event_ch.send_nowait(
            vad.VADEvent(
                type=vad.VADEventType.INFERENCE_DONE,
                samples_index=s.samples_index,
                timestamp=time.time(),
                speech_duration=s.speech_w * s.window_s,
                silence_duration=s.silence_w * s.window_s,
                frames=[frame],
                probability=1.0 if s.raw_speech_w else 0.0,
                inference_duration=time.perf_counter() - started,
                speaking=s.speaking,
                raw_accumulated_silence=s.raw_silence_w * s.window_s,
                raw_accumulated_speech=s.raw_speech_w * s.window_s,
            )
        )

    def _publish(self, transition: Transition, inference_duration: float) -> None:
        s = self._segmenter
        speech = transition.speech
        self._event_ch.send_nowait(
            vad.VADEvent(
                type=(
                    vad.VADEventType.START_OF_SPEECH
                    if transition.kind == "start"
                    else vad.VADEventType.END_OF_SPEECH
                ),
                samples_index=transition.samples_index,
                timestamp=time.time(),
                speech_duration=transition.speech_s,
                silence_duration=transition.silence_s,
                frames=[rtc.AudioFrame(speech, VAD_SAMPLE_RATE, 1, len(speech) // 2)],
                inference_duration=inference_duration,
                speaking=transition.kind == "start",
                raw_accumulated_silence=s.raw_silence_w * s.window_s,
                raw_accumulated_speech=s.raw_speech_w * s.window_s,
            )
        )

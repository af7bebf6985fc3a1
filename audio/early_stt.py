"""Recognition that starts when the speaker pauses, so the VAD's hangover hides it.

LiveKit's ``stt.StreamAdapter`` recognizes an utterance once the VAD has heard its hangover of
silence (0.3 s): the recognizer's own time (~0.15 s for Whisper tiny on two cores) then comes
on top of it. Here the utterance so far is recognized as soon as the speaker has paused
briefly (``pause_s``); if the hangover then ends the utterance with nothing said in between,
that transcript is the one used: the audio differs only by the silence still heard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from .segmenter import VAD_SAMPLE_RATE, Transition
from .vad import WebRTCVAD

# as LiveKit's adapter: STT.recognize retries already
_ADAPTER_CONN_OPTIONS = APIConnectOptions(max_retry=0, timeout=DEFAULT_API_CONNECT_OPTIONS.timeout)


class EarlySTT(stt.STT):
    """A non-streaming recognizer made streaming by webrtcvad, started on each pause."""

    def __init__(self, *, recognizer: stt.STT, vad: WebRTCVAD) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=True, interim_results=False),
        )
        self._stt = recognizer
        self._vad = vad
        self._stt.on("metrics_collected", self._forward_metrics)

    @property
    def model(self) -> str:
        return self._stt.model

    @property
    def provider(self) -> str:
        return self._stt.provider

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        return await self._stt.recognize(buffer, language=language, conn_options=conn_options)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> EarlyRecognizeStream:
        return EarlyRecognizeStream(self, language=language, conn_options=conn_options)

    def _forward_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.emit("metrics_collected", *args, **kwargs)

    async def aclose(self) -> None:
        self._stt.off("metrics_collected", self._forward_metrics)


@dataclass
class _Guess:
    """A recognition started at a pause, of the utterance so far."""

    pause: Transition
    transcript: asyncio.Task[stt.SpeechEvent]

    def of(self, speech: bytes) -> bool:
        """Whether it was made on the same utterance as ``speech``, so far."""
        return speech.startswith(self.pause.speech)

    def fits(self, speech: bytes, silence_s: float) -> bool:
        """Whether an ending utterance is the paused one plus silence only."""
        added = round((silence_s - self.pause.silence_s) * VAD_SAMPLE_RATE) * 2
        return len(speech) == len(self.pause.speech) + added and self.of(speech)


class EarlyRecognizeStream(stt.RecognizeStream):
    def __init__(
        self,
        owner: EarlySTT,
        *,
        language: NotGivenOr[str],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(stt=owner, conn_options=_ADAPTER_CONN_OPTIONS)
        self._owner = owner
        self._language = language
        self._recognizer_conn_options = conn_options
        self._guesses: list[_Guess] = []
        """In the VAD's order, which may run ahead of the events read so far."""

    async def _metrics_monitor_task(self, event_aiter: AsyncIterable[stt.SpeechEvent]) -> None:
        async for _ in event_aiter:  # the wrapped recognizer reports its own
            pass

    async def _run(self) -> None:
        vad_stream = self._owner._vad.stream(on_pause=self._guess_on)

        async def forward_input() -> None:
            async for frame in self._input_ch:
                if isinstance(frame, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(frame)
            vad_stream.end_input()

        async def recognize() -> None:
            async for event in vad_stream:
                if event.type == vad.VADEventType.START_OF_SPEECH:
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH)
                    )
                elif event.type == vad.VADEventType.END_OF_SPEECH:
                    await self._finish(event)

        tasks = [asyncio.create_task(forward_input()), asyncio.create_task(recognize())]
        try:
            await asyncio.gather(*tasks)
        finally:
            self._drop_guesses(lambda _: True)
            await utils.aio.cancel_and_wait(*tasks)
            await vad_stream.aclose()

    def _guess_on(self, pause: Transition) -> None:
        self._drop_guesses(lambda guess: guess.of(pause.speech))  # the speaker went on
        transcript = asyncio.create_task(self._recognize(pause.speech))
        transcript.add_done_callback(_retrieve)  # a dropped guess's failure is nobody's
        self._guesses.append(_Guess(pause, transcript))

    def _drop_guesses(self, which: Callable[[_Guess], bool]) -> None:
        for guess in [g for g in self._guesses if which(g)]:
            guess.transcript.cancel()
            self._guesses.remove(guess)

    async def _finish(self, event: vad.VADEvent) -> None:
        speech_end_time = time.time() - event.silence_duration - event.inference_duration
        self._event_ch.send_nowait(
            stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, speech_end_time=speech_end_time)
        )
        speech = bytes(event.frames[0].data)
        fitting = next((g for g in self._guesses if g.fits(speech, event.silence_duration)), None)
        if fitting is not None:
            self._guesses.remove(fitting)
        self._drop_guesses(lambda guess: guess.of(speech))
        heard = await (fitting.transcript if fitting else self._recognize(speech))
        if heard.alternatives and heard.alternatives[0].text:
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                    alternatives=[heard.alternatives[0]],
                    speech_end_time=heard.speech_end_time or speech_end_time,
                )
            )

    async def _recognize(self, speech: bytes) -> stt.SpeechEvent:
        frame = rtc.AudioFrame(speech, VAD_SAMPLE_RATE, 1, len(speech) // 2)
        return await self._owner._stt.recognize(
            frame, language=self._language, conn_options=self._recognizer_conn_options
        )


def _retrieve(task: asyncio.Task[stt.SpeechEvent]) -> None:
    if not task.cancelled():
        task.exception()

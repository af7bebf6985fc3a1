"""Offline speech recognition with faster-whisper as a LiveKit ``stt.STT`` plugin."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import numpy as np
from faster_whisper import WhisperModel
from livekit.agents import APIConnectOptions, stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer
from livekit.agents.utils.audio import merge_frames

from audio.pcm import frames_to_mono

from ...models import ModelNotFoundError, bundled_whisper_dir, local_model

WHISPER_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class FasterWhisperOptions:
    model: str = ""
    """faster-whisper size (``tiny.en``, ``small``…) or CTranslate2 folder; "" = bundled tiny.en."""
    language: str = "en"
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 0


class FasterWhisperSTT(stt.STT):
    def __init__(self, options: FasterWhisperOptions | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._opts = options or FasterWhisperOptions()
        self._model: WhisperModel | None = None
        self._lock = asyncio.Lock()

    def fork(self) -> FasterWhisperSTT:
        """A plugin for another session over the same weights (its metrics are its own)."""
        twin = FasterWhisperSTT(self._opts)
        twin._model, twin._lock = self._model, self._lock
        return twin

    @property
    def model(self) -> str:
        return self._opts.model or "tiny.en (bundled)"

    @property
    def provider(self) -> str:
        return "faster-whisper"

    def locate(self) -> str:
        """Where the weights are; fails now, with the path, if they are not on this machine."""
        source = self._opts.model or str(bundled_whisper_dir())
        return local_model(source, "model.bin", "faster-whisper model")

    def load(self) -> None:
        """Load the weights now (blocking), so the first turn is not the one that waits."""
        if self._model is not None:
            return
        source = self.locate()
        try:
            self._model = WhisperModel(
                source,
                device=self._opts.device,
                compute_type=self._opts.compute_type,
                cpu_threads=self._opts.cpu_threads,
                local_files_only=True,
            )
        except Exception as e:  # faster-whisper raises several kinds for a missing model
            raise ModelNotFoundError(f"cannot load faster-whisper model {source!r}: {e}") from None

    def transcribe(self, samples: np.ndarray) -> str:
        """Blocking transcription of 16 kHz int16 mono."""
        self.load()
        assert self._model is not None
        segments, _ = self._model.transcribe(
            samples.astype(np.float32) / 32768.0,
            language=self._opts.language or None,
            beam_size=self._opts.beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = merge_frames(buffer)
        samples = frames_to_mono([frame], WHISPER_SAMPLE_RATE)
        async with self._lock:  # one decode at a time: the model uses every core already
            text = await asyncio.to_thread(self.transcribe, samples)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex,
            alternatives=[
                stt.SpeechData(language=LanguageCode(self._opts.language or "en"), text=text)
            ],
        )

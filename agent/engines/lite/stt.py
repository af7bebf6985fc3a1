"""Offline speech recognition with faster-whisper as a LiveKit ``stt.STT`` plugin.

faster-whisper pads every clip to Whisper's 30 s window, so a 2 s utterance costs as much as a
30 s one. A turn's clip is short: it is encoded on a window of its own length plus a margin
(``window_s``) through the model's CTranslate2 encoder and decoder directly, with the decoding
capped by the clip's length. Measured on 32 real utterances (DESIGN.md §8): about 3× faster, the
same word error rate; smaller margins make tiny.en repeat itself, and the rare transcript that
still goes round in circles is redone on the full window (``bench/stt.py``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from livekit.agents import APIConnectOptions, stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer
from livekit.agents.utils.audio import merge_frames

from audio.pcm import frames_to_mono

from ...models import BUNDLED_STT, ModelNotFoundError, local_model

WHISPER_SAMPLE_RATE = 16000
FRAMES_PER_S = 100
"""Whisper's log-mel frames."""
MARGIN_S = 5.0
MIN_WINDOW_S = 10.0
MAX_WINDOW_S = 30.0
TOKENS_PER_S = 6
"""Speech runs at 2–4 tokens a second: more means the decoder is repeating itself."""
EXTRA_TOKENS = 10
MAX_COMPRESSION_RATIO = 2.4
"""faster-whisper's own sign of a repeating transcript."""


def window_s(clip_s: float) -> float:
    """The encoder window for a clip: its length plus a margin, at least 10 s, at most 30 s."""
    return min(MAX_WINDOW_S, max(clip_s + MARGIN_S, MIN_WINDOW_S))


def ct2_max_length(prompt_tokens: int, new_tokens: int) -> int:
    """The ``max_length`` that lets CTranslate2's Whisper decode ``new_tokens`` after its
    prompt: it stops at ``min(max_length / 2, max_length - prompt)`` new tokens (upstream
    CTranslate2 #1856), so the plain sum would allow only half what is meant (en_num's last
    numbers were lost, and a tiny.en loop was cut before it could be seen)."""
    return max(2 * new_tokens, prompt_tokens + new_tokens)


@dataclass(frozen=True)
class _Decoding:
    """What every short-window decode in one language starts from, worked out once."""

    tokenizer: Tokenizer
    prompt: list[int]
    suppress: list[int]


@dataclass(frozen=True)
class Heard:
    text: str
    language: str
    """The language it was heard in: the options' own, or the one Whisper told apart."""


@dataclass(frozen=True)
class FasterWhisperOptions:
    model: str = ""
    """A bundled one (``tiny.en``, the default; ``base``, multilingual), a faster-whisper size
    in the local cache, or a CTranslate2 folder."""
    language: str = "en"
    """"" = tell each turn's language apart (a multilingual model)."""
    languages: tuple[str, ...] = ()
    """What a turn told apart may be heard as (() = any of Whisper's 99): a half-second cut
    of English was once heard as Greek."""
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 0


class FasterWhisperSTT(stt.STT):
    def __init__(self, options: FasterWhisperOptions | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._opts = options or FasterWhisperOptions()
        self._model: WhisperModel | None = None
        self._decodings: dict[str, _Decoding] = {}
        # one decode at a time (the model uses every core already); a cancelled request that
        # has not started leaves the queue, one that has finishes before the next starts
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")

    def fork(self) -> FasterWhisperSTT:
        """A plugin for another session over the same weights (its metrics are its own)."""
        twin = FasterWhisperSTT(self._opts)
        twin._model, twin._decodings, twin._worker = self._model, self._decodings, self._worker
        return twin

    @property
    def model(self) -> str:
        name = self._opts.model or next(iter(BUNDLED_STT))
        return f"{name} (bundled)" if name in BUNDLED_STT else name

    @property
    def provider(self) -> str:
        return "faster-whisper"

    def locate(self) -> str:
        """Where the weights are; fails now, with the path, if they are not on this machine."""
        name = self._opts.model or next(iter(BUNDLED_STT))
        source = str(BUNDLED_STT[name]()) if name in BUNDLED_STT else name
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
        if not self._opts.language and not self._model.model.is_multilingual:
            raise ModelNotFoundError(
                f"{self.model} hears English only: telling languages apart needs a "
                'multilingual model (stt_model = "base")'
            )

    def _decoding(self, language: str) -> _Decoding:
        if (found := self._decodings.get(language)) is not None:
            return found
        assert self._model is not None
        multilingual = self._model.model.is_multilingual
        tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=language if multilingual else None,
        )
        decoding = _Decoding(
            tokenizer,
            prompt=[*tokenizer.sot_sequence, tokenizer.no_timestamps],
            suppress=get_suppressed_tokens(tokenizer, (-1,)) or [],
        )
        self._decodings[language] = decoding
        return decoding

    def transcribe(self, samples: np.ndarray) -> Heard:
        """Blocking transcription of 16 kHz int16 mono."""
        self.load()
        audio = samples.astype(np.float32) / 32768.0
        clip_s = len(audio) / WHISPER_SAMPLE_RATE
        if clip_s + MARGIN_S <= MAX_WINDOW_S:
            return self._transcribe_short(audio, clip_s)
        return self._transcribe_long(audio)

    def _transcribe_short(self, audio: np.ndarray, clip_s: float) -> Heard:
        """One window, one greedy or beam decode, no timestamps; the language, when the
        options leave it open, told apart on the same encoding."""
        model = self._model
        assert model is not None
        window = int(window_s(clip_s) * WHISPER_SAMPLE_RATE)
        padded = np.pad(audio, (0, window - len(audio)))
        features = model.feature_extractor(padded, padding=0)
        features = features[:, : window * FRAMES_PER_S // WHISPER_SAMPLE_RATE]
        encoded = model.encode(features)
        language = self._opts.language
        if not language:
            ranked = model.model.detect_language(encoded)[0]
            language = self._likeliest([(str(token)[2:-2], p) for token, p in ranked])
        decoding = self._decoding(language)
        budget = int(TOKENS_PER_S * clip_s) + EXTRA_TOKENS
        result = model.model.generate(
            encoded,
            [decoding.prompt],
            beam_size=self._opts.beam_size,
            max_length=ct2_max_length(len(decoding.prompt), budget),
            suppress_blank=True,
            suppress_tokens=decoding.suppress,
        )[0]
        tokens = result.sequences_ids[0]
        text = str(decoding.tokenizer.decode(tokens)).strip()
        if (
            len(tokens) >= budget
            or get_compression_ratio(text) > MAX_COMPRESSION_RATIO
            or _loops(text)
        ):
            # the decoder went round in circles: the full window (rarely needed) does not
            return self._transcribe_long(audio)
        return Heard(text, language)

    def _transcribe_long(self, audio: np.ndarray) -> Heard:
        """faster-whisper's own loop, in 30 s windows."""
        assert self._model is not None
        language = self._opts.language
        if not language and self._opts.languages:
            language = self._likeliest(self._model.detect_language(audio)[2])
        segments, info = self._model.transcribe(
            audio,
            language=language or None,
            beam_size=self._opts.beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        text = " ".join(s.text.strip() for s in segments).strip()
        return Heard(text, language or info.language)

    def _likeliest(self, ranked: list[tuple[str, float]]) -> str:
        """The likeliest of the options' languages, from all Whisper's, likeliest first."""
        allowed = self._opts.languages
        return next((code for code, _ in ranked if not allowed or code in allowed), ranked[0][0])

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = merge_frames(buffer)
        samples = frames_to_mono([frame], WHISPER_SAMPLE_RATE)
        heard = await asyncio.get_running_loop().run_in_executor(
            self._worker, self.transcribe, samples
        )
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex,
            alternatives=[stt.SpeechData(language=LanguageCode(heard.language), text=heard.text)],
        )


def _loops(text: str) -> bool:
    """A phrase of one to four words said three times in a row: the short window's way of
    going round in circles on some clips (seen on speech60_en.wav)."""
    words = re.findall(r"[\w']+", text.lower())
    for n in range(1, 5):
        for i in range(len(words) - 3 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n] == words[i + 2 * n : i + 3 * n]:
                return True
    return False

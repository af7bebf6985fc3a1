"""Offline speech synthesis as a LiveKit ``tts.TTS`` plugin: Piper for English, espeak-ng
(through pyttsx3) for every other language, chosen sentence by sentence.

The class names still say pyttsx3, as they did when espeak-ng was the only voice: the session,
the control plane, the event log and the tests import them by those names.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pyttsx3
import pyttsx3.drivers.espeak as espeak_driver
import soundfile as sf
from livekit.agents import APIConnectOptions, APIError, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from .clauses import FirstClauseTokenizer
from .language import TextLanguage, base_language
from .piper import VOICE_ID, PiperWorker
from .spoken import speakable

ESPEAK_SAMPLE_RATE = 22050  # what pyttsx3's espeak driver writes; Piper's is brought to it
VOICE_ALIASES = {"zh": "cmn"}
"""What the recognizer and the identifier call Chinese is Mandarin, espeak-ng's ``cmn``."""
EMPTY_RESULT_RETRIES = 3
WAV_HEADER_BYTES = 44

# The espeak driver announces every saved file on stdout, which would corrupt the live
# transcript; shadowing print in that module only silences the driver.
espeak_driver.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Pyttsx3Options:
    language: str = "en"
    """BCP-47 code; picks the voice: Piper for English (see ``english``), espeak-ng's for any
    other (``de``, ``fr-be``…)."""
    rate: int = 175
    """Words per minute (Piper's own pace stands for 175)."""
    volume: float = 1.0
    languages: tuple[str, ...] = ()
    """Languages the voice may switch to, each text spoken in its own (``language`` when the
    text does not tell: the caller's latest, told by ``hear``, or else ``language``)."""
    english: Literal["piper", "espeak"] = "piper"
    """Who speaks English: Piper's neural voice, or espeak-ng like every other language."""


class _EspeakWorker:
    """Owns the one pyttsx3 engine on the one thread allowed to touch it.

    espeak-ng is initialised once per process, so every Pyttsx3TTS shares this worker.
    """

    _shared: _EspeakWorker | None = None

    @classmethod
    def shared(cls) -> _EspeakWorker:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self._engine: pyttsx3.Engine | None = None

    def _ensure_engine(self) -> pyttsx3.Engine:
        if self._engine is None:
            self._engine = pyttsx3.init("espeak")
        return self._engine

    async def voice_for(self, language: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._voice_for, language
        )

    def _voice_for(self, language: str) -> str:
        code = language.lower().replace("_", "-")
        code = VOICE_ALIASES.get(code, code)
        voices = self._ensure_engine().getProperty("voices")
        for matches in (
            lambda v: v.id.endswith("/" + code),
            lambda v: code in [lang.lower() for lang in v.languages],
            lambda v: any(lang.lower().startswith(code + "-") for lang in v.languages),
        ):
            found = [v.id for v in voices if matches(v)]
            if found:
                return str(found[0])
        raise ValueError(f"espeak-ng has no voice for language {language!r}")

    async def name_of(self, voice: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._name_of, voice
        )

    def _name_of(self, voice: str) -> str:
        names = {v.id: v.name for v in self._ensure_engine().getProperty("voices")}
        return str(names.get(voice) or voice).split(" (")[0]  # "French (France)": "French"

    async def synthesize(self, text: str, voice: str, opts: Pyttsx3Options) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._synthesize, text, voice, opts
        )

    def _synthesize(self, text: str, voice: str, opts: Pyttsx3Options) -> np.ndarray:
        engine = self._ensure_engine()
        fd, path = tempfile.mkstemp(suffix=".wav", prefix="voice-agent-tts-")
        os.close(fd)
        try:
            # espeak may apply a voice change with the rate in force before it, so the rate
            # goes in on both sides of the voice (measured: any other order loses it at times)
            engine.setProperty("rate", opts.rate)
            engine.setProperty("voice", voice)
            engine.setProperty("rate", opts.rate)
            engine.setProperty("volume", opts.volume)
            for _ in range(EMPTY_RESULT_RETRIES):
                # the driver at times cancels an utterance it thinks is still playing and
                # leaves the file empty: write again
                os.truncate(path, 0)
                engine.save_to_file(text, path)
                engine.runAndWait()
                if os.path.getsize(path) > WAV_HEADER_BYTES:
                    samples, _ = sf.read(path, dtype="int16")
                    return np.asarray(samples, dtype=np.int16)
            raise APIError(f"espeak-ng gave no audio for {text[:40]!r}", retryable=True)
        finally:
            os.unlink(path)


class Pyttsx3TTS(tts.TTS):
    """Piper or espeak-ng by each piece's language, fed a reply as it is written: its first
    clause, then its sentences, each with its numbers in words (``audio/spoken.py``)."""

    def __init__(self, options: Pyttsx3Options | None = None) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1,
        )
        self._opts = options or Pyttsx3Options()
        self._espeak = _EspeakWorker.shared()
        self._piper = PiperWorker.shared()
        self._voices: dict[str, str] = {}
        """Voice ids by language, as found."""
        self._text_language = TextLanguage(self._opts.languages) if self._opts.languages else None
        self._caller: str | None = None
        # LiveKit's own adapter speaks each piece through synthesize(); only the cut is ours
        self._pieces = tts.StreamAdapter(tts=self, sentence_tokenizer=FirstClauseTokenizer())

    @property
    def model(self) -> str:
        return "piper+espeak-ng" if self._opts.english == "piper" else "espeak-ng"

    @property
    def provider(self) -> str:
        return "local"

    @property
    def options(self) -> Pyttsx3Options:
        return self._opts

    async def voice(self, language: str = "") -> str:
        """The voice id for ``language`` (the configured one by default): Piper's, loaded
        here, or espeak-ng's; raises ValueError if none."""
        language = language or self._opts.language
        if self._opts.english == "piper" and base_language(language) == "en":
            return await self._piper.load()
        return await self._espeak_voice(language)

    async def _espeak_voice(self, language: str) -> str:
        if language not in self._voices:
            self._voices[language] = await self._espeak.voice_for(language)
        return self._voices[language]

    async def switch_language(self, language: str) -> str:
        """Speak ``language`` from now on, and return its voice; raises ValueError, changing
        nothing, if espeak-ng has none (the voice is found before anything is replaced)."""
        voice = await self.voice(language)
        self._opts = replace(self._opts, language=language)
        return voice

    async def language_name(self, language: str = "") -> str:
        """The English name of ``language`` ("German" for ``de``), as espeak-ng names its
        voices: for prompts."""
        language = language or self._opts.language
        return await self._espeak.name_of(await self._espeak_voice(language))

    def hear(self, language: str) -> None:
        """The caller's latest language (as the recognizer heard it): what a reply that does
        not tell its own is spoken in, if the voice may take it."""
        if self._text_language is not None:
            code = base_language(language)
            if code in self._text_language.languages:
                self._caller = code

    def language_of(self, text: str) -> str:
        """The language ``text`` is spoken in."""
        if self._text_language is None:
            return self._opts.language
        return self._text_language.of(text) or self._caller or self._opts.language

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> Pyttsx3ChunkedStream:
        return Pyttsx3ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.SynthesizeStream:
        return self._pieces.stream(conn_options=conn_options)

    async def _render(self, text: str) -> np.ndarray:
        language = self.language_of(text)
        voice, said = await self.voice(language), speakable(text, language)
        if voice == VOICE_ID:
            return await self._piper.synthesize(
                said, rate=self._opts.rate, volume=self._opts.volume, sample_rate=self.sample_rate
            )
        return await self._espeak.synthesize(said, voice, self._opts)


class Pyttsx3ChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: Pyttsx3TTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._pyttsx3 = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        samples = await self._pyttsx3._render(self.input_text)
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(samples.tobytes())
        output_emitter.flush()

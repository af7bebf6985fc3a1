"""espeak-ng speaks each supported language, quietly (nothing on stdout), and starts on a reply's
first clause."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from audio import Pyttsx3Options, Pyttsx3TTS
from audio.clauses import FirstClauseTokenizer

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


REPLIES = {
    "de": ("Es ist zehn nach drei.", "gmw/de"),
    "fr": ("Bien sûr, je peux vous aider.", "roa/fr"),
    "es": ("Claro, puedo ayudarte con eso.", "roa/es"),
    "zh": ("当然，我可以帮你。", "sit/cmn"),
}


@pytest.mark.parametrize("language", sorted(REPLIES))
async def test_a_voice_that_follows_speaks_each_reply_in_its_own_languages_voice(language):
    follow = Pyttsx3TTS(Pyttsx3Options(language="en", languages=("en", "de", "fr", "es", "zh")))
    text, voice = REPLIES[language]
    assert follow.language_of(text) == language
    assert await follow.voice(language) == voice
    spoken = await follow.synthesize(text).collect()
    fixed = await Pyttsx3TTS(Pyttsx3Options(language=language)).synthesize(text).collect()
    assert abs(spoken.duration - fixed.duration) < 0.05 * fixed.duration, "spoken alike"


def test_a_reply_too_short_to_tell_is_spoken_in_the_callers_latest_language():
    follow = Pyttsx3TTS(Pyttsx3Options(language="en", languages=("en", "de", "fr")))
    assert follow.language_of("OK.") == "en", "nobody heard yet: the profile's language"
    follow.hear("de")
    assert follow.language_of("OK.") == "de"
    follow.hear("fr-FR")
    assert follow.language_of("OK.") == "fr", "the caller switched: the next reply follows"
    follow.hear("ru")
    assert follow.language_of("OK.") == "fr", "a language the voice may not take is ignored"
    assert follow.language_of("It is ten past three.") == "en", "a clear text tells its own"


def test_a_voice_that_does_not_follow_keeps_its_language():
    fixed = Pyttsx3TTS(Pyttsx3Options(language="de"))
    fixed.hear("fr")
    assert fixed.language_of("Il est trois heures dix.") == "de"


def test_languages_the_identifier_does_not_know_are_refused_by_name():
    with pytest.raises(ValueError, match="xx"):
        Pyttsx3TTS(Pyttsx3Options(languages=("en", "xx")))


@pytest.mark.parametrize(
    ("reply", "pieces"),
    [
        ("Sure, it is 3:45 now. Anything else?", ["Sure,", "it is 3:45 now.", "Anything else?"]),
        ("Hello there! How are you, my friend?", ["Hello there!", "How are you, my friend?"]),
        ("The lamp is on; enjoy.", ["The lamp is on;", "enjoy."]),
        ("1,000 well-known words — really.", ["1,000 well-known words —", "really."]),
        ("当然，我可以帮你。", ["当然，", "我可以帮你。"]),
        ("It is ten past three.", ["It is ten past three."]),
    ],
)
def test_a_reply_is_spoken_first_clause_first_then_sentence_by_sentence(reply, pieces):
    assert [p.strip() for p in FirstClauseTokenizer().tokenize(reply)] == pieces


async def _speak_as_written(pieces: list[str], wait_s: float) -> list[tuple[int, float]]:
    """Streams ``pieces`` of text as a model writes them, ``wait_s`` apart: each audio frame as
    (how many pieces had been written when it came, its seconds)."""
    heard: list[tuple[int, float]] = []
    written = 0
    async with Pyttsx3TTS().stream() as stream:

        async def listen() -> None:
            async for audio in stream:
                heard.append((written, audio.frame.duration))

        listening = asyncio.create_task(listen())
        for piece in pieces:
            stream.push_text(piece)
            written += 1
            await asyncio.sleep(wait_s)
        stream.end_input()
        await listening
    return heard


async def test_the_voice_starts_before_the_first_sentence_is_written():
    """As a model writes "Sure, the time…", "Sure" is heard before the sentence is done."""
    heard = await _speak_as_written(["Sure, the time", " is ten past three."], wait_s=2)
    first = [seconds for written, seconds in heard if written == 1]
    assert first and sum(first) < 1.0, "the first clause alone, as soon as it is done"
    assert sum(seconds for _, seconds in heard) > 4 * sum(first), "then the rest of it"


async def test_a_sentence_with_no_clause_is_spoken_whole():
    heard = await _speak_as_written(["The time is ten", " past three."], wait_s=1)
    assert heard and all(written == 2 for written, _ in heard), "no half sentence is spoken"
    assert 1.0 < sum(seconds for _, seconds in heard) < 4.0

"""Which language a text is in, so that a voice can speak each reply in its own language.

py3langid (BSD, its model inside its wheel) reads the text among a few languages, in under a
millisecond a sentence. A short text ("OK.", "Ja.") does not tell its language clearly: then
it tells none, and the caller of ``of`` decides.
"""

from __future__ import annotations

import functools

from py3langid.langid import MODEL_FILE, LanguageIdentifier

SURE = 0.5
"""The probability (among the languages given) a text must reach to tell its language; below
it, "OK." would be German and "Ja." Portuguese (bench/languages.py)."""


def base_language(code: str) -> str:
    """``de`` for ``de-CH`` or ``de_ch``: the code the identifier and the recognizer use."""
    return code.lower().replace("_", "-").split("-")[0]


@functools.cache
def _identifier(languages: tuple[str, ...]) -> LanguageIdentifier:
    found = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    found.set_languages(list(languages))
    return found


class TextLanguage:
    """Tells a text's language among ``languages``; shares one loaded model (0.5 s to load)
    per set of languages across the process."""

    def __init__(self, languages: tuple[str, ...]) -> None:
        """Raises ValueError, naming them, for codes the identifier does not know."""
        self.languages = tuple(sorted({base_language(code) for code in languages}))
        self._identifier = _identifier(self.languages)

    def of(self, text: str) -> str | None:
        language, probability = self._identifier.classify(text)
        return str(language) if probability >= SURE else None


class TurnLanguage:
    """The language a user turn was heard in: its longest transcribed piece's. The recognizer
    tells each piece's language on its own, and a short one is often told wrong: a French turn
    ended by "Uh." (heard as English) was answered in English."""

    def __init__(self) -> None:
        self.language: str | None = None
        """The latest turn's; kept into the next turn until that one is heard."""
        self._longest = -1

    def heard(self, text: str, language: str) -> bool:
        """Whether this piece tells the turn's language (it is the turn's longest so far)."""
        if len(text.strip()) < self._longest:
            return False
        self._longest, self.language = len(text.strip()), language
        return True

    def next_turn(self) -> None:
        self._longest = -1

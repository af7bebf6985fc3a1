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

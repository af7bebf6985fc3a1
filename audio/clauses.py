"""What the voice is given to say: a reply's first clause as soon as it is complete, then whole
sentences.

The voice cannot start before its first piece of text is complete, and espeak-ng renders a
piece in ~15 ms, so the wait for the model to finish its first sentence (~10 tokens, ~0.3 s
from the bundled 0.5B model on two cores) is most of the time left between a first token and
a first sound. A clause ends at a comma, semicolon, colon or dash: a pause the voice makes
anyway, so the cut costs no prosody. Later sentences stay whole, as LiveKit's blingfire
tokenizer tells them; only the first one is cut, once.
"""

from __future__ import annotations

import re

from livekit.agents.tokenize import (
    BufferedSentenceStream,
    SentenceStream,
    SentenceTokenizer,
    blingfire,
)

CLAUSE_END = re.compile(r"[,;:!?](?=\s)|\s[-–—](?=\s)|[，；：、！？]")
"""Where a clause ends: not in "3:45", "1,000" or "well-known"."""
MIN_CONTEXT_CHARS = 10
"""LiveKit's own: what the stream holds before it looks for a boundary."""


class _FirstClauseCut:
    """Splits a stream's text into sentences, the first of them at its first clause (state for
    one stream: the cut is made once)."""

    def __init__(self, sentences: SentenceTokenizer) -> None:
        self._sentences = sentences
        self._cut = False

    def __call__(self, text: str) -> list[str]:
        sentences = self._sentences.tokenize(text)
        if self._cut or not sentences:
            return sentences
        first = sentences[0]
        clause_end = CLAUSE_END.search(first)
        if clause_end is None or not first[clause_end.end() :].strip():
            return sentences  # nothing said after it yet: wait, or speak the sentence whole
        self._cut = True  # the stream takes the first piece whenever a second one follows
        return [first[: clause_end.end()], first[clause_end.end() :], *sentences[1:]]


class FirstClauseTokenizer(SentenceTokenizer):
    def __init__(self) -> None:
        # raw sentences (retain_format) are exact substrings, which the stream looks up
        self._sentences = blingfire.SentenceTokenizer(retain_format=True)

    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        return _FirstClauseCut(self._sentences)(text)

    def stream(self, *, language: str | None = None) -> SentenceStream:
        return BufferedSentenceStream(
            tokenizer=_FirstClauseCut(self._sentences),
            min_token_len=1,  # the sentences come merged to a sensible length already
            min_ctx_len=MIN_CONTEXT_CHARS,
        )

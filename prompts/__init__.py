"""System prompts, one text file per profile, and what the agent says by itself in each
language (apologies, the tools' answers), shipped with the package.

A profile's ``prompt`` is a built-in name or the prompt's own text, and its ``prompt_file`` a
path: a string is never guessed to be a file name.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from audio.language import base_language

MAX_PROMPT_BYTES = 1 << 20
"""More than any model here can read (Phi-4-MM's 128K tokens are ~500 KB of text)."""


class PromptError(LookupError):
    """The prompt named or given cannot be used; the message is meant for the user."""


Phrase = Literal[
    "repeat",
    "failed",
    "unreachable",
    "answer_in",
    "time",
    "date",
    "offline",
    "transfer",
    "goodbye",
    "listening",
]


@functools.cache
def _phrases() -> dict[str, dict[str, str]]:
    text = resources.files(__name__).joinpath("phrases.toml").read_text("utf-8")
    return tomllib.loads(text)


def phrase_language(language: str) -> str:
    """The language ``phrase`` speaks for ``language``: itself (``pt-BR`` as ``pt``) if the
    table has it, else English."""
    code = base_language(language)
    return code if code in _phrases() else "en"


def phrase(kind: Phrase, language: str) -> str:
    """What the agent says by itself (``prompts/phrases.toml``) in ``language``, if it has it,
    else in English."""
    return _phrases()[phrase_language(language)][kind]


def available_prompts() -> list[str]:
    return sorted(
        p.name.removesuffix(".txt")
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".txt")
    )


def load_prompt(name_or_text: str) -> str:
    """A built-in prompt by name (``desktop``), or the text itself.

    A single word that names no built-in prompt is a typo or a file name, not a prompt."""
    text = name_or_text.strip()
    if text in available_prompts():
        return resources.files(__name__).joinpath(f"{text}.txt").read_text("utf-8").strip()
    if not text or len(text.split()) == 1:
        built_in = ", ".join(available_prompts())
        raise PromptError(
            f"unknown prompt {text[:60]!r} (built-in: {built_in}; "
            "or the prompt's own text; a file goes in prompt_file)"
        )
    if len(text.encode()) > MAX_PROMPT_BYTES:
        raise PromptError(f"the prompt is over {MAX_PROMPT_BYTES >> 20} MiB")
    return text


def read_prompt_file(path: Path) -> str:
    """A prompt from a UTF-8 text file."""
    try:
        size = path.stat().st_size
        if size > MAX_PROMPT_BYTES:
            raise PromptError(f"{path}: {size:,} bytes is too large for a prompt")
        text = path.read_text("utf-8").strip()
    except FileNotFoundError:
        raise PromptError(f"{path}: no such prompt file") from None
    except UnicodeDecodeError:
        raise PromptError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise PromptError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not text:
        raise PromptError(f"{path}: the prompt file is empty")
    return text

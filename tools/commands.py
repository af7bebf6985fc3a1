"""Commands from the MQTT control plane, checked at the edge.

A payload arrives from whoever can publish on the broker; it is turned into a `Command` here or
refused with a reason the sender can act on, so nothing malformed reaches the session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMANDS = ("say", "mute", "unmute", "language", "end", "transfer", "listen")
MAX_SAY_CHARS = 2000
"""About two minutes of speech: more is a mistake or an attack, not an announcement."""
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
PREVIEW_BYTES = 40


class CommandRefused(ValueError):
    """The command cannot be obeyed; the message says why, for the sender."""


@dataclass(frozen=True)
class Command:
    name: str
    argument: str = ""


def parse_command(name: str, payload: bytes) -> Command:
    """The command a message on ``cmd/<name>`` asks for."""
    if name not in COMMANDS:
        raise CommandRefused(f"unknown command (known: {', '.join(COMMANDS)})")
    if name in ("mute", "unmute", "end", "transfer", "listen"):
        return Command(name)  # the payload carries nothing
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandRefused("the payload is not UTF-8 text") from None
    if not text:
        raise CommandRefused("the payload is empty")
    if name == "say":
        if len(text) > MAX_SAY_CHARS:
            raise CommandRefused(
                f"the text is {len(text):,} characters long (at most {MAX_SAY_CHARS:,})"
            )
        if _CONTROL.search(text):
            raise CommandRefused("the text holds control characters")
    elif not _LANGUAGE.fullmatch(text):
        raise CommandRefused("not a language code such as 'de' or 'pt-BR'")
    return Command(name, text)


def preview(payload: bytes) -> str:
    """A payload as a log line may show it: short, escaped, with its size when cut."""
    shown = ascii(payload[:PREVIEW_BYTES].decode("utf-8", "backslashreplace"))
    return shown if len(payload) <= PREVIEW_BYTES else f"{shown}… ({len(payload):,} bytes)"

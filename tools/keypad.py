"""The caller's keypad: the digits a phone sends (RFC 4733 telephone-events, or SIP INFO), as
events, as text the model reads, and for the tool that waits for them.

A digit comes apart from the voice, so it is never heard as speech and never interrupts the
agent. With no tool waiting, the digits a caller presses are told to the model once they stop
(a pause of ``PAUSE_S``, or ``#``): "The caller pressed 1 2 3 4 on the keypad."
``collect_digits`` takes them instead, those pressed since the last were told included (a
caller often starts typing while the agent still asks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from livekit import rtc
from livekit.agents import ToolError

logger = logging.getLogger("voice_agent")

KEYS = "0123456789*#ABCD"
PAUSE_S = 2.5
"""A caller who stops pressing this long has finished (when no tool waits for the digits)."""
MAX_TYPED = 64
"""Digits kept untold; older ones are dropped (a stuck key, a fax)."""
Tell = Callable[[str], object]


class Keypad(rtc.EventEmitter[Literal["pressed"]]):
    """Emits ``pressed`` with each key (one of ``KEYS``)."""

    def __init__(self) -> None:
        super().__init__()
        self._typed: list[str] = []
        self._tell: Tell | None = None
        self._pause: asyncio.TimerHandle | None = None
        self._collecting: asyncio.Event | None = None

    def bind(self, tell: Tell) -> None:
        """How digits nobody waited for reach the model (a user turn of text)."""
        self._tell = tell

    def pressed(self, key: str) -> None:
        key = key.upper()
        if len(key) != 1 or key not in KEYS:
            logger.debug("keypad: %r is no key", key)
            return
        self.emit("pressed", key)
        self._typed = [*self._typed, key][-MAX_TYPED:]
        if self._collecting is not None:
            self._collecting.set()
            return
        self._tell_after(0.0 if key == "#" else PAUSE_S)

    async def collect(self, count: int, terminator: str, timeout_s: float) -> str:
        """The digits pressed until there are ``count`` (0: no count), ``terminator`` is
        pressed (it is not among them), or no key comes for ``timeout_s``."""
        if self._collecting is not None:
            raise ToolError("the keypad is already being read")
        self._tell_after(None)
        self._collecting = key_pressed = asyncio.Event()
        try:
            while (end := _entered(self._typed, count, terminator)) is None:
                key_pressed.clear()
                try:
                    await asyncio.wait_for(key_pressed.wait(), timeout_s)
                except TimeoutError:
                    end = len(self._typed)
                    break
        finally:
            self._collecting = None
        entered, self._typed = self._typed[:end], self._typed[end:]
        if self._typed:  # typed past the entry: told once the caller stops, as any keys are
            self._tell_after(PAUSE_S)
        return "".join(key for key in entered if key != terminator)

    def close(self) -> None:
        self._tell_after(None)

    def _tell_after(self, delay: float | None) -> None:
        """Tell the keys typed ``delay`` from now (instead of when it was due); None: not."""
        if self._pause is not None:
            self._pause.cancel()
        self._pause = (
            None if delay is None else asyncio.get_running_loop().call_later(delay, self._told)
        )

    def _told(self) -> None:
        self._pause = None
        typed, self._typed = self._typed, []
        if typed and self._tell is not None:
            self._tell(f"The caller pressed {' '.join(typed)} on the keypad.")


def _entered(typed: list[str], count: int, terminator: str) -> int | None:
    """How many of ``typed`` make the entry (the terminator with them), or None if not yet."""
    within = typed[: count + 1] if count else typed
    if terminator and terminator in within:
        return within.index(terminator) + 1
    if count and len(typed) >= count:
        return count
    return None

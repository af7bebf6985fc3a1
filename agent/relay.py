"""What of a model's text reaches the speaker, as it is generated: tool calls are held back, and
a reply that recites the system prompt is cut short.

Small models asked something they cannot place (half a sentence, noise heard as words) may
answer with their instructions, word for word: Qwen2.5-Coder-0.5B answered the call profile's
"So that comes back as..." with "No lists, no markdown, no emoji, no code. Always answer in
plain spoken words...", and once such a reply is in the history it gave it again on every later
turn. Banning the copied words while decoding only garbles them ("No lists, no Markdown, no
emoji."), so the recital is cut off once it is sure and the caller is asked to say it again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from livekit.agents.utils import aio

from prompts import apology

from .tool_calls import ParsedToolCall, ToolCallFilter, ToolCallParseError

RECITAL_WORDS = 6
"""Words in a row taken from the instructions that make a recital. The prompts' shorter runs
come up in honest answers ("the current time or date")."""
WORD = re.compile(r"\w+(?:['’]\w+)*")
T = TypeVar("T")
logger = logging.getLogger("voice_agent")


class RecitedInstructions(ValueError):
    """The reply recited the agent's own words: its prompt, or a line the profile scripts."""


class RecitalGuard:
    """Passes a reply's text on as it comes, except its last words while they could begin a
    recital: the longest run of them found in a row in the instructions (shorter than
    ``RECITAL_WORDS``) waits for the words after it."""

    def __init__(self, instructions: str, words: int = RECITAL_WORDS) -> None:
        source = _words(instructions)
        self._runs = {
            tuple(source[i : i + n]) for n in range(1, words + 1) for i in range(len(source))
        }
        self._words = words
        self._held = ""
        self._last = ""
        """The last character spoken."""

    def push(self, text: str) -> str:
        """The text that can be spoken now; raises RecitedInstructions."""
        self._held += text
        words = list(WORD.finditer(self._held))
        hold_from = len(self._held)
        if words and words[-1].end() == len(self._held):  # it may go on in the next piece
            hold_from = words.pop().start()
        found = self._check(words)
        for length in range(min(len(found), self._words - 1), 0, -1):
            if tuple(found[-length:]) in self._runs:
                hold_from = min(hold_from, words[-length].start())
                break
        hold_from = len(self._held[:hold_from].rstrip())  # a space waits for its word
        released, self._held = self._held[:hold_from], self._held[hold_from:]
        self._last = released[-1:] or self._last
        return released

    def finish(self) -> str:
        """The rest, once the reply is complete; raises RecitedInstructions."""
        self._check(list(WORD.finditer(self._held)))
        rest, self._held = self._held, ""
        return rest

    def then(self, sentence: str) -> str:
        """``sentence`` to follow what was spoken: after words cut off mid-sentence, as a
        new sentence ("Hello, thank you. Sorry, could you say that again?")."""
        if not self._last:
            return sentence
        return (". " if self._last.isalnum() else " ") + sentence

    def _check(self, words: list[re.Match[str]]) -> list[str]:
        found = [match.group().lower() for match in words]
        if any(
            tuple(found[i : i + self._words]) in self._runs
            for i in range(len(found) - self._words + 1)
        ):
            raise RecitedInstructions(
                f"the model recited its prompt or script: {self._held[:120]!r}"
            )
        return found


def _words(text: str) -> list[str]:
    return [match.group().lower() for match in WORD.finditer(text)]


async def relay_reply(
    start: Callable[[Callable[[str], None]], Awaitable[T]],
    say: Callable[[str], None],
    *,
    cancelled: threading.Event,
    offered: Collection[str],
    own_words: str,
    language: str,
    on_malformed: Callable[[ValueError], None],
) -> tuple[T, list[ParsedToolCall]]:
    """Runs a generation on its worker thread and hands its text to ``say`` as it comes,
    holding back tool calls; returns the generation's result and the calls.

    ``start`` is given the callback the worker calls with each piece of text. When the reply
    is abandoned, ``cancelled`` is set so decoding stops at its next step. A malformed call,
    or one to a tool not ``offered`` (small models make up tools from the user's words), is
    reported and answered with a short apology instead; a recital of ``own_words`` (the
    instructions, and what the agent says by script) is reported, stopped, and the user asked
    to say it again. Apologies are in ``language`` (the caller's, as last heard).
    """
    loop = asyncio.get_running_loop()
    pieces: aio.Chan[str] = aio.Chan()
    calls_filter, guard = ToolCallFilter(), RecitalGuard(own_words)

    def hand_over(text: str) -> None:  # called on the worker thread
        loop.call_soon_threadsafe(pieces.send_nowait, text)

    run = asyncio.ensure_future(start(hand_over))
    # the worker's last piece is queued before its result, so the channel closes after it
    run.add_done_callback(lambda _: pieces.close())
    recital: RecitedInstructions | None = None
    try:
        async for piece in pieces:
            say(guard.push(calls_filter.push(piece)))
    except RecitedInstructions as e:
        recital = e
    except asyncio.CancelledError:
        run.add_done_callback(_log_failure)  # nobody waits for it now
        raise
    finally:
        cancelled.set()
    result = await run
    try:
        tail, calls = _rest(calls_filter, guard, offered, recital)
    except RecitedInstructions as e:
        on_malformed(e)
        tail, calls = guard.then(apology("repeat", language)), []
    except ToolCallParseError as e:
        on_malformed(e)
        tail, calls = guard.then(apology("failed", language)), []
    say(tail)
    return result, calls


def _log_failure(run: asyncio.Future[Any]) -> None:
    if not run.cancelled() and (error := run.exception()) is not None:
        logger.warning("an abandoned reply's generation failed: %s", error)


def _rest(
    calls_filter: ToolCallFilter,
    guard: RecitalGuard,
    offered: Collection[str],
    recital: RecitedInstructions | None,
) -> tuple[str, list[ParsedToolCall]]:
    """What is left to say and the calls, once the reply is complete."""
    if recital is not None:
        raise recital
    tail, calls = calls_filter.finish()
    tail = guard.push(tail) + guard.finish()
    if made_up := [call.name for call in calls if call.name not in offered]:
        raise ToolCallParseError(f"the model called {made_up}, which it was not offered")
    return tail, calls

"""What of a model's text reaches the speaker, as it is generated: tool calls are held back, a
reply that recites the system prompt is cut short, and one that says an earlier reply again is
said otherwise.

Small models asked something they cannot place (half a sentence, noise heard as words) may
answer with their instructions, word for word: Qwen2.5-Coder-0.5B answered the call profile's
"So that comes back as..." with "No lists, no markdown, no emoji, no code. Always answer in
plain spoken words...", and once such a reply is in the history it gave it again on every later
turn. Banning the copied words while decoding only garbles them ("No lists, no Markdown, no
emoji."), so the recital is cut off once it is sure and the caller is asked to say it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

from livekit.agents import llm
from livekit.agents.utils import aio

from prompts import phrase

from .tool_calls import ParsedToolCall, ToolCallFilter, ToolCallParseError

RECITAL_WORDS = 6
"""Words in a row taken from the instructions that make a recital. The prompts' shorter runs
come up in honest answers ("the current time or date")."""
REPEAT_MIN_WORDS = 5
"""An earlier reply this long, said again from its start, is a loop; a short one ("You're
welcome!") may well come twice, unless it gives a number (see ``RepeatGuard``)."""
WORD = re.compile(r"\w+(?:['’]\w+)*")
NUMBER = re.compile(r"\d+")
T = TypeVar("T")
logger = logging.getLogger("voice_agent")


class RecitedInstructions(ValueError):
    """The reply recited the agent's own words: its prompt, or a line the profile scripts."""


class RepeatedReply(ValueError):
    """The reply began as an earlier one, word for word, to its end."""

    def __init__(self, earlier: str) -> None:
        super().__init__(f"the model said an earlier reply again: {earlier[:120]!r}")
        self.earlier = earlier


class RepeatGuard:
    """Holds a reply back while its words are the start of an earlier reply: once they are
    all of one (of ``REPEAT_MIN_WORDS`` or more), it is a repeat; once they are the start of
    none, the reply goes on unheld. Said from its start, nothing of a repeat is spoken.

    Numbers count as the same whatever they are: asked something it could not place, the
    0.5B model answered "It is 16:09 UTC, on Sunday 06 December 2026." in the clock's words
    a minute after the clock had said them, a time it made up. A short reply with a number
    counts too: the calculator's "That makes 391." came back as "That makes 16.66666667." to
    "What comes next: two, four, six, eight?", a sum in the tool's words that no tool did."""

    def __init__(self, earlier: Sequence[str]) -> None:
        self._earlier = {
            tuple(words): text
            for text in earlier
            if len(words := _shapes(_words(text))) >= REPEAT_MIN_WORDS or "#" in words
        }
        self._held = ""

    def push(self, text: str) -> str:
        """The text that can be spoken now; raises RepeatedReply."""
        if not self._earlier:
            return text
        self._held += text
        words = list(WORD.finditer(self._held))
        if words and words[-1].end() == len(self._held):  # it may go on in the next piece
            words.pop()
        self._check(_shapes([match.group().lower() for match in words]), ended=False)
        if self._earlier:
            return ""
        released, self._held = self._held, ""
        return released

    def finish(self) -> str:
        """The rest, once the reply is complete; raises RepeatedReply."""
        if self._earlier:
            self._check(_shapes(_words(self._held)), ended=True)
        rest, self._held = self._held, ""
        return rest

    def _check(self, found: list[str], *, ended: bool) -> None:
        """Keeps the earlier replies ``found`` is the start of; a repeat raises. A reply that
        ends within an earlier one, as long as ``REPEAT_MIN_WORDS``, said it again too."""
        n = len(found)
        self._earlier = {
            words: text for words, text in self._earlier.items() if words[:n] == tuple(found)
        }
        for words, text in self._earlier.items():
            if n >= len(words) or (ended and n >= REPEAT_MIN_WORDS):
                raise RepeatedReply(text)


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

    @property
    def spoken(self) -> bool:
        """Whether any of the reply has been let through."""
        return bool(self._last)

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


def _shapes(words: list[str]) -> list[str]:
    """The words with every number made one: "16", "09" and "2026" are all "#"."""
    return [NUMBER.sub("#", word) for word in words]


async def relay_reply(
    start: Callable[..., Awaitable[T]],
    say: Callable[[str], None],
    *,
    cancelled: threading.Event,
    offered: Collection[str],
    own_words: str,
    language: str,
    on_malformed: Callable[[ValueError], None],
    earlier: Sequence[str] = (),
) -> tuple[T, list[ParsedToolCall]]:
    """Runs a generation on its worker thread and hands its text to ``say`` as it comes,
    holding back tool calls; returns the generation's result and the calls.

    ``start`` is given the callback the worker calls with each piece of text. When the reply
    is abandoned, ``cancelled`` is set so decoding stops at its next step. What goes wrong is
    reported to ``on_malformed``. A reply that says one of the ``earlier`` replies again is
    generated once more by ``start(…, avoid=its text)``, which may not begin as it did:
    Qwen2.5-Coder-0.5B, once lost, answered every later turn with its first answer. A
    malformed call, or one to a tool not ``offered`` (small models make them up from the
    user's words), is answered with a short apology: generated again without its call's first
    token, the 0.5B model wrote the call as text (">{"name": …"), to be spoken. A recital of
    ``own_words`` (the instructions, and what the agent says by script) is stopped at once and
    the user asked to say it again. Apologies are in ``language`` (the caller's, as last
    heard).
    """
    relayed = functools.partial(
        _relay_once,
        say=say,
        cancelled=cancelled,
        offered=offered,
        own_words=own_words,
        language=language,
        on_malformed=on_malformed,
        earlier=earlier,
    )
    result, calls, avoid = await relayed(start, may_retry=True)
    if avoid:
        cancelled.clear()
        result, calls, _ = await relayed(functools.partial(start, avoid=avoid), may_retry=False)
    return result, calls


async def _relay_once(
    start: Callable[..., Awaitable[T]],
    *,
    may_retry: bool,
    say: Callable[[str], None],
    cancelled: threading.Event,
    offered: Collection[str],
    own_words: str,
    language: str,
    on_malformed: Callable[[ValueError], None],
    earlier: Sequence[str],
) -> tuple[T, list[ParsedToolCall], str]:
    """One generation relayed: its result, its calls, and, where it ``may_retry`` and
    nothing of it was spoken, the text a new generation must not begin as ("" if none)."""
    loop = asyncio.get_running_loop()
    pieces: aio.Chan[str] = aio.Chan()
    calls_filter, guard = ToolCallFilter(), RecitalGuard(own_words)
    repeats = RepeatGuard(earlier)

    def hand_over(text: str) -> None:  # called on the worker thread
        loop.call_soon_threadsafe(pieces.send_nowait, text)

    run = asyncio.ensure_future(start(hand_over))
    # the worker's last piece is queued before its result, so the channel closes after it
    run.add_done_callback(lambda _: pieces.close())
    stopped: ValueError | None = None
    try:
        async for piece in pieces:
            say(guard.push(repeats.push(calls_filter.push(piece))))
    except (RecitedInstructions, RepeatedReply) as e:
        stopped = e
    except asyncio.CancelledError:
        run.add_done_callback(_log_failure)  # nobody waits for it now
        raise
    finally:
        cancelled.set()
    result = await run
    try:
        tail, calls = _rest(calls_filter, repeats, guard, offered, stopped)
    except RepeatedReply as e:
        on_malformed(e)
        if may_retry and not guard.spoken:
            return result, [], calls_filter.text
        tail, calls = guard.then(phrase("repeat", language)), []
    except RecitedInstructions as e:
        on_malformed(e)
        tail, calls = guard.then(phrase("repeat", language)), []
    except ToolCallParseError as e:
        on_malformed(e)
        tail, calls = guard.then(phrase("failed", language)), []
    say(tail)
    return result, calls, ""


def replies(items: Sequence[llm.ChatItem]) -> list[str]:
    """What the agent has said in a conversation (the greeting too): a reply's ``earlier``."""
    return [
        item.text_content or ""
        for item in items
        if isinstance(item, llm.ChatMessage) and item.role == "assistant"
    ]


def _log_failure(run: asyncio.Future[Any]) -> None:
    if not run.cancelled() and (error := run.exception()) is not None:
        logger.warning("an abandoned reply's generation failed: %s", error)


def _rest(
    calls_filter: ToolCallFilter,
    repeats: RepeatGuard,
    guard: RecitalGuard,
    offered: Collection[str],
    stopped: ValueError | None,
) -> tuple[str, list[ParsedToolCall]]:
    """What is left to say and the calls, once the reply is complete."""
    if stopped is not None:
        raise stopped
    tail, calls = calls_filter.finish()
    tail = guard.push(repeats.push(tail) + repeats.finish()) + guard.finish()
    if made_up := [call.name for call in calls if call.name not in offered]:
        raise ToolCallParseError(f"the model called {made_up}, which it was not offered")
    return tail, calls

"""The context window: a conversation kept within the model's token budget.

Once the next request could pass ``trigger`` of the window (the reply's tokens counted in), the
oldest exchanges leave in one step until the conversation is down to ``target``; so the prefix a
KV cache was built on holds for many turns, and rebuilding it is paid for rarely. An exchange is
a user turn with everything that answered it (replies, tool calls and their results): a tool call
never leaves without its result, and what is kept starts at a user turn. Instructions (system
and developer messages) are never trimmed, nor are the tools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from livekit.agents import llm

logger = logging.getLogger("voice_agent")

Count = Callable[[Sequence[llm.ChatItem]], int]
"""Exact tokens of a request made of these items, instructions and tools included."""


@dataclass(frozen=True)
class ContextOptions:
    max_tokens: int = 0
    """The window; 0 = the model's own."""
    trigger: float = 0.8
    target: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.target < self.trigger <= 1:
            raise ValueError("the context needs 0 < target < trigger <= 1")


@dataclass(frozen=True)
class Trim:
    """What one trim did, in tokens and exchanges."""

    before: int
    after: int
    turns: int


class ContextWindow:
    """One conversation's window: remembers where the kept part starts."""

    def __init__(self, options: ContextOptions, window: int, reserve: int) -> None:
        self.window = window
        self.reserve = reserve
        """Tokens kept free for the reply."""
        self._trigger = options.trigger * window
        self._target = options.target * window
        self._first_kept: str | None = None

    def kept(self, items: Sequence[llm.ChatItem]) -> list[llm.ChatItem]:
        """``items`` without what earlier trims let go."""
        if self._first_kept is None:
            return list(items)
        start = next((i for i, item in enumerate(items) if item.id == self._first_kept), 0)
        return [item for item in items[:start] if _pinned(item)] + list(items[start:])

    def needs_trim(self, tokens: int) -> bool:
        return tokens + self.reserve > self._trigger

    def trim(self, items: Sequence[llm.ChatItem], count: Count) -> tuple[list[llm.ChatItem], Trim]:
        """Drop the fewest oldest exchanges that bring the request down to ``target``; the
        latest exchange always stays."""
        pinned = [item for item in items if _pinned(item)]
        exchanges = _exchanges([item for item in items if not _pinned(item)])
        before = count(items)

        def request(dropped: int) -> list[llm.ChatItem]:
            return pinned + [item for exchange in exchanges[dropped:] for item in exchange]

        low, high = 0, max(0, len(exchanges) - 1)  # the fewest drops that fit lie in [low, high]
        while low < high:
            middle = (low + high) // 2
            if count(request(middle)) + self.reserve <= self._target:
                high = middle
            else:
                low = middle + 1
        kept = request(low)
        if low < len(exchanges):
            self._first_kept = exchanges[low][0].id
        after = count(kept)
        if after + self.reserve > self.window:
            logger.warning(
                "the latest turn alone is %d tokens: over the %d-token window", after, self.window
            )
        return kept, Trim(before=before, after=after, turns=low)


def _pinned(item: llm.ChatItem) -> bool:
    return isinstance(item, llm.ChatMessage) and item.role in ("system", "developer")


def _exchanges(items: list[llm.ChatItem]) -> list[list[llm.ChatItem]]:
    """Groups that each start at a user message (the first may not, and goes first)."""
    groups: list[list[llm.ChatItem]] = []
    for item in items:
        if not groups or (isinstance(item, llm.ChatMessage) and item.role == "user"):
            groups.append([])
        groups[-1].append(item)
    return groups

"""The context window: a conversation kept within the model's token budget.

Once the next request could pass ``trigger`` of the window (the reply's tokens counted in), it is
cut in one step down to ``target``; so the prefix a KV cache was built on holds for many turns,
and rebuilding it is paid for rarely. What goes first, oldest first and never from the latest
user turn: images (each becomes a one-line note), then a turn's audio (it is read as its
transcript from then on), then whole exchanges. An exchange is a user turn with everything that
answered it: a tool call never leaves without its result, and what is kept starts at a user
turn. Instructions (system and developer messages) are never trimmed, nor are the tools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from livekit import rtc
from livekit.agents import llm

logger = logging.getLogger("voice_agent")

R = TypeVar("R")
MediaKind = Literal["image", "audio"]
DROP_ORDER: tuple[MediaKind, ...] = ("image", "audio")


@dataclass(frozen=True)
class Request:
    """What the model is asked to read: the kept items, and the user turns whose media (by
    kind) are read as text instead."""

    items: list[llm.ChatItem]
    as_text: Mapping[str, frozenset[MediaKind]] = field(default_factory=dict)


Count = Callable[[Request], int]
"""Exact tokens of a request, instructions and tools included."""
Droppable = Callable[[str], frozenset[MediaKind]]
"""The media a user turn carries that could be read as text (audio only once transcribed)."""


def no_media(_: str) -> frozenset[MediaKind]:
    return frozenset()


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
    """What one trim did: tokens before and after, and how many images, turns' audio and
    whole exchanges went."""

    before: int
    after: int
    images: int
    audio: int
    turns: int


@dataclass(frozen=True)
class _Step:
    """One cut, in the order cuts are made: a turn's media of one kind, or an exchange."""

    kind: MediaKind | Literal["exchange"]
    index: int
    """The exchange it belongs to."""
    item_id: str = ""


class ContextMeter(rtc.EventEmitter[Literal["context_trimmed", "turn_measured"]]):
    """How full one conversation's window is, for its event log. Engines measure a request
    wherever they render it, then ``report`` on the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.after_turn: dict[str, int] = {}
        """User turn id → the request that answered it, in tokens."""
        self.latest = 0
        """The conversation after the latest request: prompt and reply."""
        self._measured: str | None = None

    def requested(self, request: Request, tokens: int) -> None:
        turns = [item for item in request.items if _is_user(item)]
        self._measured = turns[-1].id if turns else None
        if self._measured is not None:
            self.after_turn.setdefault(self._measured, tokens)
        self.latest = tokens

    def report(self, trim: Trim | None) -> None:
        """Emit the turn the latest request measured, and the trim it made, if any."""
        if self._measured is not None:
            self.emit("turn_measured", self._measured)
        if trim is not None:
            self.emit("context_trimmed", trim)


def meter_of(model: object) -> ContextMeter | None:
    """The meter of an engine that keeps its conversation within a window."""
    meter = getattr(model, "meter", None)
    return meter if isinstance(meter, ContextMeter) else None


class ContextWindow:
    """One conversation's window: remembers where the kept part starts and which turns are
    read as text."""

    def __init__(self, options: ContextOptions, window: int, reserve: int) -> None:
        self.window = window
        self.reserve = reserve
        """Tokens kept free for the reply."""
        self._trigger = options.trigger * window
        self._target = options.target * window
        self._first_kept: str | None = None
        self._as_text: dict[str, frozenset[MediaKind]] = {}

    def kept(self, items: Sequence[llm.ChatItem]) -> Request:
        """``items`` without what earlier trims let go."""
        start = 0
        if self._first_kept is not None:
            start = next((i for i, item in enumerate(items) if item.id == self._first_kept), 0)
        kept = [item for item in items[:start] if _pinned(item)] + list(items[start:])
        return Request(kept, dict(self._as_text))

    def needs_trim(self, tokens: int) -> bool:
        return tokens + self.reserve > self._trigger

    def fit(
        self,
        items: Sequence[llm.ChatItem],
        render: Callable[[Request], R],
        size: Callable[[R], int],
        droppable: Droppable = no_media,
    ) -> tuple[Request, R, int, Trim | None]:
        """The request for ``items`` as the engine renders it, and its tokens, trimmed first
        when it would pass the trigger (and the trim, then)."""
        request = self.kept(items)
        rendered = render(request)
        if not self.needs_trim(tokens := size(rendered)):
            return request, rendered, tokens, None
        request, trim = self.trim(request, lambda some: size(render(some)), droppable, tokens)
        return request, render(request), trim.after, trim

    def trim(
        self,
        request: Request,
        count: Count,
        droppable: Droppable = no_media,
        before: int | None = None,
    ) -> tuple[Request, Trim]:
        """Make the fewest cuts, in order, that bring the request down to ``target``; each
        candidate is counted once (a remote engine's count is a round trip to its server)."""
        pinned = [item for item in request.items if _pinned(item)]
        exchanges = _exchanges([item for item in request.items if not _pinned(item)])
        steps = _steps(exchanges, request.as_text, droppable)
        if before is None:
            before = count(request)
        counted: dict[int, int] = {}

        def cut(made: int) -> Request:
            as_text = {k: set(v) for k, v in request.as_text.items()}
            dropped = 0
            for step in steps[:made]:
                if step.kind == "exchange":
                    dropped = step.index + 1
                else:
                    as_text.setdefault(step.item_id, set()).add(step.kind)
            items = pinned + [item for exchange in exchanges[dropped:] for item in exchange]
            ids = {item.id for item in items}
            return Request(items, {k: frozenset(v) for k, v in as_text.items() if k in ids})

        low, high = 0, len(steps)  # the fewest cuts that fit lie in [low, high]
        while low < high:
            middle = (low + high) // 2
            counted[middle] = count(cut(middle))
            if counted[middle] + self.reserve <= self._target:
                high = middle
            else:
                low = middle + 1
        kept = cut(low)
        self._as_text = dict(kept.as_text)
        conversational = [item for item in kept.items if not _pinned(item)]
        self._first_kept = conversational[0].id if conversational else None
        after = counted[low] if low in counted else count(kept)
        if after + self.reserve > self.window:
            logger.warning(
                "the latest turn alone is %d tokens: over the %d-token window", after, self.window
            )
        made = steps[:low]
        return kept, Trim(
            before=before,
            after=after,
            images=sum(step.kind == "image" for step in made),
            audio=sum(step.kind == "audio" for step in made),
            turns=sum(step.kind == "exchange" for step in made),
        )


def _steps(
    exchanges: list[list[llm.ChatItem]],
    as_text: Mapping[str, frozenset[MediaKind]],
    droppable: Droppable,
) -> list[_Step]:
    """Every cut that may be made, in order; the latest exchange is never cut."""
    older = exchanges[:-1]
    steps = [
        _Step(kind, index, item.id)
        for kind in DROP_ORDER
        for index, exchange in enumerate(older)
        for item in exchange
        if _is_user(item)
        and kind in droppable(item.id)
        and kind not in as_text.get(item.id, frozenset())
    ]
    return steps + [_Step("exchange", index) for index in range(len(older))]


def _pinned(item: llm.ChatItem) -> bool:
    return isinstance(item, llm.ChatMessage) and item.role in ("system", "developer")


def _is_user(item: llm.ChatItem) -> bool:
    return isinstance(item, llm.ChatMessage) and item.role == "user"


def _exchanges(items: list[llm.ChatItem]) -> list[list[llm.ChatItem]]:
    """Groups that each start at a user message (the first may not, and goes first)."""
    groups: list[list[llm.ChatItem]] = []
    for item in items:
        if not groups or _is_user(item):
            groups.append([])
        groups[-1].append(item)
    return groups

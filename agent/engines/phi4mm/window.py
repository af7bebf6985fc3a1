"""A Phi-4-multimodal conversation rendered within its context window.

Counting is exact: each part as the processor encodes it (audio and images by the processor's
own token counts), remembered by the engine. When the request would pass the trigger, the
shared policy (``agent.context``) cuts it: old images become a note, old turns' audio their
transcript, then the oldest exchanges go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livekit.agents import llm

from ...context import ContextMeter, ContextOptions, ContextWindow, MediaKind, Request, Trim
from .engine import Phi4MMBackend
from .parts import Media, PromptPart
from .prompt import render

MediaOf = Callable[[str], tuple[Media, ...]]


class PromptWindow:
    """One conversation's window over the shared engine (blocking: call it on the model's
    thread, since counting may run the processor)."""

    def __init__(
        self,
        engine: Phi4MMBackend,
        options: ContextOptions,
        size: Callable[[], int],
        meter: ContextMeter,
        max_clips: int | None = None,
    ) -> None:
        self._engine = engine
        self._options = options
        self._size = size
        """The window's tokens, read once the weights are loaded."""
        self._meter = meter
        self._max_clips = max_clips
        """The most audio clips a request may carry (a server's limit), or None."""
        self._window: ContextWindow | None = None

    def prepare(
        self,
        instructions: str,
        tools: list[dict[str, Any]],
        items: list[llm.ChatItem],
        media_of: MediaOf,
        transcribed: Callable[[str], bool],
    ) -> tuple[list[PromptPart], Trim | None]:
        """The request's parts, and the trim made first if there was one."""

        def parts_of(request: Request) -> list[PromptPart]:
            return render(instructions, tools, request.items, media_of, request.as_text)

        def count(parts: list[PromptPart]) -> int:
            return sum(self._engine.count_tokens(part) for part in parts)

        def droppable(item_id: str) -> frozenset[MediaKind]:
            """An image can always become a note; audio only once it has a transcript."""
            kinds = {m.kind for m in media_of(item_id)}
            return frozenset(kinds if transcribed(item_id) else kinds - {"audio"})

        if self._window is None:
            reserve = self._engine.max_new_tokens
            self._window = ContextWindow(self._options, self._size(), reserve)
        request, parts, tokens, trim = self._window.fit(items, parts_of, count, droppable)
        if (
            self._max_clips is not None
            and (heard := clipped(request, media_of, droppable, self._max_clips)) is not request
        ):
            request, parts = heard, parts_of(heard)
            tokens = count(parts)
        self._meter.requested(request, tokens)
        return parts, trim


def clipped(
    request: Request,
    media_of: MediaOf,
    droppable: Callable[[str], frozenset[MediaKind]],
    most: int,
) -> Request:
    """``request`` with no more than ``most`` audio clips heard: older turns' audio is read as
    its transcript (where it has one; a turn still waiting for its own is heard regardless)."""
    as_text = {key: set(kinds) for key, kinds in request.as_text.items()}
    heard = 0
    for item in reversed(request.items):
        if "audio" in as_text.get(item.id, ()):
            continue
        clips = sum(1 for media in media_of(item.id) if media.audio is not None)
        if not clips:
            continue
        if heard + clips > most and "audio" in droppable(item.id):
            as_text.setdefault(item.id, set()).add("audio")
        else:
            heard += clips
    if all(set(request.as_text.get(key, ())) == kinds for key, kinds in as_text.items()):
        return request
    return Request(request.items, {key: frozenset(kinds) for key, kinds in as_text.items()})

"""A conversation's cache and what it was filled for; which of a request's tokens it already
holds, and the prefill passes that compute the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

from transformers import DynamicCache

from ...generation import common_prefix
from .parts import Encoded

PASS_TOKENS = 1024
"""Most text tokens prefilled in one pass."""


@dataclass
class Conversation:
    cache: DynamicCache
    long_rope: bool
    parts: list[Encoded] = field(default_factory=list)
    """The request the cache was last filled for, part by part."""
    reply: list[int] = field(default_factory=list)
    """What was generated after it."""

    def cached_key(self, first: int, offset: int) -> list[object]:
        """The cache's token keys from part ``first`` (token ``offset``) on."""
        key = list(chain.from_iterable(part.key for part in self.parts[first:])) + self.reply
        return key[: self.cache.get_seq_length() - offset]


def shared_prefix(conversation: Conversation, encoded: list[Encoded]) -> int:
    """Tokens the conversation's cache shares with the request. The encoder hands back the
    same object for an unchanged part, so those are passed by identity; from the first other
    part on, the keys are compared: whole parts at once (in C), then token by token."""
    length = conversation.cache.get_seq_length()
    offset = first = 0
    for old, new in zip(conversation.parts, encoded, strict=False):
        if old is not new or offset + len(new.key) > length:
            break
        offset, first = offset + len(new.key), first + 1
    cached, shared = conversation.cached_key(first, offset), 0
    for part in encoded[first:]:
        end = shared + len(part.key)
        if cached[shared:end] != part.key:
            return offset + shared + common_prefix(cached[shared:end], part.key)
        shared = end
    return offset + shared


def ids_from(encoded: list[Encoded], start: int) -> list[int]:
    """The request's token ids from ``start`` on."""
    offset = 0
    for index, part in enumerate(encoded):
        if offset + len(part.ids) > start:
            rest = (later.ids for later in encoded[index + 1 :])
            return list(chain(part.ids[start - offset :], *rest))
        offset += len(part.ids)
    return []


def passes(encoded: list[Encoded], reuse: int, stop: int) -> list[tuple[int, int, int | None]]:
    """Prefill passes as (begin, end, the part whose media go in). A pass holds one part with
    media at most, so two parts' clips are never encoded together, and a new part starts a
    pass once ``PASS_TOKENS`` are reached, which bounds its mask (tokens x history); text
    alone is cut there too. ``reuse`` never falls inside a part with media."""
    passes: list[tuple[int, int, int | None]] = []
    begin, offset, media = reuse, 0, None
    for index, part in enumerate(encoded):
        start, offset = offset, offset + len(part.ids)
        end = min(offset, stop)
        if begin >= end:
            continue
        second_media = part.has_media and media is not None
        if begin < start and (second_media or end - begin > PASS_TOKENS):
            passes.append((begin, start, media))
            begin, media = start, None
        if part.has_media:
            media = index
        while media is None and end - begin > PASS_TOKENS:
            passes.append((begin, begin + PASS_TOKENS, None))
            begin += PASS_TOKENS
    if begin < stop:
        passes.append((begin, stop, media))
    return passes


def part_boundary(encoded: list[Encoded], reuse: int) -> int:
    """Cut reuse back to the start of a media-bearing part it ends inside."""
    offset = 0
    for part in encoded:
        if offset < reuse < offset + len(part.ids) and part.has_media:
            return offset
        offset += len(part.ids)
    return reuse

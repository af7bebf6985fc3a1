"""Prompt parts as the processor reads them: token ids for counting and cache keys, and the
processed audio and images for prefilling, each remembered so a part is processed once."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from ...context import MediaKind
from .checkpoint import LoadedModel

T = TypeVar("T")
PLACEHOLDER = re.compile(r"<\|(audio|image)_\d+\|>")
PART_MEMO_SIZE = 16384
"""Parts' token ids remembered: a few hours of conversation, a few MB."""
MEDIA_MEMO_SIZE = 64
"""Parts' processed media remembered (MBs each for images): only recent parts get prefilled."""


@dataclass(frozen=True, eq=False)
class Media:
    """One audio clip (16 kHz int16) or one image, named so the cache can recognise it."""

    key: str
    audio: np.ndarray | None = None
    image: Image.Image | None = None

    @property
    def kind(self) -> MediaKind:
        return "image" if self.image is not None else "audio"


@dataclass(frozen=True)
class PromptPart:
    """Prompt text in the model card's format and the media its placeholders refer to."""

    text: str
    media: tuple[Media, ...] = ()


@dataclass
class Encoded:
    ids: list[int]
    key: list[object]
    """``ids`` with each media token replaced by (media key, index): what the cache is keyed on."""
    has_media: bool


class PartEncoder:
    """The processor with a memory; safe to call from any thread."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._parts: OrderedDict[tuple[object, ...], Encoded] = OrderedDict()
        self._media: OrderedDict[tuple[object, ...], dict[str, torch.Tensor]] = OrderedDict()
        self._memo = threading.Lock()
        """Sessions count their turns' tokens from the event loop while the worker encodes."""

    def forget(self, part: PromptPart) -> None:
        with self._memo:
            self._parts.pop(part_id(part), None)
            self._media.pop(part_id(part), None)

    def encode(self, part: PromptPart) -> Encoded:
        with self._memo:
            found = _recall(self._parts, part_id(part))
        return found or self._process(part)[0]

    def media_inputs(self, part: PromptPart) -> dict[str, torch.Tensor]:
        with self._memo:
            found = _recall(self._media, part_id(part))
        return found if found is not None else self._process(part)[1]

    def _process(self, part: PromptPart) -> tuple[Encoded, dict[str, torch.Tensor]]:
        """Run the processor on a part; both what it makes are remembered."""
        processor = self.loaded.processor
        text = PLACEHOLDER.sub(
            lambda m: processor.audio_token if m.group(1) == "audio" else processor.image_token,
            part.text,
        )
        audios = [m.audio.astype(np.float32) / 32768.0 for m in part.media if m.audio is not None]
        images = [m.image for m in part.media if m.image is not None]
        inputs = processor(
            text=text,
            audio=audios or None,
            images=images or None,
            sampling_rate=16000 if audios else None,
            return_tensors="pt",
        )
        ids = inputs["input_ids"][0].tolist()
        media = {
            name: value.to(self.loaded.device)
            for name, value in inputs.items()
            if name.startswith(("audio_", "image_")) and isinstance(value, torch.Tensor)
        }
        for name in ("audio_input_features", "image_pixel_values"):
            if name in media:
                media[name] = media[name].to(self.loaded.dtype)
        encoded = Encoded(
            ids=ids,
            key=_media_key(ids, part, {processor.audio_token_id, processor.image_token_id}),
            has_media=bool(part.media),
        )
        with self._memo:
            # a part met again for its media keeps its first encoding: the engine tells an
            # unchanged part by identity
            known = _recall(self._parts, part_id(part))
            if known is None:
                _remember(self._parts, part_id(part), encoded, PART_MEMO_SIZE)
            if part.media:
                _remember(self._media, part_id(part), media, MEDIA_MEMO_SIZE)
        return known or encoded, media


def _recall(memo: OrderedDict[tuple[object, ...], T], part_id: tuple[object, ...]) -> T | None:
    if (found := memo.get(part_id)) is not None:
        memo.move_to_end(part_id)
    return found


def _remember(
    memo: OrderedDict[tuple[object, ...], T], part_id: tuple[object, ...], value: T, size: int
) -> None:
    memo[part_id] = value
    if len(memo) > size:
        memo.popitem(last=False)


def part_id(part: PromptPart) -> tuple[object, ...]:
    return (part.text, *(m.key for m in part.media))


def _media_key(ids: list[int], part: PromptPart, media_ids: set[int]) -> list[object]:
    """Media tokens carry their part's media keys: equal ids from other clips must not match."""
    keys = tuple(m.key for m in part.media)
    return [(keys, i) if token in media_ids else token for i, token in enumerate(ids)]

"""Phi-4-multimodal inference: prompts with audio and images in, text streamed out.

One worker thread owns the model. A conversation's KV cache is kept per adapter, so a turn only
prefills what is new. The prompt is prefilled part by part (a part is one turn with its own
audio and images), so a clip is always encoded alone and its keys and values are the same
whether it was cached or not. LongRoPE picks its frequencies from the longest position in each
forward pass; once a conversation may pass 4,096 tokens it is recomputed once with the long
factors forced for every pass, since keys cached with the short ones would silently be wrong.
"""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache

from ...generation import GenerationStats, common_prefix, streaming_kwargs
from .checkpoint import (
    DEFAULT_MODEL,
    DEFAULT_REVISION,
    LoadedModel,
    load_checkpoint,
    resolve_checkpoint,
)

Adapter = Literal["speech", "vision"] | None
ASR_PROMPT = "Transcribe the audio clip into text."
PLACEHOLDER = re.compile(r"<\|(audio|image)_\d+\|>")
PART_MEMO_SIZE = 64


@dataclass(frozen=True)
class Phi4MMOptions:
    model: str = DEFAULT_MODEL
    """Hub id (looked up in the local cache) or checkpoint folder."""
    revision: str = DEFAULT_REVISION
    device: str = "auto"
    attention: str = "auto"
    max_new_tokens: int = 128
    temperature: float = 0.0


@dataclass(frozen=True, eq=False)
class Media:
    """One audio clip (16 kHz int16) or one image, named so the cache can recognise it."""

    key: str
    audio: np.ndarray | None = None
    image: Image.Image | None = None


@dataclass(frozen=True)
class PromptPart:
    """Prompt text in the model card's format and the media its placeholders refer to."""

    text: str
    media: tuple[Media, ...] = ()


@dataclass
class _Encoded:
    ids: list[int]
    key: list[object]
    """``ids`` with each media token replaced by (media key, index): what the cache is keyed on."""
    media_inputs: dict[str, torch.Tensor]


@dataclass
class _Conversation:
    cache: DynamicCache
    key: list[object]
    long_rope: bool


class Phi4MMEngine:
    def __init__(self, options: Phi4MMOptions | None = None) -> None:
        self.options = options or Phi4MMOptions()
        self._loaded: LoadedModel | None = None
        self._conversations: dict[tuple[str, Adapter], _Conversation] = {}
        self._parts: OrderedDict[tuple[object, ...], _Encoded] = OrderedDict()
        self._memo = threading.Lock()
        """Sessions count their turns' tokens from the event loop while the worker encodes."""

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self.load()
        assert self._loaded is not None
        return self._loaded

    def load(self) -> None:
        if self._loaded is None:
            folder = resolve_checkpoint(self.options.model, self.options.revision)
            self._loaded = load_checkpoint(
                folder, device=self.options.device, attention=self.options.attention
            )

    @property
    def original_context(self) -> int:
        config = self.loaded.model.config
        return int(config.rope_parameters["original_max_position_embeddings"])

    def forget(self, thread: str) -> None:
        """Free a finished conversation's caches."""
        for slot in [slot for slot in self._conversations if slot[0] == thread]:
            del self._conversations[slot]

    def count_tokens(self, part: PromptPart) -> int:
        return len(self._encode(part).ids)

    def generate(
        self,
        parts: Sequence[PromptPart],
        adapter: Adapter,
        *,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        max_new_tokens: int | None = None,
        thread: str = "chat",
    ) -> GenerationStats:
        """Blocking; streams text to ``on_text`` and stops at the next step once cancelled.

        ``thread`` names the conversation whose cache is reused: side requests such as ASR
        keep their own, so they never evict the chat's.
        """
        encoded = [self._encode(p) for p in parts]
        ids = [i for e in encoded for i in e.ids]
        key = [k for e in encoded for k in e.key]
        max_new = max_new_tokens or self.options.max_new_tokens
        long_rope = len(ids) + max_new > self.original_context
        slot = (thread, adapter)
        conversation = self._conversations.get(slot)
        reuse = 0
        if conversation is not None and conversation.long_rope == long_rope:
            reuse = min(common_prefix(conversation.key, key), len(ids) - 1)
        else:
            conversation = _Conversation(
                DynamicCache(config=self.loaded.model.config), [], long_rope
            )
            self._conversations[slot] = conversation
        reuse = _part_boundary(encoded, reuse)
        cache = conversation.cache
        cache.crop(reuse - cache.get_seq_length())
        self._activate(adapter)
        try:
            with torch.inference_mode(), self._rope(long_rope):
                self._prefill(encoded, cache, start=reuse, stop=len(ids) - 1)
                output = self._run_generate(ids, cache, max_new, on_text, cancelled)
        except BaseException:
            del self._conversations[slot]
            raise
        sequence = output[0].tolist()
        conversation.key = (key + sequence[len(ids) :])[: cache.get_seq_length()]
        return GenerationStats(
            prompt_tokens=len(ids), cached_tokens=reuse, generated_tokens=len(sequence) - len(ids)
        )

    def transcribe(self, clips: Sequence[np.ndarray], *, max_new_tokens: int = 0) -> str:
        """The model's own ASR of ``clips``, outside the conversation (its cache is untouched)."""
        placeholders = "".join(f"<|audio_{i + 1}|>" for i in range(len(clips)))
        part = PromptPart(
            f"<|user|>{placeholders}{ASR_PROMPT}<|end|><|assistant|>",
            tuple(Media(key=f"asr-{uuid.uuid4().hex}", audio=clip) for clip in clips),
        )
        seconds = sum(len(c) for c in clips) / 16000
        pieces: list[str] = []
        try:
            self.generate(
                [part],
                "speech",
                on_text=pieces.append,
                cancelled=threading.Event(),
                max_new_tokens=max_new_tokens or int(16 + 6 * seconds),
                thread="asr",
            )
        finally:
            self._parts.pop(_part_id(part), None)
        return "".join(pieces).strip()

    def _encode(self, part: PromptPart) -> _Encoded:
        part_id = _part_id(part)
        with self._memo:
            if (found := self._parts.get(part_id)) is not None:
                self._parts.move_to_end(part_id)
                return found
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
        encoded = _Encoded(
            ids=ids,
            key=_media_key(ids, part, {processor.audio_token_id, processor.image_token_id}),
            media_inputs={
                name: value.to(self.loaded.device)
                for name, value in inputs.items()
                if name.startswith(("audio_", "image_")) and isinstance(value, torch.Tensor)
            },
        )
        for name in ("audio_input_features", "image_pixel_values"):
            if name in encoded.media_inputs:
                encoded.media_inputs[name] = encoded.media_inputs[name].to(self.loaded.dtype)
        with self._memo:
            self._parts[part_id] = encoded
            if len(self._parts) > PART_MEMO_SIZE:
                self._parts.popitem(last=False)
        return encoded

    def _prefill(
        self, encoded: list[_Encoded], cache: DynamicCache, *, start: int, stop: int
    ) -> None:
        model, offset = self.loaded.model, 0
        for part in encoded:
            begin, end = max(start, offset), min(stop, offset + len(part.ids))
            if begin < end:
                ids = torch.tensor(
                    [part.ids[begin - offset : end - offset]], device=self.loaded.device
                )
                media = part.media_inputs if begin == offset else {}
                model(
                    input_ids=ids,
                    attention_mask=torch.ones((1, end), dtype=torch.long, device=ids.device),
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                    **media,
                )
            offset += len(part.ids)

    def _run_generate(
        self,
        ids: list[int],
        cache: DynamicCache,
        max_new_tokens: int,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
    ) -> torch.Tensor:
        loaded = self.loaded
        input_ids = torch.tensor([ids], device=loaded.device)
        generation_config = loaded.model.generation_config
        result: torch.Tensor = loaded.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            past_key_values=cache,
            max_new_tokens=max_new_tokens,
            eos_token_id=generation_config.eos_token_id,
            pad_token_id=generation_config.pad_token_id,
            **streaming_kwargs(
                loaded.processor.tokenizer,
                on_text,
                cancelled,
                temperature=self.options.temperature,
            ),
        )
        return result

    def _activate(self, adapter: Adapter) -> None:
        model = self.loaded.model
        if adapter is None:
            model.disable_adapters()
        else:
            model.enable_adapters()
            model.set_adapter(adapter)

    @contextlib.contextmanager
    def _rope(self, long_rope: bool) -> Iterator[None]:
        """Force LongRoPE's long factors for every pass, however short the pass is.

        transformers picks per pass: the long set when the pass reaches past 4,096, else the
        short one. For the duration, the short set is the long one.
        """
        if not long_rope:
            yield
            return
        rotary = self.loaded.model.model.rotary_emb
        if getattr(rotary, "long_inv_freq", None) is None:  # computed on the first long pass
            position = torch.tensor([[self.original_context]], device=self.loaded.device)
            rotary(torch.zeros(1, device=self.loaded.device, dtype=self.loaded.dtype), position)
        short = rotary.original_inv_freq
        rotary.original_inv_freq = rotary.long_inv_freq
        try:
            yield
        finally:
            rotary.original_inv_freq = short


def _part_id(part: PromptPart) -> tuple[object, ...]:
    return (part.text, *(m.key for m in part.media))


def _media_key(ids: list[int], part: PromptPart, media_ids: set[int]) -> list[object]:
    """Media tokens carry their part's media keys: equal ids from other clips must not match."""
    keys = tuple(m.key for m in part.media)
    return [(keys, i) if token in media_ids else token for i, token in enumerate(ids)]


def _part_boundary(encoded: list[_Encoded], reuse: int) -> int:
    """Cut reuse back to the start of a media-bearing part it ends inside."""
    offset = 0
    for part in encoded:
        if offset < reuse < offset + len(part.ids) and part.media_inputs:
            return offset
        offset += len(part.ids)
    return reuse

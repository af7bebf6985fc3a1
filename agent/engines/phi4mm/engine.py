"""Phi-4-multimodal inference: prompts with audio and images in, text streamed out.

One worker thread owns the model. A conversation's KV cache is kept per adapter, so a turn only
prefills what is new. A prefill pass never holds two parts' media (a part is one turn with its
own audio and images), so a clip is always encoded alone and its keys and values are the same
whether it was cached or not; the text around it shares its pass, since every pass scans the
whole history once. LongRoPE picks its frequencies from the longest position in each
forward pass; once a conversation may pass 4,096 tokens it is recomputed once with the long
factors forced for every pass, since keys cached with the short ones would silently be wrong.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch

from ...generation import GenerationStats, streaming_kwargs
from .checkpoint import (
    DEFAULT_MODEL,
    DEFAULT_REVISION,
    LoadedModel,
    load_checkpoint,
    resolve_checkpoint,
)
from .kv_cache import conversation_cache
from .parts import Encoded, Media, PartEncoder, PromptPart
from .reuse import Conversation, ids_from, part_boundary, passes, shared_prefix

Adapter = Literal["speech", "vision"] | None
ASR_PROMPT = "Transcribe the audio clip into text."


@dataclass(frozen=True)
class Phi4MMOptions:
    model: str = DEFAULT_MODEL
    """Hub id (looked up in the local cache) or checkpoint folder."""
    revision: str = DEFAULT_REVISION
    device: str = "auto"
    attention: str = "auto"
    max_new_tokens: int = 128
    temperature: float = 0.0
    kv_cache_gib: float = 32.0
    """All conversations' KV caches together; the least recently used go first beyond it."""


@dataclass
class _Request:
    parts: Sequence[PromptPart]
    encoded: list[Encoded]
    length: int
    slot: tuple[str, Adapter]
    conversation: Conversation
    reuse: int
    """Prompt tokens whose keys and values come from the cache."""
    new_ids: list[int]
    """The prompt's ids from ``reuse`` on."""


class Phi4MMBackend(Protocol):
    """What a conversation needs of the model, wherever it runs: here (``Phi4MMEngine``) or
    on a server (the remote engine's audio mode). Blocking: called on the model's threads."""

    provider: str

    @property
    def name(self) -> str: ...

    @property
    def max_new_tokens(self) -> int: ...

    @property
    def context_window(self) -> int: ...

    @property
    def max_audio_clips(self) -> int | None:
        """The most clips a request may carry (None: as many as the window holds)."""
        ...

    def locate(self) -> None: ...

    def load(self) -> None: ...

    def forget(self, thread: str) -> None: ...

    def count_tokens(self, part: PromptPart) -> int: ...

    def image_tokens(self, part: PromptPart) -> int: ...

    def generate(
        self,
        parts: Sequence[PromptPart],
        adapter: Adapter,
        *,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        max_new_tokens: int | None = None,
        thread: str = "chat",
        avoid: str = "",
    ) -> GenerationStats: ...

    def transcribe(self, clips: Sequence[np.ndarray], *, max_new_tokens: int = 0) -> str: ...

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows of the model."""
        ...


class Phi4MMEngine:
    provider = "transformers"

    def __init__(self, options: Phi4MMOptions | None = None) -> None:
        self.options = options or Phi4MMOptions()
        self._loaded: LoadedModel | None = None
        self._encoder: PartEncoder | None = None
        self._conversations: OrderedDict[tuple[str, Adapter], Conversation] = OrderedDict()
        """Least recently used first."""
        self._adapter: Adapter = None
        """The adapter the model runs with: the engine alone switches it (loading leaves both
        off), since switching walks every layer of the model."""

    @property
    def name(self) -> str:
        return self.options.model

    @property
    def max_new_tokens(self) -> int:
        return self.options.max_new_tokens

    @property
    def max_audio_clips(self) -> int | None:
        return None

    def locate(self) -> None:
        """Fail now, naming what is missing, if the weights are not on this machine."""
        resolve_checkpoint(self.options.model, self.options.revision)

    def status(self) -> dict[str, Any]:
        return {}

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
            self._encoder = PartEncoder(self._loaded)

    @property
    def encoder(self) -> PartEncoder:
        self.load()
        assert self._encoder is not None
        return self._encoder

    @property
    def context_window(self) -> int:
        return int(self.loaded.model.config.max_position_embeddings)

    @property
    def original_context(self) -> int:
        config = self.loaded.model.config
        return int(config.rope_parameters["original_max_position_embeddings"])

    def forget(self, thread: str) -> None:
        """Free a finished conversation's caches."""
        for slot in [slot for slot in self._conversations if slot[0] == thread]:
            del self._conversations[slot]

    def count_tokens(self, part: PromptPart) -> int:
        """The part's tokens as the model reads them (its media as the processor counts)."""
        return len(self.encoder.encode(part).ids)

    def image_tokens(self, part: PromptPart) -> int:
        """What the part's image costs, as the processor counted it when it encoded the part."""
        return self.encoder.encode(part).ids.count(self.loaded.processor.image_token_id)

    @property
    def kv_bytes_per_token(self) -> int:
        config = self.loaded.model.config
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        layers, heads = config.num_hidden_layers, config.num_key_value_heads
        return 2 * layers * heads * head_dim * self.loaded.dtype.itemsize

    def cached_tokens(self) -> dict[tuple[str, Adapter], int]:
        """Each conversation's cache, by (thread, adapter), least recently used first."""
        return {slot: c.cache.get_seq_length() for slot, c in self._conversations.items()}

    def generate(
        self,
        parts: Sequence[PromptPart],
        adapter: Adapter,
        *,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        max_new_tokens: int | None = None,
        thread: str = "chat",
        avoid: str = "",
    ) -> GenerationStats:
        """Blocking; streams text to ``on_text`` and stops at the next step once cancelled.

        ``thread`` names the conversation whose cache is reused: side requests such as ASR
        keep their own, so they never evict the chat's.
        """
        max_new = max_new_tokens or self.options.max_new_tokens
        request = self._open(parts, adapter, thread, max_new)
        conversation = request.conversation
        with self._closing_on_error(request):
            self._prefill(request, stop=request.length - 1)
            with torch.inference_mode(), self._rope(conversation.long_rope):
                output = self._run_generate(request, max_new, on_text, cancelled, avoid)
        conversation.parts, conversation.reply = request.encoded, output[0, 1:].tolist()
        self._keep_within_budget()
        return GenerationStats(
            prompt_tokens=request.length,
            cached_tokens=request.reuse,
            generated_tokens=len(conversation.reply),
        )

    def next_token_logits(
        self, parts: Sequence[PromptPart], adapter: Adapter, *, thread: str = "chat"
    ) -> tuple[torch.Tensor, GenerationStats]:
        """What the model would say next, read through the same cache ``generate`` keeps: how
        the tests and the benchmark check a reused cache against a fresh one."""
        request = self._open(parts, adapter, thread, self.options.max_new_tokens)
        with self._closing_on_error(request):
            logits = self._prefill(request, stop=request.length)
        request.conversation.parts, request.conversation.reply = request.encoded, []
        self._keep_within_budget()
        assert logits is not None
        stats = GenerationStats(request.length, cached_tokens=request.reuse, generated_tokens=0)
        return logits[0, -1].float(), stats

    def _open(
        self, parts: Sequence[PromptPart], adapter: Adapter, thread: str, max_new: int
    ) -> _Request:
        """Encode the request and take its conversation's cache back to what it shares with
        the request (never the whole request: its last token is run again)."""
        encoded = [self.encoder.encode(p) for p in parts]
        length = sum(len(e.ids) for e in encoded)
        long_rope = length + max_new > self.original_context
        slot = (thread, adapter)
        conversation = self._conversations.get(slot)
        reuse = 0
        if conversation is not None and conversation.long_rope == long_rope:
            reuse = min(shared_prefix(conversation, encoded), length - 1)
        else:
            conversation = Conversation(conversation_cache(self.loaded.model.config), long_rope)
            self._conversations[slot] = conversation
        self._conversations.move_to_end(slot)
        reuse = part_boundary(encoded, reuse)
        conversation.cache.crop(reuse - conversation.cache.get_seq_length())
        self._activate(adapter)
        new_ids = ids_from(encoded, reuse)
        return _Request(parts, encoded, length, slot, conversation, reuse, new_ids)

    @contextlib.contextmanager
    def _closing_on_error(self, request: _Request) -> Iterator[None]:
        """A request that fails half way leaves a cache nobody can trust: it goes."""
        try:
            yield
        except BaseException:
            self._conversations.pop(request.slot, None)
            raise

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
            self.encoder.forget(part)
        return "".join(pieces).strip()

    def _keep_within_budget(self) -> None:
        """Drop the least recently used caches (never the one just used) beyond the budget: a
        conversation that comes back to a dropped one, or to another adapter's, prefills it
        again."""
        budget = self.options.kv_cache_gib * 2**30 / self.kv_bytes_per_token
        while len(self._conversations) > 1 and sum(self.cached_tokens().values()) > budget:
            self._conversations.popitem(last=False)

    def _prefill(self, request: _Request, *, stop: int) -> torch.Tensor | None:
        """Run the request from its reuse point to ``stop`` in few passes (each one scans the
        whole history); the last pass's logits come back."""
        model, logits = self.loaded.model, None
        cache = request.conversation.cache
        with torch.inference_mode(), self._rope(request.conversation.long_rope):
            for begin, end, with_media in passes(request.encoded, request.reuse, stop):
                new = request.new_ids[begin - request.reuse : end - request.reuse]
                ids = torch.tensor([new], device=self.loaded.device)
                media = (
                    {}
                    if with_media is None
                    else self.encoder.media_inputs(request.parts[with_media])
                )
                logits = model(
                    input_ids=ids,
                    attention_mask=self._pass_mask(begin, end),
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                    **media,
                ).logits
        return logits

    def _pass_mask(self, begin: int, end: int) -> torch.Tensor:
        """The mask of a pass over tokens ``begin`` to ``end``: the whole history, then causal.
        For SDPA and eager attention it is made here, once, in the model's dtype: from
        transformers' boolean mask, PyTorch's CPU SDPA makes this float one again at every
        layer, which took half a pass's attention time at 100K tokens."""
        device, dtype = self.loaded.device, self.loaded.dtype
        if self.loaded.attention not in ("sdpa", "eager"):
            return torch.ones((1, end), dtype=torch.long, device=device)
        mask = torch.zeros((1, 1, end - begin, end), dtype=dtype, device=device)
        later = torch.ones((end - begin, end - begin), dtype=torch.bool, device=device).triu(1)
        mask[0, 0, :, begin:].masked_fill_(later, torch.finfo(dtype).min)
        return mask

    def _run_generate(
        self,
        request: _Request,
        max_new_tokens: int,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        avoid: str,
    ) -> torch.Tensor:
        """Decode after the prefilled prompt; returns the prompt's last token and the reply's,
        which may not begin with ``avoid``'s first token. ``generate`` is given that last token
        alone (with its position, and a mask the length of the prompt): handed the whole
        prompt, it would copy history-long ids and positions for every token it adds."""
        loaded, length = self.loaded, request.length
        generation_config = loaded.model.generation_config
        tokenizer = loaded.processor.tokenizer
        banned = tokenizer.encode(avoid, add_special_tokens=False)[:1] if avoid else None
        result: torch.Tensor = loaded.model.generate(
            input_ids=torch.tensor([request.new_ids[-1:]], device=loaded.device),
            position_ids=torch.tensor([[length - 1]], device=loaded.device),
            attention_mask=torch.ones((1, length), dtype=torch.long, device=loaded.device),
            past_key_values=request.conversation.cache,
            max_new_tokens=max_new_tokens,
            eos_token_id=generation_config.eos_token_id,
            pad_token_id=generation_config.pad_token_id,
            begin_suppress_tokens=banned,
            **streaming_kwargs(
                tokenizer,
                on_text,
                cancelled,
                temperature=self.options.temperature,
            ),
        )
        return result

    def _activate(self, adapter: Adapter) -> None:
        model = self.loaded.model
        if adapter == self._adapter:
            return
        self._adapter = adapter
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

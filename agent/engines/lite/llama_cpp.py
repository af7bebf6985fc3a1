"""The lite engine's language model on llama.cpp: the GGUF weights as they are, 5–6× faster
than PyTorch's fp32 on this CPU.

llama.cpp holds one KV cache; a request that shares a prefix with the previous one (the same
conversation's next turn) only evaluates what differs. When two conversations take turns,
the second re-evaluates its own history after the shared system prompt.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt
import torch
from llama_cpp._utils import suppress_stdout_stderr
from transformers import AutoTokenizer

from ...generation import GenerationStats, common_prefix, text_streamer
from ...models import ModelNotFoundError, kept
from .causal_lm import LocalLMRuntime, PrefixCache, derived_from

logger = logging.getLogger("voice_agent")

FAST_QUANTISATION = "Q8_0"
"""What a small model's GGUF is requantised to once: llama.cpp fills a prompt about twice as
fast from Q8_0 as from SmolLM2's Q4_1, for the same answers (requantising cannot add back what
the shipped quantisation lost). For Qwen2.5-Coder-0.5B it hardly matters (first clause 0.24 s
from Q8_0, 0.25 s from its Q4_K_M; bench/llm.py --ladder), so it keeps the Q8_0 it has always
run as."""
REQUANTISED_BELOW_PARAMS = 1_000_000_000
"""Larger models run as shipped: Qwen2.5-Coder-1.5B's first clause takes 0.50 s from its
Q4_K_M against 0.77 s from Q8_0, decoding 28 against 15 tokens a second (bench/llm.py
--ladder): its Q8_0 weights (1.9 GB) are read slower than the Q4_K_M's are computed."""


class LlamaCppRuntime(LocalLMRuntime):
    provider = "llama.cpp"

    def __init__(self, source: str, *, gguf_file: str = "", context_tokens: int = 0) -> None:
        super().__init__(source, gguf_file=gguf_file)
        self._context_tokens = context_tokens
        """0 = the model's own window; less saves KV memory."""
        self._llama: Any = None
        self._lock = threading.Lock()

    def locate(self) -> None:
        super().locate()
        if self.gguf() is None:
            raise ModelNotFoundError(
                f"{self._source}: llama.cpp runs GGUF weights; name the file with "
                'lite.llm_gguf_file, or set lite.llm_runtime = "transformers"'
            )

    @property
    def context_window(self) -> int:
        """The model's own window (its cache is made only as large as the profile asks)."""
        self.load()
        return int(llama_cpp.llama_model_n_ctx_train(self._llama.model))

    def load(self) -> None:
        with self._lock:
            if self._llama is not None:
                return
            self.locate()
            gguf = self.gguf()
            assert gguf is not None
            try:
                self._tokenizer = _tokenizer(gguf)
                self._llama = llama_cpp.Llama(
                    model_path=str(fastest_weights(gguf)),
                    n_ctx=self._context_tokens,
                    n_threads=os.cpu_count(),
                    n_threads_batch=os.cpu_count(),
                    verbose=False,
                )
            except (OSError, ValueError) as e:
                raise ModelNotFoundError(f"cannot load {gguf} with llama.cpp: {e}") from None

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
        """``cache`` is not used: llama.cpp keeps the last request's keys and values itself."""
        self.load()
        llama = self._llama
        reused = common_prefix(llama.input_ids[: llama.n_tokens], prompt_ids)
        streamer = text_streamer(self._tokenizer, on_text)
        streamer.put(torch.tensor(prompt_ids))
        ends = {llama.token_eos(), self._tokenizer.eos_token_id}
        generated = 0
        # the first token comes once the prompt is in the cache: a request cancelled before it
        # starts (the warm-up) still leaves its prompt there
        banned = _banned_at(len(prompt_ids), banned_first) if banned_first else None
        for token in llama.generate(
            prompt_ids,
            temp=temperature,
            repeat_penalty=repetition_penalty,
            reset=True,
            logits_processor=banned,
        ):
            if cancelled.is_set() or token in ends:
                break
            generated += 1
            streamer.put(torch.tensor([token]))
            if generated >= max_new_tokens:
                break
        return GenerationStats(
            prompt_tokens=len(prompt_ids), cached_tokens=reused, generated_tokens=generated
        )


def _banned_at(position: int, tokens: Sequence[int]) -> llama_cpp.LogitsProcessorList:
    """``tokens`` made impossible as the token at ``position`` (the reply's first)."""

    def ban(input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> Any:
        if len(input_ids) == position:
            scores[list(tokens)] = -np.inf
        return scores

    return llama_cpp.LogitsProcessorList([ban])


def _tokenizer(gguf: Path) -> Any:
    """The GGUF's own tokenizer and chat template, read by Hugging Face (~5 s) and kept."""
    folder = derived_from(gguf, "tokenizer")
    if not (folder / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        kept(folder, tokenizer.save_pretrained)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _header(gguf: Path) -> tuple[int, int]:
    """The GGUF's parameter count and quantisation, read with its vocabulary only."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with suppress_stdout_stderr(disable=False):  # its tokenizer's warnings, printed as it loads
        model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
    if not model:
        raise OSError(f"llama.cpp cannot read {gguf.name}")
    try:
        value = ctypes.create_string_buffer(16)
        llama_cpp.llama_model_meta_val_str(model, b"general.file_type", value, len(value))
        return int(llama_cpp.llama_model_n_params(model)), int(value.value or -1)
    finally:
        llama_cpp.llama_model_free(model)


def fastest_weights(gguf: Path) -> Path:
    """The weights llama.cpp runs fastest: a small model's requantised to Q8_0 once (under a
    second for SmolLM2) and kept, a larger one's as they are."""
    library_log = logging.getLogger("llama-cpp-python")  # llama.cpp's own, every tensor
    if library_log.level == logging.NOTSET:
        library_log.setLevel(logging.ERROR)
    parameters, file_type = _header(gguf)
    if parameters >= REQUANTISED_BELOW_PARAMS or file_type == llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0:
        return gguf
    return requantised(gguf)


def requantised(gguf: Path) -> Path:
    """``gguf`` as Q8_0, made once and kept (the original where llama.cpp cannot)."""
    target = derived_from(gguf, f"{FAST_QUANTISATION.lower()}.gguf")
    if target.is_file():
        return target
    logger.info("requantising %s to %s (first run only)…", gguf.name, FAST_QUANTISATION)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1

    def write(staging: Path) -> None:
        if llama_cpp.llama_model_quantize(
            str(gguf).encode(), str(staging).encode(), ctypes.byref(params)
        ):
            raise OSError(f"llama.cpp could not requantise {gguf.name}")

    try:
        return kept(target, write)
    except OSError:
        return gguf  # not worth failing over: the original runs too, only slower

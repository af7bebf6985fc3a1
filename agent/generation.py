"""Pieces every local engine uses to stream a transformers ``generate`` call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    cached_tokens: int
    """Prompt tokens whose keys and values came from the previous request."""
    generated_tokens: int


class _CallbackStreamer(TextStreamer):
    """HF's streamer, delivering each token's text to a callback as soon as it decodes.

    HF holds text back to whole words; here only an unfinished multi-byte character waits, so
    the TTS's sentence splitter (and the tool-call filter) see every token as it comes.
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def put(self, value: torch.Tensor) -> None:
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.reshape(-1).tolist())
        text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        if not text.endswith("\ufffd"):
            self.on_finalized_text(text[self.print_len :])
            self.print_len = len(text)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._on_text(text)


def text_streamer(tokenizer: Any, on_text: Callable[[str], None]) -> TextStreamer:
    """Give it the prompt's ids first, then each new token: ``on_text`` gets the new text."""
    return _CallbackStreamer(tokenizer, on_text)


class _StopWhenSet(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> Any:
        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool)


def streaming_kwargs(
    tokenizer: Any,
    on_text: Callable[[str], None],
    cancelled: threading.Event,
    *,
    temperature: float,
) -> dict[str, Any]:
    """``generate`` arguments that stream text out and stop at the next step once cancelled."""
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    return {
        "streamer": text_streamer(tokenizer, on_text),
        "stopping_criteria": StoppingCriteriaList([_StopWhenSet(cancelled)]),
        **sampling,
    }


def common_prefix(a: Sequence[object], b: Sequence[object]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

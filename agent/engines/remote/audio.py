"""Phi-4-multimodal on vLLM as the Phi-4-MM engine's model: each conversation is rendered,
windowed, trimmed and transcribed exactly as for the model in this process (its turns' clips,
its frames, the adapter a request's media pick), and sent as chat messages with the media as
content parts, the adapter's LoRA name as the model.

vLLM serves the card's remote-code layout, whose chat template writes each message as
``<|role|>content<|end|>`` and puts a message's media placeholders before its text; a part of
the card's format is therefore one message, its placeholders taken out and its media sent as
``image_url`` and ``input_audio`` parts, images first. The tools stay in the system turn in the
card's own ``<|tool|>`` block and calls are parsed here (vLLM's tool parsers do not fit the
model), as in process.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from ...generation import GenerationStats
from ..phi4mm.engine import ASR_PROMPT, Adapter
from ..phi4mm.parts import PLACEHOLDER, Media, PromptPart
from .chat import RETRY_TEMPERATURE, Route, streamed_reply, warm
from .replicas import Replicas
from .tokens import BYTES_PER_TOKEN, TOKENS_PER_MESSAGE

ROLE = re.compile(r"^<\|(system|user|assistant|tool)\|>(.*?)(?:<\|end\|>)?$", re.DOTALL)
AUDIO_TOKENS_PER_S = 12.5
"""The audio encoder's rate: one token per 80 ms."""
CROP = 448
IMAGE_TOKENS_PER_CROP = 273
"""Dynamic HD: a global view and one view per 448-pixel crop, 256 + 16 tokens each plus a
separator. Counting every crop of the grid that covers the picture counts more than the
processor does (448×448: 546 against 545; 640×480: 1,365 against 1,065), never fewer."""


@dataclass(frozen=True)
class RemotePhi4MMOptions:
    model: str
    """The base model's name on the server: requests without media."""
    adapters: dict[str, str]
    """The adapter a request's media pick → the LoRA module's name on the server."""
    context_window: int = 131072
    max_audio_clips: int = 32
    """The server's ``--limit-mm-per-prompt`` for audio: older turns are read as transcripts."""
    max_new_tokens: int = 128
    temperature: float = 0.0


class RemotePhi4MM:
    """``Phi4MMBackend`` over the replicas. Its blocking calls run on the realtime model's
    worker threads and wait for the event loop, which does the asking."""

    provider = "openai-compatible"

    def __init__(
        self,
        options: RemotePhi4MMOptions,
        replicas: Replicas,
        loop: asyncio.AbstractEventLoop,
        language: str = "en",
    ) -> None:
        self.options = options
        self._replicas = replicas
        self._loop = loop
        self._routes: dict[str, Route] = {}
        """Each conversation's replica, by the realtime model's thread name."""
        self._language = language
        """What an apology is said in when no replica answers (the profile's voice)."""

    @property
    def name(self) -> str:
        return self.options.model

    @property
    def max_new_tokens(self) -> int:
        return self.options.max_new_tokens

    @property
    def context_window(self) -> int:
        return self.options.context_window

    @property
    def max_audio_clips(self) -> int | None:
        return self.options.max_audio_clips

    def locate(self) -> None:
        """Nothing to find on this machine."""

    def load(self) -> None:
        """The weights are the servers'."""

    def status(self) -> dict[str, Any]:
        return {"replicas": self._replicas.status()}

    def forget(self, thread: str) -> None:
        self._routes.pop(thread, None)

    def count_tokens(self, part: PromptPart) -> int:
        text = PLACEHOLDER.sub("", part.text)
        tokens = math.ceil(len(text.encode()) / BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE
        for media in part.media:
            if media.audio is not None:
                tokens += math.ceil(len(media.audio) / 16000 * AUDIO_TOKENS_PER_S)
        return tokens + self.image_tokens(part)

    def image_tokens(self, part: PromptPart) -> int:
        tokens = 0
        for media in part.media:
            if media.image is not None:
                width, height = media.image.size
                crops = math.ceil(width / CROP) * math.ceil(height / CROP)
                tokens += IMAGE_TOKENS_PER_CROP * (1 + crops)
        return tokens

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
        body = self.request(parts, adapter, max_new_tokens, avoid)
        route = self._routes.setdefault(thread, Route())
        tokens = sum(self.count_tokens(part) for part in parts)
        reply = streamed_reply(
            self._replicas, route, body, on_text, cancelled, self._language, tokens
        )
        stats, _ = asyncio.run_coroutine_threadsafe(reply, self._loop).result()
        return stats  # no tools are sent apart, so the calls are in the text

    def transcribe(self, clips: Sequence[np.ndarray], *, max_new_tokens: int = 0) -> str:
        """The model's own ASR of ``clips`` through the speech adapter, outside any
        conversation's route."""
        media = tuple(Media(key=f"asr-{i}", audio=clip) for i, clip in enumerate(clips))
        placeholders = "".join(f"<|audio_{i + 1}|>" for i in range(len(clips)))
        part = PromptPart(f"<|user|>{placeholders}{ASR_PROMPT}<|end|>", media)
        seconds = sum(len(c) for c in clips) / 16000
        pieces: list[str] = []
        self.generate(
            [part, PromptPart("<|assistant|>")],
            "speech",
            on_text=pieces.append,
            cancelled=threading.Event(),
            max_new_tokens=max_new_tokens or int(16 + 6 * seconds),
            thread="asr",
        )
        return "".join(pieces).strip()

    def request(
        self, parts: Sequence[PromptPart], adapter: Adapter, max_new_tokens: int | None, avoid: str
    ) -> dict[str, Any]:
        """The chat-completions body for ``parts`` (the card's format, one part a message)."""
        return {
            "model": self.options.adapters.get(adapter or "", self.options.model),
            "messages": [message for part in parts if (message := _message(part))],
            "max_tokens": max_new_tokens or self.options.max_new_tokens,
            "temperature": RETRY_TEMPERATURE if avoid else self.options.temperature,
        }

    async def warm(self, parts: Sequence[PromptPart]) -> None:
        await warm(self._replicas, self.request(parts, None, None, ""))


def _message(part: PromptPart) -> dict[str, Any] | None:
    """``part`` as a chat message (None for the assistant's cue that ends a request)."""
    matched = ROLE.match(part.text)
    if matched is None:
        raise ValueError(f"not a part of the card's format: {part.text[:60]!r}")
    role, text = matched.groups()
    if role == "assistant" and not text and not part.text.endswith("<|end|>"):
        return None
    text = PLACEHOLDER.sub("", text)
    if not part.media:
        return {"role": role, "content": text}
    images = [_image_part(m) for m in part.media if m.image is not None]
    clips = [_audio_part(m) for m in part.media if m.audio is not None]
    words = [{"type": "text", "text": text}] if text else []
    return {"role": role, "content": [*images, *clips, *words]}


def _audio_part(media: Media) -> dict[str, Any]:
    wav = io.BytesIO()
    sf.write(wav, np.asarray(media.audio, dtype=np.int16), 16000, format="WAV", subtype="PCM_16")
    data = base64.b64encode(wav.getvalue()).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def _image_part(media: Media) -> dict[str, Any]:
    assert media.image is not None
    jpeg = io.BytesIO()
    media.image.convert("RGB").save(jpeg, format="JPEG", quality=90)
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": url}}

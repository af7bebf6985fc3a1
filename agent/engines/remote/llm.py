"""A model on OpenAI-compatible servers as the lite engine's text pipeline's model.

The request is the conversation as the lite engine renders it (fitted to the window, template
answers in words) sent as chat messages with the tools; the reply streams back through the same
relay (calls held back, recitals and repeats caught). A server that parses calls itself (vLLM
with a tool parser) sends them apart; one that does not (llama.cpp's) sends them as text, which
the relay parses. Requests go through the ``openai`` client LiveKit's OpenAI plugin wraps: the
plugin formats the chat context itself, and these requests are rendered already.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from livekit.agents import llm

from ...generation import GenerationStats
from ...tool_calls import ParsedToolCall
from ..lite import prompt
from ..lite.answering import AnsweringLLM, AnswerOptions
from ..lite.intents import LocalIntents
from .chat import RETRY_TEMPERATURE, Route, streamed_reply, warm
from .replicas import Replica, Replicas
from .tokens import Counter


@dataclass
class RemoteRequest:
    messages: list[dict]
    tools: list[dict]
    tokens: int = 0
    """As last counted: what the reply's usage says when the server sends none."""


@dataclass(frozen=True)
class RemoteLLMOptions(AnswerOptions):
    model: str = ""
    context_window: int = 4096
    """The server's own."""


class RemoteLLM(AnsweringLLM[RemoteRequest]):
    def __init__(
        self,
        options: RemoteLLMOptions,
        replicas: Replicas,
        counter: Counter,
        *,
        intents: LocalIntents | None = None,
    ) -> None:
        super().__init__(options, intents)
        self._opts = options
        self._replicas = replicas
        self._counter = counter
        self._route = Route()

    @property
    def model(self) -> str:
        return self._opts.model

    @property
    def provider(self) -> str:
        return "openai-compatible"

    @property
    def own_context_window(self) -> int:
        return self._opts.context_window

    @property
    def replica(self) -> Replica | None:
        """The replica this conversation talks to, once it has asked one."""
        return self._route.replica

    @property
    def replicas(self) -> Replicas:
        return self._replicas

    @property
    def intents(self) -> LocalIntents | None:
        return self._intents

    async def shutdown(self) -> None:
        await self._replicas.aclose()

    def status(self) -> dict[str, Any]:
        return {"replicas": self._replicas.status()}

    def fork(self) -> RemoteLLM:
        return RemoteLLM(self._opts, self._replicas, self._counter, intents=self._intents)

    def render(self, messages: list[dict], schemas: list[dict]) -> RemoteRequest:
        return RemoteRequest(messages, schemas)

    def count(self, prepared: RemoteRequest) -> int:
        prepared.tokens = self._counter(prepared.messages, prepared.tools)
        return prepared.tokens

    async def warm(self, instructions: str, tools: Sequence[llm.Tool | llm.Toolset]) -> None:
        """Have every replica read the system turn now: a server's prefix cache then holds
        it, and the first turn does not wait for it (llama.cpp's server on two cores reads
        the desktop prompt in 16 s, and the caller speaks again before the answer)."""
        system = await asyncio.to_thread(
            self.render_prompt, prompt.system_turn(instructions), tools
        )
        await warm(self._replicas, self._body(system, avoid=""))

    async def generate(
        self,
        prepared: RemoteRequest,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        avoid: str = "",
    ) -> tuple[GenerationStats, list[ParsedToolCall]]:
        body = self._body(prepared, avoid)
        return await streamed_reply(
            self._replicas, self._route, body, on_text, cancelled, self.language, prepared.tokens
        )

    def _body(self, prepared: RemoteRequest, avoid: str) -> dict[str, Any]:
        return {
            "model": self._opts.model,
            "messages": prepared.messages,
            "tools": prepared.tools or openai.omit,
            "max_tokens": self._opts.max_new_tokens,
            "temperature": RETRY_TEMPERATURE if avoid else self._opts.temperature,
        }

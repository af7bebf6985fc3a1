"""A local causal LM as a LiveKit ``llm.LLM`` plugin (the lite engine's brain), run by llama.cpp
(GGUF weights) or by transformers.

Prompts are rendered by the model's own chat template; generation streams token by token from
the model's one worker thread. Each session has its own plugin (``fork``) over the shared
weights. A request only prefills what differs from the cache's previous one: transformers keeps
a KV cache per conversation, llama.cpp one for all (so when conversations take turns, each
re-reads its own history after the shared system prompt)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from livekit.agents import llm

from ...generation import GenerationStats
from ...tool_calls import ParsedToolCall
from . import prompt
from .answering import AnsweringLLM, AnswerOptions
from .causal_lm import LocalLMRuntime, PrefixCache, TransformersRuntime
from .intents import LocalIntents
from .llama_cpp import LlamaCppRuntime


@dataclass(frozen=True)
class LocalLLMOptions(AnswerOptions):
    model: str = ""
    """HF model id (from the local cache) or folder; "" = the bundled SmolLM2-135M GGUF."""
    gguf_file: str = ""
    runtime: Literal["llama.cpp", "transformers"] = "llama.cpp"
    repetition_penalty: float = 1.0
    device: str = "cpu"


class LocalLLM(AnsweringLLM[list[int]]):
    def __init__(
        self,
        options: LocalLLMOptions | None = None,
        *,
        runtime: LocalLMRuntime | None = None,
        intents: LocalIntents | None = None,
    ) -> None:
        self._opts = options or LocalLLMOptions()
        super().__init__(self._opts, intents)
        self._runtime = runtime or _runtime(self._opts)
        self._cache = PrefixCache()

    @property
    def model(self) -> str:
        return self._runtime.name

    @property
    def provider(self) -> str:
        return self._runtime.provider

    @property
    def options(self) -> LocalLLMOptions:
        return self._opts

    @property
    def runtime(self) -> LocalLMRuntime:
        return self._runtime

    @property
    def own_context_window(self) -> int:
        return self._runtime.context_window

    def locate(self) -> None:
        self._runtime.locate()

    def load(self) -> None:
        """Load the weights now (blocking), so the first turn is not the one that waits."""
        self._runtime.load()

    async def shutdown(self) -> None:
        self._runtime.worker.shutdown(wait=False, cancel_futures=True)

    def fork(self) -> LocalLLM:
        """A plugin for another conversation: the same weights and worker, a copy of this
        one's cache (the warmed system prompt), nothing else shared."""
        twin = LocalLLM(self._opts, runtime=self._runtime, intents=self._intents)
        twin._cache = self._cache.copy()
        return twin

    async def warm(self, instructions: str, tools: Sequence[llm.Tool | llm.Toolset]) -> None:
        """Prefill the system turn now, so the first user turn only pays for its own tokens."""
        prompt_ids = await asyncio.to_thread(
            self.render_prompt, prompt.system_turn(instructions), tools
        )
        stop = threading.Event()
        stop.set()
        await self.generate(prompt_ids, lambda _: None, stop)

    def render(self, messages: list[dict], schemas: list[dict]) -> list[int]:
        """Token ids of the conversation, rendered by the model's own chat template."""
        self._runtime.load()
        if self._runtime.template_supports_tools:
            return self._runtime.render(prompt.calls_as_objects(messages), tools=schemas or None)
        return self._runtime.render(prompt.inline_tools(messages, schemas))

    def count(self, prepared: list[int]) -> int:
        return len(prepared)

    async def generate(
        self,
        prepared: list[int],
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        avoid: str = "",
    ) -> tuple[GenerationStats, list[ParsedToolCall]]:
        """The reply to the prompt's ids, streamed to ``on_text``; it may not start as
        ``avoid`` does. Its calls are in its text."""
        banned = self._runtime.first_tokens(avoid) if avoid else []
        stats = await asyncio.get_running_loop().run_in_executor(
            self._runtime.worker,
            lambda: self._runtime.generate(
                prepared,
                self._cache,
                on_text=on_text,
                cancelled=cancelled,
                max_new_tokens=self._opts.max_new_tokens,
                temperature=self._opts.temperature,
                repetition_penalty=self._opts.repetition_penalty,
                banned_first=banned,
            ),
        )
        return stats, []


def _runtime(options: LocalLLMOptions) -> LocalLMRuntime:
    if options.runtime == "llama.cpp":
        return LlamaCppRuntime(
            options.model, gguf_file=options.gguf_file, context_tokens=options.context.max_tokens
        )
    return TransformersRuntime(options.model, gguf_file=options.gguf_file, device=options.device)

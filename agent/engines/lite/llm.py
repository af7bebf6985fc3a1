"""A local causal LM as a LiveKit ``llm.LLM`` plugin (the lite engine's brain), run by llama.cpp
(GGUF weights) or by transformers.

Prompts are rendered by the model's own chat template; generation streams token by token from
the model's one worker thread. Each session has its own plugin (``fork``) over the shared
weights. A request only prefills what differs from the cache's previous one: transformers keeps
a KV cache per conversation, llama.cpp one for all (so when conversations take turns, each
re-reads its own history after the shared system prompt)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from ...context import ContextMeter, ContextOptions, ContextWindow, Request, Trim
from ...generation import GenerationStats
from ...relay import relay_reply, replies
from ...tool_calls import INTENT_CALL_PREFIX, ParsedToolCall
from . import prompt
from .causal_lm import LocalLMRuntime, PrefixCache, TransformersRuntime
from .intents import IntentMatch, LocalIntents, last_result
from .llama_cpp import LlamaCppRuntime


@dataclass(frozen=True)
class LocalLLMOptions:
    model: str = ""
    """HF model id (from the local cache) or folder; "" = the bundled SmolLM2-135M GGUF."""
    gguf_file: str = ""
    runtime: Literal["llama.cpp", "transformers"] = "llama.cpp"
    max_new_tokens: int = 96
    temperature: float = 0.0
    """0 decodes greedily."""
    repetition_penalty: float = 1.0
    tool_answers: Literal["tool", "model"] = "model"
    """"tool": after tool calls, their outputs are the reply, without asking the model."""
    tool_reminder: str = ""
    """Added to each user turn that follows a reply, when tools are offered ("" = none)."""
    device: str = "cpu"
    context: ContextOptions = field(default_factory=ContextOptions)
    scripted: tuple[str, ...] = ()
    """What the agent says by script (the greeting): a reply may not recite it."""
    language: str = "en"
    """The apologies' language until the caller is heard in one."""
    answer_in_language: bool = False
    """Each of the caller's turns ends with a request, in the language it was heard in, to
    answer in it: for a profile that hears several languages."""


class LocalLLM(llm.LLM):
    def __init__(
        self,
        options: LocalLLMOptions | None = None,
        *,
        runtime: LocalLMRuntime | None = None,
        intents: LocalIntents | None = None,
    ) -> None:
        super().__init__()
        self._opts = options or LocalLLMOptions()
        self._runtime = runtime or _runtime(self._opts)
        self._intents = intents
        """Templates matched before the model (None: every request goes to the model)."""
        self._cache = PrefixCache()
        self._window: ContextWindow | None = None
        self.meter = ContextMeter()
        self.language = self._opts.language
        """The caller's, as the recognizer last heard it: what an apology is said in."""
        self._heard_in: dict[str, str] = {}
        """Each user turn's language (by message id), as it was heard."""

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

    def locate(self) -> None:
        self._runtime.locate()

    def hear(self, language: str) -> None:
        self.language = language

    def load(self) -> None:
        """Load the weights now (blocking), so the first turn is not the one that waits."""
        self._runtime.load()

    def fork(self) -> LocalLLM:
        """A plugin for another conversation: the same weights and worker, a copy of this
        one's cache (the warmed system prompt), nothing else shared."""
        twin = LocalLLM(self._opts, runtime=self._runtime, intents=self._intents)
        twin._cache = self._cache.copy()
        return twin

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> LocalLLMStream:
        return LocalLLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    @property
    def own_context_window(self) -> int:
        return self._runtime.context_window

    @property
    def context_window(self) -> int:
        """The tokens a conversation may use: the model's own, or less if the options say."""
        return self._opts.context.max_tokens or self.own_context_window

    async def match_intent(
        self, chat_ctx: llm.ChatContext, tools: Sequence[llm.Tool | llm.Toolset]
    ) -> IntentMatch | None:
        """What a sentence template makes of the user's latest turn, if the request ends
        with one and the profile matches templates."""
        last = chat_ctx.items[-1] if chat_ctx.items else None
        if self._intents is None or not isinstance(last, llm.ChatMessage) or last.role != "user":
            return None
        offered = llm.ToolContext(list(tools)).function_tools.keys()
        text, language = last.text_content or "", self._heard_in.get(last.id, self.language)
        previous = last_result(chat_ctx.items)
        return await asyncio.to_thread(self._intents.match, text, language, offered, previous)

    def note_language(self, chat_ctx: llm.ChatContext) -> None:
        """The language the request's latest user turn was heard in, kept for as long as the
        conversation (its prompt renders the same each time)."""
        last = next((i for i in reversed(chat_ctx.items) if isinstance(i, llm.ChatMessage)), None)
        if last is not None and last.role == "user":
            self._heard_in.setdefault(last.id, self.language)

    def prepare(
        self, chat_ctx: llm.ChatContext, tools: Sequence[llm.Tool | llm.Toolset]
    ) -> tuple[list[int], Trim | None]:
        """The request's token ids, with the conversation trimmed to its window first when
        the request would pass the trigger (blocking: it renders)."""
        if self._window is None:
            window = self.context_window
            self._window = ContextWindow(self._opts.context, window, self._opts.max_new_tokens)

        def render(request: Request) -> list[int]:
            return self.render_prompt(llm.ChatContext(request.items), tools)

        request, ids, tokens, trim = self._window.fit(chat_ctx.items, render, len)
        self.meter.requested(request, tokens)
        return ids, trim

    def prompt_tokens(self, instructions: str, tools: Sequence[llm.Tool | llm.Toolset]) -> int:
        """The system turn's size, tools included, as the model reads it."""
        return len(self.render_prompt(prompt.system_turn(instructions), tools))

    async def warm(self, instructions: str, tools: Sequence[llm.Tool | llm.Toolset]) -> None:
        """Prefill the system turn now, so the first user turn only pays for its own tokens."""
        prompt_ids = await asyncio.to_thread(
            self.render_prompt, prompt.system_turn(instructions), tools
        )
        stop = threading.Event()
        stop.set()
        await self.generate(prompt_ids, lambda _: None, stop)

    def render_prompt(
        self, chat_ctx: llm.ChatContext, tools: Sequence[llm.Tool | llm.Toolset]
    ) -> list[int]:
        """Token ids of the conversation, rendered by the model's own chat template."""
        self._runtime.load()
        chat_ctx = prompt.intents_in_words(chat_ctx)
        if self._opts.answer_in_language:
            chat_ctx = prompt.answer_in_language(chat_ctx, self._heard_in)
        messages, _ = chat_ctx.to_provider_format("openai", inject_dummy_user_message=False)
        schemas = prompt.untitled(
            llm.ToolContext(tools).parse_function_tools("openai", strict=False)
        )
        if schemas and self._opts.tool_reminder:
            messages = prompt.reminded(messages, self._opts.tool_reminder)
        if self._runtime.template_supports_tools:
            return self._runtime.render(prompt.calls_as_objects(messages), tools=schemas or None)
        return self._runtime.render(prompt.inline_tools(messages, schemas))

    async def generate(
        self, prompt_ids: list[int], on_text: Any, cancelled: threading.Event, avoid: str = ""
    ) -> GenerationStats:
        """The reply to ``prompt_ids``, streamed to ``on_text``; it may not start as ``avoid``
        does."""
        banned = self._runtime.first_tokens(avoid) if avoid else []
        return await asyncio.get_running_loop().run_in_executor(
            self._runtime.worker,
            lambda: self._runtime.generate(
                prompt_ids,
                self._cache,
                on_text=on_text,
                cancelled=cancelled,
                max_new_tokens=self._opts.max_new_tokens,
                temperature=self._opts.temperature,
                repetition_penalty=self._opts.repetition_penalty,
                banned_first=banned,
            ),
        )


def _runtime(options: LocalLLMOptions) -> LocalLMRuntime:
    if options.runtime == "llama.cpp":
        return LlamaCppRuntime(
            options.model, gguf_file=options.gguf_file, context_tokens=options.context.max_tokens
        )
    return TransformersRuntime(options.model, gguf_file=options.gguf_file, device=options.device)


def _tool_outputs(chat_ctx: llm.ChatContext) -> list[str]:
    """The outputs of the calls the model has just made, if they are what the request ends
    with; an error is said as an apology."""
    outputs: list[str] = []
    for item in reversed(chat_ctx.items):
        if isinstance(item, llm.FunctionCall):
            continue
        if not isinstance(item, llm.FunctionCallOutput):
            break
        apologized = not item.is_error or item.output.startswith("Sorry")  # tools/guard.py's do
        outputs.insert(0, item.output if apologized else f"Sorry, {item.output}")
    return outputs


def _offered_arguments(name: str, arguments: str, tools: Sequence[llm.Tool]) -> str:
    """The call's arguments less any the tool does not take: small models copy schema words
    (``type``, ``required``) into their calls, and the tool would refuse them all."""
    schemas = llm.ToolContext(list(tools)).parse_function_tools("openai", strict=False)
    taken = next(
        (s["function"]["parameters"] for s in schemas if s["function"]["name"] == name), None
    )
    given = json.loads(arguments)
    if taken is None or not isinstance(given, dict):
        return arguments
    return json.dumps({k: v for k, v in given.items() if k in taken.get("properties", {})})


class LocalLLMStream(llm.LLMStream):
    def __init__(
        self,
        llm_: LocalLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(llm_, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._engine = llm_

    async def _run(self) -> None:
        request_id = uuid.uuid4().hex
        self._engine.note_language(self._chat_ctx)
        if self._engine.options.tool_answers == "tool" and (
            outputs := _tool_outputs(self._chat_ctx)
        ):
            self._send(request_id, " ".join(outputs))
            return
        if (matched := await self._engine.match_intent(self._chat_ctx, self._tools)) is not None:
            self._send(request_id, matched.answer)
            self._call(request_id, matched.calls, prefix=INTENT_CALL_PREFIX)
            return
        cancelled = threading.Event()  # set when the session closes the stream
        prompt_ids, trim = await asyncio.to_thread(
            self._engine.prepare, self._chat_ctx, self._tools
        )
        self._engine.meter.report(trim)
        stats, calls = await relay_reply(
            lambda on_text, avoid="": self._engine.generate(prompt_ids, on_text, cancelled, avoid),
            lambda text: self._send(request_id, text),
            cancelled=cancelled,
            offered=llm.ToolContext(self._tools).function_tools.keys(),
            own_words="\n".join(
                [prompt.instructions_of(self._chat_ctx), *self._engine.options.scripted]
            ),
            language=self._engine.language,
            on_malformed=lambda e: self._emit_error(e, recoverable=True),
            earlier=replies(self._chat_ctx.items),
        )
        self._engine.meter.latest = stats.prompt_tokens + stats.generated_tokens
        self._call(request_id, calls)
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=stats.generated_tokens,
                    prompt_tokens=stats.prompt_tokens,
                    prompt_cached_tokens=stats.cached_tokens,
                    total_tokens=stats.prompt_tokens + stats.generated_tokens,
                ),
            )
        )

    def _call(self, request_id: str, calls: Sequence[ParsedToolCall], *, prefix: str = "") -> None:
        """Hand ``calls`` to the session, which runs them; ``prefix`` marks who made them."""
        if not calls:
            return
        tool_calls = [
            llm.FunctionToolCall(
                name=c.name,
                arguments=_offered_arguments(c.name, c.arguments, self._tools),
                call_id=prefix + uuid.uuid4().hex[:12],
            )
            for c in calls
        ]
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id, delta=llm.ChoiceDelta(role="assistant", tool_calls=tool_calls)
            )
        )

    def _send(self, request_id: str, text: str) -> None:
        if text:
            self._event_ch.send_nowait(
                llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=text))
            )

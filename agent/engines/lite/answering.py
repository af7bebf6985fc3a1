"""What every engine that answers in text does around its model, wherever the model runs: a
tool's own words said as they are, sentence templates tried first, the conversation fitted to
its window, and the model's reply relayed (its calls held back, a recital or a repeat caught).

The lite engine's model runs in this process (``llm.LocalLLM``); the remote engine's on an
OpenAI-compatible server. Each says how a request is rendered and counted and how its reply is
generated; the rest is this one piece.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from ...context import ContextMeter, ContextOptions, ContextWindow, Request, Trim
from ...generation import GenerationStats
from ...relay import relay_reply, replies
from ...tool_calls import INTENT_CALL_PREFIX, ParsedToolCall
from . import prompt
from .intents import IntentMatch, LocalIntents, last_result

Prepared = TypeVar("Prepared")
"""A request as the model is sent it: token ids for a local model, messages for a server."""


@dataclass(frozen=True)
class AnswerOptions:
    max_new_tokens: int = 96
    temperature: float = 0.0
    """0 decodes greedily."""
    tool_answers: Literal["tool", "model"] = "model"
    """"tool": after tool calls, their outputs are the reply, without asking the model."""
    tool_reminder: str = ""
    """Added to each user turn that follows a reply, when tools are offered ("" = none)."""
    context: ContextOptions = field(default_factory=ContextOptions)
    scripted: tuple[str, ...] = ()
    """What the agent says by script (the greeting): a reply may not recite it."""
    language: str = "en"
    """The apologies' language until the caller is heard in one."""
    answer_in_language: bool = False
    """Each of the caller's turns ends with a request, in the language it was heard in, to
    answer in it: for a profile that hears several languages."""


class AnsweringLLM(llm.LLM, ABC, Generic[Prepared]):
    """A LiveKit ``llm.LLM`` for one conversation over a model every conversation shares."""

    def __init__(self, options: AnswerOptions, intents: LocalIntents | None) -> None:
        super().__init__()
        self._answer_opts = options
        self._intents = intents
        """Templates matched before the model (None: every request goes to the model)."""
        self._window: ContextWindow | None = None
        self.meter = ContextMeter()
        self.language = options.language
        """The caller's, as the recognizer last heard it: what an apology is said in."""
        self._heard_in: dict[str, str] = {}
        """Each user turn's language (by message id), as it was heard."""

    @property
    @abstractmethod
    def own_context_window(self) -> int:
        """Tokens the model can attend to: prompt and reply together."""

    @abstractmethod
    def fork(self) -> AnsweringLLM[Prepared]:
        """A plugin for another conversation over the same model."""

    @abstractmethod
    def render(self, messages: list[dict], schemas: list[dict]) -> Prepared:
        """The request as the model is sent it (blocking)."""

    @abstractmethod
    def count(self, prepared: Prepared) -> int:
        """The request's tokens, as the model reads them (blocking)."""

    @abstractmethod
    async def generate(
        self,
        prepared: Prepared,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        avoid: str = "",
    ) -> tuple[GenerationStats, list[ParsedToolCall]]:
        """The reply to ``prepared``, streamed to ``on_text`` (it may not start as ``avoid``
        does), and the calls the server parsed itself (local models write theirs as text)."""

    async def shutdown(self) -> None:
        """Let go of what every conversation shared: the process is done with the model."""

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows of the model ({} for one in this process)."""
        return {}

    @property
    def context_window(self) -> int:
        """The tokens a conversation may use: the model's own, or less if the options say."""
        return self._answer_opts.context.max_tokens or self.own_context_window

    def hear(self, language: str) -> None:
        self.language = language

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> AnsweringLLMStream[Prepared]:
        return AnsweringLLMStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )

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

    def render_prompt(
        self, chat_ctx: llm.ChatContext, tools: Sequence[llm.Tool | llm.Toolset]
    ) -> Prepared:
        """The conversation as the model is sent it (blocking)."""
        chat_ctx = prompt.intents_in_words(chat_ctx)
        if self._answer_opts.answer_in_language:
            chat_ctx = prompt.answer_in_language(chat_ctx, self._heard_in)
        messages, _ = chat_ctx.to_provider_format("openai", inject_dummy_user_message=False)
        schemas = prompt.untitled(
            llm.ToolContext(tools).parse_function_tools("openai", strict=False)
        )
        if schemas and self._answer_opts.tool_reminder:
            messages = prompt.reminded(messages, self._answer_opts.tool_reminder)
        return self.render(messages, schemas)

    def prompt_tokens(self, instructions: str, tools: Sequence[llm.Tool | llm.Toolset]) -> int:
        """The system turn's size, tools included, as the model reads it."""
        return self.count(self.render_prompt(prompt.system_turn(instructions), tools))

    def prepare(
        self, chat_ctx: llm.ChatContext, tools: Sequence[llm.Tool | llm.Toolset]
    ) -> tuple[Prepared, Trim | None]:
        """The request, with the conversation trimmed to its window first when it would pass
        the trigger (blocking: it renders)."""
        if self._window is None:
            self._window = ContextWindow(
                self._answer_opts.context, self.context_window, self._answer_opts.max_new_tokens
            )

        def render(request: Request) -> Prepared:
            return self.render_prompt(llm.ChatContext(request.items), tools)

        request, prepared, tokens, trim = self._window.fit(chat_ctx.items, render, self.count)
        self.meter.requested(request, tokens)
        return prepared, trim


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


def offered_arguments(name: str, arguments: str, tools: Sequence[llm.Tool]) -> str:
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


class AnsweringLLMStream(llm.LLMStream, Generic[Prepared]):
    def __init__(
        self,
        llm_: AnsweringLLM[Prepared],
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(llm_, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._engine = llm_

    async def _run(self) -> None:
        request_id = uuid.uuid4().hex
        engine, options = self._engine, self._engine._answer_opts
        engine.note_language(self._chat_ctx)
        if options.tool_answers == "tool" and (outputs := _tool_outputs(self._chat_ctx)):
            self._send(request_id, " ".join(outputs))
            return
        if (matched := await engine.match_intent(self._chat_ctx, self._tools)) is not None:
            self._send(request_id, matched.answer)
            self._call(request_id, matched.calls, prefix=INTENT_CALL_PREFIX)
            return
        cancelled = threading.Event()  # set when the session closes the stream
        prepared, trim = await asyncio.to_thread(engine.prepare, self._chat_ctx, self._tools)
        engine.meter.report(trim)
        parsed_by_server: list[ParsedToolCall] = []

        async def start(on_text: Callable[[str], None], avoid: str = "") -> GenerationStats:
            stats, calls = await engine.generate(prepared, on_text, cancelled, avoid)
            parsed_by_server[:] = calls
            return stats

        stats, calls = await relay_reply(
            start,
            lambda text: self._send(request_id, text),
            cancelled=cancelled,
            offered=llm.ToolContext(self._tools).function_tools.keys(),
            own_words="\n".join([prompt.instructions_of(self._chat_ctx), *options.scripted]),
            language=engine.language,
            on_malformed=lambda e: self._emit_error(e, recoverable=True),
            earlier=replies(self._chat_ctx.items),
        )
        engine.meter.latest = stats.prompt_tokens + stats.generated_tokens
        self._call(request_id, [*parsed_by_server, *calls])
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
                arguments=offered_arguments(c.name, c.arguments, self._tools),
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

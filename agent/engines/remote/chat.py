"""One request to the replicas, streamed: the conversation's own replica asked, another on
failure, and an apology rather than silence when none answers. Both of the engine's modes ask
through here."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

from prompts import phrase

from ...generation import GenerationStats
from ...models import ModelNotFoundError
from ...tool_calls import ParsedToolCall
from .replicas import NoReplicaError, Replica, Replicas

logger = logging.getLogger("voice_agent")

REPLICA_FAILURES = (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)
"""What makes a replica be taken for dead (timeouts are connection errors to ``openai``); a 4xx
other than 429 is the request's fault."""
RETRY_TEMPERATURE = 0.7
"""A reply that said an earlier one again is asked for anew at this temperature: a server
takes no ban on a first token by id, as the local model does, and greedy decoding would say
the same again."""
WARM_TIMEOUT_S = 180.0
"""How long a replica may take to read the system prompt at start: a cold server on a CPU
takes seconds per thousand tokens, beyond the first token's timeout of a turn."""


@dataclass(eq=False)
class Route:
    """Which replica one conversation talks to: the same while it answers, so the server's
    prefix cache holds the conversation's history."""

    replica: Replica | None = None
    failed: Replica | None = None
    """The last replica that failed it: even once that one is back, the next turn goes to
    another where another answers (a replica that froze mid-reply may freeze again)."""


async def streamed_reply(
    replicas: Replicas,
    route: Route,
    body: dict[str, Any],
    on_text: Callable[[str], None],
    cancelled: threading.Event,
    language: str,
    prompt_tokens: int = 0,
) -> tuple[GenerationStats, list[ParsedToolCall]]:
    """The reply to ``body`` (a chat-completions request) from the route's replica. One that
    fails before it says a word is asked again of another, with the whole request; one that
    fails mid-reply ends it with an apology, and the next turn goes to another. With no replica
    left, the apology is the reply. ``prompt_tokens``: what the usage says if the server sends
    none."""
    said: list[str] = []

    def heard(text: str) -> None:
        said.append(text)
        on_text(text)

    while True:
        try:
            if route.replica is None or not route.replica.up or route.replica is route.failed:
                route.replica = replicas.assign(route, avoid=route.failed)
        except NoReplicaError:
            on_text(phrase("unreachable", language))
            return GenerationStats(0, 0, 0), []
        try:
            return await _streamed(route.replica, body, heard, cancelled, prompt_tokens)
        except REPLICA_FAILURES as e:
            replicas.failed(route.replica, e)
            route.failed = route.replica
            if said:
                on_text(" " + phrase("repeat", language))
                return GenerationStats(0, 0, len(said)), []
        except openai.APIStatusError as e:  # the request's fault: no replica takes it
            logger.warning("the remote model refused the request: HTTP %d", e.status_code)
            on_text((" " if said else "") + phrase("failed", language))
            return GenerationStats(0, 0, len(said)), []


async def warm(replicas: Replicas, body: dict[str, Any]) -> None:
    """Have every replica read ``body`` (the system turn) now, so its prefix cache holds it;
    one that refuses it (a model it does not serve, a key it refuses) stops the start."""
    for replica in replicas.replicas:
        try:
            await replica.client.with_options(timeout=WARM_TIMEOUT_S).chat.completions.create(
                **{**body, "max_tokens": 1}
            )
        except REPLICA_FAILURES as e:
            replicas.failed(replica, e)
        except openai.APIStatusError as e:
            raise ModelNotFoundError(
                f"{replica.url} refuses a request for {body['model']!r}: HTTP "
                f"{e.status_code} {_reason(e)}"
            ) from None


async def _streamed(
    replica: Replica,
    body: dict[str, Any],
    on_text: Callable[[str], None],
    cancelled: threading.Event,
    prompt_tokens: int,
) -> tuple[GenerationStats, list[ParsedToolCall]]:
    stream = await replica.client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage = 0, None
    calls: dict[int, dict[str, str]] = {}
    async with stream:
        async for chunk in stream:
            if cancelled.is_set():
                break
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if text := choice.delta.content:
                    pieces += 1
                    on_text(text)
                for call in choice.delta.tool_calls or []:
                    made = calls.setdefault(call.index, {"name": "", "arguments": ""})
                    if call.function is not None:
                        made["name"] += call.function.name or ""
                        made["arguments"] += call.function.arguments or ""
    stats = GenerationStats(
        prompt_tokens=usage.prompt_tokens if usage else prompt_tokens,
        cached_tokens=_cached(usage),
        generated_tokens=usage.completion_tokens if usage else pieces,
    )
    parsed = [
        ParsedToolCall(made["name"], made["arguments"] or "{}")
        for made in calls.values()
        if made["name"]
    ]
    return stats, parsed


def _reason(error: openai.APIStatusError) -> str:
    """The server's own words for a refusal, on one line."""
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") or body.get("detail") or error.message
    return " ".join(str(message).split())[:200]


def _cached(usage: openai.types.CompletionUsage | None) -> int:
    details = usage.prompt_tokens_details if usage else None
    return (details.cached_tokens or 0) if details else 0

"""How many tokens a request is, as the server reads it, and how many the server reads at most.

Servers that say (vLLM's ``/tokenize`` renders the messages with the model's own template;
llama-cpp-python's ``/extras/tokenize/count`` and llama-server's ``/tokenize`` count text) are
asked; otherwise the request is estimated from its UTF-8 size at ``BYTES_PER_TOKEN``.
"""

from __future__ import annotations

import functools
import json
import urllib.request
from collections.abc import Callable
from typing import Any

BYTES_PER_TOKEN = 2.5
"""Fewer bytes than a token takes in any language measured, so an estimate counts too many
and the window is trimmed early, never late: Qwen2.5's tokenizer reads the prompts at
4.5–4.9 bytes a token, English talk at 3.3–4.3, the tool schemas at 3.5, German and Spanish
talk at 2.8–3.0."""
TOKENS_PER_MESSAGE = 8
"""The chat template's markers around each message, where only the text is counted."""
DEFAULT_WINDOW = 4096
PROBE_TIMEOUT_S = 3.0
UNANSWERED = (OSError, ValueError, KeyError, TypeError)
"""What asking a server that does not offer the endpoint, or is down, raises."""


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
        return json.load(response)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
        return json.load(response)


def _root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


def _text(messages: list[dict], schemas: list[dict]) -> str:
    parts = [json.dumps(schemas)] if schemas else []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content)
        parts.append(str(content or ""))
        if calls := message.get("tool_calls"):
            parts.append(json.dumps(calls))
    return "\n".join(parts)


Counter = Callable[[list[dict], list[dict]], int]


def estimate(messages: list[dict], schemas: list[dict]) -> int:
    size = len(_text(messages, schemas).encode())
    return round(size / BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)


def server_counter(base_url: str, model: str) -> tuple[Counter, str]:
    """The most exact count the server offers, and what it is (for the log); blocking."""
    root = _root(base_url)

    def vllm(messages: list[dict], schemas: list[dict]) -> int:
        body = {"model": model, "messages": messages, **({"tools": schemas} if schemas else {})}
        return int(_post(f"{root}/tokenize", body)["count"])

    def llama_cpp_python(messages: list[dict], schemas: list[dict]) -> int:
        text = _text(messages, schemas)
        count = int(_post(f"{root}/extras/tokenize/count", {"input": text})["count"])
        return count + TOKENS_PER_MESSAGE * len(messages)

    def llama_server(messages: list[dict], schemas: list[dict]) -> int:
        tokens = _post(f"{root}/tokenize", {"content": _text(messages, schemas)})["tokens"]
        return len(tokens) + TOKENS_PER_MESSAGE * len(messages)

    probe = [{"role": "user", "content": "Hello"}]
    for exact, name in (
        (vllm, "the server's chat template"),
        (llama_cpp_python, "the server's tokenizer"),
        (llama_server, "the server's tokenizer"),
    ):
        try:
            exact(probe, [])
        except UNANSWERED:
            continue
        return functools.partial(_counted, exact), name
    return estimate, f"an estimate ({BYTES_PER_TOKEN} bytes a token)"


def _counted(exact: Counter, messages: list[dict], schemas: list[dict]) -> int:
    """The server's count, or the estimate while it does not answer."""
    try:
        return exact(messages, schemas)
    except UNANSWERED:
        return estimate(messages, schemas)


def server_window(base_url: str, model: str, listed: list[dict] | None = None) -> int | None:
    """The tokens the server reads at most, where it says (vLLM in its /v1/models listing,
    given here when already fetched; llama-server at /props); blocking."""
    try:
        if listed is None:
            listed = _get(f"{base_url}/models").get("data", [])
        for entry in listed or []:
            if entry.get("id") == model and entry.get("max_model_len"):
                return int(entry["max_model_len"])
    except (*UNANSWERED, AttributeError):
        pass
    try:
        return int(_get(f"{_root(base_url)}/props")["default_generation_settings"]["n_ctx"])
    except UNANSWERED:
        return None

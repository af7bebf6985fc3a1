"""Finding tool calls in generated text, in every format small models are seen to use.

Formats: ``<tool_call>{…}</tool_call>`` (Hermes, Qwen, SmolLM), ``<|tool_call|>…<|/tool_call|>``
(Phi-4), ``functools[…]`` (vLLM's Phi-4-mini parser), and a bare JSON object or list of
``{"name", "arguments"}`` as the whole reply. None of it may reach the TTS, nor the tags the
chat templates wrap the tool list and tool results in, which small models write out too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# closing tag as Phi-4 spells it, as llama.cpp's parser spells it, or missing at the end
TAGGED = re.compile(r"<\|?tool_call\|?>(.*?)(?:<\|?/tool_call\|?>|</\|tool_call\|>|$)", re.DOTALL)
FUNCTOOLS = re.compile(r"functools(\[.*\])", re.DOTALL)
FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
ECHOES = ("<tools>", "<|tool|>", "<tool_response>", "<|tool_response|>")
"""Where the prompt shows the tools and their results: Qwen2.5-Coder-0.5B, reminded of its
tools, answered "What is the capital of France?" with ``<tools>`` and a made-up tool's schema."""
MARKERS = ("<tool_call>", "<|tool_call|>", "functools[", *ECHOES)
JSON_OPENERS = ("{", "[", "```")
INTENT_CALL_PREFIX = "intent-"
"""Begins the ``call_id`` of a call a sentence template made, not the model."""
DOUBLED_BRACES = re.compile(r"\{(\{.*\})\}", re.DOTALL)


class ToolCallParseError(ValueError):
    """The model started a tool call but did not finish a valid one, or called a tool it was
    not offered."""


@dataclass(frozen=True)
class ParsedToolCall:
    name: str
    arguments: str
    """JSON object text."""


def _json_values(payload: str) -> list[Any]:
    """Every JSON value in ``payload``, one after another: a model making two calls writes
    two objects in a row (``json.loads`` calls the second "Extra data"), and one that copied
    its chat template's ``{{"name": …}}`` example writes each brace twice."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    rest = payload.strip()
    while rest:
        try:
            value, end = decoder.raw_decode(rest)
        except json.JSONDecodeError as e:
            doubled = DOUBLED_BRACES.fullmatch(rest)
            if doubled is None:
                raise ToolCallParseError(
                    f"tool call is not valid JSON ({e.msg}): {payload[:120]!r}"
                ) from None
            return values + _json_values(doubled.group(1))
        values.append(value)
        rest = rest[end:].lstrip().removeprefix(",").lstrip()
    return values


def _calls_from_json(payload: str) -> list[ParsedToolCall]:
    items: list[Any] = []
    for value in _json_values(payload):
        items += value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ToolCallParseError(f"tool call without a name: {json.dumps(item)[:120]}")
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise ToolCallParseError(f"arguments of {item['name']} are not JSON") from None
        if not isinstance(args, dict):
            raise ToolCallParseError(f"arguments of {item['name']} are not an object")
        calls.append(ParsedToolCall(name=item["name"], arguments=json.dumps(args)))
    return calls


def parse_tool_calls(text: str) -> tuple[str, list[ParsedToolCall]]:
    """Split a finished reply into the text to speak and the tool calls it makes; what
    follows an echoed tag is dropped, and an echo that makes no call is an error."""
    echo = min((p for tag in ECHOES if (p := text.find(tag)) >= 0), default=-1)
    speech, calls = _split(text[:echo] if echo >= 0 else text)
    if echo >= 0 and not calls:
        raise ToolCallParseError(
            f"the model wrote out tool markup instead of answering: {text[echo:][:120]!r}"
        )
    return speech, calls


def _split(text: str) -> tuple[str, list[ParsedToolCall]]:
    calls: list[ParsedToolCall] = []
    if TAGGED.search(text):
        for match in TAGGED.finditer(text):
            calls += _calls_from_json(match.group(1).strip())
        return TAGGED.sub("", text).strip(), calls
    if listing := FUNCTOOLS.search(text):
        calls = _calls_from_json(listing.group(1))
        return (text[: listing.start()] + text[listing.end() :]).strip(), calls
    stripped = text.strip()
    if stripped.startswith(JSON_OPENERS):
        fenced = FENCE.match(stripped)
        return "", _calls_from_json(fenced.group(1) if fenced else stripped)
    return text, calls


def _partial_marker(text: str) -> int:
    """Length of the longest tail of ``text`` that could begin a marker."""
    for size in range(min(len(text), max(map(len, MARKERS)) - 1), 0, -1):
        if any(m.startswith(text[-size:]) for m in MARKERS):
            return size
    return 0


class ToolCallFilter:
    """Streams speakable text through, holding back anything that may be a tool call."""

    def __init__(self) -> None:
        self._text = ""
        self._sent = 0
        self._holding = False

    def push(self, delta: str) -> str:
        """Add generated text; returns what can be spoken now."""
        self._text += delta
        if self._holding:
            return ""
        if self._sent == 0 and self._text.lstrip().startswith(JSON_OPENERS):
            self._holding = True
            return ""
        positions = [p for m in MARKERS if (p := self._text.find(m, self._sent)) >= 0]
        end = min(positions) if positions else len(self._text) - _partial_marker(self._text)
        self._holding = bool(positions)
        out, self._sent = self._text[self._sent : end], max(self._sent, end)
        return out

    def finish(self) -> tuple[str, list[ParsedToolCall]]:
        """The rest of the reply to speak, and its tool calls; raises ToolCallParseError."""
        speech, calls = parse_tool_calls(self._text[self._sent :])
        return speech, calls

    @property
    def text(self) -> str:
        return self._text

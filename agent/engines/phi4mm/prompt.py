"""A LiveKit conversation in Phi-4-multimodal's prompt format, as the model card writes it.

Card formats (microsoft/Phi-4-multimodal-instruct, "Input Formats"): no newlines around the
role tags; tools as a JSON list of ``{"name", "description", "parameters": {arg: {"description",
"type", "default"}}}`` between ``<|tool|>`` and ``<|/tool|>`` inside the system turn; media as
numbered placeholders, images before audio (``<|image_1|><|audio_1|>``). The card documents no
format for past tool calls and results; this follows the model's own tokenizer template
(``<|tool|>result<|end|>`` for a result) and its ``<|tool_call|>`` tokens for a call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from livekit.agents import llm

from ...context import MediaKind
from .parts import Media, PromptPart

IMAGE_NOTE = "(an image was shown here) "

JSON_TO_CARD_TYPES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "array": "list",
    "object": "dict",
}


def card_tools(tools: Sequence[llm.Tool | llm.Toolset]) -> list[dict[str, Any]]:
    """Function tools in the card's shape (argument types as Python names)."""
    out = []
    for schema in llm.ToolContext(tools).parse_function_tools("openai", strict=False):
        function = schema["function"]
        parameters = {}
        for name, spec in function.get("parameters", {}).get("properties", {}).items():
            kind = spec.get("type")
            if kind is None and "anyOf" in spec:  # Optional[X]: the non-null branch
                kind = next((s.get("type") for s in spec["anyOf"] if s.get("type") != "null"), None)
            entry: dict[str, Any] = {"description": spec.get("description", "").strip()}
            entry["type"] = JSON_TO_CARD_TYPES.get(str(kind), str(kind))
            if "default" in spec:
                entry["default"] = spec["default"]
            parameters[name] = entry
        out.append(
            {
                "name": function["name"],
                "description": function.get("description", "").strip(),
                "parameters": parameters,
            }
        )
    return out


def system_part(instructions: str, tools: list[dict[str, Any]]) -> PromptPart:
    tool_block = f"<|tool|>{json.dumps(tools)}<|/tool|>" if tools else ""
    return PromptPart(f"<|system|>{instructions}{tool_block}<|end|>")


def render(
    instructions: str,
    tools: list[dict[str, Any]],
    items: Sequence[llm.ChatItem],
    media_of: Callable[[str], tuple[Media, ...]],
    as_text: Mapping[str, frozenset[MediaKind]] | None = None,
) -> list[PromptPart]:
    """One part per turn, ending with the assistant's cue. A turn's media named in ``as_text``
    are left out: an image for a one-line note, audio for the turn's transcript."""
    as_text = as_text or {}
    system = [instructions] + [
        m.text_content or ""
        for m in items
        if isinstance(m, llm.ChatMessage)
        and m.role in ("system", "developer")
        and m.text_content != instructions
    ]
    system_text = "\n".join(s for s in system if s)
    parts = [system_part(system_text, tools)] if system_text or tools else []
    counts = {"image": 0, "audio": 0}
    calls: list[dict[str, Any]] = []

    def placeholder(kind: str) -> str:
        counts[kind] += 1
        return f"<|{kind}_{counts[kind]}|>"

    def close_calls() -> None:
        if calls:
            parts.append(
                PromptPart(f"<|assistant|><|tool_call|>{json.dumps(calls)}<|/tool_call|><|end|>")
            )
            calls.clear()

    for item in items:
        if isinstance(item, llm.FunctionCall):
            calls.append({"name": item.name, "arguments": json.loads(item.arguments or "{}")})
            continue
        close_calls()
        if isinstance(item, llm.FunctionCallOutput):
            parts.append(PromptPart(f"<|tool|>{item.output}<|end|>"))
        elif isinstance(item, llm.ChatMessage) and item.role == "user":
            read = as_text.get(item.id, frozenset())
            media = tuple(m for m in media_of(item.id) if m.kind not in read)
            images = "".join(placeholder("image") for m in media if m.image is not None)
            audio = "".join(placeholder("audio") for m in media if m.audio is not None)
            note = IMAGE_NOTE if "image" in read else ""
            # a spoken turn is heard, not read: its transcript stays out of the prompt
            text = "" if audio else item.text_content or ""
            parts.append(PromptPart(f"<|user|>{note}{images}{audio}{text}<|end|>", media))
        elif isinstance(item, llm.ChatMessage) and item.role == "assistant":
            parts.append(PromptPart(f"<|assistant|>{item.text_content or ''}<|end|>"))
    close_calls()
    parts.append(PromptPart("<|assistant|>"))
    return parts


def prompt_text(parts: Sequence[PromptPart]) -> str:
    return "".join(p.text for p in parts)

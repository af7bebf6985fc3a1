"""How a conversation becomes a small local model's prompt: what the model is shown of the
conversation's calls, tools and replies, and in which form its chat template wants them."""

from __future__ import annotations

import json
from typing import Any

from livekit.agents import llm

from prompts import phrase

from ...tool_calls import INTENT_CALL_PREFIX

TOOLS_IN_SYSTEM_PROMPT = """

You can call these tools:
<tools>
{tools}
</tools>
To call a tool, reply with only \
<tool_call>{{"name": "<tool name>", "arguments": {{<arguments>}}}}</tool_call>"""


def system_turn(instructions: str) -> llm.ChatContext:
    chat_ctx = llm.ChatContext()
    chat_ctx.add_message(role="system", content=instructions)
    return chat_ctx


def instructions_of(chat_ctx: llm.ChatContext) -> str:
    """The system turns' text, which the reply must not recite."""
    return "\n".join(
        item.text_content or ""
        for item in chat_ctx.items
        if item.type == "message" and item.role in ("system", "developer")
    )


def intents_in_words(chat_ctx: llm.ChatContext) -> llm.ChatContext:
    """The conversation with the templates' calls shown only as the answers they gave: seeing
    the clock called for "What time is it?", Qwen2.5-Coder-0.5B answered "What is the capital
    and friends?" with calls to the date and the calculator. Calls the request ends with stay,
    for the model to word."""
    items = chat_ctx.items
    end = len(items)
    while end and isinstance(items[end - 1], llm.FunctionCall | llm.FunctionCallOutput):
        end -= 1
    answered = [
        item
        for item in items[:end]
        if not (
            isinstance(item, llm.FunctionCall | llm.FunctionCallOutput)
            and item.call_id.startswith(INTENT_CALL_PREFIX)
        )
    ]
    return llm.ChatContext([*answered, *items[end:]])


def answer_in_language(chat_ctx: llm.ChatContext, heard_in: dict[str, str]) -> llm.ChatContext:
    """Each user turn with a request to answer in the language it was heard in, written in
    that language: told once in the system prompt, Qwen2.5-Coder-0.5B answered German callers
    in English (bench/quality.py --languages)."""
    items: list[llm.ChatItem] = []
    for item in chat_ctx.items:
        if isinstance(item, llm.ChatMessage) and item.role == "user" and item.id in heard_in:
            hint = phrase("answer_in", heard_in[item.id])
            item = item.model_copy(update={"content": [f"{item.text_content or ''}\n\n{hint}"]})
        items.append(item)
    return llm.ChatContext(items)


def reminded(messages: list[dict], reminder: str) -> list[dict]:
    """Each user turn after the first reply, with ``reminder`` after it: once a small model
    has answered in words it goes on answering in words, its tools forgotten (Qwen2.5-Coder-0.5B
    called the right tool for 1 of 23 requests after small talk, 20 of 23 reminded:
    bench/tools.py). Every such turn carries it, so the rendered history stays the same from one
    request to the next and its cache is reused."""
    out: list[dict] = []
    replied = False
    for message in messages:
        if message["role"] == "user" and replied and isinstance(message.get("content"), str):
            message = {**message, "content": f"{message['content']}\n\n{reminder}"}
        replied = replied or message["role"] == "assistant"
        out.append(message)
    return out


def untitled(schema: Any) -> Any:
    """The schemas without pydantic's ``title`` entries, which small models copy into their
    calls' arguments as if they were parameters."""
    if isinstance(schema, list):
        return [untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept = {key: untitled(value) for key, value in schema.items() if key != "title"}
    if isinstance(properties := schema.get("properties"), dict):  # names, not keywords
        kept["properties"] = {name: untitled(value) for name, value in properties.items()}
    return kept


def calls_as_objects(messages: list[dict]) -> list[dict]:
    """Earlier calls' arguments as objects, as chat templates expect: OpenAI's format holds
    them as JSON text, which a template would quote a second time (and the model copy)."""
    out = []
    for message in messages:
        if calls := message.get("tool_calls"):
            calls = [
                {
                    **c,
                    "function": {
                        **c["function"],
                        "arguments": json.loads(c["function"]["arguments"] or "{}"),
                    },
                }
                for c in calls
            ]
            message = {**message, "tool_calls": calls}
        out.append(message)
    return out


def inline_tools(messages: list[dict], schemas: list[dict]) -> list[dict]:
    """For chat templates without tool support: tools in the system turn, calls as text."""
    out: list[dict] = []
    for message in messages:
        if message.get("tool_calls"):
            calls = "".join(
                f'<tool_call>{{"name": {json.dumps(c["function"]["name"])}, '
                f'"arguments": {c["function"]["arguments"] or "{}"}}}</tool_call>'
                for c in message["tool_calls"]
            )
            message = {"role": "assistant", "content": (message.get("content") or "") + calls}
        out.append({**message, "content": message.get("content") or ""})
    if schemas:
        listing = "\n".join(json.dumps(s["function"]) for s in schemas)
        tools_text = TOOLS_IN_SYSTEM_PROMPT.format(tools=listing)
        if out and out[0]["role"] in ("system", "developer"):
            out[0] = {"role": "system", "content": out[0]["content"] + tools_text}
        else:
            out.insert(0, {"role": "system", "content": tools_text.strip()})
    return [{**m, "role": "system"} if m["role"] == "developer" else m for m in out]

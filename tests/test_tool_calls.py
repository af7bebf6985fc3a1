"""Tool calls are recognised in every format small models emit, and never spoken."""

from __future__ import annotations

import json

import pytest

from agent.tool_calls import ToolCallFilter, ToolCallParseError, parse_tool_calls

TIME_CALL = {"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}

FORMATS = {
    "hermes": '<tool_call>{"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}</tool_call>',  # noqa: E501
    "phi4": (
        '<|tool_call|>[{"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}]<|/tool_call|>'
    ),
    "phi4-llama.cpp-close": (
        '<|tool_call|>[{"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}]</|tool_call|>'
    ),
    "functools": 'functools[{"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}]',  # noqa: E501
    "bare-object": '{"name": "get_time", "parameters": {"timezone": "Asia/Tokyo"}}',
    "bare-list": '[{"name": "get_time", "arguments": "{\\"timezone\\": \\"Asia/Tokyo\\"}"}]',
    "fenced": '```json\n{"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}\n```',
}


def stream(text: str, step: int = 3) -> tuple[str, str, list]:
    """Feed text in small pieces, as a tokenizer would: (spoken while streaming, tail, calls)."""
    calls_filter = ToolCallFilter()
    spoken = "".join(calls_filter.push(text[i : i + step]) for i in range(0, len(text), step))
    tail, calls = calls_filter.finish()
    return spoken, tail, calls


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_yields_the_call_and_no_speech(fmt):
    spoken, tail, calls = stream(FORMATS[fmt])
    assert spoken == "" and tail == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        (TIME_CALL["name"], TIME_CALL["arguments"])
    ]


def test_text_before_a_call_is_spoken_while_the_call_is_held():
    spoken, tail, calls = stream("Let me check the clock. " + FORMATS["hermes"])
    assert spoken == "Let me check the clock. "
    assert tail == "" and [c.name for c in calls] == ["get_time"]


def test_plain_text_with_angle_brackets_streams_through():
    text = "Three is < four, and <b>bold</b> is fine; functional code too."
    spoken, tail, calls = stream(text)
    assert spoken + tail == text and calls == []


def test_several_calls_in_one_reply():
    text = FORMATS["hermes"] + '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    _, _, calls = stream(text)
    assert [json.loads(c.arguments) for c in calls] == [TIME_CALL["arguments"], {}]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "get_time", "arguments": {',
        '<|tool_call|>[{"arguments": {}}]<|/tool_call|>',
        '{"name": "get_time", "arguments": [1, 2]}',
        "functools[not json]",
    ],
    ids=["truncated", "no-name", "arguments-not-object", "not-json"],
)
def test_malformed_calls_are_errors_not_speech(text):
    with pytest.raises(ToolCallParseError):
        stream(text)


def test_parse_keeps_the_words_around_a_call():
    speech, calls = parse_tool_calls("Sure. " + FORMATS["phi4"] + " One moment.")
    assert speech == "Sure.  One moment." and len(calls) == 1


@pytest.mark.parametrize(
    "text",
    [
        '<tools>\n{"type": "function", "function": {"name": "get_capital", "parameters": {}}}',
        'Sure! <|tool|>[{"name": "get_time", "description": "The time."}]<|/tool|>',
        "<tool_response>The time is 12:00.</tool_response>",
    ],
    ids=["qwen-tool-list", "phi4-tool-list-after-words", "made-up-result"],
)
def test_the_prompts_tool_markup_written_out_is_never_spoken(text):
    """Reminded of its tools, the 0.5B model answered a question with the tool list's markup."""
    calls_filter = ToolCallFilter()
    spoken = "".join(calls_filter.push(text[i : i + 3]) for i in range(0, len(text), 3))
    with pytest.raises(ToolCallParseError, match="tool markup"):
        calls_filter.finish()
    assert "<" not in spoken and "function" not in spoken and "12:00" not in spoken


def test_a_call_followed_by_a_made_up_result_is_called_and_the_result_dropped():
    spoken, tail, calls = stream(FORMATS["hermes"] + "\n<tool_response>It is 3 pm.")
    assert spoken == "" and tail == "" and [c.name for c in calls] == ["get_time"]


def test_two_calls_in_a_row_are_both_made():
    """Seen from Qwen2.5-Coder: two objects one after the other, which json.loads refuses."""
    text = (
        '<tool_call>{"name": "set_device", "arguments": {"device": "lamp", "state": "on"}}\n'
        '{"name": "set_device", "arguments": {"device": "door", "state": "open"}}</tool_call>'
    )
    spoken, tail, calls = stream(text)
    assert spoken == "" and tail == ""
    assert [json.loads(c.arguments)["device"] for c in calls] == ["lamp", "door"]
    _, _, bare = stream('{"name": "get_time", "arguments": {}}\n{"name": "list_timers"}')
    assert [c.name for c in bare] == ["get_time", "list_timers"]


def test_a_call_with_the_templates_doubled_braces_is_read():
    """Qwen2.5-Coder-1.5B's GGUF template shows its example call as {{"name": …}}, and the
    model copies the doubled braces."""
    text = (
        '<tool_call>\n{{"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}}\n</tool_call>'
    )
    spoken, tail, calls = stream(text)
    assert spoken == "" and tail == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        (TIME_CALL["name"], TIME_CALL["arguments"])
    ]

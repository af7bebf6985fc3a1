"""A spoken question that needs a tool: the call, its output and the spoken answer.

The LLM is scripted (see tests/scripted.py for why); everything else is real: espeak speech in,
webrtcvad, whisper, the session's tool execution, the real get_time, TTS out, events on disk.
"""

from __future__ import annotations

import re
from datetime import datetime

from livekit.agents import llm

from tests.scripted import CallerContext, ScriptedToolModel, converse, spoken
from tools import get_time, get_world_time
from tools.clock import get_date


async def test_a_time_question_runs_get_time_and_speaks_its_answer(tmp_path):
    events = await converse(
        tmp_path,
        await spoken("What time is it right now?", pause_s=5.0),
        ScriptedToolModel(("get_time", {})),
        [get_time],
    )
    kinds = [e["type"] for e in events]
    assert kinds.index("user_turn") < kinds.index("tool_call") < kinds.index("agent_reply")
    turn = next(e for e in events if e["type"] == "user_turn")
    assert "time" in turn["transcript"].lower()
    call = next(e for e in events if e["type"] == "tool_call")
    assert call["name"] == "get_time" and call["arguments"] == {} and not call["is_error"]
    assert str(datetime.now().year) in call["output"]
    reply = next(e for e in events if e["type"] == "agent_reply")
    assert reply["text"] == call["output"]
    assert reply["metrics"]["e2e_latency_s"] > 0
    summary = events[-1]
    assert summary["counts"]["tool_call"] == 1 and summary["agent_speech_s"] > 1.0


async def test_the_time_is_a_sentence_here_and_in_other_zones_and_unknown_zones_are_refused():
    caller = CallerContext("en")
    assert re.fullmatch(r"It is \d{2}:\d{2} \w+, on \w+ \d{2} \w+ \d{4}\.", await get_time(caller))
    assert re.search(r"\d{2}:\d{2} JST, on", await get_world_time(caller, "Asia/Tokyo"))
    try:
        await get_world_time(caller, "Mars/Olympus")
    except llm.ToolError as e:
        assert "Mars/Olympus" in e.message
    else:
        raise AssertionError("an unknown zone must be a tool error the model can read")


async def test_the_time_and_date_are_said_in_the_callers_language():
    year = str(datetime.now().year)
    assert re.fullmatch(rf"Es ist \d{{2}}:\d{{2}} Uhr, am \w+, \d+\. \w+ {year}\.",
                        await get_time(CallerContext("de")))  # fmt: skip
    assert re.fullmatch(rf"Son las \d{{1,2}}:\d{{2}}, del \w+, \d+ de \w+ de {year}\.",
                        await get_time(CallerContext("es-MX")))  # fmt: skip
    assert re.fullmatch(
        rf"Nous sommes le \w+ \d+ \w+ {year}\.", await get_date(CallerContext("fr"))
    )
    assert (await get_date(CallerContext("sv"))).startswith("Today is "), "no phrases: English"

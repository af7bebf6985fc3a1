"""The built-in tools: safe arithmetic, units, timers that speak, time limits, the allowlist."""

from __future__ import annotations

import asyncio
import re

import pytest
from livekit.agents import ToolError, function_tool

from tests.scripted import CallerContext, ScriptedToolModel, converse, spoken
from tools import TOOLS, get_time, resolve_tools
from tools.calculator import calculate, evaluate
from tools.call import NOT_A_CALL
from tools.clock import get_date
from tools.guard import guarded
from tools.online import look_up_online
from tools.timers import TimerService, spoken_duration
from tools.units import convert_units


@pytest.mark.parametrize(
    "expression, value",
    [("2 + 3 * 4", 14), ("(12.5 * 4) / 3", 50 / 3), ("2 ^ 10", 1024), ("-sqrt(16) + abs(-2)", -2)],
)
def test_the_calculator_does_arithmetic(expression, value):
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    "attack",
    [
        "__import__('os').system('echo pwned')",
        "().__class__.__bases__[0].__subclasses__()",
        "open('/etc/passwd').read()",
        "exec('1')",
        "lambda: 1",
        "x",
        "9 ** 9 ** 9",
        "1" * 300,
    ],
)
def test_the_calculator_refuses_anything_but_arithmetic(attack):
    with pytest.raises(ValueError):
        evaluate(attack)


async def test_calculator_errors_reach_the_model_as_a_short_message():
    with pytest.raises(ToolError, match="Cannot calculate that"):
        await calculate("__import__('os')")
    with pytest.raises(ToolError, match="division by zero"):
        await calculate("1 / 0")
    assert await calculate("6 * 7 * 1000") == "That makes 42,000."


async def test_units_convert_into_a_sentence_to_read_aloud_and_refuse_nonsense():
    assert await convert_units(5, "mile", "km") == "5 mile is 8.05 kilometer."
    assert await convert_units(212, "Fahrenheit", "degree Celsius") == (
        "212 degree Fahrenheit is 100 degree Celsius."
    )
    assert await convert_units(100, "degrees Celsius", "degrees Fahrenheit") == (
        "100 degree Celsius is 212 degree Fahrenheit."
    )
    with pytest.raises(ToolError, match="cannot be converted"):
        await convert_units(1, "kg", "meter")
    with pytest.raises(ToolError, match="Unknown unit"):
        await convert_units(1, "florp", "meter")


async def test_timers_count_down_list_cancel_and_ring():
    said: list[str] = []
    timers = TimerService()

    async def announce(text: str) -> None:
        said.append(text)

    timers.bind(announce)
    tea = timers.start(0.2, label="tea", message="Tea is ready.")
    eggs = timers.start(60, label="eggs", message="Eggs.")
    assert [t.label for t in timers.active()] == ["tea", "eggs"]
    assert timers.cancel("eggs") is eggs and timers.cancel(str(tea.number)) is tea
    with pytest.raises(ToolError, match="no timer called"):
        timers.cancel("eggs")
    later, sooner = timers.start(90, label="", message=""), timers.start(30, label="", message="")
    assert timers.cancel("") is sooner, '"cancel the timer" cancels the one due soonest'
    assert timers.cancel("") is later
    with pytest.raises(ToolError, match="no timer called"):
        timers.cancel("")
    timers.start(0.2, label="", message="Time is up.")
    await asyncio.sleep(0.4)
    assert said == ["Time is up."] and timers.active() == []
    assert spoken_duration(125) == "2 minutes 5 seconds"


async def test_the_date_and_live_information_are_answered_in_a_sentence():
    caller = CallerContext("en")
    assert re.fullmatch(
        r"Today is [A-Z][a-z]+day \d{1,2} [A-Z][a-z]+ \d{4}\.", await get_date(caller)
    )
    assert await look_up_online(caller, "the weather in Paris?") == (
        "Sorry, I can't check the weather in Paris: I work offline, without the internet."
    )
    assert (await look_up_online(CallerContext("de"), "das Wetter")).startswith(
        "Entschuldigung, das kann ich nicht nachsehen"
    )


async def test_a_tool_that_hangs_or_raises_becomes_a_short_message():
    @guarded(timeout_s=0.2)
    async def check_stock(item: str) -> str:
        await asyncio.sleep(10)
        return "plenty"

    @guarded()
    async def book_taxi() -> str:
        raise ConnectionError("the taxi service is down")

    with pytest.raises(ToolError, match="check stock did not answer within 0.2 seconds"):
        await check_stock("apples")
    with pytest.raises(ToolError, match="book taxi failed: the taxi service is down"):
        await book_taxi()


def test_every_tool_has_a_schema_from_its_signature_and_docstring():
    assert set(TOOLS) == {
        "get_time", "get_date", "get_world_time", "calculate", "convert_units", "set_timer",
        "set_reminder", "list_timers",
        "cancel_timer", "set_device", "get_device_state", "end_conversation", "look",
        "transfer_call", "collect_digits", "send_digits", "look_up_online",
    }  # fmt: skip
    for tool in TOOLS.values():
        assert tool.info.description, tool.info.name
    with pytest.raises(KeyError, match="unknown tool"):
        resolve_tools(["get_time", "launch_rockets"])


@function_tool
@guarded(timeout_s=0.5)
async def check_stock(item: str) -> str:
    """Look up how many of an item are in stock.

    Args:
        item: The item.
    """
    await asyncio.sleep(30)
    return "plenty"


async def test_a_hanging_tool_gets_a_spoken_apology_and_the_session_goes_on(tmp_path):
    events = await converse(
        tmp_path,
        await spoken("Do you have apples?", "What time is it?", pause_s=6.0),
        ScriptedToolModel(("check_stock", {"item": "apples"}), ("get_time", {})),
        [check_stock, get_time],
    )
    calls = [e for e in events if e["type"] == "tool_call"]
    replies = [e["text"] for e in events if e["type"] == "agent_reply"]
    assert [c["name"] for c in calls] == ["check_stock", "get_time"]
    assert calls[0]["is_error"] and not calls[1]["is_error"]
    assert replies[0] == "Sorry, check stock did not answer within 0.5 seconds."
    assert replies[1] == calls[1]["output"], "the next turn is answered as usual"


async def test_a_timer_fires_and_is_announced(tmp_path):
    events = await converse(
        tmp_path,
        await spoken("Set a timer for two seconds.", pause_s=7.0),
        ScriptedToolModel(("set_timer", {"seconds": 2})),
        resolve_tools(["set_timer", "get_time"]),
    )
    replies = [e for e in events if e["type"] == "agent_reply"]
    assert replies[0]["text"] == "Timer 1 set for 2 seconds."
    announced = [r for r in replies if r["text"] == "Your 2 seconds timer is done."]
    assert announced and announced[0]["start"] >= replies[0]["start"] + 1.5


async def test_a_tool_outside_the_profile_is_never_offered_nor_run(tmp_path):
    model = ScriptedToolModel(("set_device", {"device": "door", "state": "open"}))
    events = await converse(
        tmp_path, await spoken("Open the door.", pause_s=5.0), model, resolve_tools(["get_time"])
    )
    assert all(offered == ["get_time"] for offered in model.offered)
    call = next(e for e in events if e["type"] == "tool_call")
    assert call["is_error"] and "Unknown function: set_device" in call["output"]


async def test_a_transfer_asked_for_outside_a_phone_call_is_explained_not_attempted(tmp_path):
    events = await converse(
        tmp_path,
        await spoken("Put me through to a person.", pause_s=5.0),
        ScriptedToolModel(("transfer_call", {})),
        resolve_tools(["transfer_call"]),
    )
    call = next(e for e in events if e["type"] == "tool_call")
    assert call["is_error"] and call["output"] == NOT_A_CALL
    assert any(e["type"] == "agent_reply" and e["text"] == NOT_A_CALL for e in events)

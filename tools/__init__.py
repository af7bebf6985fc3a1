"""Function tools the agent may call; a profile picks them by name (its allowlist)."""

from __future__ import annotations

from livekit.agents import llm

from .calculator import calculate
from .call import collect_digits, send_digits, transfer_call
from .clock import get_date, get_time, get_world_time
from .conversation import end_conversation
from .devices import get_device_state, set_device
from .look import look
from .online import look_up_online
from .timers import cancel_timer, list_timers, set_reminder, set_timer
from .units import convert_units

TOOLS: dict[str, llm.FunctionTool] = {
    tool.info.name: tool
    for tool in (
        get_time,
        get_date,
        get_world_time,
        calculate,
        convert_units,
        set_timer,
        set_reminder,
        list_timers,
        cancel_timer,
        set_device,
        get_device_state,
        end_conversation,
        transfer_call,
        collect_digits,
        send_digits,
        look,
        look_up_online,
    )
}


def resolve_tools(names: list[str]) -> list[llm.Tool | llm.Toolset]:
    """Only the tools named: nothing else is offered to the model, and LiveKit refuses to run
    a call to a tool that was not offered."""
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise KeyError(f"unknown tool(s): {', '.join(unknown)} (available: {', '.join(TOOLS)})")
    return [TOOLS[n] for n in names]

"""Function tools the agent may call; a profile picks them by name."""

from __future__ import annotations

from livekit.agents import llm

from .clock import get_time

TOOLS: dict[str, llm.FunctionTool] = {"get_time": get_time}


def resolve_tools(names: list[str]) -> list[llm.Tool | llm.Toolset]:
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise KeyError(f"unknown tool(s): {', '.join(unknown)} (available: {', '.join(TOOLS)})")
    return [TOOLS[n] for n in names]

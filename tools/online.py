"""What only the internet knows (weather, news, prices, scores, bookings), answered honestly.

The agent runs offline. Asked the price of Bitcoin, both bundled models made one up ("$20,000");
given this tool, a question about live information is answered with what the agent cannot do.
"""

from __future__ import annotations

from livekit.agents import RunContext, function_tool

from prompts import phrase

from .services import AgentServices


@function_tool
async def look_up_online(context: RunContext[AgentServices], topic: str) -> str:
    """Look up live information from the internet: weather, news, prices, sports scores,
    bookings. Not for general knowledge.

    Args:
        topic: What to look up, such as "the weather in Paris".
    """
    topic = topic.strip().rstrip("?.!") or "that"
    return phrase("offline", context.userdata.language).format(topic=topic)

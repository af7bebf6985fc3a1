"""What only the internet knows (weather, news, prices, scores, bookings), answered honestly.

The agent runs offline. Asked the price of Bitcoin, both bundled models made one up ("$20,000");
given this tool, a question about live information is answered with what the agent cannot do.
"""

from __future__ import annotations

from livekit.agents import function_tool


@function_tool
async def look_up_online(topic: str) -> str:
    """Look up live information from the internet: weather, news, prices, sports scores,
    bookings. Not for general knowledge.

    Args:
        topic: What to look up, such as "the weather in Paris".
    """
    topic = topic.strip().rstrip("?.!") or "that"
    return f"Sorry, I can't check {topic}: I work offline, without the internet."

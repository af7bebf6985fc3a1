"""The date and time here, and in other IANA time zones.

Two tools, not one with an optional zone: a model under 1 B fills in every parameter it is
offered, so with one tool it gave the local time a zone of its own choosing (bench/tools.py).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from livekit.agents import ToolError, function_tool


@function_tool
async def get_time() -> str:
    """Get the current date and time here."""
    return _spoken(datetime.now().astimezone())


@function_tool
async def get_date() -> str:
    """Get today's date here."""
    today = datetime.now().astimezone()
    return f"Today is {today:%A} {today.day} {today:%B %Y}."


@function_tool
async def get_world_time(timezone: str) -> str:
    """Get the current date and time in another place.

    Args:
        timezone: The place's IANA time zone, such as "Asia/Tokyo".
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}") from None
    return _spoken(datetime.now(zone))


def _spoken(now: datetime) -> str:
    """The time first, in a clause of its own: the voice starts on it while the date is made."""
    return now.strftime("It is %H:%M %Z, on %A %d %B %Y.").replace("  ", " ")

"""The local date and time, optionally in another IANA time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from livekit.agents import ToolError, function_tool


@function_tool
async def get_time(timezone: str | None = None) -> str:
    """Get the current date and time.

    Args:
        timezone: IANA time zone such as "Europe/Paris"; omit it for the local time.
    """
    try:
        zone = ZoneInfo(timezone) if timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}") from None
    now = datetime.now(zone).astimezone(zone)
    return now.strftime("%A %d %B %Y, %H:%M %Z").strip()

"""The date and time here, and in other IANA time zones, said in the caller's language.

Two tools, not one with an optional zone: a model under 1 B fills in every parameter it is
offered, so with one tool it gave the local time a zone of its own choosing (bench/tools.py).
English keeps the 24-hour time and its zone, which the voice reads well; other languages get
Babel's (CLDR's) way of writing a time and a date.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_time
from livekit.agents import RunContext, ToolError, function_tool

from prompts import phrase, phrase_language

from .services import AgentServices


@function_tool
async def get_time(context: RunContext[AgentServices]) -> str:
    """Get the current date and time here."""
    return time_sentence(datetime.now().astimezone(), context.userdata.language)


@function_tool
async def get_date(context: RunContext[AgentServices]) -> str:
    """Get today's date here."""
    today = datetime.now().astimezone()
    language = phrase_language(context.userdata.language)
    if language == "en":
        return f"Today is {today:%A} {today.day} {today:%B %Y}."
    return phrase("date", language).format(date=format_date(today, "full", locale=language))


@function_tool
async def get_world_time(context: RunContext[AgentServices], timezone: str) -> str:
    """Get the current date and time in another place.

    Args:
        timezone: The place's IANA time zone, such as "Asia/Tokyo".
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}") from None
    return time_sentence(datetime.now(zone), context.userdata.language)


def time_sentence(now: datetime, language: str) -> str:
    """The time first, in a clause of its own: the voice starts on it while the date is made."""
    language = phrase_language(language)
    if language == "en":
        time, date = now.strftime("%H:%M %Z"), now.strftime("%A %d %B %Y")
    else:
        time, date = (
            format_time(now, "short", locale=language),
            format_date(now, "full", locale=language),
        )
    return phrase("time", language).format(time=time, date=date).replace("  ", " ")

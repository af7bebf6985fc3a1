"""Timers and reminders: set, list, cancel; when one is due the agent says so aloud."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from livekit.agents import RunContext, ToolError, function_tool

from .guard import guarded

Announce = Callable[[str], Awaitable[None]]


@dataclass
class Timer:
    number: int
    label: str
    message: str
    due: float  # time.monotonic()
    task: asyncio.Task[None] | None = None

    def remaining_s(self) -> float:
        return max(0.0, self.due - time.monotonic())


def spoken_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [(hours, "hour"), (minutes, "minute"), (seconds, "second")]
    words = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n]
    return " ".join(words) or "0 seconds"


class TimerService:
    def __init__(self) -> None:
        self._timers: dict[int, Timer] = {}
        self._numbers = itertools.count(1)
        self._announce: Announce | None = None

    def bind(self, announce: Announce) -> None:
        """Where due timers are spoken (the session's voice)."""
        self._announce = announce

    def start(self, seconds: float, *, label: str, message: str) -> Timer:
        if not 0 < seconds <= 7 * 24 * 3600:
            raise ToolError("a timer must run between one second and a week")
        timer = Timer(next(self._numbers), label, message, time.monotonic() + seconds)
        timer.task = asyncio.create_task(self._ring(timer, seconds))
        self._timers[timer.number] = timer
        return timer

    def active(self) -> list[Timer]:
        return sorted(self._timers.values(), key=lambda t: t.due)

    def cancel(self, which: str) -> Timer:
        """The timer numbered or labelled ``which``; "" = the one due soonest ("cancel the
        timer")."""
        active = self.active()
        if not which.strip() and active:
            which = str(active[0].number)
        for timer in active:
            if which.strip().lower() in (str(timer.number), timer.label.lower()):
                if timer.task is not None:
                    timer.task.cancel()
                del self._timers[timer.number]
                return timer
        raise ToolError(f"no timer called {which!r}")

    async def aclose(self) -> None:
        for timer in self._timers.values():
            if timer.task is not None:
                timer.task.cancel()
        self._timers.clear()

    async def _ring(self, timer: Timer, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._timers.pop(timer.number, None)
        if self._announce is not None:
            await self._announce(timer.message)


def _timers(context: RunContext) -> TimerService:
    timers = getattr(context.userdata, "timers", None)
    if not isinstance(timers, TimerService):
        raise ToolError("timers are not available in this session")
    return timers


@function_tool
@guarded()
async def set_timer(
    context: RunContext, minutes: float = 0, seconds: float = 0, label: str = ""
) -> str:
    """Start a countdown timer; the user is told aloud when it ends.

    Args:
        minutes: Minutes to count down.
        seconds: Seconds to count down (added to the minutes).
        label: A name for the timer, such as "tea".
    """
    total = minutes * 60 + seconds
    name = f"{label} timer" if label else "timer"
    timer = _timers(context).start(
        total, label=label, message=f"Your {spoken_duration(total)} {name} is done."
    )
    return f"Timer {timer.number} set for {spoken_duration(total)}."


@function_tool
@guarded()
async def set_reminder(context: RunContext, text: str, in_minutes: float) -> str:
    """Remind the user of something later; the reminder is spoken when it is due.

    Args:
        text: What to remind the user of, such as "call the dentist".
        in_minutes: How many minutes from now.
    """
    timer = _timers(context).start(in_minutes * 60, label=text, message=f"Reminder: {text}.")
    return f"Reminder {timer.number} set for {spoken_duration(in_minutes * 60)} from now."


@function_tool
@guarded()
async def list_timers(context: RunContext) -> str:
    """Say which timers and reminders are running and how long each has left."""
    active = _timers(context).active()
    if not active:
        return "No timers or reminders are running."
    return "; ".join(
        f"{t.number}: {t.label or 'timer'}, {spoken_duration(t.remaining_s())} left" for t in active
    )


@function_tool
@guarded()
async def cancel_timer(context: RunContext, timer: str) -> str:
    """Cancel a running timer or reminder.

    Args:
        timer: Its number or its label.
    """
    cancelled = _timers(context).cancel(timer)
    return f"Cancelled {cancelled.label or 'timer'} {cancelled.number}."

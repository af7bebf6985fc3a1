"""Stop signals: SIGINT and SIGTERM end the conversation (or the server), not the process, so
what was said is still written."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger("voice_agent")


class StoppedBeforeStart(Exception):
    """A stop signal came while the models were loading: nothing was played or written."""

    def __init__(self, received: signal.Signals) -> None:
        super().__init__(f"stopped by {received.name} before the conversation began")
        self.received = received


class StopSignals:
    """While entered, SIGINT and SIGTERM end the conversation early rather than the process,
    so what was said is still written; a second signal acts as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.event = asyncio.Event()
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *_: object) -> None:
        self._restore()

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.warning("%s: stopping (a second one ends at once)", sig.name)
        self.received = sig
        self.event.set()
        self._restore()

    def _restore(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, previous in self._previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)
        self._previous.clear()


async def first_of(*awaitables: Awaitable[object]) -> None:
    """Until one is done; the others are cancelled unless they were already tasks."""
    waiters = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter, awaitable in zip(waiters, awaitables, strict=True):
            if waiter is not awaitable:
                waiter.cancel()


async def unless_stopped(stop: StopSignals, work: Awaitable[T]) -> T:
    """``work``'s result; if a stop signal comes first, ``work`` is cancelled and
    StoppedBeforeStart raised (loading the models is the work this waits on)."""
    task = asyncio.ensure_future(work)
    await first_of(task, stop.event.wait())
    if stop.received is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise StoppedBeforeStart(stop.received)
    return task.result()

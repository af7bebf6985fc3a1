"""Every tool runs under a time limit, and its failures become a short message for the model.

A tool that raises or hangs must not end the conversation: LiveKit hands a ``ToolError`` back
to the model as the call's (error) output, and the model tells the user.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from livekit.agents import ToolError

P = ParamSpec("P")
R = TypeVar("R")
DEFAULT_TIMEOUT_S = 5.0
logger = logging.getLogger("voice_agent")


def guarded(
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    def wrap(tool: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        spoken_name = tool.__name__.replace("_", " ")

        @functools.wraps(tool)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await asyncio.wait_for(tool(*args, **kwargs), timeout_s)
            except ToolError:
                raise
            except TimeoutError:
                raise ToolError(
                    f"Sorry, {spoken_name} did not answer within {timeout_s:g} seconds."
                ) from None
            except Exception as e:
                logger.warning("tool %s failed: %s", tool.__name__, e)
                raise ToolError(f"Sorry, {spoken_name} failed: {e}") from None

        return run

    return wrap

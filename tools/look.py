"""Looking through the camera when a question needs a fresh picture."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from livekit.agents import RunContext, function_tool

from .guard import guarded

NO_CAMERA = "There is no camera here: answer without looking."


@runtime_checkable
class Viewer(Protocol):
    """A model that sees: ``look`` attaches the camera's newest frame to its next request
    and says so, in a sentence for the model."""

    def look(self) -> str: ...


@function_tool
@guarded()
async def look(context: RunContext) -> str:
    """Look through the camera now, when the user asks about what is in front of it: a sign,
    something held up, who is there."""
    model = context.session.llm
    return model.look() if isinstance(model, Viewer) else NO_CAMERA

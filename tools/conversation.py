"""Ending the conversation when the user says goodbye."""

from __future__ import annotations

from livekit.agents import RunContext, function_tool

from prompts import phrase

from .guard import guarded
from .services import AgentServices


@function_tool
@guarded()
async def end_conversation(context: RunContext[AgentServices]) -> str:
    """End the conversation, after the user has said goodbye or asked to stop."""
    context.session.shutdown(drain=True)  # what is being said is still finished
    return phrase("goodbye", context.userdata.language)

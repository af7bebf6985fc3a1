"""Handing a phone call to a person."""

from __future__ import annotations

from livekit.agents import RunContext, ToolError, function_tool

from prompts import phrase

from .guard import guarded
from .services import AgentServices

NOT_A_CALL = "This conversation is not a phone call, so it cannot be transferred."


@function_tool
@guarded()
async def transfer_call(context: RunContext[AgentServices]) -> str:
    """Transfer the caller to a person, when they ask for one or you cannot help them."""
    phone = context.userdata.phone
    if phone is None:
        raise ToolError(NOT_A_CALL)
    phone.transfer()  # once this sentence has been said
    return phrase("transfer", context.userdata.language)

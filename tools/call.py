"""What a phone call offers: handing the caller to a person, and the caller's keypad."""

from __future__ import annotations

from livekit.agents import RunContext, ToolError, function_tool

from prompts import phrase

from .guard import guarded
from .services import AgentServices

NOT_A_CALL = "This conversation is not a phone call, so it cannot be transferred."
NO_KEYPAD = "This conversation is not a phone call: there is no keypad to read."


@function_tool
@guarded()
async def transfer_call(context: RunContext[AgentServices]) -> str:
    """Transfer the caller to a person, when they ask for one or you cannot help them."""
    phone = context.userdata.phone
    if phone is None:
        raise ToolError(NOT_A_CALL)
    phone.transfer()  # once this sentence has been said
    return phrase("transfer", context.userdata.language)


@function_tool
@guarded(timeout_s=180)
async def collect_digits(
    context: RunContext[AgentServices],
    count: int = 0,
    terminator: str = "#",
    timeout_s: float = 10.0,
) -> str:
    """Read what the caller types on their phone's keypad (an account number, a menu choice),
    once you have asked them to type it.

    Args:
        count: how many digits to wait for; 0 for any number of them, ended by the terminator
        terminator: the key that ends the entry, usually "#"
        timeout_s: how long to wait for each key, in seconds
    """
    if context.userdata.phone is None:
        raise ToolError(NO_KEYPAD)
    if not 0 <= count <= 32 or not 1 <= timeout_s <= 60 or len(terminator) > 1:
        raise ToolError("count is 0 to 32, timeout_s 1 to 60, the terminator one key or none")
    digits = await context.userdata.keypad.collect(count, terminator, timeout_s)
    if not digits:  # said as it is where tool results are spoken ([lite] tool_answers)
        return f"Nothing was typed on the keypad within {timeout_s:g} seconds."
    return f"Typed on the keypad: {' '.join(digits)}."


@function_tool
@guarded()
async def send_digits(context: RunContext[AgentServices], keys: str) -> str:
    """Press keys on the phone's keypad, to choose in a menu the other side reads out
    ("press 1 for sales") or to enter a number it asks for.

    Args:
        keys: the keys to press, in order: digits, * and #
    """
    phone = context.userdata.phone
    if phone is None:
        raise ToolError(NO_KEYPAD)
    try:
        phone.press(keys)
    except ValueError as e:
        raise ToolError(str(e)) from None
    return f"Pressed {' '.join(keys.upper())}."

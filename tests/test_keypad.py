"""A phone caller's keypad: each key an event, an entry read by ``collect_digits``, or told to
the model in words once the caller stops. (A real phone's keys, end to end, are in
tests/test_sip.py.)"""

from __future__ import annotations

import asyncio

import pytest
from aiosipua import SipMessage, SipRequest
from livekit.agents import ToolError

from agent.transports.sip_wire import relayed_key
from tools.call import NO_KEYPAD, collect_digits
from tools.keypad import PAUSE_S, Keypad

from .scripted import CallerContext


def typing(keypad: Keypad, keys: str, every_s: float = 0.05) -> None:
    """The caller types ``keys``, one every ``every_s``."""
    loop = asyncio.get_running_loop()
    for i, key in enumerate(keys):
        loop.call_later(every_s * (i + 1), keypad.pressed, key)


async def test_an_entry_of_a_set_length_is_read_without_waiting_for_more():
    keypad, pressed, told = Keypad(), [], []
    keypad.bind(told.append)
    keypad.on("pressed", pressed.append)
    for key in "47112":  # all typed before the tool asks
        keypad.pressed(key)
    assert await keypad.collect(4, "#", timeout_s=5) == "4711"
    await asyncio.sleep(PAUSE_S + 0.3)
    assert pressed == list("47112")
    assert told == ["The caller pressed 2 on the keypad."], "a key past the entry is not lost"


async def test_the_terminator_ends_an_entry_and_is_not_part_of_it():
    keypad = Keypad()
    typing(keypad, "12#")
    assert await keypad.collect(0, "#", timeout_s=5) == "12"
    typing(keypad, "123456#")
    assert await keypad.collect(6, "#", timeout_s=5) == "123456", "# right after the count"


async def test_keys_typed_before_the_tool_asks_count_and_nothing_is_told_twice():
    keypad, told = Keypad(), []
    keypad.bind(told.append)
    keypad.pressed("9")
    keypad.pressed("8")
    typing(keypad, "7")
    assert await keypad.collect(3, "", timeout_s=5) == "987"
    await asyncio.sleep(PAUSE_S + 0.3)
    assert told == [], "what the tool took is not told to the model again"


async def test_a_caller_who_types_nothing_is_given_up_on_after_the_timeout():
    keypad = Keypad()
    typing(keypad, "5")
    started = asyncio.get_running_loop().time()
    assert await keypad.collect(4, "#", timeout_s=0.3) == "5", "what came before the pause"
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_keys_nobody_waited_for_are_told_to_the_model_when_the_caller_stops():
    keypad, told = Keypad(), []
    keypad.bind(told.append)
    for key in "12#":
        keypad.pressed(key)
    await asyncio.sleep(0.05)
    assert told == ["The caller pressed 1 2 # on the keypad."], "# ends the entry at once"
    keypad.pressed("3")
    keypad.pressed("x")  # no key of a keypad: ignored
    await asyncio.sleep(PAUSE_S / 2)
    assert len(told) == 1, "told only once the caller stops"
    await asyncio.sleep(PAUSE_S / 2 + 0.3)
    assert told[-1] == "The caller pressed 3 on the keypad."


async def test_collect_digits_reads_the_keypad_of_a_phone_call_only():
    caller = CallerContext()
    with pytest.raises(ToolError, match=NO_KEYPAD):
        await collect_digits(caller, count=4)  # type: ignore[arg-type]
    caller.userdata.phone = object()  # type: ignore[assignment]
    typing(caller.userdata.keypad, "0042#")
    assert await collect_digits(caller) == "Typed on the keypad: 0 0 4 2."  # type: ignore[arg-type]
    said = await collect_digits(caller, timeout_s=1)  # type: ignore[arg-type]
    assert said == "Nothing was typed on the keypad within 1 seconds."


def info(body: str, content_type: str) -> SipRequest:
    """An INFO as it arrives on the wire."""
    text = (
        "INFO sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1\r\n"
        "From: <sip:phone@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>;tag=2\r\n"
        "Call-ID: keys\r\nCSeq: 3 INFO\r\nMax-Forwards: 70\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    request = SipMessage.parse(text.encode())
    assert isinstance(request, SipRequest)
    return request


@pytest.mark.parametrize(
    ("body", "content_type", "key"),
    [
        ("Signal=5\r\nDuration=160\r\n", "application/dtmf-relay", "5"),
        ("Signal=*\r\nDuration=100", "application/dtmf-relay", "*"),
        ("Signal=11\r\nDuration=100", "application/dtmf-relay", "#"),
        ("signal= 7\r\n", "Application/DTMF-Relay", "7"),
        ("9", "application/dtmf", "9"),
        ("<xml/>", "application/media_control+xml", None),
    ],
)
def test_a_key_sent_as_sip_info_is_read_in_the_forms_phones_use(body, content_type, key):
    assert relayed_key(info(body, content_type)) == key

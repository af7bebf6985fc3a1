"""``voice-agent serve --sip``: phones call the agent over SIP, G.711, one session per call.

The calls are real: Debian's baresip dials the real server with a recording from shared/audio
as its microphone and records what it hears, in a network namespace of their own
(tests/sip_calls.py). One run of that script serves every test here that needs a phone: the
server takes one call at a time (``--max-sessions 1``) on the ``call`` profile, recording each
call (``[call] record = true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
import soundfile as sf
from aiortp.dtmf import DtmfEvent
from aiortp.packet import RtpPacket
from aiosipua import SipUAC, SipUAS, build_sdp
from livekit.agents import ToolError

from agent.conversations import ConversationPool
from agent.engines.lite.stt import FasterWhisperSTT
from agent.profile import CallSettings, load_profile
from agent.session import SessionFactory
from agent.transports.sip import SipConfigError, SipOptions, SipServer
from agent.transports.sip_wire import UdpTransport
from audio.decode import load_audio
from audio.pcm import resample
from audio.recording import BLOCK_S, CallRecording
from prompts import phrase
from tools.call import send_digits

from .conftest import JFK, free_udp_port, run_isolated
from .conftest import words as spoken
from .keypad_calls import KEYED, TOLD, collected
from .scripted import CallerContext


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("baresip") is None:
        pytest.fail("Debian's baresip is missing: .ci/setup installs it")
    out = tmp_path_factory.mktemp("sip-calls")
    return run_isolated("tests/sip_calls.py", out, timeout=400)


def heard(phone: dict[str, Any], reply: dict[str, Any]) -> set[str]:
    """The words the phone's loudspeaker said while the agent spoke ``reply``, by the bundled
    recognizer (the recording starts with the call, as the session's clock does)."""
    return words(FasterWhisperSTT().transcribe(heard_during(phone, reply)).text)


def heard_during(phone: dict[str, Any], reply: dict[str, Any]) -> np.ndarray:
    """What the phone's loudspeaker played while the agent spoke ``reply`` (16 kHz)."""
    assert phone["heard"], phone["log"]
    return load_audio(phone["heard"], 16000)[
        int(max(0.0, reply["start"] - 0.5) * 16000) : int((reply["t"] + 0.8) * 16000)
    ]


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:").lower() for w in text.split()}


NOTICE = CallSettings().record_notice
GREETING = "Hello, thanks for calling. How can I help?"
ORDER = ("first_session", "second_session", "fourth_session", "last_session")


def conversations(calls: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Each call's events, in the order the calls came."""
    return [calls["records"][calls[name]] for name in ORDER]


def transcribed(samples: np.ndarray, rate: int) -> str:
    return FasterWhisperSTT().transcribe(resample(samples, rate, 16000)).text


def test_a_caller_hears_the_greeting_then_an_answer_to_what_they_said(calls):
    assert not calls["problem"], calls["problem"]
    assert calls["first_answered"], calls["phones"][0]["log"]
    events = conversations(calls)[0]
    turns = [e for e in events if e["type"] == "user_turn"]
    said = " ".join(t["transcript"] for t in turns)
    assert jiwer.wer(spoken(JFK), spoken(said)) <= 0.25, said  # 8 kHz, through Whisper base
    replies = [e for e in events if e["type"] == "agent_reply"]
    assert replies[0]["text"] == f"{NOTICE} {GREETING}", "told of the recording, greeted first"
    assert replies[0]["start"] < turns[0]["start"]
    assert not replies[0]["interrupted"]
    answer = next(r for r in replies if r["start"] > turns[0]["end"] and not r["interrupted"])
    greeting = heard(calls["phones"][0], replies[0])
    assert {"recorded", "calling", "help"} <= greeting, f"the greeting was not heard: {greeting}"
    said = heard(calls["phones"][0], answer)
    assert len(said & words(answer["text"])) >= 2, f"{answer['text']!r} was not heard: {said}"


def test_the_phi4mm_engine_answers_a_phone_call_too(tiny_phi4mm, tmp_path):
    """Its 8 kHz G.711 audio reaches the model, and the reply reaches the phone. The tiny
    random-weight model's words are nonsense: what is checked is that the phone hears them."""
    result = run_isolated(f"tests/sip_calls.py --phi4mm {tiny_phi4mm}", tmp_path, timeout=300)
    assert not result["problem"], result["problem"]
    assert result["answered"] and result["server_exit"] == 0, result["phone"]["log"]
    (events,) = result["records"].values()
    turn = next(e for e in events if e["type"] == "user_turn")
    reply = next(
        e
        for e in events
        if e["type"] == "agent_reply" and e["start"] > turn["end"] and not e["interrupted"]
    )
    during = heard_during(result["phone"], reply).astype(np.float64)
    assert np.sqrt(np.mean(during**2)) > 300, "the reply was not heard on the phone"


def test_the_agent_ending_the_conversation_hangs_up_the_call(calls):
    """Ended by MQTT's cmd/end, which shuts the session down as end_conversation does."""
    assert calls["first_hung_up_by_agent"]
    log = calls["phones"][0]["log"]
    assert "Connection reset by peer" in log, "baresip's words for a BYE from the other side"
    assert calls["after_first"], "the session ended with the call"


def test_a_call_while_every_place_is_taken_hears_busy(calls):
    assert calls["busy_refused"], calls["phones"][1]["log"]
    assert len(calls["records"]) == 4, "the busy call started no conversation"


def test_a_caller_hanging_up_mid_reply_frees_the_session(calls):
    assert calls["second_replying"], calls["phones"][2]["log"]
    assert calls["after_drop"], calls["status"]
    events = conversations(calls)[1]
    assert events[-1]["type"] == "summary"
    assert any(e["type"] == "agent_reply" and e["interrupted"] for e in events)


def test_a_caller_is_handed_to_a_person_after_being_told_so(calls):
    """MQTT's cmd/transfer (the transfer_call tool does the same): the agent says so, then asks
    the caller's phone (REFER) to call the profile's transfer_to, and hangs up its own leg."""
    assert calls["fourth_greeted"], calls["phones"][3]["log"]
    assert "transferring call" in calls["phones"][3]["log"], "the phone was asked to transfer"
    assert calls["operator_answered"], calls["phones"][4]["log"]
    assert calls["after_transfer"], "the agent's side of the call ended"
    events = calls["records"][calls["fourth_session"]]
    notice = [
        e for e in events if e["type"] == "agent_reply" and e["text"] == phrase("transfer", "en")
    ]
    assert notice, [e for e in events if e["type"] == "agent_reply"]
    assert events[-1]["type"] == "summary"


def test_every_call_leaves_a_complete_event_log_and_the_server_stops_cleanly(calls):
    for events in conversations(calls):
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "summary" and kinds.count("summary") == 1
        assert {"state", "agent_reply"} <= set(kinds), "the greeting, at least"
        # a fragment of two words over the phone is sometimes told as another language by
        # Whisper base ("And so" as Spanish "y entonces"): the replies and longer turns are not
        assert all(
            e["language"] == "en"
            for e in events
            if e["type"] == "agent_reply"
            or (e["type"] == "user_turn" and len(e["transcript"].split()) >= 3)
        )
    assert calls["server_exit"] == 0


def test_a_recorded_call_keeps_the_caller_left_and_the_agent_right_in_step(calls):
    """conversation.wav beside the call's events: what the caller said where the events say
    they said it, and the agent's words where it spoke them."""
    session = calls["first_session"]
    samples, rate = sf.read(calls["recordings"][session]["path"], dtype="int16")
    events = calls["records"][session]
    greeting = next(e for e in events if e["type"] == "agent_reply")
    turns = [e for e in events if e["type"] == "user_turn"]

    def during(start: float, end: float, channel: int) -> np.ndarray:
        return samples[int(max(0.0, start - 0.3) * rate) : int((end + 0.5) * rate), channel]

    caller = transcribed(during(turns[0]["start"], turns[-1]["end"], 0), rate)
    assert jiwer.wer(spoken(JFK), spoken(caller)) <= 0.3, caller
    agent = transcribed(during(greeting["start"], greeting["t"], 1), rate)
    assert {"recorded", "calling"} <= words(agent), agent
    quiet_caller = during(greeting["start"], greeting["t"], 0).astype(np.float64)
    assert np.sqrt(np.mean(quiet_caller**2)) < 100, "the caller's side is not the agent's"


def test_every_call_leaves_a_complete_recording_however_it_ended(calls):
    """Ended by the agent, by the caller mid-reply, by a transfer, by the server stopping."""
    for name, events in zip(ORDER, conversations(calls), strict=True):
        recording = calls["recordings"][calls[name]]
        assert recording["channels"] == 2
        assert recording["header_frames"] == recording["frames"], "a player reads it whole"
        assert abs(recording["seconds"] - events[-1]["t"]) < 2.0, (name, recording)


@pytest.fixture(scope="module")
def keypad_call(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("keypad-call")
    result = run_isolated("tests/keypad_calls.py", out, timeout=400)
    assert result["answered"], result["problem"]
    return result


def test_what_a_caller_types_reaches_the_model_exactly_and_is_never_heard_as_speech(
    keypad_call,
):
    """A caller on a real phone (RFC 4733) says ten times "I'd like to enter my account
    number": each time the agent asks for it and ``collect_digits`` reads the entry (ended by
    #) exactly, which the chat keeps for the model. Keys typed unasked are told to the model as
    the caller's turn in words. Each key is a ``dtmf`` event; none makes a turn of speech or
    cuts the agent off."""
    events = keypad_call["records"][keypad_call["session"]]
    assert keypad_call["asked"] == len(KEYED), "the agent asked for the keypad each time"
    assert collected(events) == [f"Typed on the keypad: {' '.join(k[:-1])}." for k in KEYED]
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == list("".join(KEYED + TOLD))
    told = [e["transcript"] for e in events if e["type"] == "user_turn"][-len(TOLD) :]
    assert told == [f"The caller pressed {' '.join(keys)} on the keypad." for keys in TOLD]
    turns = [e["transcript"] for e in events if e["type"] == "user_turn"]
    assert all("account number" in t or "on the keypad" in t for t in turns[1:]), turns
    keys = [e for e in events if e["type"] == "dtmf"]
    first_unasked = keys[len("".join(KEYED))]["t"]  # after the entries (a request may barge in)
    after = [e for e in events if e["t"] >= first_unasked and e["type"] == "interruption"]
    assert not after, "no key barged in"


def test_a_recording_keeps_the_call_to_its_last_second_when_the_server_is_killed(keypad_call):
    recording = keypad_call["recordings"][keypad_call["session"]]
    assert recording["header_frames"] == recording["frames"], "a player reads it whole"
    # written each second: it holds the call up to a second before the last event logged
    last_event_t = keypad_call["last_event_t"]
    assert recording["seconds"] >= last_event_t - BLOCK_S - 0.05, (recording, last_event_t)


def test_a_late_packet_of_the_caller_is_kept_one_frame_later_not_lost(tmp_path):
    """The agent's clock keeps the recording's time; the caller's jitter shifts, never drops."""
    recording = CallRecording(tmp_path / "call.wav", 8000)
    late: list[bytes] = []
    for i in range(1, 101):
        packet = np.full(160, i, np.int16).tobytes()
        if i % 10 == 5:
            late.append(packet)  # arrives with the next one
        else:
            for held in [*late, packet]:
                recording.heard(held)
            late.clear()
        recording.sent(np.full(160, -i, np.int16))
    recording.close()
    samples, _ = sf.read(tmp_path / "call.wav", dtype="int16")
    assert list(samples[::160, 1]) == [-i for i in range(1, 101)] + [0], "the agent's, then"
    caller = [v for v in samples[::160, 0] if v]  # the caller's last, waiting at the hang-up
    assert caller == list(range(1, 101)), "every packet of the caller, in order"


def test_a_server_stopped_mid_call_hangs_the_caller_up(calls):
    assert calls["last_greeted"], calls["phones"][5]["log"]
    assert calls["last_hung_up"], calls["phones"][5]["log"]


@pytest.mark.parametrize(
    ("address", "allow", "message"),
    [
        ("0.0.0.0:5060", [], "give the address callers reach, not 0.0.0.0"),
        ("phone:5060", [], "give the address callers reach and a port"),
        ("127.0.0.1:70000", [], "the port must be between 1 and 65535"),
        ("192.0.2.7:5060", [], "needs --sip-allow"),
        ("192.0.2.7:5060", ["not-a-net"], "--sip-allow not-a-net"),
    ],
)
def test_an_address_that_cannot_take_calls_safely_is_refused(address, allow, message):
    with pytest.raises(SipConfigError, match=message):
        SipOptions.parse(address, allow)


def test_only_the_allowed_networks_may_call():
    options = SipOptions.parse("192.0.2.7:5060", ["198.51.100.0/24", "203.0.113.5"])
    assert options.admits("198.51.100.77") and options.admits("203.0.113.5")
    assert not options.admits("203.0.113.6") and not options.admits("127.0.0.1")
    assert SipOptions.parse("127.0.0.1:5060", []).admits("127.0.0.1")
    assert not SipOptions.parse("127.0.0.1:5060", []).admits("10.0.0.1")


@contextlib.asynccontextmanager
async def in_process_phone(
    log_dir: Path | None = None,
) -> AsyncIterator[tuple[SipUAC, tuple[str, int], list[int], ConversationPool]]:
    """A server on the desktop profile and aiosipua's own user agent as the phone, in-process:
    the phone's agent, the server's address, the final answers the phone got, the pool."""
    factory = await SessionFactory.load(load_profile("desktop"))
    pool = ConversationPool(1)
    port = free_udp_port()
    server = SipServer(factory, SipOptions.parse(f"127.0.0.1:{port}", []), pool, log_dir)
    await server.start()
    transport = UdpTransport(local_addr=("127.0.0.1", free_udp_port()))
    uac = SipUAC(transport)
    phone = SipUAS(transport, uac=uac)
    answers: list[int] = []
    handle = uac.handle_response
    uac.handle_response = lambda r, a: (answers.append(r.status_code), handle(r, a))[1]
    await phone.start()
    try:
        yield uac, ("127.0.0.1", port), answers, pool
    finally:
        await phone.stop()
        await pool.aclose()
        await server.aclose()
        await factory.aclose()


async def until(done: Callable[[], bool]) -> bool:
    for _ in range(50):
        if done():
            return True
        await asyncio.sleep(0.1)
    return done()


async def test_an_a_law_phone_is_answered_in_a_law_and_a_re_invite_keeps_its_call():
    """A-law is what European trunks speak. A PBX refreshes a long call with a re-INVITE; left
    unanswered, it would drop the call."""
    async with in_process_phone() as (uac, agent, answers, pool):
        offer = build_sdp("127.0.0.1", free_udp_port(), 8, "PCMA")
        call = uac.send_invite("sip:me@127.0.0.1", f"sip:agent@{agent[0]}:{agent[1]}", agent, offer)
        await call.wait_answered()
        assert answers.count(200) == 1 and pool.active == 1
        assert call.sdp_answer is not None and call.sdp_answer.audio is not None
        assert [c.encoding_name for c in call.sdp_answer.audio.codecs][0] == "PCMA"
        uac.send_reinvite(call.dialog, offer, agent)
        assert await until(lambda: answers.count(200) == 2), answers
        assert pool.active == 1, "the call goes on"
        call.hangup(uac)
        assert await until(lambda: not pool.active), "the caller's BYE ended it"


async def test_a_phone_offering_only_opus_is_told_488_and_holds_nothing():
    async with in_process_phone() as (uac, agent, answers, pool):
        offer = build_sdp("127.0.0.1", free_udp_port(), 111, "opus", sample_rate=48000)
        uac.send_invite("sip:me@127.0.0.1", f"sip:agent@{agent[0]}:{agent[1]}", agent, offer)
        assert await until(lambda: 488 in answers), answers
        assert await until(lambda: not pool.active and not pool.status()["sessions_in_memory"])


async def test_keys_sent_as_sip_info_are_answered_and_reach_the_keypad(tmp_path):
    """Phones and PBXs that relay keys in SIP INFO (application/dtmf-relay) rather than RTP."""
    async with in_process_phone(tmp_path) as (uac, agent, answers, pool):
        offer = build_sdp("127.0.0.1", free_udp_port(), 0, "PCMU")
        call = uac.send_invite("sip:me@127.0.0.1", f"sip:agent@{agent[0]}:{agent[1]}", agent, offer)
        await call.wait_answered()
        answered = len(answers)
        for key in "42":
            relay = f"Signal={key}\r\nDuration=160\r\n"
            uac.send_info(call.dialog, relay, "application/dtmf-relay", agent)
        uac.send_info(call.dialog, "<xml/>", "application/media_control+xml", agent)
        assert await until(lambda: len(answers) == answered + 3), answers
        assert answers[answered:] == [200, 200, 415], "a body that carries no key is refused"
        call.hangup(uac)
        assert await until(lambda: not pool.active)
    (events_path,) = tmp_path.glob("*/events.jsonl")
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["4", "2"]


class RtpCatcher(asyncio.DatagramProtocol):
    """The phone's media port: the agent's RTP, as it arrives."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(RtpPacket.parse(data))


async def test_keys_the_agent_presses_go_out_as_telephone_events_one_after_another():
    """send_digits, for a menu at the other end: RFC 4733 events, each key its own start."""
    async with in_process_phone() as (uac, agent, answers, pool):
        catcher = RtpCatcher()
        media, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: catcher, local_addr=("127.0.0.1", 0)
        )
        try:
            offer = build_sdp("127.0.0.1", media.get_extra_info("sockname")[1], 0, "PCMU")
            call = uac.send_invite(
                "sip:me@127.0.0.1", f"sip:agent@{agent[0]}:{agent[1]}", agent, offer
            )
            await call.wait_answered()
            (session,) = pool._held  # the call's conversation
            caller = CallerContext()
            caller.userdata = session.userdata
            assert await send_digits(caller, keys="1#9") == "Pressed 1 # 9."  # type: ignore[arg-type]
            with pytest.raises(ToolError, match="a keypad has only the keys"):
                await send_digits(caller, keys="1x")  # type: ignore[arg-type]
            await asyncio.sleep(1.5)
            call.hangup(uac)
            assert await until(lambda: not pool.active)
        finally:
            media.close()
    events = [p for p in catcher.packets if p.payload_type == 101]
    ends = {p.timestamp: DtmfEvent.parse(p.payload) for p in events if p.payload[1] & 0x80}
    assert [ends[t].digit for t in sorted(ends)] == ["1", "#", "9"], "each key its own event"
    assert all(0 < e.duration for e in ends.values())

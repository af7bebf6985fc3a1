"""Speech that is not for the agent (``[addressing]``): with a wake phrase it answers only
what begins with the phrase and the follow-ups after it, and with push-to-talk only what is
said after the button; what it ignores starts no turn and costs no reply."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from livekit.agents.voice.events import AgentStateChangedEvent

from agent.addressing import Addressing, AddressingChanged, after_wake_phrase
from agent.control import ControlledSession
from agent.profile import AddressingSettings, ProfileError, load_profile
from agent.serve import LISTEN_MESSAGE
from agent.session import SessionFactory
from agent.transports.file import SAMPLE_RATE, play_conversation
from audio.decode import load_audio

from .conftest import SHARED_AUDIO, free_port, start_serve
from .scripted import spoken

PHRASES = ["hey computer"]


@pytest.mark.parametrize(
    ("heard", "asked"),
    [
        ("Hey computer, what time is it?", "what time is it?"),
        ("Hey, Computer.", ""),
        ("Oh, hey computers! Set a timer for five minutes.", "Set a timer for five minutes."),
        ("A computer, what time is it?", "what time is it?"),  # "hey" as Whisper heard it once
        ("The computer is broken.", None),
        ("I told him hey computer yesterday.", None),
        ("What time is it?", None),
        ("Hey", None),
    ],
)
def test_a_request_is_what_follows_the_wake_phrase_at_its_start(heard, asked):
    assert after_wake_phrase(heard, PHRASES) == asked


async def test_once_addressed_it_listens_until_the_silence_after_its_reply():
    addressing = Addressing(AddressingSettings(mode="wake_phrase", listen_s=1.0))
    changes: list[AddressingChanged] = []
    ignored: list[str] = []
    addressing.on("changed", changes.append)
    addressing.on("ignored", ignored.append)
    assert addressing.heard("What is on television tonight?") is None
    assert addressing.heard("Hey computer, what time is it?") == "what time is it?"
    assert addressing.heard("And in Tokyo?") == "And in Tokyo?", "a follow-up"
    addressing._on_agent_state(AgentStateChangedEvent(old_state="thinking", new_state="listening"))
    await asyncio.sleep(1.3)
    assert addressing.heard("And in Paris?") is None, "the silence after the reply ended it"
    assert ignored == ["What is on television tonight?", "And in Paris?"]
    assert changes == [
        AddressingChanged("listening", "wake_phrase"),
        AddressingChanged("waiting", "timeout"),
    ]


def test_push_to_talk_needs_the_button_and_always_has_none():
    addressing = Addressing(AddressingSettings(mode="push_to_talk"))
    assert addressing.heard("Hey computer, what time is it?") is None
    addressing.listen("mqtt")
    assert addressing.heard("What time is it?") == "What time is it?"
    with pytest.raises(ValueError, match="listens always"):
        Addressing(AddressingSettings()).listen("key")


async def test_an_engine_without_a_recognizer_cannot_be_addressed_by_a_wake_phrase(tmp_path):
    profile = tmp_path / "seeing.toml"
    profile.write_text(
        'name = "seeing"\nprompt = "desktop"\nengine = "phi4mm"\n'
        '[addressing]\nmode = "wake_phrase"\n'
    )
    with pytest.raises(ProfileError, match="needs the user's words written by a recognizer"):
        await SessionFactory.load(load_profile(str(profile)))


def _desktop_with(tmp_path: Path, addressing: str) -> Path:
    desktop = (Path(__file__).parents[1] / "agent" / "profiles" / "desktop.toml").read_text()
    profile = tmp_path / "addressed.toml"
    profile.write_text(desktop + f"\n[addressing]\n{addressing}\n")
    return profile


async def test_a_lecture_is_ignored_and_the_wake_phrase_with_its_request_is_answered(tmp_path):
    """20 s of a lecture (speech60_en), then "Hey computer, what time is it?" and a follow-up
    without the phrase; 3 s after its reply it waits again, and a question is ignored."""
    lecture = load_audio(SHARED_AUDIO / "speech60_en.wav", SAMPLE_RATE)[: 20 * SAMPLE_RATE]
    addressed = await spoken("Hey computer, what time is it?", "What is two plus two?", pause_s=5.0)
    ignored = await spoken("What is seven times six?", pause_s=3.0)
    samples = np.concatenate([lecture, addressed, ignored])
    profile = load_profile(str(_desktop_with(tmp_path, 'mode = "wake_phrase"\nlisten_s = 3.0')))
    factory = await SessionFactory.load(profile)
    controlled = ControlledSession.open(factory, None, owns_factory=True)
    await play_conversation(
        controlled, controlled.agent, samples, tmp_path, speed=1.0, settle_s=4.0, echo=True,
        source="spoken",
    )  # fmt: skip
    await controlled.aclose()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    turns = [e["transcript"] for e in events if e["type"] == "user_turn"]
    assert [t.lower().rstrip("?") for t in turns][:1] == ["what time is it"], turns
    assert len(turns) == 2 and len([e for e in events if e["type"] == "agent_reply"]) == 2
    assert "get_time" in [e["name"] for e in events if e["type"] == "tool_call"]
    lecture_ignored = [e for e in events if e["type"] == "ignored" and e["t"] < 20.5]
    assert len(lecture_ignored) >= 2, "the lecture's sentences were heard, and not answered"
    changes = [e for e in events if e["type"] == "addressing"]
    assert [(e["state"], e["by"]) for e in changes] == [
        ("listening", "wake_phrase"),
        ("waiting", "timeout"),
    ], changes
    late = [e["transcript"] for e in events if e["type"] == "ignored" and e["t"] > changes[1]["t"]]
    assert "times" in " ".join(late), "the question after the silence is not for it"


async def test_the_browsers_talk_button_makes_the_agent_listen(tmp_path):
    """The page's Talk button sends ``{"type": "listen"}`` on the events channel (a client
    of aiortc's here, not Chromium); the server answers with the addressing record."""
    port = free_port()
    server = start_serve(
        "--port", str(port), "--profile", str(_desktop_with(tmp_path, 'mode = "push_to_talk"'))
    )
    client = RTCPeerConnection()
    try:
        client.addTrack(AudioStreamTrack())
        channel = client.createDataChannel("events")
        records: asyncio.Queue[dict] = asyncio.Queue()
        channel.on("message", lambda text: records.put_nowait(json.loads(text)))
        channel.on("open", lambda: channel.send(LISTEN_MESSAGE))
        await client.setLocalDescription(await client.createOffer())
        answer = await _post_offer(port, client.localDescription.sdp)
        await client.setRemoteDescription(answer)
        while (record := await asyncio.wait_for(records.get(), 60))["type"] != "addressing":
            pass
        assert (record["state"], record["by"]) == ("listening", "browser")
    finally:
        await client.close()
        server.terminate()
        server.wait(timeout=30)


async def _post_offer(port: int, sdp: str) -> RTCSessionDescription:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}/offer"
        async with http.post(url, json={"sdp": sdp, "type": "offer"}) as response:
            body = await response.json()
            assert response.status == 200, body
    return RTCSessionDescription(sdp=body["sdp"], type=body["type"])


def test_a_mode_the_agent_does_not_know_is_refused_in_one_line(tmp_path):
    with pytest.raises(ProfileError, match=r"addressing\.mode: .*'wake_phrase'"):
        load_profile(str(_desktop_with(tmp_path, 'mode = "sometimes"')))

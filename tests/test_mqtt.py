"""The MQTT control plane against a real Mosquitto broker: events out, commands in, devices."""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
import pytest
import soundfile as sf
from livekit.agents import ToolError

from tests.conftest import DEMO, REPO, SHARED_AUDIO
from tests.mqtt_helpers import BASE, Observer, run_file, settings, silence
from tools.commands import Command
from tools.devices import DeviceGateway
from tools.mqtt import MqttBridge


async def test_the_bridge_says_online_and_publishes_events_in_order(broker):
    async with Observer(broker) as observer:
        bridge = MqttBridge(settings(broker))
        await bridge.start()
        for i in range(5):
            bridge.publish_event("state", state=f"s{i}")
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/state" and '"s4"' in m[1])
        await bridge.aclose()
        await observer.wait_for(lambda m: m == (f"{BASE}/status", "offline", False))
    assert (f"{BASE}/status", "online", False) in observer.messages
    assert [e["seq"] for e in observer.events()] == [1, 2, 3, 4, 5]
    assert [e["state"] for e in observer.events()] == ["s0", "s1", "s2", "s3", "s4"]


async def test_a_crashed_agent_is_reported_offline_by_its_last_will(broker):
    script = (
        "import asyncio, sys\n"
        "from tools.mqtt import MqttBridge, MqttSettings\n"
        "async def main():\n"
        f"    bridge = MqttBridge(MqttSettings.parse('{broker.url}', 'kiosk1'))\n"
        "    await bridge.start(); await bridge.connected.wait(); print('up', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    assert agent.stdout is not None
    assert (await asyncio.wait_for(agent.stdout.readline(), 30)).strip() == b"up"
    agent.kill()  # no goodbye: only the broker can tell
    await agent.wait()
    async with Observer(broker, f"{BASE}/status") as observer:
        await observer.wait_for(lambda m: m == (f"{BASE}/status", "offline", True), timeout=10)


async def test_events_of_a_broker_outage_arrive_after_the_reconnect(broker):
    async with Observer(broker) as observer:
        bridge = MqttBridge(settings(broker))
        await bridge.start()
        for i in range(3):
            bridge.publish_event("user", text=f"before {i}")
        await observer.wait_for(lambda m: "before 2" in m[1])
        broker.stop()
        for i in range(4):  # the gap: said while the broker is away
            bridge.publish_event("user", text=f"during {i}")
        await asyncio.sleep(1.5)
        broker.start()
        await observer.wait_for(lambda m: "during 3" in m[1], timeout=30)
        await bridge.aclose()
    texts = [e["text"] for e in observer.events()]
    assert texts == [f"before {i}" for i in range(3)] + [f"during {i}" for i in range(4)]
    assert [e["seq"] for e in observer.events()] == list(range(1, 8))


async def test_the_device_tool_sets_and_reads_allowlisted_devices_only(broker):
    async with Observer(broker, "kiosk1/#") as observer:
        await observer.publish("kiosk1/lamp/state", "off", retain=True)
        bridge = MqttBridge(settings(broker))
        await bridge.start()
        await asyncio.wait_for(bridge.connected.wait(), 10)
        devices = DeviceGateway(bridge, {"lamp": "kiosk1/lamp", "door": "kiosk1/door"})
        await devices.set("Lamp", "on")
        await observer.wait_for(lambda m: m[:2] == ("kiosk1/lamp/set", "on"))
        assert await devices.get("lamp") == "off"  # the lamp's own retained report
        for outside in ("garage", "kiosk1/lamp", "#", "voice-agent/kiosk1/cmd/end"):
            with pytest.raises(ToolError, match="not a device this kiosk may control"):
                await devices.set(outside, "on")
        with pytest.raises(TimeoutError, match="nothing is known"):
            await devices.get("door")
        await bridge.aclose()
    assert not any(topic.startswith("kiosk1/garage") for topic, _, _ in observer.messages)


async def test_a_kiosk_session_publishes_its_turns_in_order(broker, tmp_path):
    async with Observer(broker) as observer:
        agent = await run_file(broker, SHARED_AUDIO / "one_two_three_en.wav", tmp_path)
        _, stderr = await agent.communicate()
        assert agent.returncode == 0, stderr.decode()
        await observer.wait_for(lambda m: m == (f"{BASE}/status", "offline", False))
    events = observer.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "none lost, in order"
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "state" and events[0]["state"] == "listening"
    assert "user" in kinds and "agent" in kinds
    assert kinds.index("user") < kinds.index("agent")
    states = {e["state"] for e in events if e["kind"] == "state"}
    assert {"listening", "thinking", "speaking"} <= states
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    transcripts = [e["transcript"] for e in logged if e["type"] == "user_turn"]
    assert [e["text"] for e in events if e["kind"] == "user"] == transcripts


async def test_a_say_command_makes_the_running_session_speak(broker, tmp_path):
    async with Observer(broker) as observer:
        quiet = silence(tmp_path / "quiet.wav", 8)
        agent = await run_file(broker, quiet, tmp_path / "out")
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/state" and "listening" in m[1])
        await observer.publish(f"{BASE}/cmd/say", "The lamp is now on.")
        _, stderr = await agent.communicate()
        assert agent.returncode == 0, stderr.decode()
    said = [e for e in observer.events() if e["kind"] == "agent"]
    assert [e["text"] for e in said] == ["The lamp is now on."]
    speech, rate = sf.read(tmp_path / "out" / "agent.wav", dtype="int16")
    assert np.abs(speech).max() > 1000, "the words were spoken, not only logged"


async def test_mute_stops_listening_and_end_ends_the_session(broker, tmp_path):
    async with Observer(broker) as observer:
        talk = tmp_path / "talk.wav"
        question = sf.read(SHARED_AUDIO / "one_two_three_en.wav", dtype="int16")[0]
        rate = sf.info(SHARED_AUDIO / "one_two_three_en.wav").samplerate
        padding = np.zeros(3 * rate, np.int16)
        sf.write(talk, np.concatenate([padding, question, padding, padding, padding]), rate)
        agent = await run_file(broker, talk, tmp_path / "out")
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/state")
        await observer.publish(f"{BASE}/cmd/mute", "")
        await asyncio.sleep(6)  # the user speaks while muted
        await observer.publish(f"{BASE}/cmd/end", "")
        _, stderr = await asyncio.wait_for(agent.communicate(), 60)
        assert agent.returncode == 0, stderr.decode()
    assert not [e for e in observer.events() if e["kind"] == "user"], "muted: nothing heard"
    logged = (tmp_path / "out" / "events.jsonl").read_text().splitlines()
    summary = json.loads(logged[-1])
    assert summary["counts"]["user_turn"] == 0
    assert summary["t"] < 14, "end stops the session before the recording is over"


async def test_a_broker_restart_mid_session_loses_no_event(broker, tmp_path):
    async with Observer(broker) as observer:
        agent = await run_file(broker, DEMO, tmp_path)
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/user", timeout=60)
        broker.stop()
        await asyncio.sleep(4)  # the agent goes on talking meanwhile
        broker.start()
        _, stderr = await agent.communicate()
        assert agent.returncode == 0, stderr.decode()
        await observer.wait_for(lambda m: m == (f"{BASE}/status", "offline", False), timeout=30)
    events = observer.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    users = [e for e in events if e["kind"] == "user"]
    assert len(users) == 3, "every turn of the demo reached the dashboard"


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://127.0.0.1:1883", "is not an mqtt://HOST[:PORT] or mqtts:// address"),
        ("mqtt://user:secret@127.0.0.1", "MQTT_USERNAME and MQTT_PASSWORD"),
        ("mqtt://127.0.0.1:99999", "invalid port"),
    ],
)
def test_bad_broker_addresses_exit_2_without_showing_credentials(url, message, tmp_path):
    from tests.conftest import voice_agent

    result = voice_agent(
        "run-file", str(SHARED_AUDIO / "one_two_three_en.wav"), "--out", str(tmp_path),
        "--profile", "kiosk", "--mqtt", url,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr
    assert "secret" not in result.stderr + result.stdout


async def test_the_language_command_switches_voice_and_reply_language():
    from livekit.agents import UserInputTranscribedEvent

    from agent.control import SessionControl
    from agent.profile import load_profile
    from agent.session import SessionFactory

    factory = await SessionFactory.load(load_profile("desktop"))
    session, agent = factory.session()
    control = SessionControl(session, agent, None)
    english = await session.tts.voice()  # type: ignore[union-attr]
    await control.command(Command("language", "de"))
    assert await session.tts.voice() == "gmw/de" != english  # type: ignore[union-attr]
    assert "'de'" in agent.instructions
    # the apologies follow the answers, also once the English recognizer has heard a turn
    heard = UserInputTranscribedEvent(transcript="What time is it?", is_final=True, language="en")
    session.emit("user_input_transcribed", heard)
    assert session.llm.language == "de"  # type: ignore[union-attr]
    # two unknown languages racing each other: neither replaces the working voice
    await asyncio.gather(
        control.command(Command("language", "xx")), control.command(Command("language", "yy"))
    )
    assert await session.tts.voice() == "gmw/de"  # type: ignore[union-attr]
    frame = await session.tts.synthesize("Hallo.").collect()  # type: ignore[union-attr]
    assert frame.duration > 0.3, "the voice still speaks"

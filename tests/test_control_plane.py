"""The MQTT control plane tried as a hostile user would, against a real Mosquitto broker:
nothing it is sent disables it, and no command is lost without a trace."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import replace

import pytest

from tests.mqtt_helpers import BASE, Observer, run_file, settings, silence
from tools.commands import COMMANDS, Command
from tools.mqtt import MqttBridge, MqttSettings

HOSTILE = {
    "not-utf8": b"\xff\xfe\xfd",
    "oversized": b"a" * 1_000_000,
    "binary": bytes(range(256)),
    "empty": b"",
    "control-characters": b"lamp\x00on",
}


async def connected_bridge(broker, **overrides) -> MqttBridge:
    bridge = MqttBridge(replace(settings(broker), **overrides))
    await bridge.start()
    await asyncio.wait_for(bridge.connected.wait(), 10)
    return bridge


async def take_until(bridge: MqttBridge, last: Command) -> list[Command]:
    taken: list[Command] = []
    while not taken or taken[-1] != last:
        taken.append(await asyncio.wait_for(bridge.next_command(), 10))
    return taken


@pytest.mark.parametrize("command", COMMANDS)
async def test_hostile_payloads_leave_the_control_plane_working(broker, command, caplog):
    caplog.set_level(logging.WARNING, logger="voice_agent")
    async with Observer(broker) as observer:
        bridge = await connected_bridge(broker)
        for payload in HOSTILE.values():
            await observer.publish(f"{BASE}/cmd/{command}", payload)
        await observer.publish(f"{BASE}/cmd/say", "Still listening.")
        taken = await take_until(bridge, Command("say", "Still listening."))
        bridge.publish_event("state", state="listening")
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/state", timeout=10)
        await bridge.aclose()
    errors = [e for e in observer.events() if e["kind"] == "error"]
    if command in ("say", "language"):
        assert taken == [Command("say", "Still listening.")], "only the good command came"
        assert sum(e["count"] for e in errors) == len(HOSTILE), errors
        assert all(e["command"] == command and e["source"] == "mqtt" for e in errors)
        assert any("not UTF-8" in e["message"] for e in errors)
    else:  # these carry nothing: whatever the payload, the command is obeyed
        assert taken == [Command(command)] * len(HOSTILE) + [Command("say", "Still listening.")]
        assert errors == []
    assert all(len(r.getMessage()) < 200 and "\n" not in r.getMessage() for r in caplog.records)


async def test_an_unknown_command_is_refused_by_name(broker):
    async with Observer(broker) as observer:
        bridge = await connected_bridge(broker)
        await observer.publish(f"{BASE}/cmd/reboot", "now")
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/error")
        await bridge.aclose()
    [error] = [e for e in observer.events() if e["kind"] == "error"]
    assert error["command"] == "reboot" and "unknown command" in error["message"]


async def test_commands_wait_for_the_session_and_an_overflow_is_counted(broker):
    """While the models load nobody takes commands: they wait, in order, up to the inbox's
    size; the rest are refused with one error event that says how many."""
    async with Observer(broker) as observer:
        bridge = await connected_bridge(broker, inbox_size=20)
        for i in range(50):
            await observer.publish(f"{BASE}/cmd/say", f"Number {i}.")
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/error")
        taken = [await asyncio.wait_for(bridge.next_command(), 5) for _ in range(20)]
        await bridge.aclose()
    assert [c.argument for c in taken] == [f"Number {i}." for i in range(20)]
    [error] = [e for e in observer.events() if e["kind"] == "error"]
    assert error["count"] == 30 and "20 commands are already waiting" in error["message"]


async def test_an_unreachable_broker_is_reported_and_the_agent_still_closes(caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    bridge = MqttBridge(MqttSettings.parse(f"mqtt://127.0.0.1:{port}", "kiosk1"))
    await bridge.start()
    bridge.publish_event("state", state="listening")
    await asyncio.sleep(1)
    await asyncio.wait_for(bridge.aclose(drain_s=0.5), 10)
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"127.0.0.1:{port} not reachable" in line for line in lines), lines


async def test_a_kiosk_session_obeys_early_commands_and_accounts_for_every_say(broker, tmp_path):
    """A say sent while the models load is spoken once they have; a malformed one is refused;
    of a burst, every say is spoken, refused or reported dropped — none vanishes."""
    async with Observer(broker) as observer:
        agent = await run_file(broker, silence(tmp_path / "quiet.wav", 20), tmp_path / "out")
        await observer.wait_for(lambda m: m[:2] == (f"{BASE}/status", "online"), timeout=30)
        await observer.publish(f"{BASE}/cmd/say", "Welcome.")  # the models are still loading
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/state" and "listening" in m[1])
        await observer.publish(f"{BASE}/cmd/say", b"\xff\xfe")
        await observer.publish(f"{BASE}/cmd/say", "Second.")
        await observer.wait_for(lambda m: m[0] == f"{BASE}/event/agent" and "Second" in m[1])
        for i in range(40):
            await observer.publish(f"{BASE}/cmd/say", f"Burst {i}.")
        await observer.publish(f"{BASE}/cmd/end", "")
        _, stderr = await asyncio.wait_for(agent.communicate(), 120)
        assert agent.returncode == 0, stderr.decode()
        await observer.wait_for(lambda m: m == (f"{BASE}/status", "offline", False), timeout=10)
    events = observer.events()
    said = [e["text"] for e in events if e["kind"] == "agent"]
    assert said[:2] == ["Welcome.", "Second."], said
    errors = [e for e in events if e["kind"] == "error"]
    assert any("not UTF-8" in e["message"] for e in errors)
    refused = sum(e["count"] for e in errors if "already waiting" in e["message"])
    dropped = sum(e["count"] for e in errors if e["message"].startswith("dropped"))
    spoken = sum(1 for text in said if text.startswith("Burst"))
    assert spoken + refused + dropped == 40, (spoken, refused, dropped)
    assert refused >= 40 - 20, "at most 20 announcements wait"
    log = (tmp_path / "out" / "events.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in log]
    assert sum(e.get("count", 0) for e in logged if e["type"] == "error") == sum(
        e["count"] for e in errors
    ), "the run's own event log has the same refusals"


async def test_a_clean_exit_while_the_broker_was_away_still_leaves_the_status_offline(broker):
    """A clean exit drops the last will, so the bridge says offline itself — with a short
    visit when its own connection was down at that moment."""
    bridge = await connected_bridge(broker)
    broker.stop()
    while bridge.connected.is_set():
        await asyncio.sleep(0.05)
    broker.start()  # back, but the bridge is still waiting to reconnect
    await bridge.aclose()
    async with Observer(broker, f"{BASE}/status") as observer:
        await observer.wait_for(lambda m: m == (f"{BASE}/status", "offline", True), timeout=10)

"""A dashboard on a real broker, and a kiosk run-file talking to it: what the MQTT tests share."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import aiomqtt
import numpy as np
import soundfile as sf

from tests.conftest import REPO, Broker
from tools.mqtt import MqttSettings

BASE = "voice-agent/kiosk1"


class Observer:
    """A dashboard on the broker: a persistent QoS 1 subscription that rides out restarts."""

    def __init__(self, broker: Broker, topics: str = "#") -> None:
        self.broker = broker
        self.topics = topics
        self.messages: list[tuple[str, str, bool]] = []
        self._identifier = f"observer-{uuid.uuid4().hex[:8]}"
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> Observer:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.broker.port, identifier=self._identifier, clean_session=False
                ) as client:
                    self._client = client
                    await client.subscribe(self.topics, qos=1)
                    self._subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        text = (
                            payload.decode(errors="replace")
                            if isinstance(payload, bytes)
                            else str(payload)
                        )
                        self.messages.append((str(message.topic), text, message.retain))
            except aiomqtt.MqttError:
                self._client = None
                await asyncio.sleep(0.1)

    async def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1, retain=retain)

    async def wait_for(self, predicate, timeout: float = 60) -> tuple[str, str, bool]:
        for _ in range(int(timeout * 20)):
            for message in self.messages:
                if predicate(message):
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"not seen within {timeout} s: {self.messages[-5:]}")

    def events(self) -> list[dict]:
        """Event payloads in arrival order, duplicates (at-least-once) removed."""
        seen, out = set(), []
        for topic, text, _ in self.messages:
            if topic.startswith(f"{BASE}/event/"):
                event = json.loads(text)
                if event["seq"] not in seen:
                    seen.add(event["seq"])
                    out.append({"kind": topic.rsplit("/", 1)[1], **event})
        return out


def settings(broker: Broker) -> MqttSettings:
    return MqttSettings.parse(broker.url, "kiosk1")


async def run_file(
    broker: Broker, audio: Path, out: Path, *extra: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run-file", str(audio), "--out", str(out), "-q",
        "--profile", "kiosk", "--mqtt", broker.url, "--device-id", "kiosk1", *extra,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def silence(path: Path, seconds: float) -> Path:
    sf.write(path, np.zeros(int(seconds * 16000), np.int16), 16000)
    return path

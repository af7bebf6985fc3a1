"""The MQTT control plane of a kiosk: events out, commands in, device topics.

Events are kept in a bounded queue and published with QoS 1 in order; a message leaves the
queue only once the broker has acknowledged it, so when the broker goes away the events of the
gap are delivered after the reconnect (at least once: each carries a sequence number). A
retained ``status`` says ``online``; the broker's last will says ``offline`` if the agent dies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

logger = logging.getLogger("voice_agent")

Command = Callable[[str, str], Coroutine[Any, Any, None]]
COMMANDS = ("say", "mute", "unmute", "language", "end")
BACKOFF_S = (0.5, 8.0)


class MqttConfigError(ValueError):
    """A broker address or device id the user gave cannot be used."""


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool
    device_id: str
    prefix: str = "voice-agent"
    max_buffered: int = 1000

    @classmethod
    def parse(cls, url: str, device_id: str, prefix: str = "voice-agent") -> MqttSettings:
        """``mqtt://host[:port]`` or ``mqtts://host[:port]``; credentials come from the
        environment (MQTT_USERNAME, MQTT_PASSWORD), never from the URL, so they are never
        shown or logged."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise MqttConfigError(f"{url!r} is not an mqtt://HOST[:PORT] or mqtts:// address")
        if parts.username or parts.password:
            raise MqttConfigError(
                "put MQTT credentials in MQTT_USERNAME and MQTT_PASSWORD, not in the address"
            )
        if not device_id or any(c in device_id for c in "/#+"):
            raise MqttConfigError(f"device id {device_id!r} must be non-empty, without / # +")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise MqttConfigError(f"{url!r} has an invalid port") from None
        return cls(parts.hostname, port, parts.scheme == "mqtts", device_id, prefix.strip("/"))

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class MqttBridge:
    def __init__(self, settings: MqttSettings, *, on_command: Command | None = None) -> None:
        self.settings = settings
        self.connected = asyncio.Event()
        self._on_command = on_command
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_changed = asyncio.Event()
        self._sequence = itertools.count(1)
        self._dropped = 0
        self._client: aiomqtt.Client | None = None
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def on_command(self, handler: Command) -> None:
        self._on_command = handler

    def topic(self, suffix: str) -> str:
        return f"{self.settings.base}/{suffix}"

    def publish_event(self, kind: str, **fields: Any) -> None:
        """Queue ``<prefix>/<device>/event/<kind>``; sent in order, at least once."""
        payload = {"seq": next(self._sequence), "time": round(time.time(), 3), **fields}
        if len(self._outbox) >= self.settings.max_buffered:
            self._outbox.popleft()
            self._dropped += 1
            logger.warning("MQTT outbox full: dropped the oldest event (%d so far)", self._dropped)
        self._outbox.append((self.topic(f"event/{kind}"), json.dumps(payload).encode()))
        self._outbox_changed.set()

    async def publish_now(self, topic: str, payload: str) -> None:
        """Publish outside the event queue (device commands); fails if the broker is away."""
        client = self._client
        if client is None:
            raise ConnectionError(f"the MQTT broker at {self.settings.address} is not reachable")
        await client.publish(topic, payload, qos=1)

    async def read_retained(self, topic: str, *, timeout_s: float) -> str:
        client = self._client
        if client is None:
            raise ConnectionError(f"the MQTT broker at {self.settings.address} is not reachable")
        waiter = self._waiting.setdefault(topic, asyncio.get_running_loop().create_future())
        await client.subscribe(topic, qos=1)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"nothing is known about {topic} yet") from None
        finally:
            self._waiting.pop(topic, None)
            if self._client is not None:
                await self._client.unsubscribe(topic)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def aclose(self, *, drain_s: float = 3.0) -> None:
        """Deliver what is queued (for up to ``drain_s``), say offline, disconnect."""
        deadline = time.monotonic() + drain_s
        while self._outbox and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._client is not None:
            try:
                await self._client.publish(self.topic("status"), "offline", qos=1, retain=True)
            except aiomqtt.MqttError:
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        delay = BACKOFF_S[0]
        while True:
            try:
                async with self._connect() as client:
                    await client.publish(self.topic("status"), "online", qos=1, retain=True)
                    await client.subscribe(self.topic("cmd/#"), qos=1)
                    self._client = client
                    self.connected.set()
                    delay = BACKOFF_S[0]
                    logger.info(
                        "MQTT connected to %s as %s", self.settings.address, self.settings.base
                    )
                    await asyncio.gather(self._send(client), self._receive(client))
            except aiomqtt.MqttError as e:
                if self.connected.is_set():
                    logger.warning("MQTT connection to %s lost (%s)", self.settings.address, e)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])

    def _connect(self) -> aiomqtt.Client:
        status = self.topic("status")
        return aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=os.environ.get("MQTT_USERNAME") or None,
            password=os.environ.get("MQTT_PASSWORD") or None,
            identifier=f"voice-agent-{self.settings.device_id}",
            will=aiomqtt.Will(status, "offline", qos=1, retain=True),
            tls_context=ssl.create_default_context() if self.settings.tls else None,
            timeout=5,
        )

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                topic, payload = self._outbox[0]
                await client.publish(topic, payload, qos=1)
                if self._outbox and self._outbox[0] == (topic, payload):
                    self._outbox.popleft()  # only once the broker has it
            self._outbox_changed.clear()
            await self._outbox_changed.wait()

    async def _receive(self, client: aiomqtt.Client) -> None:
        commands = self.topic("cmd/")
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload
            text = payload.decode() if isinstance(payload, bytes | bytearray) else str(payload)
            if topic in self._waiting and not self._waiting[topic].done():
                self._waiting[topic].set_result(text)
            elif topic.startswith(commands) and self._on_command is not None:
                name = topic[len(commands) :]
                if name in COMMANDS:
                    asyncio.create_task(self._on_command(name, text))
                else:
                    logger.warning("ignoring unknown MQTT command %r", name)

"""The MQTT control plane of a kiosk: events out, commands in, device topics.

Events are kept in a bounded queue and published with QoS 1 in order; a message leaves the
queue only once the broker has acknowledged it, so when the broker goes away the events of the
gap are delivered after the reconnect (at least once: each carries a sequence number). A
retained ``status`` says ``online``; the broker's last will says ``offline`` if the agent dies.

Commands are checked as they arrive (``tools.commands``) and wait in a bounded inbox until the
session takes them, so a command sent while the models load is obeyed once they have. What is
refused is said once per burst: a warning line and an ``event/error`` naming how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
from livekit import rtc

from .commands import Command, CommandRefused, parse_command, preview

logger = logging.getLogger("voice_agent")

BACKOFF_S = (0.5, 8.0)
INBOX_SIZE = 100
REPORT_AFTER_S = 0.25
"""Refusals within this span are reported together, so a flood makes one line, not thousands."""


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
    inbox_size: int = INBOX_SIZE

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


class MqttBridge(rtc.EventEmitter[Literal["error"]]):
    """Emits ``error`` with each refusal it reports, so the session's event log has it too."""

    def __init__(self, settings: MqttSettings) -> None:
        super().__init__()
        self.settings = settings
        self.connected = asyncio.Event()
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_changed = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        self._inbox: asyncio.Queue[Command] = asyncio.Queue(settings.inbox_size)
        self._sequence = itertools.count(1)
        self._dropped = 0
        self._refusals: dict[tuple[str, str], tuple[int, str]] = {}
        self._report: asyncio.TimerHandle | None = None
        self._client: aiomqtt.Client | None = None
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._task: asyncio.Task[None] | None = None

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
        self._outbox_empty.clear()
        self._outbox_changed.set()

    async def next_command(self) -> Command:
        """The oldest command not yet taken, in arrival order."""
        return await self._inbox.get()

    def refuse(self, command: str, reason: str, payload: str = "") -> None:
        """Report a command that will not be carried out (with the others of its burst)."""
        count, shown = self._refusals.get((command, reason), (0, payload))
        self._refusals[(command, reason)] = (count + 1, shown)
        if self._report is None:
            self._report = asyncio.get_running_loop().call_later(REPORT_AFTER_S, self._flush)

    def report_now(self) -> None:
        """Report the refusals held back, and the commands still waiting, which will now
        never be carried out."""
        while not self._inbox.empty():
            command = self._inbox.get_nowait()
            self.refuse(command.name, "dropped: the session ended before it could obey")
        if self._report is not None:
            self._report.cancel()
            self._flush()

    def _flush(self) -> None:
        self._report = None
        refusals, self._refusals = self._refusals, {}
        for (command, reason), (count, shown) in refusals.items():
            times = "" if count == 1 else f" {count} times"
            logger.warning(
                "MQTT cmd/%s refused%s: %s%s", command, times, reason, f" {shown}" if shown else ""
            )
            record = {"source": "mqtt", "command": command, "message": reason, "count": count}
            self.publish_event("error", **record)
            self.emit("error", record)

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
        """Report what was never taken, deliver what is queued (for up to ``drain_s``), say
        offline, disconnect."""
        self.report_now()
        try:
            await asyncio.wait_for(self._outbox_empty.wait(), drain_s)
        except TimeoutError:
            logger.warning("MQTT: %d events not delivered before exit", len(self._outbox))
        client = self._client
        if client is not None:
            await self._say_offline(client)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if client is None:  # a clean exit drops the last will: say it with a short visit
            try:
                async with self._connect(timeout=2) as client:
                    await self._say_offline(client)
            except aiomqtt.MqttError as e:
                logger.warning("MQTT: could not mark %s offline (%s)", self.settings.base, e)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.topic("status"), "offline", qos=1, retain=True)

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
                    async with asyncio.TaskGroup() as group:  # one ends, both end
                        group.create_task(self._send(client))
                        group.create_task(self._receive(client))
            except* aiomqtt.MqttError as errors:
                e = errors.exceptions[0]
                if self.connected.is_set():
                    logger.warning("MQTT connection to %s lost (%s)", self.settings.address, e)
                elif delay == BACKOFF_S[0]:
                    logger.warning(
                        "MQTT broker at %s not reachable (%s); retrying, events are kept",
                        self.settings.address,
                        e,
                    )
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])

    def _connect(self, timeout: float = 5) -> aiomqtt.Client:
        status = self.topic("status")
        return aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=os.environ.get("MQTT_USERNAME") or None,
            password=os.environ.get("MQTT_PASSWORD") or None,
            identifier=f"voice-agent-{self.settings.device_id}",
            will=aiomqtt.Will(status, "offline", qos=1, retain=True),
            tls_context=ssl.create_default_context() if self.settings.tls else None,
            timeout=timeout,
        )

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                topic, payload = self._outbox[0]
                await client.publish(topic, payload, qos=1)
                if self._outbox and self._outbox[0] == (topic, payload):
                    self._outbox.popleft()  # only once the broker has it
            self._outbox_empty.set()
            self._outbox_changed.clear()
            await self._outbox_changed.wait()

    async def _receive(self, client: aiomqtt.Client) -> None:
        commands = self.topic("cmd/")
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload
            text_payload = not isinstance(payload, bytes | bytearray)
            raw = str(payload).encode() if text_payload else bytes(payload)
            if topic in self._waiting and not self._waiting[topic].done():
                self._waiting[topic].set_result(raw.decode("utf-8", "replace"))
            elif topic.startswith(commands):
                self._take(topic[len(commands) :], raw)

    def _take(self, name: str, payload: bytes) -> None:
        try:
            command = parse_command(name, payload)
        except CommandRefused as e:
            shown_name = name[:40].encode("unicode_escape").decode()  # a topic may hold "\n"
            self.refuse(shown_name, str(e), preview(payload))
            return
        try:
            self._inbox.put_nowait(command)
        except asyncio.QueueFull:
            self.refuse(name, f"{self.settings.inbox_size} commands are already waiting")

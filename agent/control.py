"""A running session wired to its kiosk surroundings: timers that speak, and the MQTT bridge
(session events out, commands in)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal

from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    FunctionToolsExecutedEvent,
    UserStateChangedEvent,
)

from audio import Pyttsx3TTS
from prompts import phrase
from tools.call import NOT_A_CALL
from tools.commands import Command
from tools.mqtt import MqttBridge
from tools.services import AgentServices

from .context import Trim, meter_of
from .events import tool_calls
from .profile import CallSettings, Profile
from .session import ConversationSession, SessionFactory, bridge_for

logger = logging.getLogger("voice_agent")

MAX_WAITING_SAYS = 20
"""Announcements waiting to be spoken; more are refused rather than spoken minutes late."""
Origin = Literal["mqtt", "timer", "greeting"]


class ControlledSession:
    """A session with its surroundings: timers that speak and, when the profile has MQTT on,
    the bridge. Every transport opens it this way and closes it with ``aclose``."""

    def __init__(
        self,
        session: ConversationSession,
        agent: Agent,
        control: SessionControl,
        bridge: MqttBridge | None,
        *,
        factory: SessionFactory | None = None,
    ) -> None:
        self.session = session
        self.agent = agent
        self.control = control
        self.bridge = bridge
        self._own_factory = factory

    @classmethod
    async def start(cls, profile: Profile) -> ControlledSession:
        """The one conversation of this process: its models are loaded for it alone."""
        bridge = bridge_for(profile)
        if bridge is not None:
            await bridge.start()
        try:
            factory = await SessionFactory.load(profile)
        except BaseException:
            if bridge is not None:
                await bridge.aclose()
            raise
        return cls.open(factory, bridge, owns_factory=True)

    @classmethod
    async def join(cls, factory: SessionFactory, name: str) -> ControlledSession:
        """One of a server's conversations: with MQTT on, it has topics of its own under
        ``<device_id>-<name>``."""
        mqtt = factory.profile.mqtt
        bridge = bridge_for(factory.profile, device_id=f"{mqtt.device_id}-{name}" if name else "")
        if bridge is not None:
            await bridge.start()
        return cls.open(factory, bridge)

    @classmethod
    def open(
        cls, factory: SessionFactory, bridge: MqttBridge | None, *, owns_factory: bool = False
    ) -> ControlledSession:
        """A new conversation over ``factory``'s models; ``bridge`` must already be started."""
        session, agent = factory.session(bridge=bridge)
        profile = factory.profile
        control = SessionControl(
            session, agent, bridge, greeting=profile.greeting, call=profile.call
        )
        return cls(session, agent, control, bridge, factory=factory if owns_factory else None)

    async def aclose(self, *, drain_s: float = 3.0) -> None:
        self.session.addressing.close()
        self.session.userdata.keypad.close()
        await self.control.aclose()
        await self.session.userdata.timers.aclose()
        if self.bridge is not None:
            await self.bridge.aclose(drain_s=drain_s)
        await _release(self.session.llm)
        if self._own_factory is not None:
            await self._own_factory.aclose()


async def _release(model: object) -> None:
    """A realtime model keeps the conversation's caches until it is closed."""
    if isinstance(model, llm.RealtimeModel):
        await model.aclose()


class SessionControl:
    """Carries out commands one at a time, in the order they came, and speaks announcements
    (MQTT ``say``, due timers) in order, each after the user has finished speaking; the
    profile's greeting goes first, and its time limit ends the conversation. Every
    announcement from MQTT is spoken or reported as dropped."""

    def __init__(
        self,
        session: AgentSession[AgentServices],
        agent: Agent,
        bridge: MqttBridge | None,
        *,
        greeting: str = "",
        call: CallSettings | None = None,
    ) -> None:
        self._session = session
        self._greeting = greeting
        self.call = call or CallSettings()
        self._agent = agent
        self._bridge = bridge
        self._instructions = agent.instructions
        self._says: deque[tuple[str, Origin]] = deque()
        self._say_added = asyncio.Event()
        self._current: _Announcement | None = None
        self._user_quiet = asyncio.Event()
        self._user_quiet.set()
        self._tasks: list[asyncio.Task[None]] = []
        session.on("user_state_changed", self._on_user_state)
        session.userdata.timers.bind(lambda text: self.announce(text, origin="timer"))
        session.userdata.keypad.bind(self._typed)
        if bridge is not None:
            session.userdata.keypad.on(
                "pressed", lambda key: bridge.publish_event("dtmf", digit=key)
            )
            session.on("agent_state_changed", lambda e: self._state(bridge, e))
            session.on("conversation_item_added", lambda e: self._item(bridge, e))
            session.on("function_tools_executed", lambda e: self._tools(bridge, e))
            if (meter := meter_of(session.llm)) is not None:
                meter.on("context_trimmed", lambda trim: self._trimmed(bridge, trim))
            if isinstance(session, ConversationSession) and not session.addressing.always:
                session.addressing.on(
                    "changed", lambda change: bridge.publish_event("addressing", **asdict(change))
                )

    def start(
        self, *, greet_after: Callable[[], Awaitable[object]] | None = None, notice: str = ""
    ) -> None:
        """Begin obeying and speaking, the greeting first (once ``greet_after()`` is done: a
        caller hears nothing sent before the audio flows), after ``notice`` ("This call is
        recorded."); the session must be running (commands that came earlier have waited in
        the bridge)."""
        if greeting := " ".join(text for text in (notice, self._greeting) if text):
            self._tasks.append(
                asyncio.create_task(self._greet(greeting, greet_after), name="greeting")
            )
        if self.call.max_s:
            self._tasks.append(asyncio.create_task(self._limit(self.call.max_s), name="limit"))
        self._tasks.append(asyncio.create_task(self._speak(), name="announcements"))
        if self._bridge is not None:
            self._tasks.append(asyncio.create_task(self._obey(self._bridge), name="mqtt-commands"))

    @property
    def busy(self) -> bool:
        """Announcements are waiting or being spoken."""
        return bool(self._says) or self._current is not None

    async def announce(self, text: str, *, origin: Origin = "mqtt") -> None:
        """Queue ``text`` to be spoken after the user's sentence and the agent's own."""
        if len(self._says) + (self._current is not None) >= MAX_WAITING_SAYS:
            self.report_dropped(origin, f"{MAX_WAITING_SAYS} announcements are already waiting")
            return
        self._says.append((text, origin))
        self._say_added.set()

    async def command(self, command: Command) -> None:
        logger.info("MQTT command: %s", command.name)
        session = self._session
        if command.name == "say":
            await self.announce(command.argument)
        elif command.name in ("mute", "unmute"):
            session.input.set_audio_enabled(command.name == "unmute")
        elif command.name == "language":
            await self._switch_language(command.argument)
        elif command.name == "end":
            session.shutdown(drain=True)
        elif command.name == "listen":
            if not isinstance(session, ConversationSession):
                raise ValueError("this session cannot be addressed")
            session.addressing.listen("mqtt")
        elif command.name == "transfer":
            if session.userdata.phone is None:
                raise ValueError(NOT_A_CALL)
            session.userdata.phone.transfer()
            await self.announce(phrase("transfer", session.userdata.language))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._current is not None:  # cut off while it waited or spoke
            self._current.report(self)
            self._current = None
        while self._says:
            _, origin = self._says.popleft()
            self.report_dropped(origin, "dropped: the session ended before it was spoken")
        if self._bridge is not None:
            self._bridge.report_now()

    async def _greet(self, greeting: str, after: Callable[[], Awaitable[object]] | None) -> None:
        if after is not None:
            await after()
        self._says.appendleft((greeting, "greeting"))
        self._say_added.set()

    async def _limit(self, max_s: float) -> None:
        """At the conversation's time limit: the goodbye, heard whole, then the end (a phone
        call hangs up)."""
        await asyncio.sleep(max_s)
        logger.info("the conversation reached its limit of %g s", max_s)
        try:
            await self._session.say(self.call.goodbye, allow_interruptions=False)
        except RuntimeError:  # the session is closing anyway
            return
        self._session.shutdown(drain=True)

    async def _obey(self, bridge: MqttBridge) -> None:
        while True:
            command = await bridge.next_command()
            try:
                await self.command(command)
            except Exception as e:  # one failed command must not silence the next ones
                logger.warning("MQTT cmd/%s failed: %s", command.name, e)
                bridge.refuse(command.name, f"failed: {e}")

    async def _speak(self) -> None:
        while True:
            if not self._says:
                self._say_added.clear()
                await self._say_added.wait()
                continue
            text, origin = self._says.popleft()
            self._current = _Announcement(origin)
            whole = origin == "greeting"  # first, and heard whole: the caller may say "hello"
            if not whole:
                await self._user_quiet.wait()
            try:
                self._current.handle = self._session.say(text, allow_interruptions=not whole)
            except RuntimeError as e:  # the session is closing
                self.report_dropped(origin, f"dropped: {e}")
            else:
                await self._current.handle
                self._current.report(self)
            self._current = None

    def _typed(self, text: str) -> None:
        """Keys nobody waited for: a turn of the caller's, in words."""
        with contextlib.suppress(RuntimeError):  # the session is closing
            self._session.generate_reply(user_input=text)

    def report_dropped(self, origin: Origin, reason: str) -> None:
        """An announcement will not be heard: the sender is told (MQTT) or the log is."""
        if origin == "mqtt" and self._bridge is not None:
            self._bridge.refuse("say", reason)
        else:
            logger.warning("announcement not spoken: %s", reason)

    def _on_user_state(self, event: UserStateChangedEvent) -> None:
        if event.new_state == "speaking":
            self._user_quiet.clear()
        else:
            self._user_quiet.set()

    async def _switch_language(self, language: str) -> None:
        if isinstance(self._session.tts, Pyttsx3TTS):
            try:
                await self._session.tts.switch_language(language)
            except ValueError as e:
                if self._bridge is not None:
                    self._bridge.refuse("language", str(e))
                else:
                    logger.warning("language not switched: %s", e)
                return
        if isinstance(self._session, ConversationSession):
            self._session.reply_language.name(language)
        await self._agent.update_instructions(
            f"{self._instructions}\nFrom now on, always answer in the language {language!r}."
        )

    @staticmethod
    def _state(bridge: MqttBridge, event: AgentStateChangedEvent) -> None:
        bridge.publish_event("state", state=event.new_state)

    @staticmethod
    def _item(bridge: MqttBridge, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            bridge.publish_event("user", text=item.text_content or "")
        elif isinstance(item, llm.ChatMessage) and item.role == "assistant":
            bridge.publish_event(
                "agent", text=item.text_content or "", interrupted=item.interrupted
            )

    @staticmethod
    def _trimmed(bridge: MqttBridge, trim: Trim) -> None:
        bridge.publish_event("context_trimmed", **asdict(trim))

    @staticmethod
    def _tools(bridge: MqttBridge, event: FunctionToolsExecutedEvent) -> None:
        for record in tool_calls(event):
            bridge.publish_event("tool", **record)


@dataclass
class _Announcement:
    origin: Origin
    handle: SpeechHandle | None = None

    def report(self, control: SessionControl) -> None:
        """Say so if none of it was heard."""
        items = [] if self.handle is None else self.handle.chat_items
        heard = any(
            isinstance(item, llm.ChatMessage) and item.role == "assistant" and item.text_content
            for item in items
        )
        if not heard:
            control.report_dropped(self.origin, "dropped: the session ended before it was spoken")

"""A running session wired to its kiosk surroundings: timers that speak, and the MQTT bridge
(session events out, commands in)."""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    FunctionToolsExecutedEvent,
)

from audio import Pyttsx3TTS
from tools.mqtt import MqttBridge
from tools.services import AgentServices

from .events import tool_calls
from .profile import Profile
from .session import bridge_for, build_session

logger = logging.getLogger("voice_agent")


class ControlledSession:
    """A profile's session with its surroundings: timers that speak and, when the profile has
    MQTT on, the bridge. run-file and console both start it this way and close it with
    ``aclose``."""

    def __init__(
        self, session: AgentSession[AgentServices], agent: Agent, bridge: MqttBridge | None
    ) -> None:
        self.session = session
        self.agent = agent
        self.bridge = bridge

    @classmethod
    async def start(cls, profile: Profile) -> ControlledSession:
        bridge = bridge_for(profile)
        if bridge is not None:
            await bridge.start()
        try:
            session, agent = await build_session(profile, bridge=bridge)
        except BaseException:
            if bridge is not None:
                await bridge.aclose()
            raise
        control = SessionControl(session, agent)
        if bridge is not None:
            control.connect(bridge)
        return cls(session, agent, bridge)

    async def aclose(self) -> None:
        await self.session.userdata.timers.aclose()
        if self.bridge is not None:
            await self.bridge.aclose()


class SessionControl:
    def __init__(self, session: AgentSession[AgentServices], agent: Agent) -> None:
        self._session = session
        self._agent = agent
        self._instructions = agent.instructions
        session.userdata.timers.bind(self.announce)

    async def announce(self, text: str) -> None:
        """Speak without cutting anyone off: after the user's sentence, after the agent's."""
        while self._session.user_state == "speaking":
            await asyncio.sleep(0.1)
        self._session.say(text, allow_interruptions=True)

    def connect(self, bridge: MqttBridge) -> None:
        session = self._session
        bridge.on_command(self.command)
        session.on("agent_state_changed", lambda e: self._state(bridge, e))
        session.on("conversation_item_added", lambda e: self._item(bridge, e))
        session.on("function_tools_executed", lambda e: self._tools(bridge, e))

    async def command(self, name: str, payload: str) -> None:
        logger.info("MQTT command: %s", name)
        session = self._session
        if name == "say" and payload.strip():
            await self.announce(payload.strip())
        elif name in ("mute", "unmute"):
            session.input.set_audio_enabled(name == "unmute")
        elif name == "language" and payload.strip():
            await self._switch_language(payload.strip())
        elif name == "end":
            session.shutdown(drain=True)

    async def _switch_language(self, language: str) -> None:
        if isinstance(self._session.tts, Pyttsx3TTS):
            previous = self._session.tts.options.language
            self._session.tts.update_options(language=language)
            try:
                await self._session.tts.voice()
            except ValueError as e:
                logger.warning("MQTT language command refused: %s", e)
                self._session.tts.update_options(language=previous)
                return
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
    def _tools(bridge: MqttBridge, event: FunctionToolsExecutedEvent) -> None:
        for record in tool_calls(event):
            bridge.publish_event("tool", **record)

"""Sessions from a profile: what every conversation shares is loaded once (``SessionFactory``),
and each conversation gets an ``AgentSession`` of its own, with every option explicit.

LiveKit's defaults reach for its cloud inference (turn detector, adaptive interruption) or hold
barge-in back for an echo-canceller warm-up; here each of them is set, so a session runs offline.
"""

from __future__ import annotations

import gc
from typing import Any, Protocol, runtime_checkable

from livekit import rtc
from livekit.agents import Agent, AgentSession, TurnHandlingOptions, llm
from livekit.agents.voice.events import (
    AgentEvent,
    ConversationItemAddedEvent,
    EventTypes,
    UserInputTranscribedEvent,
)

from audio import Pyttsx3Options, Pyttsx3TTS, WebRTCVAD, WebRTCVADOptions
from audio.language import TurnLanguage
from audio.turn import SmartTurnDetector, SmartTurnModel
from tools import resolve_tools
from tools.devices import DeviceGateway
from tools.mqtt import MqttBridge, MqttSettings
from tools.services import AgentServices

from .addressing import AddressedAgent, Addressing
from .engines import ENGINES, LoadedEngine, load_engine
from .models import bundled_smart_turn, off_the_loop
from .profile import Profile, ProfileError
from .vision import FrameSampler, vision_options


def bridge_for(profile: Profile, *, device_id: str = "") -> MqttBridge | None:
    """The profile's MQTT bridge (not yet started), if it has MQTT on; ``device_id`` replaces
    the profile's, so that each session of a server has topics of its own."""
    if not profile.mqtt.enabled:
        return None
    settings = MqttSettings.parse(
        profile.mqtt.url, device_id or profile.mqtt.device_id, profile.mqtt.prefix
    )
    return MqttBridge(settings)


LANGUAGE_PLACEHOLDER = "{language}"
"""In a prompt: the name of the profile's ``[voice] language`` ("German")."""


def _voice_options(profile: Profile) -> Pyttsx3Options:
    voice = profile.voice
    return Pyttsx3Options(
        voice.language, voice.rate, languages=tuple(voice.languages), english=voice.english
    )


@runtime_checkable
class Hears(Protocol):
    def hear(self, language: str) -> None: ...


class ReplyLanguage:
    """The language a reply too short to tell its own is spoken in, and apologies and the
    tools' answers are said in: the caller's as last heard, until the control plane names the
    one to answer in."""

    def __init__(self, listeners: list[Hears]) -> None:
        self._listeners = listeners
        self._named = False
        self._turn = TurnLanguage()

    def heard(self, event: UserInputTranscribedEvent) -> None:
        if event.is_final and event.language and not self._named:
            if self._turn.heard(event.transcript, str(event.language)):
                self._tell(str(event.language))

    def added(self, event: ConversationItemAddedEvent) -> None:
        if isinstance(event.item, llm.ChatMessage) and event.item.role == "user":
            self._turn.next_turn()

    def name(self, language: str) -> None:
        self._named = True
        self._tell(language)

    def _tell(self, language: str) -> None:
        for listener in self._listeners:
            listener.hear(language)


class ConversationSession(AgentSession[AgentServices]):
    """An ``AgentSession`` that keeps no list of its own events.

    LiveKit appends every event to a list that lives as long as the session, for a report we
    do not make (events.jsonl is ours): over a kiosk's day that list is a leak."""

    def __init__(
        self, *, frame_sampler: FrameSampler, addressing: Addressing, **options: Any
    ) -> None:
        super().__init__(video_sampler=frame_sampler, **options)
        self.frame_sampler = frame_sampler
        """Which camera frames reach the model; a transport with a clock of its own sets it."""
        self.addressing = addressing
        addressing.attach(self)
        listeners: list[Hears] = [self.userdata]  # the tools that speak
        for plugin in (self.tts, self.llm):
            if isinstance(plugin, Hears):
                listeners.append(plugin)
        self.reply_language = ReplyLanguage(listeners)
        self.on("user_input_transcribed", self.reply_language.heard)
        self.on("conversation_item_added", self.reply_language.added)

    def emit(self, event: EventTypes, arg: AgentEvent) -> None:
        rtc.EventEmitter.emit(self, event, arg)


class SessionFactory:
    """A profile, checked, with its engine loaded: it makes any number of sessions, which share
    the models and nothing else."""

    def __init__(
        self,
        profile: Profile,
        instructions: str,
        tools: list[llm.Tool | llm.Toolset],
        engine: LoadedEngine,
        turn_model: SmartTurnModel | None = None,
    ) -> None:
        self.profile = profile
        self.instructions = instructions
        self.tools = tools
        self.engine = engine
        self.turn_model = turn_model
        """Shared by every session's turn detector; None when the profile uses the VAD's."""

    @classmethod
    async def load(cls, profile: Profile) -> SessionFactory:
        """Check the profile, then load and warm its models."""
        try:
            instructions = profile.instructions()
            tools = resolve_tools(profile.tools)
        except LookupError as e:
            raise ProfileError(f"profile {profile.name!r}: {e.args[0]}") from None
        mode = profile.addressing.mode
        if mode != "always" and not ENGINES[profile.engine].transcribes(profile):
            raise ProfileError(
                f"profile {profile.name!r}: addressing.mode {mode!r} needs the user's words "
                f"written by a recognizer, and the {profile.engine} engine hears audio "
                "(lite, or remote in text mode, can)"
            )
        try:
            voice = Pyttsx3TTS(_voice_options(profile))  # the language identifier loads once
            for language in [profile.voice.language, *profile.voice.languages]:
                await voice.voice(language)
        except ValueError as e:
            raise ProfileError(f"profile {profile.name!r}: voice: {e}") from None
        # a prompt may name the voice's language (an interpreter's target)
        instructions = instructions.replace(LANGUAGE_PLACEHOLDER, await voice.language_name())
        turn_model = None
        if profile.endpointing.turn_detector == "smart-turn":
            turn_model = await off_the_loop(lambda: SmartTurnModel(bundled_smart_turn()))
        engine = await load_engine(profile, instructions, tools)
        factory = cls(profile, instructions, tools, engine, turn_model)
        gc.freeze()  # models and libraries stay for good: collections need not walk them
        return factory

    def session(self, *, bridge: MqttBridge | None = None) -> tuple[ConversationSession, Agent]:
        """A new conversation; device tools act through ``bridge``."""
        profile = self.profile
        devices = DeviceGateway(bridge, profile.devices) if bridge is not None else None
        turn_detector = SmartTurnDetector(self.turn_model) if self.turn_model else None
        voice = Pyttsx3TTS(_voice_options(profile))
        session = ConversationSession(
            userdata=AgentServices(devices=devices, language=profile.voice.language),
            vad=WebRTCVAD(WebRTCVADOptions(**profile.vad.model_dump())),
            tts=voice,
            turn_handling=TurnHandlingOptions(
                turn_detection=turn_detector or "vad",
                endpointing={
                    "mode": "fixed",
                    "min_delay": profile.endpointing.min_delay,
                    "max_delay": profile.endpointing.max_delay,
                },
                interruption={
                    "enabled": profile.interruption.enabled,
                    "mode": "vad",
                    "min_duration": profile.interruption.min_duration,
                    "resume_false_interruption": profile.interruption.resume_false_interruption,
                    "false_interruption_timeout": profile.interruption.false_interruption_timeout,
                    # what a caller says over the greeting is heard, and answered after it
                    "discard_audio_if_uninterruptible": False,
                },
                preemptive_generation={"enabled": profile.lite.preemptive_generation},
            ),
            aec_warmup_duration=None,
            user_away_timeout=None,
            frame_sampler=FrameSampler(vision_options(profile)),
            addressing=(addressing := Addressing(profile.addressing)),
            **self.engine.plugins(),
        )
        if turn_detector is not None:
            heard = turn_detector.heard

            def transcribed(event: UserInputTranscribedEvent) -> None:
                if event.is_final:
                    heard(event.transcript)

            session.on("user_input_transcribed", transcribed)
        if addressing.always:
            return session, Agent(instructions=self.instructions, tools=self.tools)
        agent = AddressedAgent(
            addressing=addressing, instructions=self.instructions, tools=self.tools
        )
        return session, agent

    async def aclose(self) -> None:
        await self.engine.aclose()

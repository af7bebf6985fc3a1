"""Building an AgentSession from a profile, with every option explicit.

LiveKit's defaults reach for its cloud inference (turn detector, adaptive interruption) or hold
barge-in back for an echo-canceller warm-up; here each of them is set, so a session runs offline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from livekit.agents import Agent, AgentSession, TurnHandlingOptions, llm

from audio import Pyttsx3Options, Pyttsx3TTS, WebRTCVAD, WebRTCVADOptions
from tools import resolve_tools
from tools.devices import DeviceGateway
from tools.mqtt import MqttBridge, MqttSettings
from tools.services import AgentServices

from .context import ContextOptions
from .llm import TransformersLLM, TransformersLLMOptions
from .models import off_the_loop
from .phi4mm.engine import Phi4MMOptions
from .phi4mm.realtime import Phi4MMRealtimeModel
from .profile import Profile, ProfileError
from .stt import FasterWhisperOptions, FasterWhisperSTT

logger = logging.getLogger("voice_agent")


def bridge_for(profile: Profile) -> MqttBridge | None:
    """The profile's MQTT bridge (not yet started), if it has MQTT on."""
    if not profile.mqtt.enabled:
        return None
    settings = MqttSettings.parse(profile.mqtt.url, profile.mqtt.device_id, profile.mqtt.prefix)
    return MqttBridge(settings)


async def build_session(
    profile: Profile, *, bridge: MqttBridge | None = None
) -> tuple[AgentSession[AgentServices], Agent]:
    """The session and the agent for ``profile``, models loaded and warm; device tools act
    through ``bridge``."""
    try:
        instructions = profile.instructions()
        tools = resolve_tools(profile.tools)
    except LookupError as e:
        raise ProfileError(f"profile {profile.name!r}: {e.args[0]}") from None

    tts = Pyttsx3TTS(Pyttsx3Options(language=profile.voice.language, rate=profile.voice.rate))
    try:
        await tts.voice()
    except ValueError as e:
        raise ProfileError(f"profile {profile.name!r}: {e}") from None

    vad_options = WebRTCVADOptions(**profile.vad.model_dump())
    engine: dict[str, Any]
    if profile.engine == "phi4mm":
        phi4mm = await _phi4mm(profile)
        await _require_room_to_talk(profile, phi4mm, instructions, tools)
        engine = {"llm": phi4mm}
    else:
        engine = await _lite(profile, instructions, tools)
    devices = DeviceGateway(bridge, profile.devices) if bridge is not None else None
    session: AgentSession[AgentServices] = AgentSession(
        userdata=AgentServices(devices=devices),
        vad=WebRTCVAD(vad_options),
        tts=tts,
        turn_handling=TurnHandlingOptions(
            turn_detection="vad",
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
            },
            preemptive_generation={"enabled": profile.lite.preemptive_generation},
        ),
        aec_warmup_duration=None,
        user_away_timeout=None,
        **engine,
    )
    return session, Agent(instructions=instructions, tools=tools)


class _Reader(Protocol):
    @property
    def context_window(self) -> int: ...

    def prompt_tokens(self, instructions: str, tools: Sequence[llm.Tool | llm.Toolset]) -> int: ...


async def _require_room_to_talk(
    profile: Profile, model: _Reader, instructions: str, tools: list[llm.Tool | llm.Toolset]
) -> None:
    """Refuse a prompt that leaves the model no room for a conversation, before it is read."""
    reply = (
        profile.phi4mm.max_new_tokens if profile.engine == "phi4mm" else profile.lite.max_new_tokens
    )
    window = model.context_window
    used = await off_the_loop(lambda: model.prompt_tokens(instructions, tools))
    if used + reply > window:
        raise ProfileError(
            f"profile {profile.name!r}: the prompt and tools are {used:,} tokens, and the "
            f"model reads at most {window:,} (with {reply} kept for the reply)"
        )


async def _lite(
    profile: Profile, instructions: str, tools: list[llm.Tool | llm.Toolset]
) -> dict[str, Any]:
    """faster-whisper for the ears, a small transformers LM for the answer."""
    lite = profile.lite
    stt = FasterWhisperSTT(FasterWhisperOptions(model=lite.stt_model, language=lite.stt_language))
    model = TransformersLLM(
        TransformersLLMOptions(
            model=lite.llm_model,
            gguf_file=lite.llm_gguf_file,
            max_new_tokens=lite.max_new_tokens,
            temperature=lite.temperature,
            repetition_penalty=lite.repetition_penalty,
            context=ContextOptions(**profile.context.model_dump()),
        )
    )
    await off_the_loop(stt.locate)
    await off_the_loop(model.locate)
    logger.info("loading speech recognizer: %s", stt.model)
    await off_the_loop(stt.load)
    logger.info("loading language model: %s", model.model)
    await off_the_loop(model.load)
    if profile.context.max_tokens > (own := model.runtime.context_window):
        raise ProfileError(
            f"profile {profile.name!r}: context.max_tokens {profile.context.max_tokens:,} is "
            f"more than {model.model} reads ({own:,} tokens)"
        )
    await _require_room_to_talk(profile, model, instructions, tools)
    await model.warm(instructions, tools)
    return {"stt": stt, "llm": model}


async def _phi4mm(profile: Profile) -> Phi4MMRealtimeModel:
    """Phi-4-multimodal hears the audio itself: no separate recognizer."""
    if profile.context.max_tokens:
        raise ProfileError(
            "a context window of your own (context.max_tokens, --max-context) is for the lite "
            "engine so far; Phi-4-multimodal uses its whole 128K window"
        )
    model = Phi4MMRealtimeModel(
        Phi4MMOptions(**profile.phi4mm.model_dump()),
        segmenter=WebRTCVADOptions(**profile.vad.model_dump()),
    )
    await off_the_loop(model.locate)
    logger.info("loading Phi-4-multimodal: %s", profile.phi4mm.model)
    await off_the_loop(model.load)
    return model

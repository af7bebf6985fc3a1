"""Building an AgentSession from a profile, with every option explicit.

LiveKit's defaults reach for its cloud inference (turn detector, adaptive interruption) or hold
barge-in back for an echo-canceller warm-up; here each of them is set, so a session runs offline.
"""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import Agent, AgentSession, TurnHandlingOptions

from audio import Pyttsx3Options, Pyttsx3TTS, WebRTCVAD, WebRTCVADOptions
from prompts import load_prompt
from tools import resolve_tools

from .llm import TransformersLLM, TransformersLLMOptions
from .profile import Profile, ProfileError
from .stt import FasterWhisperOptions, FasterWhisperSTT

logger = logging.getLogger("voice_agent")


async def build_session(profile: Profile) -> tuple[AgentSession, Agent]:
    """The session and the agent for ``profile``, models loaded and warm."""
    try:
        instructions = load_prompt(profile.prompt)
        tools = resolve_tools(profile.tools)
    except LookupError as e:
        raise ProfileError(f"profile {profile.name!r}: {e.args[0]}") from None

    tts = Pyttsx3TTS(Pyttsx3Options(language=profile.voice.language, rate=profile.voice.rate))
    try:
        await tts.voice()
    except ValueError as e:
        raise ProfileError(f"profile {profile.name!r}: {e}") from None

    lite = profile.lite
    stt = FasterWhisperSTT(FasterWhisperOptions(model=lite.stt_model, language=lite.stt_language))
    llm = TransformersLLM(
        TransformersLLMOptions(
            model=lite.llm_model,
            gguf_file=lite.llm_gguf_file,
            max_new_tokens=lite.max_new_tokens,
            temperature=lite.temperature,
            repetition_penalty=lite.repetition_penalty,
        )
    )
    logger.info("loading speech recognizer: %s", stt.model)
    await asyncio.to_thread(stt.load)
    logger.info("loading language model: %s", llm.model)
    await asyncio.to_thread(llm.load)
    await llm.warm(instructions, tools)

    session: AgentSession = AgentSession(
        vad=WebRTCVAD(WebRTCVADOptions(**profile.vad.model_dump())),
        stt=stt,
        llm=llm,
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
            preemptive_generation={"enabled": lite.preemptive_generation},
        ),
        aec_warmup_duration=None,
        user_away_timeout=None,
    )
    return session, Agent(instructions=instructions, tools=tools)

"""The lite engine's models, loaded once and shared by every session: Whisper's ears, and a
model that answers in text (in this process, or on a server for the remote engine)."""

from __future__ import annotations

import logging
from typing import Any

from livekit.agents import llm

from audio.early_stt import EarlySTT
from audio.vad import WebRTCVAD, WebRTCVADOptions

from ...context import ContextOptions
from ...models import off_the_loop
from ...profile import Profile
from .. import require_room_to_talk
from .answering import AnsweringLLM
from .intents import LocalIntents
from .llm import LocalLLM, LocalLLMOptions
from .stt import FasterWhisperOptions, FasterWhisperSTT

logger = logging.getLogger("voice_agent")


class LiteModels:
    def __init__(self, stt: FasterWhisperSTT, model: AnsweringLLM[Any], vad: WebRTCVADOptions):
        self._stt = stt
        self._llm = model
        self._vad = vad

    @property
    def model(self) -> AnsweringLLM[Any]:
        return self._llm

    def plugins(self) -> dict[str, Any]:
        # the recognizer starts when the speaker pauses, heard by a VAD of its own
        stt = EarlySTT(recognizer=self._stt.fork(), vad=WebRTCVAD(self._vad))
        return {"stt": stt, "llm": self._llm.fork()}

    def status(self) -> dict[str, Any]:
        return self._llm.status()

    async def aclose(self) -> None:
        await self._llm.shutdown()


def recognizer(profile: Profile) -> FasterWhisperSTT:
    """The ``[lite]`` recognizer: every engine that hears with Whisper hears with this one."""
    lite = profile.lite
    return FasterWhisperSTT(
        FasterWhisperOptions(
            model=lite.stt_model,
            language=lite.stt_language,
            languages=tuple(lite.stt_languages),
            beam_size=lite.stt_beam_size,
        )
    )


def templates(profile: Profile) -> LocalIntents | None:
    """The sentence templates matched before the model, in every language the profile hears
    (None where ``[lite] intents`` is off)."""
    lite = profile.lite
    if not lite.intents:
        return None
    languages = {profile.voice.language, *profile.voice.languages, *lite.stt_languages}
    return LocalIntents(languages | {lite.stt_language}, profile.devices)


async def load_ears(stt: FasterWhisperSTT, intents: LocalIntents | None) -> None:
    await off_the_loop(stt.locate)
    logger.info("loading speech recognizer: %s", stt.model)
    await off_the_loop(stt.load)
    if intents is not None:
        await off_the_loop(intents.load)


async def load(
    profile: Profile, instructions: str, tools: list[llm.Tool | llm.Toolset]
) -> LiteModels:
    lite = profile.lite
    stt, intents = recognizer(profile), templates(profile)
    model = LocalLLM(
        LocalLLMOptions(
            model=lite.llm_model,
            gguf_file=lite.llm_gguf_file,
            runtime=lite.llm_runtime,
            max_new_tokens=lite.max_new_tokens,
            temperature=lite.temperature,
            repetition_penalty=lite.repetition_penalty,
            tool_answers=lite.tool_answers,
            tool_reminder=lite.tool_reminder,
            context=ContextOptions(**profile.context.model_dump()),
            scripted=profile.scripted_lines(),
            language=profile.voice.language,
            answer_in_language=len(set(lite.stt_languages)) > 1,
        ),
        intents=intents,
    )
    await off_the_loop(model.locate)
    await load_ears(stt, intents)
    logger.info("loading language model: %s", model.model)
    await off_the_loop(model.load)
    await require_room_to_talk(profile, model, instructions, tools)
    await model.warm(instructions, tools)
    return LiteModels(stt, model, WebRTCVADOptions(**profile.vad.model_dump()))

"""Phi-4-multimodal, loaded once and shared by every session; it hears the audio itself, so
there is no separate recognizer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.agents import llm

from audio import WebRTCVADOptions

from ...context import ContextOptions
from ...models import off_the_loop
from ...profile import Profile
from ...vision import vision_options
from .. import require_room_to_talk
from .engine import Phi4MMOptions
from .realtime import Phi4MMRealtimeModel

logger = logging.getLogger("voice_agent")


class Phi4MMModels:
    def __init__(
        self,
        model: Phi4MMRealtimeModel,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._model = model
        self._on_close = on_close
        """What else the engine lets go of at the end (the remote engine's replicas)."""

    def plugins(self) -> dict[str, Any]:
        return {"llm": self._model.fork()}

    def status(self) -> dict[str, Any]:
        return self._model.engine.status()

    async def aclose(self) -> None:
        self._model.shutdown()
        if self._on_close is not None:
            await self._on_close()


async def load(
    profile: Profile, instructions: str, tools: list[llm.Tool | llm.Toolset]
) -> Phi4MMModels:
    model = Phi4MMRealtimeModel(
        Phi4MMOptions(**profile.phi4mm.model_dump()),
        segmenter=WebRTCVADOptions(**profile.vad.model_dump()),
        context=ContextOptions(**profile.context.model_dump()),
        vision=vision_options(profile),
        scripted=profile.scripted_lines(),
        language=profile.voice.language,
    )
    await off_the_loop(model.locate)
    logger.info("loading Phi-4-multimodal: %s", profile.phi4mm.model)
    await off_the_loop(model.load)
    await require_room_to_talk(profile, model, instructions, tools)
    return Phi4MMModels(model)

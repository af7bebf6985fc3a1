"""The remote engine's pieces, made once per process: the lite engine's ears and templates, and
the replicas the model is served by."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from livekit.agents import llm

from audio.vad import WebRTCVADOptions

from ...context import ContextOptions
from ...models import off_the_loop
from ...profile import Profile
from ...vision import vision_options
from .. import require_room_to_talk
from ..lite.shared import LiteModels, load_ears, recognizer, templates
from ..phi4mm.prompt import card_tools, render
from ..phi4mm.realtime import Phi4MMRealtimeModel
from ..phi4mm.shared import Phi4MMModels
from .audio import RemotePhi4MM, RemotePhi4MMOptions
from .llm import RemoteLLM, RemoteLLMOptions
from .replicas import Replicas
from .tokens import DEFAULT_WINDOW, server_counter, server_window

logger = logging.getLogger("voice_agent")

AUDIO_WORKERS = 64
"""Threads that wait on the servers for the audio mode's conversations (each request holds
one while it streams; the asking itself is on the event loop)."""


async def load(
    profile: Profile, instructions: str, tools: list[llm.Tool | llm.Toolset]
) -> LiteModels | Phi4MMModels:
    remote = profile.remote
    replicas = Replicas(
        remote.base_url,
        api_key=os.environ.get(remote.api_key_env) or None,
        connect_timeout_s=remote.connect_timeout_s,
        read_timeout_s=remote.first_token_timeout_s,
        health_interval_s=remote.health_interval_s,
    )
    first, listed = replicas.replicas[0], None
    model_name = remote.model
    if not model_name:
        first, listed = await replicas.listing()
        model_name = str(listed[0]["id"])
    window = remote.context_tokens
    if not window:
        said = await off_the_loop(lambda: server_window(first.url, model_name, listed))
        if said is None:
            logger.warning(
                "%s does not say how many tokens it reads: assuming %d ([remote] context_tokens)",
                first.url,
                DEFAULT_WINDOW,
            )
        window = said or DEFAULT_WINDOW
    if remote.mode == "audio":
        return await _audio_mode(profile, instructions, tools, replicas, model_name, window)
    counter, counted_by = await off_the_loop(lambda: server_counter(first.url, model_name))
    model = RemoteLLM(
        RemoteLLMOptions(
            model=model_name,
            context_window=window,
            max_new_tokens=remote.max_new_tokens,
            temperature=remote.temperature,
            tool_answers=profile.lite.tool_answers,
            context=ContextOptions(**profile.context.model_dump()),
            scripted=profile.scripted_lines(),
            language=profile.voice.language,
            answer_in_language=len(set(profile.lite.stt_languages)) > 1,
        ),
        replicas,
        counter,
        intents=templates(profile),
    )
    logger.info(
        "remote model %s on %s (window %d tokens, counted by %s)",
        model_name,
        ", ".join(remote.base_url),
        model.own_context_window,
        counted_by,
    )
    stt = recognizer(profile)
    await load_ears(stt, model.intents)
    await require_room_to_talk(profile, model, instructions, tools)
    logger.info("the remote replicas read the system prompt…")
    await model.warm(instructions, tools)
    replicas.start()
    return LiteModels(stt, model, WebRTCVADOptions(**profile.vad.model_dump()))


async def _audio_mode(
    profile: Profile,
    instructions: str,
    tools: list[llm.Tool | llm.Toolset],
    replicas: Replicas,
    model_name: str,
    window: int,
) -> Phi4MMModels:
    """Phi-4-multimodal on the servers, heard and seen as the phi4mm engine hears and sees."""
    remote = profile.remote
    backend = RemotePhi4MM(
        RemotePhi4MMOptions(
            model=model_name,
            adapters=dict(remote.adapters),
            context_window=window,
            max_audio_clips=remote.max_audio_clips,
            max_new_tokens=remote.max_new_tokens,
            temperature=remote.temperature,
        ),
        replicas,
        asyncio.get_running_loop(),
        language=profile.voice.language,
    )
    model = Phi4MMRealtimeModel(
        engine=backend,
        segmenter=WebRTCVADOptions(**profile.vad.model_dump()),
        worker=ThreadPoolExecutor(max_workers=AUDIO_WORKERS, thread_name_prefix="remote"),
        context=ContextOptions(**profile.context.model_dump()),
        vision=vision_options(profile),
        scripted=profile.scripted_lines(),
        language=profile.voice.language,
    )
    logger.info(
        "remote Phi-4-multimodal %s on %s (adapters %s; window %d tokens, estimated)",
        model_name,
        ", ".join(remote.base_url),
        ", ".join(f"{k} = {v}" for k, v in remote.adapters.items()),
        window,
    )
    await require_room_to_talk(profile, model, instructions, tools)
    logger.info("the remote replicas read the system prompt…")
    await backend.warm(render(instructions, card_tools(tools), [], lambda _: ()))
    replicas.start()
    return Phi4MMModels(model, on_close=replicas.aclose)

"""The engines a profile can name: each is loaded once per process and gives every session
plugins of its own over the shared weights.

A new engine is a folder here with a ``shared.py`` whose ``load`` returns a ``LoadedEngine``,
and one line in ``ENGINES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..models import off_the_loop

if TYPE_CHECKING:  # the GPU bench imports an engine's cache module where LiveKit is absent
    from livekit.agents import llm

    from ..profile import Profile


@dataclass(frozen=True)
class EngineEntry:
    loader: str
    """The module whose ``async load(profile, instructions, tools)`` loads the engine."""
    model_setting: str
    """The field of the engine's profile section that ``--model`` sets."""
    sees: Callable[[Profile], bool] = lambda _: False
    """Whether the engine's model, as the profile sets it, reads images (camera frames,
    ``--image``)."""
    transcribes: Callable[[Profile], bool] = lambda _: True
    """Whether a recognizer writes the user's words before the model reads them (a wake
    phrase is heard in them)."""


ENGINES: dict[str, EngineEntry] = {
    "lite": EngineEntry("agent.engines.lite.shared", "llm_model"),
    "phi4mm": EngineEntry(
        "agent.engines.phi4mm.shared", "model", sees=lambda _: True, transcribes=lambda _: False
    ),
    "remote": EngineEntry(
        "agent.engines.remote.shared",
        "model",
        sees=lambda p: p.remote.mode == "audio",
        transcribes=lambda p: p.remote.mode == "text",
    ),
}


class LoadedEngine(Protocol):
    def plugins(self) -> dict[str, Any]:
        """``AgentSession`` keyword arguments (``stt``, ``llm``) for one new conversation:
        plugins of its own, over weights every conversation shares."""
        ...

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows of the engine ({} where nothing changes as it serves)."""
        ...

    async def aclose(self) -> None: ...


async def load_engine(
    profile: Profile, instructions: str, tools: list[llm.Tool | llm.Toolset]
) -> LoadedEngine:
    module = importlib.import_module(ENGINES[profile.engine].loader)
    engine: LoadedEngine = await module.load(profile, instructions, tools)
    return engine


class _Reader(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def own_context_window(self) -> int: ...

    @property
    def context_window(self) -> int: ...

    def prompt_tokens(self, instructions: str, tools: Sequence[llm.Tool | llm.Toolset]) -> int: ...


async def require_room_to_talk(
    profile: Profile, model: _Reader, instructions: str, tools: list[llm.Tool | llm.Toolset]
) -> None:
    """Refuse a window larger than the model reads, and a prompt that leaves the model no
    room for a conversation, before it is read."""
    from ..profile import ProfileError

    if profile.context.max_tokens > (own := model.own_context_window):
        raise ProfileError(
            f"profile {profile.name!r}: context.max_tokens {profile.context.max_tokens:,} is "
            f"more than {model.model} reads ({own:,} tokens)"
        )
    reply = profile.engine_settings.max_new_tokens
    window = model.context_window
    used = await off_the_loop(lambda: model.prompt_tokens(instructions, tools))
    if used + reply > window:
        raise ProfileError(
            f"profile {profile.name!r}: the prompt and tools are {used:,} tokens, and the "
            f"model reads at most {window:,} (with {reply} kept for the reply)"
        )

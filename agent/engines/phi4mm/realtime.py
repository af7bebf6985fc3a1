"""Phi-4-multimodal as a LiveKit ``RealtimeModel``: it hears each turn's audio itself, and sees
the camera's frames. One model per conversation (``fork``), over shared weights; its session
(``conversation.py``) keeps the chat. Each turn's transcript comes from the model's own ASR
prompt, run once the reply is done so it never delays the reply's first audio; LiveKit places it
on the timeline by the turn's start.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from livekit.agents import llm

from audio.segmenter import SegmenterOptions

from ...context import ContextMeter, ContextOptions
from ...vision import FrameNote, VisionOptions
from .conversation import Phi4MMRealtimeSession
from .engine import Phi4MMBackend, Phi4MMEngine, Phi4MMOptions
from .prompt import card_tools, render
from .records import Records

T = TypeVar("T")


class Phi4MMRealtimeModel(llm.RealtimeModel):
    """One conversation's view of the model: its turn and reply records and its KV caches
    (``thread``) are its own; the weights and the worker thread are shared (``fork``)."""

    def __init__(
        self,
        options: Phi4MMOptions | None = None,
        *,
        segmenter: SegmenterOptions | None = None,
        engine: Phi4MMBackend | None = None,
        worker: ThreadPoolExecutor | None = None,
        context: ContextOptions | None = None,
        vision: VisionOptions | None = None,
        scripted: tuple[str, ...] = (),
        language: str = "en",
    ) -> None:
        super().__init__(
            capabilities=llm.RealtimeCapabilities(
                message_truncation=True,
                turn_detection=False,
                user_transcription=True,
                auto_tool_reply_generation=False,
                audio_output=False,
                manual_function_calls=True,
                mutable_chat_context=True,
                mutable_instructions=True,
                mutable_tools=True,
            )
        )
        self.engine: Phi4MMBackend = engine or Phi4MMEngine(options)
        self.segmenter = segmenter
        self.context = context or ContextOptions()
        self.vision = vision or VisionOptions()
        self.scripted = scripted
        """What the agent says by script (the greeting): a reply may not recite it."""
        self.default_language = language
        self.language = language
        """The caller's, as last heard: what an apology is said in."""
        self.frame_note: FrameNote | None = None
        """Where the frame LiveKit pushes next comes from (told by the frame sampler)."""
        self.look_requested = False
        self.meter = ContextMeter()
        self.thread = f"chat-{uuid.uuid4().hex[:8]}"
        """The engine's name for this conversation's caches."""
        self.records = Records()
        self._executor = worker or ThreadPoolExecutor(max_workers=1, thread_name_prefix="phi4mm")

    def fork(self) -> Phi4MMRealtimeModel:
        """A model for another conversation over the same weights and worker thread."""
        return Phi4MMRealtimeModel(
            segmenter=self.segmenter,
            engine=self.engine,
            worker=self._executor,
            context=self.context,
            vision=self.vision,
            scripted=self.scripted,
            language=self.default_language,
        )

    def hear(self, language: str) -> None:
        self.language = language

    @property
    def model(self) -> str:
        return self.engine.name

    @property
    def provider(self) -> str:
        return self.engine.provider

    def locate(self) -> None:
        """Fail now, naming what is missing, if the weights are not on this machine."""
        self.engine.locate()

    def load(self) -> None:
        """Load the weights now (blocking), so the first turn is not the one that waits."""
        self.engine.load()

    @property
    def own_context_window(self) -> int:
        return self.engine.context_window

    @property
    def context_window(self) -> int:
        """The tokens a conversation may use: the model's own, or less if the options say."""
        return self.context.max_tokens or self.own_context_window

    def prompt_tokens(self, instructions: str, tools: Sequence[llm.Tool | llm.Toolset]) -> int:
        """The system turn's size, tools included, as the model reads it."""
        parts = render(instructions, card_tools(tools), [], lambda _: ())
        return sum(self.engine.count_tokens(part) for part in parts)

    def note_frame(self, note: FrameNote) -> None:
        self.frame_note = note

    def look(self) -> str:
        """The ``look`` tool: the camera's newest frame goes with the next request."""
        self.look_requested = True
        return "Here is what the camera shows now; answer from it."

    def item_details(self, item_id: str) -> dict[str, Any]:
        return self.records.details(item_id)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run on the model's own thread: the model is used from one thread at a time."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def session(self, *, turn_detection_disabled: bool = False) -> Phi4MMRealtimeSession:
        return Phi4MMRealtimeSession(self)

    def shutdown(self) -> None:
        """The process is done with the model: its worker stops."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """The conversation is over: its caches go (the weights and the worker stay)."""
        await self.run(self.engine.forget, self.thread)

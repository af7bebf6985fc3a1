"""One conversation with Phi-4-multimodal, as LiveKit's ``RealtimeSession``: it keeps the chat
context and each turn's media, renders them within the context window, streams the reply and
its tool calls out, and transcribes each turn once its reply is done.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from livekit import rtc
from livekit.agents import llm, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from ...relay import relay_reply, replies
from .parts import PromptPart
from .prompt import card_tools
from .records import ReplyRecord, TurnRecord
from .turn_audio import TurnAudio
from .turn_media import TurnMedia, adapter_for
from .window import PromptWindow

if TYPE_CHECKING:
    from .realtime import Phi4MMRealtimeModel

logger = logging.getLogger("voice_agent")


@dataclass
class _Generation:
    message_id: str
    text: utils.aio.Chan[str] = field(default_factory=utils.aio.Chan)
    functions: utils.aio.Chan[llm.FunctionCall] = field(default_factory=utils.aio.Chan)
    cancelled: threading.Event = field(default_factory=threading.Event)
    spoken: list[str] = field(default_factory=list)
    requested_at: float = field(default_factory=time.perf_counter)
    answers: str | None = None
    """The user turn this reply answers."""
    turns: list[str] = field(default_factory=list)
    """The turns not yet transcribed when it was asked for: it prices them, then transcribes
    them. A turn committed while it runs is left to the reply that answers it, so that its
    transcript (and the user_turn record) never comes before its price."""


class Phi4MMRealtimeSession(llm.RealtimeSession):
    def __init__(self, model: Phi4MMRealtimeModel) -> None:
        super().__init__(model)
        self._model = model
        self._chat_ctx = llm.ChatContext.empty()
        self._tools = llm.ToolContext.empty()
        self._instructions = ""
        self._audio = TurnAudio(model.segmenter)
        self._media = TurnMedia(model.vision)
        self._untranscribed: list[str] = []
        self._nothing_heard = False
        self._current: _Generation | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._transcribing = asyncio.Lock()
        self._window = PromptWindow(
            model.engine,
            model.context,
            lambda: model.context_window,
            model.meter,
            max_clips=model.engine.max_audio_clips,
        )

    @property
    def chat_ctx(self) -> llm.ChatContext:
        return self._chat_ctx.copy()

    @property
    def tools(self) -> llm.ToolContext:
        return self._tools.copy()

    async def update_instructions(self, instructions: str) -> None:
        self._instructions = instructions

    async def update_chat_ctx(self, chat_ctx: llm.ChatContext) -> None:
        # turns whose transcript has not come back yet are only in our context: keep them
        kept = [self._chat_ctx.get_by_id(i) for i in self._untranscribed]
        self._chat_ctx = chat_ctx.copy()
        for item in kept:
            if item is not None and self._chat_ctx.get_by_id(item.id) is None:
                self._chat_ctx.insert(item)

    async def update_tools(self, tools: list[llm.Tool]) -> None:
        self._tools = llm.ToolContext(tools)

    def update_options(self, *, tool_choice: NotGivenOr[llm.ToolChoice | None] = NOT_GIVEN) -> None:
        pass  # the model is always free to answer or call a tool

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        self._audio.push(frame)

    def push_video(self, frame: rtc.VideoFrame) -> None:
        self._media.push_frame(frame, self._model.frame_note)

    def clear_audio(self) -> None:
        self._audio.clear()

    def commit_audio(self) -> None:
        """Close the user's turn: its speech (and the latest camera frame) join the context."""
        now = time.time()
        turn = self._audio.commit()
        self._nothing_heard = not turn.clips
        if not turn.clips:
            return  # a frame waits for a turn with speech
        item_id = f"user_{uuid.uuid4().hex[:12]}"
        images = self._media.add_turn(item_id, turn.clips, now)
        self._model.records.turns[item_id] = TurnRecord(
            speech_started_at=now - turn.lead_s,
            speech_ended_at=now - turn.tail_s,
            committed_at=now,
            clips=turn.clips,
            images=images,
        )
        self._chat_ctx.insert(llm.ChatMessage(id=item_id, role="user", content=[""]))
        self._untranscribed.append(item_id)

    def generate_reply(
        self,
        *,
        instructions: NotGivenOr[str] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        tools: NotGivenOr[list[llm.Tool]] = NOT_GIVEN,
    ) -> asyncio.Future[llm.GenerationCreatedEvent]:
        self.interrupt()
        generation = _Generation(
            message_id=f"assistant_{uuid.uuid4().hex[:12]}", turns=list(self._untranscribed)
        )
        self._current = generation
        messages = utils.aio.Chan[llm.MessageGeneration]()
        modalities: asyncio.Future[list[Literal["text", "audio"]]] = asyncio.Future()
        modalities.set_result(["text"])
        no_audio = utils.aio.Chan[rtc.AudioFrame]()
        no_audio.close()
        messages.send_nowait(
            llm.MessageGeneration(
                message_id=generation.message_id,
                text_stream=generation.text,
                audio_stream=no_audio,
                modalities=modalities,
            )
        )
        messages.close()
        created: asyncio.Future[llm.GenerationCreatedEvent] = asyncio.Future()
        created.set_result(
            llm.GenerationCreatedEvent(
                message_stream=messages,
                function_stream=generation.functions,
                user_initiated=True,
                response_id=generation.message_id,
            )
        )
        extra = instructions if utils.is_given(instructions) else ""
        task = asyncio.create_task(self._generate(generation, extra))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return created

    def interrupt(self) -> None:
        if self._current is not None:
            self._current.cancelled.set()

    def truncate(
        self,
        *,
        message_id: str,
        modalities: list[Literal["text", "audio"]],
        audio_end_ms: int,
        audio_transcript: NotGivenOr[str] = NOT_GIVEN,
    ) -> None:
        """Keep in the context only what the user actually heard."""
        item = self._chat_ctx.get_by_id(message_id)
        if not isinstance(item, llm.ChatMessage) or not utils.is_given(audio_transcript):
            return
        if audio_transcript.strip():
            item.content = [audio_transcript]
        else:
            self._chat_ctx.items.remove(item)

    async def aclose(self) -> None:
        self.interrupt()
        for task in list(self._tasks):
            await utils.aio.cancel_and_wait(task)

    async def _generate(self, generation: _Generation, extra_instructions: str) -> None:
        try:
            if self._nothing_heard:
                self._nothing_heard = False
                return  # the turn held no speech: there is nothing to answer
            await self._stream_reply(generation, extra_instructions)
        except Exception as e:  # reported as an error event; the session goes on
            logger.exception("Phi-4-multimodal could not answer")
            self._report(e)
        finally:
            generation.text.close()
            generation.functions.close()
        try:
            await self._transcribe(generation.turns)
        except Exception as e:
            logger.exception("Phi-4-multimodal could not transcribe a turn")
            self._report(e)

    async def _stream_reply(self, generation: _Generation, extra_instructions: str) -> None:
        instructions = "\n".join(s for s in (self._instructions, extra_instructions) if s)
        if self._model.look_requested:
            self._model.look_requested = False
            self._show_newest_frame()
        items = list(self._chat_ctx.items)
        tools = card_tools(self._tools.flatten())
        parts, trim = await self._model.run(
            self._window.prepare,
            instructions,
            tools,
            items,
            self._media.of,
            lambda item_id: item_id not in self._untranscribed,
        )
        self._model.meter.report(trim)
        generation.answers = self._latest_user_turn(items)
        adapter = adapter_for([media for part in parts for media in part.media])
        stats, calls = await relay_reply(
            lambda on_text, avoid="": self._model.run(
                self._model.engine.generate,
                parts,
                adapter,
                on_text=on_text,
                cancelled=generation.cancelled,
                thread=self._model.thread,
                avoid=avoid,
            ),
            lambda text: self._say(generation, text),
            cancelled=generation.cancelled,
            offered=self._tools.function_tools.keys(),
            own_words="\n".join([instructions, *self._model.scripted]),
            language=self._model.language,
            on_malformed=self._report,
            earlier=replies(items),
        )
        for call in calls:
            function_call = llm.FunctionCall(
                call_id=f"call_{uuid.uuid4().hex[:12]}", name=call.name, arguments=call.arguments
            )
            self._chat_ctx.insert(function_call)
            generation.functions.send_nowait(function_call)
        if text := "".join(generation.spoken).strip():
            self._chat_ctx.insert(
                llm.ChatMessage(id=generation.message_id, role="assistant", content=[text])
            )
        self._model.meter.latest = stats.prompt_tokens + stats.generated_tokens
        await self._model.run(self._count_turn_tokens, parts)

    def _say(self, generation: _Generation, text: str) -> None:
        if text:
            if not generation.spoken:
                turn = self._model.records.turns.get(generation.answers or "")
                self._model.records.replies[generation.message_id] = ReplyRecord(
                    ttft_s=round(time.perf_counter() - generation.requested_at, 3),
                    first_text_at=time.time(),
                    eou_delay_s=(
                        None if turn is None else round(turn.committed_at - turn.speech_ended_at, 3)
                    ),
                )
            generation.spoken.append(text)
            generation.text.send_nowait(text)

    def _count_turn_tokens(self, parts: list[PromptPart]) -> None:
        by_media = {tuple(m.key for m in p.media): p for p in parts if p.media}
        for item_id in self._untranscribed:
            record = self._model.records.turns[item_id]
            media_keys = tuple(m.key for m in self._media.of(item_id))
            if record.tokens == 0 and (part := by_media.get(media_keys)) is not None:
                record.tokens = self._model.engine.count_tokens(part)
                for noted in record.images:  # one frame at most joins a turn
                    noted.tokens = self._model.engine.image_tokens(part)

    async def _transcribe(self, turns: list[str]) -> None:
        """Each of ``turns`` not transcribed yet, oldest first."""
        async with self._transcribing:
            for item_id in turns:
                if item_id in self._untranscribed:
                    await self._transcribe_turn(item_id)
                    self._untranscribed.remove(item_id)

    async def _transcribe_turn(self, item_id: str) -> None:
        record = self._model.records.turns[item_id]
        transcript = await self._model.run(self._model.engine.transcribe, record.clips)
        item = self._chat_ctx.get_by_id(item_id)
        if isinstance(item, llm.ChatMessage):
            item.content = [transcript]
        self.emit(
            "input_audio_transcription_completed",
            llm.InputTranscriptionCompleted(
                item_id=item_id,
                transcript=transcript,
                is_final=True,
                turn_started_at=record.speech_started_at,
            ),
        )

    def _show_newest_frame(self) -> None:
        """A user turn holding only the camera's newest frame (what ``look`` asked for)."""
        item_id = f"look_{uuid.uuid4().hex[:12]}"
        seen = self._media.add_look(item_id)
        text = "(the camera now)" if seen else "(The camera has shown nothing yet.)"
        self._chat_ctx.insert(llm.ChatMessage(id=item_id, role="user", content=[text]))

    @staticmethod
    def _latest_user_turn(items: list[llm.ChatItem]) -> str | None:
        for item in reversed(items):
            if isinstance(item, llm.ChatMessage) and item.role == "user":
                return item.id
        return None

    def _report(self, error: Exception) -> None:
        self.emit(
            "error",
            llm.RealtimeModelError(
                timestamp=time.time(), label=self._model.label, error=error, recoverable=True
            ),
        )

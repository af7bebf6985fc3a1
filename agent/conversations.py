"""The conversations a server holds at once, whatever they came by (a browser, a phone call).

Each is a session of its own over the shared models, from its first audio until one side ends
it; one pool counts them all against ``--max-sessions`` and frees what each held.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from livekit.agents import AgentSession
from livekit.agents.voice import io

from audio import Timeline
from audio.speaker import SpeakerOutput

from . import logs, metrics
from .control import ControlledSession
from .events import EventLog
from .signals import first_of

logger = logging.getLogger("voice_agent")

CLOSE_TIMEOUT_S = 3.0
VOICE_LEAD_FRAMES = 3
"""Frames of the agent's voice queued for a call's clock: 60 ms, so barge-in stops it at once."""
MIC_BACKLOG_FRAMES = 50
"""A second of the caller's audio the session has not taken yet; older frames are dropped."""
CONNECT_TIMEOUT_S = 20.0
"""From the answer to the caller's first audio: ICE that never completes (a client that
vanished, an offer without usable candidates) or a phone that never ACKs ends here."""


class CallerAudio(io.AudioInput):
    """A caller's audio as the session hears it, with the two moments a call needs."""

    def __init__(self, label: str) -> None:
        super().__init__(label=label)
        self.flowing = asyncio.Event()
        """Set at the first frame: the media path works, so the agent may speak."""
        self.ended = asyncio.Event()
        """Set when the caller's side stops sending for good."""
        self._last_heard: float | None = None

    def heard(self) -> None:
        """Audio came from the caller."""
        self._last_heard = time.monotonic()
        self.flowing.set()

    async def silent_for(self, timeout_s: float) -> None:
        """Returns once the caller has sent nothing for ``timeout_s`` (for
        ``CONNECT_TIMEOUT_S`` before the first audio): a caller gone without a word."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(left)
            if self._last_heard is not None:
                deadline = self._last_heard + timeout_s

    async def aclose(self) -> None:
        """Stop taking audio."""


@dataclass
class CallMedia:
    """What one conversation hears and says through."""

    mic: CallerAudio
    speaker: SpeakerOutput
    camera: io.VideoInput | None = None
    """Closed by its transport once the conversation is over."""
    ended: list[asyncio.Event] = field(default_factory=list)
    """Other signs that the caller has gone (a closed data channel, a SIP BYE)."""


async def hold(
    controlled: ControlledSession,
    conversation_id: str,
    media: CallMedia,
    *,
    log_dir: Path | None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    echo: TextIO | None = None,
    notice: str = "",
) -> None:
    """The conversation, from its start until the agent or the caller ends it; its events go
    to ``log_dir/<id>/events.jsonl`` and ``on_record``, its turns printed to ``echo``. The
    profile's greeting, after ``notice``, is spoken once the caller's audio flows: what is sent
    before the media path works is never heard."""
    session = controlled.session
    session.input.audio = media.mic
    if media.camera is not None:
        session.input.video = media.camera
    session.output.audio = media.speaker
    path = None
    if log_dir is not None:
        (log_dir / conversation_id).mkdir(parents=True, exist_ok=True)
        path = log_dir / conversation_id / "events.jsonl"

    def record(fields: dict[str, Any]) -> None:
        metrics.observe(fields)
        if on_record is not None:
            on_record(fields)

    log = EventLog(path, Timeline(), echo=echo, on_record=record)
    log.attach(session, media.speaker)
    closed = asyncio.Event()
    session.on("close", lambda _: closed.set())
    media_timeout_s = controlled.control.call.media_timeout_s

    async def gone_silent() -> None:
        await media.mic.silent_for(media_timeout_s)
        message = "no audio from the caller in time: the conversation ends"
        logger.info("conversation %s: %s", conversation_id, message)
        log.write("error", source="media", message=message)

    try:
        await session.start(controlled.agent, record=False)
        controlled.control.start(greet_after=media.mic.flowing.wait, notice=notice)
        ended = (e.wait() for e in (closed, media.mic.ended, *media.ended))
        await first_of(gone_silent(), *ended)
    finally:
        try:
            await asyncio.wait_for(session.aclose(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.write("error", source="serve", message="the session did not close in time")
        await controlled.aclose()
        await media.speaker.stop()
        await media.mic.aclose()
        log.summary(session_id=conversation_id, agent_speech_s=round(media.speaker.voiced_s, 3))
        log.close()


class PoolFull(Exception):
    """Every place is taken; the message is meant for the caller."""


class ConversationPool:
    """Every conversation of a server, counted against one limit, each in a task it owns."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        metrics.count_active(lambda: self.active)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._held: weakref.WeakSet[AgentSession] = weakref.WeakSet()
        """Every session not yet freed: finished ones must leave it."""
        self._answering = 0
        """Calls accepted but not yet running: they hold a place too."""

    @property
    def active(self) -> int:
        return len(self._running)

    @contextlib.contextmanager
    def place(self) -> Iterator[None]:
        """Hold a place while a call is answered; PoolFull when there is none."""
        if self.active + self._answering >= self.max_sessions:
            raise PoolFull(f"all {self.max_sessions} conversations are taken; try later")
        self._answering += 1
        try:
            yield
        finally:
            self._answering -= 1

    async def answer(self, answering: Coroutine[Any, Any, Any]) -> Any:
        """``answering``'s result, run in a context of its own: what LiveKit keeps in context
        variables must not outlive the conversation in the caller's task."""
        try:
            return await asyncio.create_task(answering, context=contextvars.Context())
        except BaseException:
            self.free_soon()  # what a refused call had begun
            raise

    def joined(self, session: AgentSession) -> None:
        self._held.add(session)

    def run(self, conversation_id: str, conversation: Awaitable[None], *, transport: str) -> None:
        """Hold ``conversation`` until it ends; its place is free again then."""
        metrics.STARTED.labels(transport).inc()
        task = asyncio.create_task(self._run(conversation_id, conversation))
        task.set_name(f"conversation-{conversation_id}")
        self._running[conversation_id] = task

    async def _run(self, conversation_id: str, conversation: Awaitable[None]) -> None:
        logs.conversation_id.set(conversation_id)  # this task's lines, and its children's
        logger.info("conversation %s started (%d running)", conversation_id, self.active)
        try:
            await conversation
        except Exception:
            logger.exception("conversation %s failed", conversation_id)
        finally:
            del self._running[conversation_id]
            logger.info("conversation %s ended (%d running)", conversation_id, self.active)
            self.free_soon()

    def status(self) -> dict[str, int]:
        """How busy the server is, and what it holds: for monitoring, and for leak checks."""
        return {
            "sessions": self.active,
            "sessions_in_memory": len(self._held),
            "max_sessions": self.max_sessions,
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
        }

    def free_soon(self) -> None:
        """A finished session is a web of reference cycles (event emitters, its KV cache) that
        the collector would free only much later: free it as soon as the frames that hold it
        are gone (``gc.freeze`` after loading keeps this to milliseconds)."""
        asyncio.get_running_loop().call_soon(self._free)

    @staticmethod
    def _free() -> None:
        started = time.perf_counter()
        gc.collect()
        logger.debug("collected in %.0f ms", (time.perf_counter() - started) * 1000)

    async def aclose(self) -> None:
        """End every conversation (each writes its summary)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

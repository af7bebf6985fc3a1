"""``serve``: talk to the agent from a browser; many conversations on one load of the models.

An aiohttp server hands out the page and answers WebRTC offers. Each accepted offer is one
conversation: a session of its own over the shared models, which ends when the tab closes,
the connection drops or the agent ends the conversation.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import hmac
import ipaddress
import logging
import ssl
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole
from livekit.agents import AgentSession

from audio import Timeline

from .control import ControlledSession
from .engines import ENGINES
from .events import EventLog
from .session import SessionFactory
from .signals import first_of
from .transports.webrtc import (
    AgentVoiceTrack,
    EventChannel,
    WebRTCAudioInput,
    WebRTCAudioOutput,
    WebRTCVideoInput,
    hear_promptly,
)

logger = logging.getLogger("voice_agent")

MAX_OFFER_BYTES = 64 * 1024
"""A browser's offer is 2–10 KB."""
CLOSE_TIMEOUT_S = 3.0


class ServeConfigError(ValueError):
    """The server cannot start as asked; the message is meant for the user."""


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 4
    log_dir: Path | None = None
    token: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def checked(self) -> ServeOptions:
        """Refuse what would expose a microphone to the network without a token."""
        if not _is_loopback(self.host) and not self.token:
            raise ServeConfigError(
                f"serving on {self.host} needs a token (--token or VOICE_AGENT_TOKEN): "
                "anyone who reaches the port could talk to the agent"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServeConfigError("give both --tls-cert and --tls-key, or neither")
        self.ssl_context()  # a certificate that cannot be used is named before any model loads
        if self.log_dir is not None:
            try:
                self.log_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ServeConfigError(
                    f"{self.log_dir}: cannot write there ({e.strerror})"
                ) from None
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ServeConfigError(f"cannot use {self.tls_cert} / {self.tls_key}: {e}") from None
        return context

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _OfferError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WebConversation:
    """One browser's conversation: its peer connection, its session, its event log."""

    def __init__(
        self,
        conversation_id: str,
        controlled: ControlledSession,
        pc: RTCPeerConnection,
        *,
        sees: bool = False,
    ) -> None:
        """``sees``: the engine reads images, so a camera track becomes the session's video."""
        self.id = conversation_id
        self.controlled = controlled
        self.pc = pc
        self.voice = AgentVoiceTrack()
        self.events = EventChannel()
        self.mic: WebRTCAudioInput | None = None
        self.camera: WebRTCVideoInput | None = None
        self._sees = sees
        self.unused = MediaBlackhole()
        """Tracks nothing listens to yet (a camera, a second microphone): drained, since aiortc
        would queue their frames without bound."""
        self.ended = asyncio.Event()
        pc.on("datachannel", self._on_channel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)

    def _on_channel(self, channel: RTCDataChannel) -> None:
        self.events.attach(channel)
        channel.on("close", self.ended.set)  # a closed tab: its channel goes first

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio" and self.mic is None:
            hear_promptly(next(r for r in self.pc.getReceivers() if r.track is track))
            self.mic = WebRTCAudioInput(track)
        elif track.kind == "video" and self._sees and self.camera is None:
            self.camera = WebRTCVideoInput(track)
        else:
            self.unused.addTrack(track)

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.ended.set()

    async def run(self, log_dir: Path | None) -> None:
        """The conversation, from the answer until one side ends it."""
        session = self.controlled.session
        assert self.mic is not None
        speaker = WebRTCAudioOutput(self.voice)
        session.input.audio = self.mic
        if self.camera is not None:
            session.input.video = self.camera
        session.output.audio = speaker
        path = None
        if log_dir is not None:
            (log_dir / self.id).mkdir(parents=True, exist_ok=True)
            path = log_dir / self.id / "events.jsonl"
        log = EventLog(path, Timeline(), echo=None, on_record=self.events.send)
        log.attach(session, speaker)
        closed = asyncio.Event()
        session.on("close", lambda _: closed.set())
        try:
            await self.unused.start()
            await session.start(self.controlled.agent, record=False)
            self.controlled.control.start()
            await first_of(closed.wait(), self.ended.wait(), self.mic.ended.wait())
        finally:
            try:
                await asyncio.wait_for(session.aclose(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.write("error", source="serve", message="the session did not close in time")
            await self.controlled.aclose()
            await speaker.stop()
            await self.mic.aclose()
            if self.camera is not None:
                await self.camera.aclose()
            await self.unused.stop()
            log.summary(session_id=self.id, agent_speech_s=round(speaker.voiced_s, 3))
            log.close()
            await self.pc.close()


class VoiceServer:
    """The HTTP side: the page, the offers, and the conversations they started."""

    def __init__(self, factory: SessionFactory, options: ServeOptions) -> None:
        self._factory = factory
        self._options = options
        self._conversations: dict[str, asyncio.Task[None]] = {}
        self._held: weakref.WeakSet[AgentSession] = weakref.WeakSet()
        """Every session not yet freed: finished ones must leave it."""
        self._answering = 0
        """Offers accepted but not yet answered: they hold a place too."""
        self._page_html = resources.files("agent").joinpath("web/index.html").read_text("utf-8")
        self.app = web.Application(client_max_size=MAX_OFFER_BYTES)
        self.app.router.add_get("/", self._page)
        self.app.router.add_post("/offer", self._offer)
        self.app.router.add_get("/status", self._status)

    @property
    def active(self) -> int:
        return len(self._conversations)

    def _authorized(self, given: str) -> bool:
        return not self._options.token or hmac.compare_digest(
            given.encode(), self._options.token.encode()
        )

    async def _page(self, request: web.Request) -> web.Response:
        if not self._authorized(request.query.get("token", "")):
            return web.Response(status=401, text="a token is needed: open /?token=…\n")
        return web.Response(text=self._page_html, content_type="text/html")

    async def _status(self, request: web.Request) -> web.Response:
        """How busy the server is, and what it holds: for monitoring, and for leak checks."""
        if not self._authorized(request.query.get("token", "")):
            return web.json_response({"error": "a token is needed"}, status=401)
        return web.json_response(
            {
                "sessions": self.active,
                "sessions_in_memory": len(self._held),
                "max_sessions": self._options.max_sessions,
                "tasks": len(asyncio.all_tasks()),
                "threads": threading.active_count(),
            }
        )

    async def _offer(self, request: web.Request) -> web.Response:
        try:
            body = await self._read_offer(request)
            if self.active + self._answering >= self._options.max_sessions:
                raise _OfferError(
                    503, f"all {self._options.max_sessions} conversations are taken; try later"
                )
            # a context of its own: what LiveKit keeps in context variables must not outlive
            # the conversation in the HTTP connection's task
            self._answering += 1
            try:
                answering = asyncio.create_task(self._answer(body), context=contextvars.Context())
                answer, conversation_id = await answering
            finally:
                self._answering -= 1
        except _OfferError as e:
            self._free_soon()  # what a refused offer had begun
            return web.json_response({"error": str(e)}, status=e.status)
        return web.json_response({**answer, "session_id": conversation_id})

    async def _read_offer(self, request: web.Request) -> dict[str, str]:
        header = request.headers.get("Authorization", "")
        if not self._authorized(header.removeprefix("Bearer ")):
            raise _OfferError(401, "a valid token is needed (Authorization: Bearer …)")
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            raise _OfferError(413, f"an offer is at most {MAX_OFFER_BYTES} bytes") from None
        except ValueError:
            raise _OfferError(400, "the body is not JSON") from None
        if not (
            isinstance(body, dict)
            and body.get("type") == "offer"
            and isinstance(body.get("sdp"), str)
        ):
            raise _OfferError(400, 'expected {"sdp": "…", "type": "offer"}')
        return body

    async def _answer(self, body: dict[str, str]) -> tuple[dict[str, str], str]:
        # no STUN server: aiortc would ask Google's by default, which an offline machine waits
        # seconds for; the host's own addresses are what a LAN or localhost needs
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        conversation_id = uuid.uuid4().hex[:12]
        controlled = await ControlledSession.join(self._factory, conversation_id)
        self._held.add(controlled.session)
        sees = ENGINES[self._factory.profile.engine].sees
        conversation = WebConversation(conversation_id, controlled, pc, sees=sees)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
            if conversation.mic is None:
                raise _OfferError(400, "the offer has no audio track (the microphone)")
            pc.addTrack(conversation.voice)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:
            await pc.close()
            await conversation.controlled.aclose()
            if isinstance(e, _OfferError):
                raise
            raise _OfferError(400, f"not a usable SDP offer: {e}") from None
        task = asyncio.create_task(
            self._converse(conversation), name=f"conversation-{conversation.id}"
        )
        self._conversations[conversation.id] = task
        description = pc.localDescription
        return {"sdp": description.sdp, "type": description.type}, conversation.id

    async def _converse(self, conversation: WebConversation) -> None:
        logger.info("conversation %s started (%d running)", conversation.id, self.active)
        try:
            await conversation.run(self._options.log_dir)
        except Exception:
            logger.exception("conversation %s failed", conversation.id)
        finally:
            del self._conversations[conversation.id]
            logger.info("conversation %s ended (%d running)", conversation.id, self.active)
            self._free_soon()

    def _free_soon(self) -> None:
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
        """End every conversation (each writes its summary) and stop."""
        tasks = list(self._conversations.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve(factory: SessionFactory, options: ServeOptions, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    server = VoiceServer(factory, options)
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port, ssl_context=options.ssl_context())
        try:
            await site.start()
        except OSError as e:
            raise ServeConfigError(
                f"cannot listen on {options.host}:{options.port}: {e.strerror or e}"
            ) from None
        print(f"serving on {options.url} — open it in a browser", flush=True)
        await stop.wait()
    finally:
        await server.aclose()
        await runner.cleanup()

"""``serve``: talk to the agent from a browser; many conversations on one load of the models.

An aiohttp server hands out the page and answers WebRTC offers. Each accepted offer is one
conversation: a session of its own over the shared models, which ends when the tab closes,
the connection drops or the agent ends the conversation.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import ssl
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics, telemetry
from .control import ControlledSession
from .conversations import CallMedia, ConversationPool, PoolFull, hold
from .engines import ENGINES
from .session import SessionFactory
from .transports.sip import SipOptions, SipServer
from .transports.webrtc import (
    AgentVoiceTrack,
    EventChannel,
    WebRTCAudioInput,
    WebRTCAudioOutput,
    WebRTCVideoInput,
    hear_promptly,
    without_unusable_candidates,
)

logger = logging.getLogger("voice_agent")

MAX_OFFER_BYTES = 64 * 1024
"""A browser's offer is 2–10 KB."""


LISTEN_MESSAGE = '{"type": "listen"}'
"""What the page sends on the events channel when its Talk button is pressed."""


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
    web: bool = True
    """Serve the page and its WebRTC offers (``/status`` and ``/metrics`` are served either
    way: a phone-only server is watched too)."""
    sip: SipOptions | None = None
    """Also (or only) answer phone calls over SIP."""
    record_calls: bool = False
    """The profile's ``[call] record``: each phone call's WAV goes under ``log_dir``."""

    def checked(self) -> ServeOptions:
        """Refuse what would expose a microphone to the network without a token."""
        if not self.web and self.sip is None:
            raise ServeConfigError("--no-web needs --sip HOST:PORT: nothing would be served")
        if not _is_loopback(self.host) and not self.token:
            reach = "talk to the agent" if self.web else "read its figures"
            raise ServeConfigError(
                f"serving on {self.host} needs a token (--token or VOICE_AGENT_TOKEN): "
                f"anyone who reaches the port could {reach}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServeConfigError("give both --tls-cert and --tls-key, or neither")
        self.ssl_context()  # a certificate that cannot be used is named before any model loads
        if self.record_calls and self.sip is not None and self.log_dir is None:
            raise ServeConfigError(
                "the profile records calls ([call] record = true): give --log-dir, where each "
                "call's conversation.wav is written beside its events"
            )
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
    REASONS = {400: "bad_offer", 401: "unauthorized", 413: "too_large"}

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = self.REASONS[status]


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
        channel.on("message", self._on_message)

    def _on_message(self, message: str | bytes) -> None:
        """The page's Talk button; anything else a client sends is not for us."""
        addressing = self.controlled.session.addressing
        if message == LISTEN_MESSAGE and not addressing.always:
            addressing.listen("browser")

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
        assert self.mic is not None
        media = CallMedia(self.mic, WebRTCAudioOutput(self.voice), self.camera, ended=[self.ended])
        try:
            await self.unused.start()
            await hold(self.controlled, self.id, media, log_dir=log_dir, on_record=self.events.send)
        finally:
            if self.camera is not None:
                await self.camera.aclose()
            await self.unused.stop()
            await self.pc.close()


class VoiceServer:
    """The HTTP side: the page, the offers, and the conversations they started."""

    def __init__(
        self, factory: SessionFactory, options: ServeOptions, pool: ConversationPool
    ) -> None:
        self._factory = factory
        self._options = options
        self._pool = pool
        self._page_html = resources.files("agent").joinpath("web/index.html").read_text("utf-8")
        self.app = web.Application(client_max_size=MAX_OFFER_BYTES)
        if options.web:
            self.app.router.add_get("/", self._page)
            self.app.router.add_post("/offer", self._offer)
        self.app.router.add_get("/status", self._status)
        self.app.router.add_get("/metrics", self._metrics)

    def _authorized(self, given: str) -> bool:
        # a header's bytes that are not text arrive as surrogates: compared as they came
        return not self._options.token or hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), self._options.token.encode()
        )

    async def _page(self, request: web.Request) -> web.Response:
        if not self._authorized(request.query.get("token", "")):
            return web.Response(status=401, text="a token is needed: open /?token=…\n")
        return web.Response(text=self._page_html, content_type="text/html")

    def _reader_authorized(self, request: web.Request) -> bool:
        """A monitor's token: ``?token=`` or ``Authorization: Bearer`` (Prometheus' own)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            return self._authorized(token)
        return self._authorized(request.query.get("token", ""))

    async def _status(self, request: web.Request) -> web.Response:
        if not self._reader_authorized(request):
            return web.json_response({"error": "a token is needed"}, status=401)
        return web.json_response({**self._pool.status(), **self._factory.engine.status()})

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self._reader_authorized(request):
            return web.json_response({"error": "a token is needed"}, status=401)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _offer(self, request: web.Request) -> web.Response:
        try:
            body = await self._read_offer(request)
            with self._pool.place():
                answer, conversation_id = await self._pool.answer(self._answer(body))
        except PoolFull as e:
            metrics.REFUSED.labels("web", "full").inc()
            return web.json_response({"error": str(e)}, status=503)
        except _OfferError as e:
            metrics.REFUSED.labels("web", e.reason).inc()
            return web.json_response({"error": str(e)}, status=e.status)
        return web.json_response({**answer, "session_id": conversation_id})

    async def _read_offer(self, request: web.Request) -> dict[str, str]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if self._options.token and (scheme.lower() != "bearer" or not self._authorized(token)):
            raise _OfferError(401, "a valid token is needed (Authorization: Bearer …)")
        try:  # JSON is UTF-8 (RFC 8259) whatever charset the Content-Type names
            body = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            raise _OfferError(413, f"an offer is at most {MAX_OFFER_BYTES} bytes") from None
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past parsing
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
        self._pool.joined(controlled.session)
        profile = self._factory.profile
        sees = ENGINES[profile.engine].sees(profile)
        conversation = WebConversation(conversation_id, controlled, pc, sees=sees)
        try:
            offer = without_unusable_candidates(body["sdp"])
            if "a=fingerprint:" not in offer:  # aiortc would answer, and DTLS never complete
                raise _OfferError(400, "the offer has no DTLS fingerprint (a=fingerprint)")
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
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
        self._pool.run(conversation.id, conversation.run(self._options.log_dir), transport="web")
        description = pc.localDescription
        return {"sdp": description.sdp, "type": description.type}, conversation.id


async def serve(factory: SessionFactory, options: ServeOptions, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set: the page, SIP calls, or both, from one pool of sessions,
    and the figures of either."""
    pool = ConversationPool(options.max_sessions)
    spans = telemetry.export_spans()
    runner = web.AppRunner(VoiceServer(factory, options, pool).app, access_log=None)
    sip: SipServer | None = None
    try:
        await runner.setup()
        site = web.TCPSite(runner, options.host, options.port, ssl_context=options.ssl_context())
        try:
            await site.start()
        except OSError as e:
            raise ServeConfigError(
                f"cannot listen on {options.host}:{options.port}: {e.strerror or e}"
            ) from None
        if options.sip is not None:
            sip = SipServer(factory, options.sip, pool, options.log_dir)
            await sip.start()
        # said once everything listens: a script that waits for the first line may call at once
        what = "open it in a browser" if options.web else "/status and /metrics only"
        print(f"serving on {options.url} — {what}", flush=True)
        if sip is not None:
            print(f"serving on {sip.address} — call it", flush=True)
            if sip.extension is not None:
                print(f"registering as {sip.extension} — callers reach it there", flush=True)
        await stop.wait()
    finally:
        await pool.aclose()
        if sip is not None:
            await sip.aclose()
        await runner.cleanup()
        if spans is not None:
            spans.shutdown()  # the last conversations' spans go out

"""Phone calls straight over SIP: a trunk, a PBX or a desk phone calls the agent.

aiosipua answers the INVITEs and keeps the dialogs; aiortp carries G.711 audio (µ-law or
A-law, 8 kHz) both ways. Each call is a conversation of the server's pool, on the shared
models. The caller's BYE ends it; the agent ending the conversation sends one.

The agent's voice is paced by a clock of its own: one 20 ms packet every 20 ms for the whole
call, silence when the agent is quiet, since a PBX may hang up on a call that sends no RTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiortp import PortAllocator
from aiosipua import IncomingCall, SipUAS
from aiosipua.rtp_bridge import CallSession
from aiosipua.transport import UdpSipTransport
from livekit import rtc

from audio.speaker import FRAME_MS, SpeakerOutput

from ..control import ControlledSession
from ..conversations import CallerAudio, CallMedia, ConversationPool, PoolFull, hold
from ..session import SessionFactory

logger = logging.getLogger("voice_agent")

G711 = [0, 8]
"""PCMU and PCMA, the codecs every phone and trunk speaks, in that order of preference."""
RTP_PORTS = (20000, 30000)
VOICE_LEAD_FRAMES = 3
"""Frames of the agent's voice waiting to be sent: 60 ms, so barge-in stops it at once."""
MIC_BACKLOG_FRAMES = 50
"""A second of the caller's audio the session has not taken yet; older frames are dropped."""
MAX_CLOCK_LAG_S = 0.2
"""A clock this late (a stalled loop) starts again instead of sending a burst of packets."""


class SipConfigError(ValueError):
    """SIP cannot be served as asked; the message is meant for the user."""


@dataclass(frozen=True)
class SipOptions:
    host: str
    port: int
    allow: tuple[str, ...] = ()
    """Networks whose calls are answered; the others get 403. Empty: loopback only."""

    @classmethod
    def parse(cls, address: str, allow: list[str]) -> SipOptions:
        """``HOST:PORT`` and the ``--sip-allow`` networks, checked."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            raise SipConfigError(
                f"--sip {address}: give the address callers reach and a port, as IP:PORT"
            ) from None
        if ip.is_unspecified:
            raise SipConfigError(
                f"--sip {address}: give the address callers reach, not {host} "
                "(SIP and SDP tell the caller where to send, so it must be one address)"
            )
        if not 1 <= number <= 65535:
            raise SipConfigError(f"--sip {address}: the port must be between 1 and 65535")
        for network in allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise SipConfigError(f"--sip-allow {network}: not an address or network") from None
        if not ip.is_loopback and not allow:
            raise SipConfigError(
                f"answering calls on {host} needs --sip-allow NETWORK (your trunk's or "
                "PBX's addresses): anyone who reaches the port could call the agent"
            )
        return cls(str(ip), number, tuple(allow))

    def admits(self, caller: str) -> bool:
        try:
            ip = ipaddress.ip_address(caller)
        except ValueError:
            return False
        if not self.allow:
            return ip.is_loopback
        return any(ip in ipaddress.ip_network(n, strict=False) for n in self.allow)


class SipAudioInput(CallerAudio):
    """The caller's audio, as the RTP session decodes it (8 kHz for G.711)."""

    def __init__(self) -> None:
        super().__init__("sip")
        self._frames: deque[rtc.AudioFrame] = deque(maxlen=MIC_BACKLOG_FRAMES)
        self._arrived = asyncio.Event()

    def take(self, pcm: bytes, rate: int) -> None:
        self._frames.append(rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2))
        self.flowing.set()
        self._arrived.set()

    def end(self) -> None:
        self.ended.set()
        self._arrived.set()

    async def __anext__(self) -> rtc.AudioFrame:
        while not self._frames:
            if self.ended.is_set():
                raise StopAsyncIteration
            self._arrived.clear()
            await self._arrived.wait()
        return self._frames.popleft()


class SipAudioOutput(SpeakerOutput):
    """The agent's voice: frames wait in a short queue for the call's RTP clock."""

    def __init__(self, rtp: CallSession, rate: int) -> None:
        super().__init__("sip", sample_rate=rate)
        self._rtp = rtp
        self._frames: asyncio.Queue[np.ndarray] = asyncio.Queue(VOICE_LEAD_FRAMES)
        self._clock = asyncio.create_task(self._send(), name="sip-voice-clock")

    async def _emit(self, samples: np.ndarray) -> None:
        await self._frames.put(samples)

    def clear_buffer(self) -> None:
        super().clear_buffer()
        while not self._frames.empty():
            self._frames.get_nowait()

    async def _send(self) -> None:
        samples = self.rate * FRAME_MS // 1000
        silence = np.zeros(samples, np.int16)
        start, sent = time.monotonic(), 0
        while True:
            try:
                frame = self._frames.get_nowait()
            except asyncio.QueueEmpty:
                frame = silence
            self._rtp.send_audio_pcm(frame.tobytes(), (sent * samples) & 0xFFFFFFFF)
            sent += 1
            lag = time.monotonic() - (start + sent * FRAME_MS / 1000)
            if lag > MAX_CLOCK_LAG_S:  # the timestamps go on; the packets do not burst
                start += lag
            await asyncio.sleep(start + sent * FRAME_MS / 1000 - time.monotonic())

    async def stop(self) -> None:
        await super().stop()
        self._clock.cancel()
        await asyncio.gather(self._clock, return_exceptions=True)


class PhoneCall:
    """One answered call: its dialog, its RTP session and its conversation."""

    def __init__(
        self, conversation_id: str, call: IncomingCall, rtp: CallSession, rtp_port: int
    ) -> None:
        self.id = conversation_id
        self.call = call
        self.rtp = rtp
        self.rtp_port = rtp_port
        self.mic = SipAudioInput()
        self.hung_up = asyncio.Event()
        """The caller sent BYE (or CANCEL before the answer)."""

    def caller_hung_up(self) -> None:
        self.hung_up.set()
        self.mic.end()

    async def run(self, controlled: ControlledSession, log_dir: Path | None) -> None:
        rate = self.rtp.codec_sample_rate
        self.rtp.on_audio = lambda pcm, _timestamp: self.mic.take(pcm, rate)
        media = CallMedia(self.mic, SipAudioOutput(self.rtp, rate), ended=[self.hung_up])
        try:
            await hold(controlled, self.id, media, log_dir=log_dir)
        finally:
            if not self.hung_up.is_set():
                self.call.hangup()


class SipServer:
    """Answers SIP calls on one UDP address; each call is a conversation of ``pool``."""

    def __init__(
        self,
        factory: SessionFactory,
        options: SipOptions,
        pool: ConversationPool,
        log_dir: Path | None,
    ) -> None:
        self._factory = factory
        self._options = options
        self._pool = pool
        self._log_dir = log_dir
        self._ports = PortAllocator(RTP_PORTS)
        self._calls: dict[str, PhoneCall] = {}
        """By SIP Call-ID, from the answer until the call is over."""
        self._answering: set[asyncio.Task[None]] = set()
        self._transport = _UdpTransport(local_addr=(options.host, options.port))
        self._uas = SipUAS(self._transport, user_agent="voice-agent")
        self._uas.on_invite = self._on_invite
        self._uas.on_bye = lambda call, _request: self._hung_up(call.call_id)
        self._uas.on_cancel = lambda request, _addr: self._hung_up(request.call_id or "")

    @property
    def address(self) -> str:
        host = f"[{self._options.host}]" if ":" in self._options.host else self._options.host
        return f"sip:agent@{host}:{self._options.port}"

    async def start(self) -> None:
        try:
            await self._uas.start()
        except OSError as e:
            raise SipConfigError(
                f"cannot take SIP calls on {self._options.host}:{self._options.port}: "
                f"{e.strerror or e}"
            ) from None

    async def aclose(self) -> None:
        for task in list(self._answering):
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        await self._uas.stop()

    def _on_invite(self, call: IncomingCall) -> None:
        caller = call.source_addr[0]
        if not self._options.admits(caller):
            logger.warning("a call from %s was refused: not in --sip-allow", caller)
            call.reject(403, "Forbidden")
        elif call.sdp_offer is None or call.sdp_offer.audio is None:
            call.reject(488, "Not Acceptable Here")
        else:
            task = asyncio.create_task(self._answer(call), name=f"sip-answer-{call.call_id}")
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    def _hung_up(self, call_id: str) -> None:
        if (phone := self._calls.get(call_id)) is not None:
            phone.caller_hung_up()

    async def _answer(self, call: IncomingCall) -> None:
        try:
            with self._pool.place():
                call.ringing()
                await self._pool.answer(self._connect(call))
        except PoolFull:
            logger.info("a call from %s was answered busy: the server is full", call.caller)
            call.reject(486, "Busy Here")
        except ValueError as e:  # an offer without G.711, or without an address
            logger.info("a call from %s was refused: %s", call.caller, e)
            call.reject(488, "Not Acceptable Here")

    async def _connect(self, call: IncomingCall) -> None:
        assert call.sdp_offer is not None
        rtp_port, _ = await self._ports.allocate()
        try:
            rtp = CallSession(
                self._options.host,
                rtp_port,
                call.sdp_offer,
                supported_codecs=G711,
                jitter_prefetch=1,  # the VAD and the recognizer want each frame at once
            )
        except BaseException:
            await self._ports.release(rtp_port)
            raise
        phone = PhoneCall(uuid.uuid4().hex[:12], call, rtp, rtp_port)
        self._calls[call.call_id] = phone
        try:
            controlled = await ControlledSession.join(self._factory, phone.id)
            self._pool.joined(controlled.session)
            await rtp.start()
            call.accept(rtp.sdp_answer)
        except BaseException:
            await self._end(phone)
            raise
        logger.info("answered a call from %s as %s", call.caller, phone.id)
        self._pool.run(phone.id, self._converse(phone, controlled))

    async def _converse(self, phone: PhoneCall, controlled: ControlledSession) -> None:
        try:
            await phone.run(controlled, self._log_dir)
        finally:
            await self._end(phone)

    async def _end(self, phone: PhoneCall) -> None:
        self._calls.pop(phone.call.call_id, None)
        await phone.rtp.close()
        await self._ports.release(phone.rtp_port)


class _UdpTransport(UdpSipTransport):
    """aiosipua's UDP transport, without the type check that Python 3.11's own datagram
    transport fails (it is not a subclass of ``asyncio.DatagramTransport`` before 3.12)."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self), local_addr=self.local_addr
        )
        self._udp_transport = transport


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpSipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._owner._dispatch(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.debug("SIP transport: %s", exc)

"""Phone calls straight over SIP: a trunk, a PBX or a desk phone calls the agent.

aiosipua answers the INVITEs and keeps the dialogs; aiortp carries G.711 audio (µ-law or
A-law, 8 kHz) both ways. Each call is a conversation of the server's pool, on the shared
models. The caller's BYE ends it; the agent ending the conversation sends one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiortp import PortAllocator
from aiosipua import IncomingCall, SdpNegotiationError, SipUAC
from aiosipua.rtp_bridge import CallSession

from .. import metrics
from ..control import ControlledSession
from ..conversations import ConversationPool, PoolFull
from ..session import SessionFactory
from .sip_call import PhoneCall
from .sip_extension import CallAuthenticator, Extension, sip_password
from .sip_wire import GuardedUAS, SipConfigError, UdpTransport

logger = logging.getLogger("voice_agent")

G711 = [0, 8]
"""PCMU and PCMA, the codecs every phone and trunk speaks, in that order of preference."""
RTP_PORTS = (20000, 30000)


class CallAbandoned(Exception):
    """The caller cancelled while the call was being answered."""


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
        self._transport = UdpTransport(local_addr=(options.host, options.port))
        self._uac = SipUAC(self._transport)
        self._uas = GuardedUAS(self._transport, user_agent="voice-agent", uac=self._uac)
        self._uas.on_transfer_progress = self._transfer_progress
        self._uas.on_invite = self._on_invite
        self._uas.on_bye = lambda call, _request: self._hung_up(call.call_id)
        self._uas.on_cancel = lambda request, _addr: self._hung_up(request.call_id or "")
        self._uas.on_ack_timeout = self._unacknowledged
        self._uas.on_reinvite = self._reinvited
        self._uas.on_key = self._keyed
        sip = factory.profile.sip
        password = sip_password(sip) if sip.registrar or sip.authenticate_calls else ""
        self._extension = Extension(self._uac, sip, password) if sip.registrar else None
        self._authenticator = (
            CallAuthenticator(sip.user, password) if sip.authenticate_calls else None
        )

    @property
    def address(self) -> str:
        host = f"[{self._options.host}]" if ":" in self._options.host else self._options.host
        return f"sip:agent@{host}:{self._options.port}"

    @property
    def extension(self) -> str | None:
        """The address-of-record the registrar knows the agent by, if it registers."""
        return None if self._extension is None else self._extension.aor

    async def start(self) -> None:
        try:
            await self._uas.start()
        except OSError as e:
            raise SipConfigError(
                f"cannot take SIP calls on {self._options.host}:{self._options.port}: "
                f"{e.strerror or e}"
            ) from None
        if self._extension is not None:
            self._extension.start()

    async def aclose(self) -> None:
        for task in list(self._answering):
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        if self._extension is not None:
            await self._extension.aclose()
        await self._uas.stop()

    def _on_invite(self, call: IncomingCall) -> None:
        caller = call.source_addr[0]
        if not self._options.admits(caller):
            logger.warning("a call from %s was refused: not in --sip-allow", caller)
            metrics.SIP_CALLS.labels("forbidden").inc()
            call.reject(403, "Forbidden")
        elif self._authenticator is not None and not self._authenticator.admits(call.invite):
            metrics.SIP_CALLS.labels("unauthenticated").inc()
            # aiosipua's reject() sends no headers: the challenge goes with its response
            call._send_response(
                401,
                "Unauthorized",
                extra_headers={"WWW-Authenticate": self._authenticator.challenge()},
            )
            call.dialog.terminate()
        elif call.sdp_offer is None or (audio := call.sdp_offer.audio) is None or not audio.port:
            metrics.SIP_CALLS.labels("not_acceptable").inc()
            call.reject(488, "Not Acceptable Here")
        else:
            task = asyncio.create_task(self._answer(call), name=f"sip-answer-{call.call_id}")
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    def _unacknowledged(self, call: IncomingCall) -> None:
        """The caller never confirmed the answer (RFC 3261 §13.3.1.4): the call is over."""
        metrics.SIP_CALLS.labels("unacknowledged").inc()
        self._hung_up(call.call_id)

    def _hung_up(self, call_id: str) -> None:
        if (phone := self._calls.get(call_id)) is not None:
            phone.caller_hung_up()

    def _reinvited(self, call: IncomingCall) -> None:
        """A re-INVITE (a session refresh, a new media address): the same media, answered
        again; a caller left unanswered would drop the call."""
        if (phone := self._calls.get(call.call_id)) is None:
            return
        if call.sdp_offer is not None and call.sdp_offer.rtp_address is not None:
            phone.rtp.update_remote(call.sdp_offer.rtp_address)
        call.accept(phone.rtp.sdp_answer)

    def _keyed(self, call_id: str, key: str) -> None:
        if (phone := self._calls.get(call_id)) is not None:
            phone.pressed(key)

    def _transfer_progress(self, call_id: str, status: int, _reason: str) -> None:
        if (phone := self._calls.get(call_id)) is not None:
            phone.transfer_progress(status)

    async def _answer(self, call: IncomingCall) -> None:
        try:
            with self._pool.place():
                call.ringing()
                await self._pool.answer(self._connect(call))
        except PoolFull:
            logger.info("a call from %s was answered busy: the server is full", call.caller)
            metrics.SIP_CALLS.labels("busy").inc()
            metrics.REFUSED.labels("sip", "full").inc()
            call.reject(486, "Busy Here")
        except CallAbandoned:
            logger.info("a call from %s was cancelled before the answer", call.caller)
            metrics.SIP_CALLS.labels("cancelled").inc()
        except (ValueError, SdpNegotiationError) as e:  # no G.711 offered, or no address
            logger.info("a call from %s was refused: %s", call.caller, e)
            metrics.SIP_CALLS.labels("not_acceptable").inc()
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
        phone = PhoneCall(
            uuid.uuid4().hex[:12],
            call,
            rtp,
            rtp_port,
            uac=self._uac,
            transfer_to=self._factory.profile.call.transfer_to,
        )
        self._calls[call.call_id] = phone
        controlled: ControlledSession | None = None
        try:
            controlled = await ControlledSession.join(self._factory, phone.id)
            controlled.session.userdata.phone = phone
            self._pool.joined(controlled.session)
            await rtp.start()
            if phone.hung_up.is_set():
                raise CallAbandoned
            call.accept(rtp.sdp_answer)
        except BaseException:
            if controlled is not None:
                await controlled.aclose()
            await self._end(phone)
            raise
        logger.info("answered a call from %s as %s", call.caller, phone.id)
        metrics.SIP_CALLS.labels("answered").inc()
        self._pool.run(phone.id, self._converse(phone, controlled), transport="sip")

    async def _converse(self, phone: PhoneCall, controlled: ControlledSession) -> None:
        try:
            await phone.run(controlled, self._log_dir)
        finally:
            await self._end(phone)

    async def _end(self, phone: PhoneCall) -> None:
        self._calls.pop(phone.call.call_id, None)
        await phone.rtp.close()
        await self._ports.release(phone.rtp_port)

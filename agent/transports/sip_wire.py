"""SIP datagrams on the wire: aiosipua's UDP transport and UAS, with what a malformed request
gets (a 400, as RFC 3261 §8.2 asks) instead of an exception inside the library and silence.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosipua import SipMessage, SipRequest, SipResponse, SipUAS
from aiosipua.sdp import parse_sdp
from aiosipua.transport import UdpSipTransport

from .. import metrics

logger = logging.getLogger("voice_agent")


def malformed(request: SipRequest) -> str | None:
    """What makes ``request`` unusable, in words; None if nothing. aiosipua reads the CSeq and
    the SDP as it handles a request, and an exception there leaves the caller unanswered."""
    number, _, method = (request.headers.get_first("cseq") or "").strip().partition(" ")
    if not number.isdigit() or method.strip().upper() != request.method.upper():
        return "its CSeq is not a number and the method"
    if request.body and request.content_type == "application/sdp":
        try:
            offer = parse_sdp(request.text)
        except (ValueError, UnicodeDecodeError):
            return "its SDP cannot be read"
        if any(not 0 <= media.port <= 65535 for media in offer.media):
            return "its SDP names a port that does not exist"
    return None


class GuardedUAS(SipUAS):
    """aiosipua's UAS, answering a malformed request 400 with one warning line."""

    def _on_message(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        if isinstance(msg, SipRequest) and (fault := malformed(msg)) is not None:
            logger.warning("a SIP %s from %s was refused (400): %s", msg.method, addr[0], fault)
            metrics.SIP_CALLS.labels("malformed").inc()
            if msg.method.upper() != "ACK":  # an ACK is never answered
                self._send_error(msg, 400, "Bad Request")
            return
        super()._on_message(msg, addr)


class UdpTransport(UdpSipTransport):
    """aiosipua's UDP transport, without the type check that Python 3.11's own datagram
    transport fails (it is not a subclass of ``asyncio.DatagramTransport`` before 3.12), and
    with a datagram that is not SIP dropped in one line (RFC 3261 §18.3: nothing to answer)."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self), local_addr=self.local_addr
        )
        self._udp_transport = transport

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            SipMessage.parse(data)
        except Exception:  # whatever the parser trips on, the datagram is not SIP
            logger.warning("a datagram from %s that is not SIP was dropped", addr[0])
            return
        super()._dispatch(data, addr)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpSipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._owner._dispatch(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.debug("SIP transport: %s", exc)

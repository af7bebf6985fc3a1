"""SIP datagrams on the wire: aiosipua's UDP transport and UAS, with what a malformed request
gets (a 400, as RFC 3261 §8.2 asks) instead of an exception inside the library and silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosipua import SipMessage, SipRequest, SipResponse, SipUAS
from aiosipua.sdp import parse_sdp
from aiosipua.transport import UdpSipTransport

from .. import metrics

logger = logging.getLogger("voice_agent")


class SipConfigError(ValueError):
    """SIP cannot be served as asked; the message is meant for the user."""


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


def relayed_key(request: SipRequest) -> str | None:
    """The key an INFO carries (``application/dtmf-relay``: "Signal=5", or
    ``application/dtmf``: "5"), or None if it carries none."""
    kind = (request.content_type or "").split(";")[0].strip().lower()
    text = request.text.strip() if request.body else ""
    if kind == "application/dtmf-relay":
        fields = dict(line.partition("=")[::2] for line in text.splitlines())
        signal = fields.get("Signal", fields.get("signal", "")).strip()
    elif kind == "application/dtmf":
        signal = text
    else:
        return None
    return {"10": "*", "11": "#"}.get(signal, signal.upper()) or None


class GuardedUAS(SipUAS):
    """aiosipua's UAS, answering a malformed request 400 with one warning line, and an INFO
    in a call (aiosipua answers 405) with 200, passing the key it carries to ``on_key``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_key: Callable[[str, str], None] | None = None
        """(Call-ID, key)."""
        self._handlers["INFO"] = self._handle_info

    def _handle_info(self, request: SipRequest, addr: tuple[str, int]) -> None:
        call = self._calls.get(request.call_id or "")
        if call is None:
            self._send_error(request, 481, "Call/Transaction Does Not Exist")
            return
        if not self._validate_in_dialog(call.dialog, request):
            return
        key = relayed_key(request)
        if request.body and key is None:
            self._send_error(request, 415, "Unsupported Media Type")
            return
        response = call.dialog.create_response(request, 200, "OK")
        if self.user_agent:
            response.headers.set_single("User-Agent", self.user_agent)
        self.transport.send_reply(response)
        if key is not None and self.on_key is not None:
            self.on_key(call.call_id, key)

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

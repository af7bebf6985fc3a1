"""A SIP caller written by hand, one datagram at a time: for what no real phone would send.

baresip is the real phone of tests/test_sip.py; this one sends what a careless or hostile
client does (no ACK, no RTP, a malformed header) and reads every response it gets.
"""

from __future__ import annotations

import socket
import time
import uuid


def sdp(rtp_port: int | str, payloads: str = "0") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP {payloads}\r\na=rtpmap:0 PCMU/8000\r\n"
    )


class RawCaller:
    """One UDP socket on loopback calling ``server``; each call has its own Call-ID."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:8]
        self.to_tag = ""
        """The agent's tag, once it answered 200."""

    def request(
        self, method: str, *, body: str = "", cseq: str = "", to_tag: str = "", **headers: str
    ) -> str:
        via = f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport"
        to = "<sip:agent@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        lines = {
            "Via": via,
            "Max-Forwards": "70",
            "From": f"<sip:tester@127.0.0.1>;tag={self.tag}",
            "To": to,
            "Call-ID": self.call_id,
            "CSeq": cseq or f"1 {method}",
            "Contact": f"<sip:tester@127.0.0.1:{self.port}>",
            **({"Content-Type": "application/sdp"} if body else {}),
            **headers,
            "Content-Length": str(len(body.encode())),
        }
        uri = f"sip:agent@{self.server[0]}:{self.server[1]}"
        head = "".join(f"{name}: {value}\r\n" for name, value in lines.items())
        return f"{method} {uri} SIP/2.0\r\n{head}\r\n{body}"

    def send(self, datagram: str | bytes) -> None:
        data = datagram.encode() if isinstance(datagram, str) else datagram
        self.socket.sendto(data, self.server)

    def final_response(self, timeout_s: float = 5.0) -> str | None:
        """The first final (≥ 200) response to arrive in ``timeout_s``, whole; None if none."""
        answers = self.final_responses(1, timeout_s)
        return next(iter(answers.values()), None)

    def final_responses(self, count: int, timeout_s: float) -> dict[str, str]:
        """The first final response to each of ``count`` calls (by Call-ID), as they came in
        ``timeout_s``; retransmissions are left out."""
        answers: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        while len(answers) < count and (left := deadline - time.monotonic()) > 0:
            self.socket.settimeout(left)
            try:
                data = self.socket.recv(65536).decode("utf-8", "replace")
            except TimeoutError:
                break
            if data.startswith("SIP/2.0 ") and int(data.split()[1]) >= 200:
                answers.setdefault(header(data, "Call-ID"), data)
        return answers

    def ack(self, response: str) -> None:
        """ACK a 200 to an INVITE, confirming the call."""
        self.to_tag = header(response, "To").partition("tag=")[2].split(";")[0]
        self.send(self.request("ACK", cseq="1 ACK", to_tag=self.to_tag))

    def bye(self) -> None:
        self.send(self.request("BYE", cseq="2 BYE", to_tag=self.to_tag))

    def close(self) -> None:
        self.socket.close()


def status_of(response: str | None) -> int | None:
    return None if response is None else int(response.split()[1])


def header(message: str, name: str) -> str:
    for line in message.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""

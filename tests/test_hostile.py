"""A real ``voice-agent serve`` (the page and SIP, a token, JSON logs) against clients that
misbehave as an attacker or a careless client would: each gets its protocol's answer, every
session they open is freed within its bound, and the log holds no exception. The same
server's ``/metrics`` and spans tell an operator what happened, and agree with events.jsonl.

The tests run in this file's order on one server: the last ones read what the others did.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack
from aiortp.packet import RtpPacket
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from agent.conversations import CONNECT_TIMEOUT_S
from audio.decode import load_audio

from .conftest import SHARED_AUDIO, free_port, free_udp_port, start_serve, wait_until
from .sip_datagrams import RawCaller, sdp, status_of

TOKEN = "s3cret"
MEDIA_TIMEOUT_S = 30.0
"""The default profile's ``[call] media_timeout_s``."""
FREED_WITHIN_S = 40.0
PHONE_RATE = 8000
PACKET_SAMPLES = 160
FLOOD_INVITES = 100


class SpanCollector:
    """An OTLP/HTTP collector on loopback that keeps the names of the spans it is sent."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        spans = self.spans

        class Receive(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        spans.extend(span.name for span in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receive)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()


def get(port: int, path: str, **headers: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    result = response.status, response.read()
    connection.close()
    return result


def post_offer(port: int, sdp_text: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/offer",
        data=json.dumps({"sdp": sdp_text, "type": "offer"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


@dataclass
class Serve:
    port: int
    sip: tuple[str, int]
    logs: Path
    log: Path
    collector: SpanCollector
    process: Any
    found: dict[str, Any] = field(default_factory=dict)
    """What one test leaves for the later ones."""

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        return get(self.port, path, **headers)

    def status(self) -> dict[str, Any]:
        code, body = self.get(f"/status?token={TOKEN}")
        assert code == 200
        result: dict[str, Any] = json.loads(body)
        return result

    def offer(self, sdp_text: str) -> int:
        return post_offer(self.port, sdp_text)

    def records(self) -> dict[str, list[dict[str, Any]]]:
        return {
            p.parent.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in self.logs.glob("*/events.jsonl")
        }


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    folder = tmp_path_factory.mktemp("hostile")
    collector = SpanCollector()
    port, sip = free_port(), ("127.0.0.1", free_udp_port())
    log = folder / "serve.log"
    with log.open("w") as stderr:
        process = start_serve(
            "--port", str(port), "--sip", f"{sip[0]}:{sip[1]}", "--token", TOKEN,
            "--max-sessions", "6", "--log-dir", str(folder / "logs"), "--log-format", "json",
            stderr=stderr, env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url},
        )  # fmt: skip
    server = Serve(port, sip, folder / "logs", log, collector, process)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        collector.close()


def phone_audio(recording: Path, silence_s: float) -> bytes:
    """``recording`` as a phone sends it (8 kHz G.711 µ-law), then silence."""
    samples = load_audio(recording, PHONE_RATE)
    samples = np.concatenate([samples, np.zeros(int(silence_s * PHONE_RATE), np.int16)])
    with tempfile.TemporaryDirectory() as folder:  # libsndfile's RAW needs a real file
        path = Path(folder) / "call.ulaw"
        sf.write(path, samples, PHONE_RATE, format="RAW", subtype="ULAW")
        return path.read_bytes()


def send_rtp(
    target: tuple[str, int], audio: bytes, *, until: Any = lambda: False, ssrc: int = 7
) -> None:
    """``audio`` (µ-law) as 20 ms RTP packets at the phone's pace, until it ends or
    ``until()`` (asked each second)."""
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    for n in range(len(audio) // PACKET_SAMPLES):
        payload = audio[n * PACKET_SAMPLES : (n + 1) * PACKET_SAMPLES]
        packet = RtpPacket(
            payload_type=0, sequence_number=n, timestamp=n * PACKET_SAMPLES, ssrc=ssrc,
            payload=payload,
        )  # fmt: skip
        sender.sendto(packet.serialize(), target)
        if n % 50 == 49 and until():
            break
        time.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
    sender.close()


def rtp_target(answer: str) -> tuple[str, int]:
    port = re.search(r"^m=audio (\d+)", answer, re.MULTILINE)
    assert port is not None, answer
    return "127.0.0.1", int(port.group(1))


def answered_call(serve: Serve) -> tuple[RawCaller, str]:
    caller = RawCaller(serve.sip)
    caller.send(caller.request("INVITE", body=sdp(free_udp_port())))
    answer = caller.final_response(15)
    assert status_of(answer) == 200, answer
    assert answer is not None
    return caller, answer


def test_a_well_behaved_phone_call_is_heard_and_answered(serve):
    """The baseline the figures below are checked against: a caller says "one, two, three"
    over RTP, is answered, and hangs up."""
    caller, answer = answered_call(serve)
    caller.ack(answer)

    def replied() -> bool:
        return any(r["type"] == "agent_reply" for rs in serve.records().values() for r in rs)

    send_rtp(
        rtp_target(answer), phone_audio(SHARED_AUDIO / "one_two_three_en.wav", 30), until=replied
    )
    caller.bye()
    assert wait_until(lambda: serve.status()["sessions"] == 0, 10)
    (records,) = serve.records().values()
    heard = " ".join(r["transcript"].lower() for r in records if r["type"] == "user_turn")
    assert {"one", "two", "three", "1", "2", "3"} & set(re.findall(r"\w+", heard)), records
    assert records[-1]["type"] == "summary"


@pytest.mark.parametrize(
    "case, status",
    [
        ({"body": sdp(99999)}, 400),
        ({"body": sdp("abc")}, 400),
        ({"body": sdp(40000), "cseq": "abc INVITE"}, 400),
        ({"body": sdp(40000), "cseq": "1 BYE"}, 400),
        ({"body": sdp(0)}, 488),
        ({"body": sdp(40000, payloads="111")}, 488),
        ({}, 488),
    ],
    ids=["m= port 99999", "m= port abc", "CSeq abc", "CSeq of another method", "port 0",
         "Opus only", "no SDP"],
)  # fmt: skip
def test_a_malformed_or_unusable_invite_gets_its_4xx(serve, case, status):
    caller = RawCaller(serve.sip)
    caller.send(caller.request("INVITE", **case))
    assert status_of(caller.final_response()) == status
    assert serve.status()["sessions"] == 0


def test_a_datagram_that_is_not_sip_is_dropped_without_an_answer(serve):
    caller = RawCaller(serve.sip)
    for garbage in (b"hello\r\n\r\n", b"\xff\xfe" * 300, b"INVITE\r\n\r\n", b""):
        caller.send(garbage)
    assert caller.final_response(1) is None


async def webrtc_offer() -> tuple[RTCPeerConnection, str]:
    client = RTCPeerConnection()
    client.addTrack(AudioStreamTrack())
    await client.setLocalDescription(await client.createOffer())
    return client, client.localDescription.sdp


def test_an_offer_webrtc_cannot_use_is_a_400_and_holds_nothing(serve):
    """Each fails after the session was made for it: what it had begun is freed, and no task
    is left pending (Python would say so in the log)."""

    async def offers() -> tuple[str, str, str]:
        client, whole = await webrtc_offer()
        await client.close()
        camera_only = RTCPeerConnection()
        camera_only.addTransceiver("video", direction="sendonly")
        await camera_only.setLocalDescription(await camera_only.createOffer())
        await camera_only.close()
        no_fingerprint = re.sub(r"a=fingerprint:.*\r\n", "", whole)
        return camera_only.localDescription.sdp, no_fingerprint, "v=0 garbage"

    for offer in asyncio.run(offers()):
        assert serve.offer(offer) == 400
    assert wait_until(lambda: serve.status()["sessions_in_memory"] == 0, 10)
    assert serve.status()["sessions"] == 0


def test_half_open_clients_are_all_freed_within_40_s(serve):
    """A browser that vanishes before ICE completes, an offer without candidates, one whose
    candidate names port 70000, a phone that never ACKs its 200, one that ACKs, talks for a
    second, then sends only garbage RTP and never BYE; meanwhile a flood of 100 INVITEs, of
    which the one place left is taken and the rest hear 486."""

    async def browsers() -> list[RTCPeerConnection]:
        vanished, whole = await webrtc_offer()
        assert serve.offer(whole) == 200
        await vanished.close()
        bare, offer = await webrtc_offer()
        bare_sdp = "".join(
            line
            for line in offer.splitlines(True)
            if not line.startswith(("a=candidate", "a=end-of"))
        )
        assert serve.offer(bare_sdp) == 200
        unreachable, offer = await webrtc_offer()
        assert (
            serve.offer(re.sub(r"(a=candidate:\S+ \d \S+ \d+ \S+) \d+", r"\1 70000", offer)) == 200
        )
        return [bare, unreachable]

    started = time.monotonic()
    loop = asyncio.new_event_loop()
    clients = loop.run_until_complete(browsers())
    silent, answer = answered_call(serve)
    silent.ack(answer)
    send_rtp(rtp_target(answer), phone_audio(SHARED_AUDIO / "one_two_three_en.wav", 0)[:8000])
    garbage = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(300):
        garbage.sendto(
            bytes(np.random.default_rng().integers(0, 256, 172, np.uint8)), rtp_target(answer)
        )
    unacknowledged, _ = answered_call(serve)
    flood = RawCaller(serve.sip)
    for n in range(FLOOD_INVITES):
        flood.call_id = f"flood-{n}"
        flood.send(flood.request("INVITE", body=sdp(free_udp_port())))
    answers = flood.final_responses(FLOOD_INVITES, 20)
    assert serve.status()["sessions"] == 6
    assert wait_until(lambda: serve.status()["sessions"] == 0, FREED_WITHIN_S), serve.status()
    freed_after = time.monotonic() - started
    for client in clients:
        loop.run_until_complete(client.close())
    loop.close()
    statuses = sorted(status_of(a) for a in answers.values())
    assert statuses == [200] + [486] * (FLOOD_INVITES - 1), statuses
    assert wait_until(lambda: serve.status()["sessions_in_memory"] == 0, 10)
    assert freed_after <= FREED_WITHIN_S
    ended_silent = [
        rs for rs in serve.records().values()
        if any(r["type"] == "error" and r["source"] == "media" for r in rs)
    ]  # fmt: skip
    assert len(ended_silent) == 6 and all(rs[-1]["type"] == "summary" for rs in ended_silent)
    serve.found["busy"] = FLOOD_INVITES - 1
    assert CONNECT_TIMEOUT_S < MEDIA_TIMEOUT_S < FREED_WITHIN_S


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /offer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    ],
    ids=["Content-Length abc", "TLS to plain HTTP", "70 KB path", "bad chunk", "200 headers"],
)
def test_a_malformed_http_request_gets_a_4xx(serve, request_bytes):
    with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as connection:
        connection.sendall(request_bytes)
        first_line = connection.recv(4096).split(b"\r\n")[0]
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", first_line), first_line


def test_tokens_and_odd_offers_get_a_json_4xx(serve):
    """An Authorization header in lower case (RFC 7235) is read; one without its scheme, or
    whose bytes are not text, is refused; a charset that does not exist, JSON nested 30,000
    deep and a body that is not UTF-8 are a 400."""

    def answer(headers: dict[str, str | bytes], body: bytes = b"{}") -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
        connection.putrequest("POST", "/offer")
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        status, text = response.status, response.read()
        connection.close()
        return status, json.loads(text)

    token = {"Authorization": f"Bearer {TOKEN}"}
    assert answer({"Authorization": f"bearer {TOKEN}"})[0] == 400, "past the token"
    assert answer({"Authorization": TOKEN})[0] == 401, "a token needs its scheme"
    assert answer({"Authorization": b"Bearer s3cr\xff\xfe"})[0] == 401
    odd_charset = {**token, "Content-Type": "application/json; charset=bogus"}
    assert answer(odd_charset)[0] == 400, "read as JSON, which is UTF-8: the wrong shape"
    status, body = answer(token, b"[" * 30_000 + b"]" * 30_000)
    assert status == 400 and body["error"] == "the body is not JSON"
    assert answer(token, b'{"sdp": "\xff", "type": "offer"}')[0] == 400
    assert serve.get("/metrics")[0] == serve.get("/status")[0] == 401
    assert serve.get("/metrics?token=wrong")[0] == 401


def scrape(serve: Serve) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as Prometheus reads it: each sample by name and labels."""
    code, text = serve.get("/metrics", Authorization=f"Bearer {TOKEN}")
    assert code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_metrics_tell_an_operator_what_happened_and_agree_with_the_event_logs(serve):
    samples = scrape(serve)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    e2e = [
        r["metrics"]["e2e_latency_s"]
        for rs in serve.records().values()
        for r in rs
        if r["type"] == "agent_reply" and r["metrics"].get("e2e_latency_s") is not None
    ]
    assert e2e, "the phone call was answered aloud"
    assert value("voice_agent_e2e_latency_seconds_count") == len(e2e)
    assert value("voice_agent_e2e_latency_seconds_sum") == pytest.approx(sum(e2e))
    assert value("voice_agent_conversations_active") == 0
    assert value("voice_agent_conversations_total", transport="web") == 3
    assert value("voice_agent_conversations_total", transport="sip") == 4
    assert value("voice_agent_sip_calls_total", outcome="busy") == serve.found["busy"]
    assert (
        value("voice_agent_conversations_refused_total", transport="sip", reason="full")
        == (serve.found["busy"])
    )
    assert value("voice_agent_sip_calls_total", outcome="malformed") == 4
    assert value("voice_agent_sip_calls_total", outcome="not_acceptable") == 3
    assert (
        value("voice_agent_conversations_refused_total", transport="web", reason="unauthorized")
        == 2
    )
    assert value("voice_agent_errors_total", source="media") == 6
    assert value("voice_agent_user_turns_total") >= 1
    assert value("voice_agent_stage_latency_seconds_count", stage="stt") >= 1
    assert value("process_resident_memory_bytes") > 100e6
    assert wait_until(
        lambda: value_now(serve, "voice_agent_sip_calls_total", outcome="unacknowledged") >= 2, 15
    )


def value_now(serve: Serve, name: str, **labels: str) -> float:
    return scrape(serve).get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_server_stops_cleanly_and_its_log_is_json_without_an_exception(serve):
    serve.process.terminate()
    assert serve.process.wait(timeout=30) == 0
    lines = [json.loads(line) for line in serve.log.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    text = serve.log.read_text()
    for sign in (
        "Traceback",
        "Exception in callback",
        "Error handling request",
        "Task was destroyed",
        "Fatal write error",
    ):
        assert sign not in text, sign
    assert not [line for line in lines if "stack" in line or line["level"] in ("error", "critical")]
    assert len(lines) < 200, "floods are told in a few lines"
    assert any(re.search(r"\(100 like it in \d+\.\d s\)$", line["message"]) for line in lines)
    ids = {
        line.get("conversation_id")
        for line in lines
        if line["message"].endswith("the conversation ends")
    }
    assert len(ids) == 6 and None not in ids, "each conversation's lines carry its id"


def test_livekits_spans_reached_the_collector(serve):
    assert wait_until(lambda: serve.collector.spans, 5)
    assert {"agent_session", "user_turn", "llm_node"} <= set(serve.collector.spans), set(
        serve.collector.spans
    )


def test_a_phone_only_server_is_watched_too():
    """``--no-web``: no page and no offers, but ``/status`` and ``/metrics`` on its port."""
    port = free_port()
    server = start_serve(
        "--no-web", "--port", str(port), "--sip", f"127.0.0.1:{free_udp_port()}"
    )  # fmt: skip
    try:
        assert get(port, "/")[0] == 404 and post_offer(port, "v=0") == 404
        assert json.loads(get(port, "/status")[1])["sessions"] == 0
        code, text = get(port, "/metrics")
        assert code == 200 and b"voice_agent_conversations_active 0.0" in text
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0

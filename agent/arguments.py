"""The ``voice-agent`` command line: its commands, options and the checks on their values
(a bad value is one line on stderr and exit code 2, as argparse's own errors are here)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from importlib.metadata import version
from typing import NoReturn

from . import logs
from .engines import ENGINES
from .engines.phi4mm.checkpoint import DEFAULT_MODEL, DEFAULT_REVISION

EXIT_USAGE = 2
SPEED_RANGE = (0.1, 10.0)
MAX_CONTEXT_RANGE = (256, 1 << 20)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _number_in(
    low: float, high: float, kind: Callable[[str], float] = float
) -> Callable[[str], float]:
    """An argparse type: a finite number (of ``kind``) from ``low`` to ``high``, or a one-line
    refusal."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="voice-agent", description="A local, offline voice assistant.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('phi4mm-voice-agent')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_session_options(p: argparse.ArgumentParser) -> None:
        """The options of every command that holds conversations."""
        p.add_argument("--profile", default="desktop", help="built-in profile or .toml path")
        p.add_argument("--engine", choices=ENGINES, help="override the profile's engine")
        p.add_argument(
            "--model", help="the engine's model: a folder, or a hub id already in the local cache"
        )
        p.add_argument("--mqtt", metavar="URL", help="MQTT broker, mqtt://HOST[:PORT] or mqtts://")
        p.add_argument("--device-id", help="this kiosk's name in the MQTT topics")
        p.add_argument(
            "--max-context",
            type=_number_in(*MAX_CONTEXT_RANGE, kind=int),
            metavar="TOKENS",
            help="the conversation's window in tokens (default: the model's own)",
        )
        p.add_argument(
            "--turn-detector",
            choices=("smart-turn", "vad"),
            help="how the end of a turn is told (default: the profile's, smart-turn)",
        )

    def with_log_format(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--log-format",
            choices=logs.LOG_FORMATS,
            default="text",
            help="json: one object a line with the conversation's id, for a log shipper "
            "(a worker: LiveKit's own JSON lines on stdout, alone)",
        )

    run = commands.add_parser("run-file", help="answer a recorded conversation")
    run.add_argument("input", help="WAV/FLAC/AIFF/OGG recording of the user")
    run.add_argument(
        "--out", required=True, help="folder for agent.wav, conversation.wav, events.jsonl"
    )
    run.add_argument(
        "--speed",
        type=_number_in(*SPEED_RANGE),
        default=1.0,
        help="play the input faster (2 = twice; 0.1 to 10)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no live transcript")
    run.add_argument(
        "--image",
        action="append",
        metavar="FILE[@SECONDS]",
        help="show an image from SECONDS into the recording on (default 0; repeatable)",
    )
    run.add_argument("--video", metavar="FILE", help="show a video along the recording")
    with_session_options(run)

    console = commands.add_parser("console", help="talk through the microphone and speaker")
    console.add_argument(
        "--camera",
        nargs="?",
        const=0,
        type=_number_in(0, 63, kind=int),
        metavar="INDEX",
        help="look through /dev/videoINDEX (default 0; phi4mm engine)",
    )
    for kind, role in (("input", "microphone"), ("output", "speaker")):
        console.add_argument(
            f"--{kind}-device",
            metavar="NAME",
            help=f"the {role}, as `voice-agent devices` lists it (a part of the name will do; "
            "default: the sound server's or the system's default)",
        )
    console.add_argument("--out", metavar="DIR", help="keep the events in DIR/console/events.jsonl")
    with_session_options(console)

    commands.add_parser("devices", help="list the microphones and speakers")

    serve = commands.add_parser(
        "serve",
        help="talk from a browser (WebRTC) or a phone (SIP); many conversations on one load",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_number_in(1, 65535, kind=int), default=8080)
    serve.add_argument(
        "--max-sessions",
        type=_number_in(1, 64, kind=int),
        default=4,
        help="conversations at once, browsers and calls together; more are answered "
        "503 (web) or 486 Busy (SIP) (default 4)",
    )
    serve.add_argument("--log-dir", help="write each conversation's events.jsonl under here")
    serve.add_argument(
        "--token", help="required from clients (default $VOICE_AGENT_TOKEN); needed off loopback"
    )
    serve.add_argument(
        "--tls-cert", help="PEM certificate: serve https (browsers need it off localhost)"
    )
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument(
        "--sip",
        metavar="IP:PORT",
        help="also answer phone calls over SIP (UDP, G.711) on this address",
    )
    serve.add_argument(
        "--sip-allow",
        metavar="NETWORK",
        action="append",
        default=[],
        help="answer SIP calls from this network only (repeat; needed off loopback)",
    )
    serve.add_argument(
        "--no-web", action="store_true", help="no page: SIP calls only (/status and /metrics stay)"
    )
    with_log_format(serve)
    with_session_options(serve)

    worker = commands.add_parser(
        "worker", help="join the rooms of a LiveKit server (LiveKit Cloud, livekit-server, SIP)"
    )
    worker.add_argument("--url", help="the server, ws://HOST:PORT (default $LIVEKIT_URL)")
    worker.add_argument("--api-key", help="default $LIVEKIT_API_KEY")
    worker.add_argument("--api-secret", help="default $LIVEKIT_API_SECRET")
    with_log_format(worker)
    with_session_options(worker)

    download = commands.add_parser(
        "download-model", help="fetch Phi-4-multimodal's weights (needs internet)"
    )
    download.add_argument("--model", default=DEFAULT_MODEL, help="hub repository id")
    download.add_argument("--revision", default=DEFAULT_REVISION, help="branch, tag or PR ref")
    download.add_argument("--dir", help="a folder to put it in (default: the Hugging Face cache)")

    doctor = commands.add_parser("doctor", help="check this machine for what the agent needs")
    with_session_options(doctor)
    doctor.add_argument("--port", type=_number_in(1, 65535, kind=int), help="serve's, to check")
    doctor.add_argument(
        "--sip-port", type=_number_in(1, 65535, kind=int), help="also this UDP port"
    )
    return parser

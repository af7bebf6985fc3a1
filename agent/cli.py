"""The ``voice-agent`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from audio import AudioDecodeError
from tools.mqtt import MqttConfigError

from . import logs
from .engines import ENGINES
from .engines.phi4mm.checkpoint import DEFAULT_MODEL, DEFAULT_REVISION
from .models import ModelNotFoundError
from .profile import Profile, ProfileError, load_profile
from .signals import StoppedBeforeStart

if TYPE_CHECKING:
    from .serve import ServeOptions
    from .vision import FrameFiles

EXIT_USAGE = 2
SPEED_RANGE = (0.1, 10.0)
MAX_CONTEXT_RANGE = (256, 1 << 20)
logger = logging.getLogger("voice_agent")


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _profile(args: argparse.Namespace) -> Profile:
    profile = load_profile(args.profile)
    if args.engine:
        profile = profile.model_copy(update={"engine": args.engine})
    if getattr(args, "mqtt", None) or getattr(args, "device_id", None):
        mqtt = profile.mqtt.model_copy(
            update={
                "enabled": True,
                "url": args.mqtt or profile.mqtt.url,
                "device_id": args.device_id or profile.mqtt.device_id,
            }
        )
        profile = profile.model_copy(update={"mqtt": mqtt})
    if args.max_context is not None:
        context = profile.context.model_copy(update={"max_tokens": args.max_context})
        profile = profile.model_copy(update={"context": context})
    if args.model:
        profile = profile.with_model(args.model)
    if args.turn_detector:
        endpointing = profile.endpointing.model_copy(update={"turn_detector": args.turn_detector})
        profile = profile.model_copy(update={"endpointing": endpointing})
    return profile


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


def _run_file(args: argparse.Namespace) -> int:
    from .events import counts_line
    from .transports.file import OutputDirError, run_file

    profile = _profile(args)
    frames = _frame_files(args, profile)
    try:
        result = asyncio.run(
            run_file(
                Path(args.input),
                Path(args.out),
                profile,
                speed=args.speed,
                echo=not args.quiet,
                frames=frames,
            )
        )
    except OutputDirError as e:
        raise UsageError(str(e)) from None
    print(counts_line(result.summary["counts"]))
    print(f"wrote {result.out_dir}/agent.wav, conversation.wav and events.jsonl")
    if result.stopped_by is not None:
        print(f"stopped by {result.stopped_by.name}: the files end where it came")
        return 128 + int(result.stopped_by)
    return 0


def _require_sight(profile: Profile, what: str) -> None:
    if not ENGINES[profile.engine].sees(profile):
        raise UsageError(
            f"the {profile.engine} engine cannot see: {what} --engine phi4mm "
            '(or the remote engine with [remote] mode = "audio")'
        )


def _frame_files(args: argparse.Namespace, profile: Profile) -> FrameFiles | None:
    """The run's images and video, opened now: a missing or unreadable one, or one given to
    an engine that cannot see, is refused before any model loads."""
    from .vision import FrameFiles, FrameSourceError, parse_timed_image

    if not (args.image or args.video):
        return None
    _require_sight(profile, "--image and --video need")
    try:
        images = [parse_timed_image(value) for value in args.image or []]
        return FrameFiles.open(images, Path(args.video) if args.video else None)
    except FrameSourceError as e:
        raise UsageError(str(e)) from None


def _camera(args: argparse.Namespace, profile: Profile) -> str | None:
    """The camera device to look through, checked now; None without ``--camera`` or when it
    fails and the profile falls back to voice alone."""
    from .vision import FrameSourceError, camera_device, probe_camera

    if args.camera is None:
        return None
    _require_sight(profile, "--camera needs")
    device = camera_device(args.camera)
    try:
        probe_camera(device)
    except FrameSourceError as e:
        if profile.vision.camera_fallback == "error":
            raise UsageError(
                f'{e} ([vision] camera_fallback = "audio-only" goes on without)'
            ) from None
        print(f"voice-agent: {e}; going on by voice alone", file=sys.stderr, flush=True)
        return None
    return device


def _console(args: argparse.Namespace) -> int:
    from .transports.console import NoAudioDeviceError, run_console
    from .transports.devices import DeviceError
    from .transports.file import OutputDirError, prepare_out_dir

    profile = _profile(args)
    try:
        if args.out:
            prepare_out_dir(Path(args.out))
        run_console(
            profile,
            camera=_camera(args, profile),
            input_device=args.input_device,
            output_device=args.output_device,
            out_dir=Path(args.out) if args.out else None,
        )
    except (NoAudioDeviceError, DeviceError, OutputDirError) as e:
        raise UsageError(str(e)) from None
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import Wanted, run_checks

    wanted = Wanted(_profile(args), args.port, args.sip_port, args.mqtt)
    return 0 if run_checks(wanted) else 1


def _devices(args: argparse.Namespace) -> int:
    from .transports.devices import all_devices

    devices = all_devices()
    if not devices:
        print("no microphone or speaker found (no sound server answers, PortAudio lists none)")
        return 1
    width = max(len(d.name) for d in devices)
    for d in sorted(devices, key=lambda d: (d.kind, not d.server)):
        where = "sound server" if d.server else f"PortAudio {d.index}"
        described = f"  {d.description}" if d.description != d.name else ""
        default = "  (default)" if d.default else ""
        print(f"{d.kind:6}  {d.name:{width}}  [{where}]{described}{default}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import ServeConfigError, ServeOptions
    from .transports.sip import SipConfigError, SipOptions
    from .transports.sip_extension import check_settings

    profile = _profile(args)
    try:
        sip = SipOptions.parse(args.sip, args.sip_allow) if args.sip else None
        check_settings(profile.sip, serving_sip=sip is not None)
        options = ServeOptions(
            host=args.host,
            port=args.port,
            max_sessions=args.max_sessions,
            log_dir=Path(args.log_dir) if args.log_dir else None,
            token=args.token or os.environ.get("VOICE_AGENT_TOKEN", ""),
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            web=not args.no_web,
            sip=sip,
            record_calls=profile.call.record,
        ).checked()
        asyncio.run(_serve_until_stopped(profile, options))
    except (ServeConfigError, SipConfigError) as e:
        raise UsageError(str(e)) from None
    return 0


async def _serve_until_stopped(profile: Profile, options: ServeOptions) -> None:
    from .serve import serve
    from .session import SessionFactory
    from .signals import StopSignals, unless_stopped

    with StopSignals() as stop:
        factory = await unless_stopped(stop, SessionFactory.load(profile))
        try:
            await serve(factory, options, stop.event)
        finally:
            await factory.aclose()
    print("server stopped", flush=True)


def _worker(args: argparse.Namespace) -> int:
    from .transports.livekit import LiveKitServer, WorkerConfigError, run_worker

    profile = _profile(args)
    try:
        livekit = LiveKitServer(
            url=args.url or os.environ.get("LIVEKIT_URL", ""),
            api_key=args.api_key or os.environ.get("LIVEKIT_API_KEY", ""),
            api_secret=args.api_secret or os.environ.get("LIVEKIT_API_SECRET", ""),
        ).checked()
    except WorkerConfigError as e:
        raise UsageError(str(e)) from None
    if args.log_format == "json":
        logs.leave_to_livekit()
    run_worker(profile, livekit)
    return 0


def _download_model(args: argparse.Namespace) -> int:
    from .engines.phi4mm.checkpoint import download_model

    print(f"downloading {args.model} at revision {args.revision} (about 13 GB)…", flush=True)
    try:
        path = download_model(args.model, args.revision, Path(args.dir) if args.dir else None)
    except OSError as e:  # hub unreachable, disk full, unknown repository or revision
        raise UsageError(f"could not download {args.model}@{args.revision}: {e}") from None
    print(f"saved to {path}")
    if args.dir:
        print(f"use it with: voice-agent run-file INPUT --out DIR --engine phi4mm --model {path}")
    return 0


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
    run.set_defaults(handler=_run_file)

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
    console.set_defaults(handler=_console)

    devices = commands.add_parser("devices", help="list the microphones and speakers")
    devices.set_defaults(handler=_devices)

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
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser(
        "worker", help="join the rooms of a LiveKit server (LiveKit Cloud, livekit-server, SIP)"
    )
    worker.add_argument("--url", help="the server, ws://HOST:PORT (default $LIVEKIT_URL)")
    worker.add_argument("--api-key", help="default $LIVEKIT_API_KEY")
    worker.add_argument("--api-secret", help="default $LIVEKIT_API_SECRET")
    with_log_format(worker)
    with_session_options(worker)
    worker.set_defaults(handler=_worker)

    download = commands.add_parser(
        "download-model", help="fetch Phi-4-multimodal's weights (needs internet)"
    )
    download.add_argument("--model", default=DEFAULT_MODEL, help="hub repository id")
    download.add_argument("--revision", default=DEFAULT_REVISION, help="branch, tag or PR ref")
    download.add_argument("--dir", help="a folder to put it in (default: the Hugging Face cache)")
    download.set_defaults(handler=_download_model)

    doctor = commands.add_parser("doctor", help="check this machine for what the agent needs")
    with_session_options(doctor)
    doctor.add_argument("--port", type=_number_in(1, 65535, kind=int), help="serve's, to check")
    doctor.add_argument(
        "--sip-port", type=_number_in(1, 65535, kind=int), help="also this UDP port"
    )
    doctor.set_defaults(handler=_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(verbose=args.verbose, log_format=getattr(args, "log_format", "text"))
    try:
        return int(args.handler(args))
    except (UsageError, AudioDecodeError, ProfileError, ModelNotFoundError, MqttConfigError) as e:
        print(f"voice-agent: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StoppedBeforeStart as e:
        print(f"voice-agent: {e}; nothing was written", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # the weights are still loading on a daemon thread inside native code; finalizing
        # the interpreter under it can abort, and there is nothing left to save
        os._exit(128 + int(e.received))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

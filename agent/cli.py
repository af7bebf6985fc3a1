"""The ``voice-agent`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from audio import AudioDecodeError
from tools.mqtt import MqttConfigError

from . import logs
from .arguments import EXIT_USAGE, build_parser
from .engines import ENGINES
from .models import ModelNotFoundError
from .profile import Profile, ProfileError, load_profile
from .signals import StoppedBeforeStart

if TYPE_CHECKING:
    from .serve import ServeOptions
    from .vision import FrameFiles

logger = logging.getLogger("voice_agent")


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


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


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run-file": _run_file,
    "console": _console,
    "devices": _devices,
    "serve": _serve,
    "worker": _worker,
    "download-model": _download_model,
    "doctor": _doctor,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(verbose=args.verbose, log_format=getattr(args, "log_format", "text"))
    try:
        return int(HANDLERS[args.command](args))
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

"""Microphones and speakers by name: PortAudio's own devices, and the desktop sound server's
(PulseAudio, or PipeWire through pipewire-pulse) sources and sinks.

PortAudio reaches a sound server only through ALSA's ``pulse`` device, which opens the server's
default source and sink; a source or sink of the user's choice is opened through that device
with ``PULSE_SOURCE`` / ``PULSE_SINK`` set, as libpulse reads them. The server is asked through
``pulsectl`` (libpulse), which also tells when a chosen device goes away and comes back.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger("voice_agent")

Kind = Literal["input", "output"]
ROLE: dict[Kind, str] = {"input": "microphone", "output": "speaker"}
ENV: dict[Kind, str] = {"input": "PULSE_SOURCE", "output": "PULSE_SINK"}
CLIENT_NAME = "voice-agent"


class DeviceError(ValueError):
    """A device the user named cannot be used; the message is meant for the user."""


@dataclass(frozen=True)
class Device:
    kind: Kind
    name: str
    description: str
    default: bool
    server: bool
    """One of the sound server's sources or sinks (else a PortAudio device)."""
    index: int = -1
    """PortAudio's index (PortAudio devices only)."""


def portaudio_devices() -> list[Device]:
    import sounddevice as sd

    try:
        listed = sd.query_devices()
        default_in, default_out = sd.default.device
    except sd.PortAudioError:
        return []
    devices = []
    for index, info in enumerate(listed):
        for kind, channels, default in (
            ("input", "max_input_channels", default_in),
            ("output", "max_output_channels", default_out),
        ):
            if info[channels] > 0:
                devices.append(
                    Device(kind, info["name"], info["name"], index == default, False, index)  # type: ignore[arg-type]
                )
    return devices


def _pulse():  # type: ignore[no-untyped-def]
    import pulsectl

    return pulsectl.Pulse(CLIENT_NAME, connect=True)


def sound_server_devices() -> list[Device]:
    """The server's sources and sinks; none when no server answers."""
    import pulsectl

    try:
        with _pulse() as pulse:
            info = pulse.server_info()
            return [
                Device("input", s.name, s.description, s.name == info.default_source_name, True)
                for s in pulse.source_list()
            ] + [
                Device("output", s.name, s.description, s.name == info.default_sink_name, True)
                for s in pulse.sink_list()
            ]
    except pulsectl.PulseError:
        return []


def all_devices() -> list[Device]:
    return sound_server_devices() + portaudio_devices()


def _matching(devices: list[Device], wanted: str) -> list[Device]:
    exact = [d for d in devices if wanted in (d.name, d.description)]
    if exact:
        return exact
    lowered = wanted.lower()
    return [d for d in devices if lowered in d.name.lower() or lowered in d.description.lower()]


@dataclass(frozen=True)
class Chosen:
    """How to open the device: PortAudio's index (None: its default) and the environment."""

    kind: Kind
    portaudio: int | None
    server_name: str | None

    def __str__(self) -> str:
        if self.server_name:
            return f"{self.server_name} (sound server)"
        return "the system's default" if self.portaudio is None else f"PortAudio {self.portaudio}"


def choose(kind: Kind, wanted: str | None) -> Chosen:
    """The device ``wanted`` names (a name, a description, a unique part of either, or
    PortAudio's index); the sound server's devices come first, as the desktop names them.
    Unnamed, it is the server's default as it is now (kept for the whole conversation: the
    server would otherwise move the stream wherever its default goes), else PortAudio's."""
    server = [d for d in sound_server_devices() if d.kind == kind]
    portaudio = [d for d in portaudio_devices() if d.kind == kind]
    if wanted is None:
        defaults = [d for d in server if d.default]
        if not defaults:
            return Chosen(kind, None, None)
        wanted = defaults[0].name
    if wanted.isdigit():
        found = [d for d in portaudio if d.index == int(wanted)]
    else:
        found = _matching(server, wanted) or _matching(portaudio, wanted)
    if not found:
        raise DeviceError(f"no {ROLE[kind]} named {wanted!r} (`voice-agent devices` lists them)")
    if len({d.name for d in found}) > 1:
        names = ", ".join(sorted({d.name for d in found}))
        raise DeviceError(f"{wanted!r} names more than one {ROLE[kind]}: {names}")
    device = found[0]
    if not device.server:
        return Chosen(kind, device.index, None)
    through = [d for d in portaudio if d.name == "pulse"]
    if not through:
        raise DeviceError(
            f"{device.name} is the sound server's, but PortAudio has no ALSA `pulse` device to "
            "reach it through (install libasound2-plugins)"
        )
    return Chosen(kind, through[0].index, device.name)


@contextmanager
def opened_through_server(*chosen: Chosen) -> Iterator[None]:
    """While inside, libpulse opens the chosen sources and sinks as its defaults."""
    saved = {ENV[c.kind]: os.environ.get(ENV[c.kind]) for c in chosen if c.server_name}
    for c in chosen:
        if c.server_name:
            os.environ[ENV[c.kind]] = c.server_name
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class DeviceWatch:
    """Says in one line when a sound-server device in use goes away and when it is back.

    While it is away this process's streams on it are muted: the server would move them to
    another device, and the assistant would hear whatever that is (the speaker's own monitor,
    at worst) or speak where nobody listens; when it is back they are moved back to it.
    """

    def __init__(self, *chosen: Chosen) -> None:
        self._names = {c.kind: c.server_name for c in chosen if c.server_name}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="device-watch", daemon=True)
        self._away: set[Kind] = set()

    def __enter__(self) -> DeviceWatch:
        if self._names:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _watch(self) -> None:
        import pulsectl

        changed = threading.Event()

        def on_event(_: object) -> None:
            changed.set()
            raise pulsectl.PulseLoopStop

        try:
            with _pulse() as pulse:
                pulse.event_mask_set("source", "sink", "source_output", "sink_input")
                pulse.event_callback_set(on_event)
                while not self._stop.is_set():
                    pulse.event_listen(timeout=0.5)
                    if changed.is_set():
                        changed.clear()
                        self._reconcile(pulse)
        except pulsectl.PulseError as e:
            logger.warning("lost the sound server (%s): devices are no longer watched", e)

    def _reconcile(self, pulse) -> None:  # type: ignore[no-untyped-def]
        """Bring this process's streams in line with which chosen devices exist now."""
        pid = str(os.getpid())
        for kind, name in self._names.items():
            if kind == "input":
                devices, streams = pulse.source_list(), pulse.source_output_list()
                mute, move, on = pulse.source_output_mute, pulse.source_output_move, "source"
            else:
                devices, streams = pulse.sink_list(), pulse.sink_input_list()
                mute, move, on = pulse.sink_input_mute, pulse.sink_input_move, "sink"
            ours = [s for s in streams if s.proplist.get("application.process.id") == pid]
            device = next((d for d in devices if d.name == name), None)
            if device is None:
                if kind not in self._away:
                    self._away.add(kind)
                    logger.warning(
                        "the %s %s went away: waiting for it to come back (Ctrl-C ends)",
                        ROLE[kind],
                        name,
                    )
                for stream in ours:
                    if not stream.mute:
                        mute(stream.index, True)
                continue
            for stream in ours:
                if getattr(stream, on) != device.index:
                    move(stream.index, device.index)
                if stream.mute:
                    mute(stream.index, False)
            if kind in self._away:
                self._away.discard(kind)
                logger.warning("the %s %s is back", ROLE[kind], name)

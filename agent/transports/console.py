"""``console``: talk to the agent through a microphone and speaker.

The session hears the sound card through WebRTC's audio processing (``audio/sound_card.py``)
and is held as a browser's or a phone's conversation is (``agent/conversations.py``), its turns
printed as they happen; the devices are chosen by the names the desktop gives them, and kept
for the conversation (``devices.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from livekit import rtc
from livekit.agents.utils import aio

from audio.sound_card import AudioProcessing, SoundCard

from ..addressing import Addressing
from ..control import ControlledSession
from ..conversations import CallerAudio, CallMedia, hold
from ..profile import Profile
from ..signals import StopSignals, unless_stopped
from ..vision import CameraVideoInput
from .devices import ROLE, Chosen, DeviceWatch, choose, opened_through_server

logger = logging.getLogger("voice_agent")


class NoAudioDeviceError(RuntimeError):
    pass


class ConsoleMicrophone(CallerAudio):
    """What the sound card hears, as the session reads it."""

    def __init__(self) -> None:
        super().__init__("console")
        self._frames: aio.Chan[rtc.AudioFrame] = aio.Chan()

    def push(self, frame: rtc.AudioFrame) -> None:
        if not self._frames.closed:
            self.heard()
            self._frames.send_nowait(frame)

    async def __anext__(self) -> rtc.AudioFrame:
        try:
            return await self._frames.recv()
        except aio.ChanClosed:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._frames.close()


def require_audio_devices(*chosen: Chosen) -> None:
    """Raise NoAudioDeviceError unless each chosen (or default) device is there."""
    import sounddevice as sd

    for device in chosen:
        try:
            sd.query_devices(device.portaudio, kind=device.kind)
        except (sd.PortAudioError, ValueError):
            raise NoAudioDeviceError(
                f"no {ROLE[device.kind]} found: console needs a default audio {device.kind} "
                "device (use run-file to answer a recording instead)"
            ) from None


def run_console(
    profile: Profile,
    *,
    camera: str | None = None,
    input_device: str | None = None,
    output_device: str | None = None,
    out_dir: Path | None = None,
) -> None:
    """``camera``: a device, already probed, whose frames join the turns; the devices: as
    ``voice-agent devices`` lists them (a part of the name will do); ``out_dir``: where the
    events are kept (``console/events.jsonl``)."""
    microphone, speaker = choose("input", input_device), choose("output", output_device)
    require_audio_devices(microphone, speaker)
    logger.info("microphone: %s; speaker: %s", microphone, speaker)
    with opened_through_server(microphone, speaker), DeviceWatch(microphone, speaker):
        asyncio.run(_converse(profile, microphone, speaker, camera, out_dir))


async def _converse(
    profile: Profile,
    microphone: Chosen,
    speaker: Chosen,
    camera: str | None,
    out_dir: Path | None,
) -> None:
    import sounddevice as sd

    with StopSignals() as stop:
        controlled = await unless_stopped(stop, ControlledSession.start(profile))
        heard = ConsoleMicrophone()
        try:
            card = SoundCard(
                microphone.portaudio,
                speaker.portaudio,
                AudioProcessing(**profile.console.model_dump()),
                heard.push,
            )
            card.start()
        except sd.PortAudioError as e:
            await controlled.aclose()
            raise NoAudioDeviceError(f"cannot open the microphone or speaker: {e}") from None
        video = CameraVideoInput(camera) if camera else None
        media = CallMedia(heard, card.speaker, camera=video, ended=[stop.event])
        addressing = controlled.session.addressing
        logger.info("ready: %s (Ctrl-C ends)", _how_to_speak(addressing))
        try:
            with enter_key(addressing):
                await hold(controlled, "console", media, log_dir=out_dir, echo=sys.stdout)
        finally:
            card.close()
            if video is not None:
                await video.aclose()


def _how_to_speak(addressing: Addressing) -> str:
    settings = addressing.settings
    if settings.mode == "wake_phrase":
        return f"say {settings.wake_phrases[0]!r} and your request"
    if settings.mode == "push_to_talk":
        return "press Enter, then speak"
    return "speak now"


@contextlib.contextmanager
def enter_key(addressing: Addressing) -> Iterator[None]:
    """Push-to-talk from the terminal: any line typed (Enter) makes the agent listen."""
    if addressing.settings.mode != "push_to_talk":
        yield
        return
    loop = asyncio.get_running_loop()
    stdin = sys.stdin.fileno()

    def pressed() -> None:
        if not os.read(stdin, 4096):  # the input ended: no more keys
            loop.remove_reader(stdin)
            return
        addressing.listen("key")

    try:
        loop.add_reader(stdin, pressed)
    except (OSError, ValueError):  # a file, not a terminal or a pipe
        logger.warning("no terminal to press Enter in: MQTT cmd/listen still makes it listen")
        yield
        return
    try:
        yield
    finally:
        loop.remove_reader(stdin)

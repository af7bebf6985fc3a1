"""``console``: talk to the agent through the microphone and speaker.

LiveKit's console owns the devices (sounddevice, echo cancellation, a terminal UI); this module
only checks that devices exist and hands it a session built from the profile.
"""

from __future__ import annotations

import sys

from ..profile import Profile


class NoAudioDeviceError(RuntimeError):
    pass


def require_audio_devices() -> None:
    """Raise NoAudioDeviceError unless a default microphone and speaker exist."""
    import sounddevice as sd

    for kind, name in (("input", "microphone"), ("output", "speaker")):
        try:
            sd.query_devices(kind=kind)
        except (sd.PortAudioError, ValueError):
            raise NoAudioDeviceError(
                f"no {name} found: console needs a default audio {kind} device "
                "(use run-file to answer a recording instead)"
            ) from None


def run_console(profile: Profile, *, camera: str | None = None) -> None:
    """``camera``: a device, already probed, whose frames join the turns."""
    require_audio_devices()
    from livekit.agents import cli

    from .livekit import agent_server

    sys.argv = [sys.argv[0], "console"]  # LiveKit's CLI reads its sub-command from argv
    cli.run_app(agent_server(profile, camera=camera))

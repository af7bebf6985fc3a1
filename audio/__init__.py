"""Audio plugins for LiveKit Agents: WebRTC VAD, Piper and espeak-ng TTS, recorded-file I/O."""

from .decode import AudioDecodeError, load_audio
from .file_io import FileAudioInput, Timeline, TimelineAudioOutput
from .tts import Pyttsx3Options, Pyttsx3TTS
from .vad import WebRTCVAD, WebRTCVADOptions

__all__ = [
    "AudioDecodeError",
    "FileAudioInput",
    "Pyttsx3Options",
    "Pyttsx3TTS",
    "Timeline",
    "TimelineAudioOutput",
    "WebRTCVAD",
    "WebRTCVADOptions",
    "load_audio",
]

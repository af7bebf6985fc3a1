"""webrtcvad's per-window verdicts turned into utterances.

The LiveKit VAD stream and the Phi-4-MM engine's turn trimming both cut speech with this one
piece, so an utterance means the same thing to both.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import webrtcvad

VAD_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SegmenterOptions:
    aggressiveness: int = 3
    """0 (lenient) … 3 (strict); 3 rejects most background noise."""
    frame_ms: int = 30
    """10, 20 or 30: the window webrtcvad judges at once."""
    min_speech_s: float = 0.1
    """Voiced audio needed before speech starts, so clicks don't start turns."""
    min_silence_s: float = 0.3
    """Hangover: silence needed before speech ends, so short pauses don't end turns."""
    padding_s: float = 0.3
    """Pre-roll kept before the detected start, so the first syllable is not lost."""
    min_level_dbfs: float = -45.0
    """Windows quieter than this are silence whatever webrtcvad says: it adapts to the noise
    floor only after a while and takes steady noise at the start of a stream for speech."""
    max_buffered_speech_s: float = 60.0

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError("VAD aggressiveness must be 0, 1, 2 or 3")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("VAD frame_ms must be 10, 20 or 30")
        if min(self.min_speech_s, self.min_silence_s, self.padding_s) < 0:
            raise ValueError("VAD durations must not be negative")


@dataclass(frozen=True)
class Transition:
    """Speech started or ended, with the state at that window."""

    kind: Literal["start", "end"]
    samples_index: int
    """16 kHz samples judged so far, this window included."""
    speech_s: float
    silence_s: float
    speech: bytes
    """The utterance so far (16 kHz int16), pre-roll included."""


class SpeechSegmenter:
    """Feed 16 kHz int16 audio in any chunk size; get utterance starts and ends back."""

    def __init__(self, opts: SegmenterOptions | None = None) -> None:
        self.opts = opts = opts or SegmenterOptions()
        self._detector = webrtcvad.Vad(opts.aggressiveness)
        self.window = VAD_SAMPLE_RATE * opts.frame_ms // 1000
        self.window_s = opts.frame_ms / 1000
        self._min_speech_w = max(1, round(opts.min_speech_s / self.window_s))
        self._min_silence_w = max(1, round(opts.min_silence_s / self.window_s))
        self._max_speech_w = round(opts.max_buffered_speech_s / self.window_s)
        self._min_power = (32768 * 10 ** (opts.min_level_dbfs / 20)) ** 2
        self.reset()

    def reset(self) -> None:
        # durations are counted in windows: integer bookkeeping keeps the hot loop cheap
        self._pending = b""
        self._preroll: deque[bytes] = deque(
            maxlen=max(1, round(self.opts.padding_s / self.window_s))
        )
        self._speech: list[bytes] = []
        self.speaking = False
        self.samples_index = 0
        self.speech_w = 0  # windows in the current utterance
        self.silence_w = 0  # unvoiced windows since the utterance's last voiced one
        self.raw_speech_w = 0  # consecutive voiced windows
        self.raw_silence_w = 0  # consecutive unvoiced windows

    def feed(self, audio: bytes) -> list[Transition]:
        """Judge every complete window; the remainder waits for the next call."""
        audio = self._pending + audio
        size = self.window * 2
        count = len(audio) // size
        self._pending = audio[count * size :]
        if not count:
            return []
        samples = np.frombuffer(audio, dtype=np.int16, count=count * self.window)
        power = np.square(samples.reshape(count, self.window), dtype=np.float32).mean(axis=1)
        loud = (power >= self._min_power).tolist()
        is_speech = self._detector.is_speech
        transitions: list[Transition] = []
        for i in range(count):
            window = audio[i * size : (i + 1) * size]
            voiced = loud[i] and is_speech(window, VAD_SAMPLE_RATE)
            if (transition := self._advance(window, voiced)) is not None:
                transitions.append(transition)
        return transitions

    def finish(self) -> Transition | None:
        """End an utterance still open when the audio stops; then start afresh."""
        transition = self._transition("end") if self.speaking else None
        self.reset()
        return transition

    def _advance(self, window: bytes, voiced: bool) -> Transition | None:
        self.samples_index += self.window
        if voiced:
            self.raw_speech_w += 1
            self.raw_silence_w = 0
        else:
            self.raw_silence_w += 1
            self.raw_speech_w = 0

        if self.speaking:
            if len(self._speech) < self._max_speech_w:
                self._speech.append(window)
            self.speech_w += 1
            self.silence_w = 0 if voiced else self.silence_w + 1
            if self.silence_w >= self._min_silence_w:
                return self._transition("end")
            return None

        self._preroll.append(window)
        if voiced and self.raw_speech_w >= self._min_speech_w:
            self.speaking = True
            self._speech = list(self._preroll)
            self._preroll.clear()
            self.speech_w = self.raw_speech_w
            self.silence_w = 0
            return self._transition("start")
        return None

    def _transition(self, kind: Literal["start", "end"]) -> Transition:
        transition = Transition(
            kind=kind,
            samples_index=self.samples_index,
            speech_s=self.speech_w * self.window_s,
            silence_s=self.silence_w * self.window_s,
            speech=b"".join(self._speech),
        )
        if kind == "end":
            self.speaking = False
            self._speech = []
            self.speech_w = 0
        return transition


def speech_bounds(
    samples: np.ndarray, opts: SegmenterOptions | None = None
) -> list[tuple[int, int]]:
    """(first, last) 16 kHz sample of each utterance in a whole recording, without padding."""
    segmenter = SpeechSegmenter(opts)
    transitions = segmenter.feed(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    if (last := segmenter.finish()) is not None:
        transitions.append(last)
    bounds, start = [], 0
    for t in transitions:
        if t.kind == "start":
            start = t.samples_index - round(t.speech_s * VAD_SAMPLE_RATE)
        else:
            bounds.append((start, t.samples_index - round(t.silence_s * VAD_SAMPLE_RATE)))
    return bounds

"""The audio of the turn being spoken, as the model will hear it.

LiveKit hands a realtime session the whole microphone stream — silence, and anything heard while
the agent talks — at the source's rate. Only the committed turn's speech goes to the model:
resampled to 16 kHz, cut to its first and last utterance (plus a little padding), and split into
pieces that fit the audio encoder's 40 s window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from livekit import rtc

from audio.pcm import frame_to_mono, samples_to_frame
from audio.segmenter import SegmenterOptions, speech_bounds

MODEL_SAMPLE_RATE = 16000
ENCODER_WINDOW_S = 40.0


@dataclass(frozen=True)
class CommittedTurn:
    clips: list[np.ndarray]
    """The speech in pieces of at most 40 s; empty when nobody spoke."""
    lead_s: float
    """From the start of the speech to the commit."""
    tail_s: float
    """From the end of the speech to the commit."""


class TurnAudio:
    def __init__(
        self,
        segmenter: SegmenterOptions | None = None,
        *,
        padding_s: float = 0.2,
        max_buffered_s: float = 120.0,
    ) -> None:
        self._segmenter = segmenter or SegmenterOptions()
        self._padding = round(padding_s * MODEL_SAMPLE_RATE)
        self._max_samples = round(max_buffered_s * MODEL_SAMPLE_RATE)
        self._chunks: list[np.ndarray] = []
        self._buffered = 0
        self._resampler: rtc.AudioResampler | None = None
        self._input_rate = 0

    def push(self, frame: rtc.AudioFrame) -> None:
        mono = frame_to_mono(frame)
        if frame.sample_rate != MODEL_SAMPLE_RATE:
            if frame.sample_rate != self._input_rate:
                self._input_rate = frame.sample_rate
                self._resampler = rtc.AudioResampler(frame.sample_rate, MODEL_SAMPLE_RATE)
            assert self._resampler is not None
            self._append(self._resampler.push(samples_to_frame(mono, frame.sample_rate)))
        else:
            self._append_samples(mono)

    def clear(self) -> None:
        self._chunks, self._buffered = [], 0
        if self._resampler is not None:
            self._resampler.flush()

    def commit(self) -> CommittedTurn:
        """The turn's speech, from its first utterance to its last, and where that lay."""
        if self._resampler is not None:
            self._append(self._resampler.flush())
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks, self._buffered = [], 0
        bounds = speech_bounds(audio, self._segmenter)
        if not bounds:
            return CommittedTurn([], 0.0, 0.0)
        start = max(0, bounds[0][0] - self._padding)
        end = min(len(audio), bounds[-1][1] + self._padding)
        return CommittedTurn(
            clips=split_for_encoder(audio[start:end]),
            lead_s=(len(audio) - bounds[0][0]) / MODEL_SAMPLE_RATE,
            tail_s=(len(audio) - bounds[-1][1]) / MODEL_SAMPLE_RATE,
        )

    def _append(self, frames: list[rtc.AudioFrame]) -> None:
        for frame in frames:
            self._append_samples(frame_to_mono(frame))

    def _append_samples(self, samples: np.ndarray) -> None:
        self._chunks.append(samples.copy())
        self._buffered += len(samples)
        while self._buffered > self._max_samples and len(self._chunks) > 1:
            self._buffered -= len(self._chunks.pop(0))


def split_for_encoder(samples: np.ndarray) -> list[np.ndarray]:
    """Equal pieces no longer than the encoder window (equal, so none is padded in a batch)."""
    window = round(ENCODER_WINDOW_S * MODEL_SAMPLE_RATE)
    pieces = max(1, -(-len(samples) // window))
    return [piece for piece in np.array_split(samples, pieces) if len(piece)]

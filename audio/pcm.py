"""Small PCM conversions shared by the VAD, the STT and the file I/O.

Resampling always goes through LiveKit's sox resampler so every part of the agent hears the
same signal.
"""

from __future__ import annotations

import numpy as np
from livekit import rtc


def frame_to_mono(frame: rtc.AudioFrame) -> np.ndarray:
    """int16 mono samples of a frame; channels are averaged."""
    samples = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels == 1:
        return samples
    stereo = samples.reshape(-1, frame.num_channels).astype(np.int32)
    return stereo.mean(axis=1).astype(np.int16)


def samples_to_frame(samples: np.ndarray, sample_rate: int) -> rtc.AudioFrame:
    mono = np.ascontiguousarray(samples, dtype=np.int16)
    return rtc.AudioFrame(
        data=mono.tobytes(),
        sample_rate=sample_rate,
        num_channels=1,
        samples_per_channel=len(mono),
    )


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a whole int16 mono signal at once."""
    if source_rate == target_rate or len(samples) == 0:
        return np.asarray(samples, dtype=np.int16)
    resampler = rtc.AudioResampler(source_rate, target_rate, quality=rtc.AudioResamplerQuality.HIGH)
    frames = resampler.push(samples_to_frame(samples, source_rate)) + resampler.flush()
    return np.concatenate([frame_to_mono(f) for f in frames]) if frames else np.zeros(0, np.int16)


def frames_to_mono(frames: list[rtc.AudioFrame], target_rate: int) -> np.ndarray:
    """Concatenate frames of one rate into int16 mono at ``target_rate``."""
    if not frames:
        return np.zeros(0, dtype=np.int16)
    joined = np.concatenate([frame_to_mono(f) for f in frames])
    return resample(joined, frames[0].sample_rate, target_rate)

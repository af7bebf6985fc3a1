"""Reading user-supplied audio files of any common format into the agent's PCM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .pcm import resample


class AudioDecodeError(ValueError):
    """The file cannot be used as audio; the message is meant for the user."""


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """WAV/FLAC/AIFF/OGG of any rate, depth and channel count, as int16 mono at ``sample_rate``."""
    path = Path(path)
    if not path.exists():
        raise AudioDecodeError(f"{path}: no such file")
    if path.is_dir():
        raise AudioDecodeError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"{path}: the file is empty")
    try:
        data, source_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = str(e).rsplit(": ", 1)[-1].rstrip(".")
        raise AudioDecodeError(f"{path}: not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{path}: the file holds no audio samples")
    # a float file may hold NaN or infinities: silence and full scale, not numpy warnings
    finite = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)
    mono = finite.mean(axis=1)
    pcm = (np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16)
    return resample(pcm, int(source_rate), sample_rate)

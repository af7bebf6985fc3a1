"""Regenerates demo/conversation.wav: a user's side of a short call, spoken by espeak-ng.

Run from the repository root: python demo/make_conversation.py
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
VOICE = "en-us+m3"  # not the agent's voice, so the two are easy to tell apart
# (pause before, line): the pauses leave the agent time to answer on a 2-core CPU
LINES = [
    (0.5, "Hello there, can you hear me?"),
    (9.0, "What time is it right now?"),
    (9.0, "What is the capital of France?"),
]
TRAILING_SILENCE_S = 1.0


def speak(text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
        subprocess.run(["espeak-ng", "-v", VOICE, "-s", "160", "-w", wav.name, text], check=True)
        samples, rate = sf.read(wav.name, dtype="int16")
    assert rate == 22050
    return samples


def main() -> None:
    from audio.pcm import resample

    parts = []
    for pause, text in LINES:
        parts += [np.zeros(int(pause * RATE), np.int16), resample(speak(text), 22050, RATE)]
    parts.append(np.zeros(int(TRAILING_SILENCE_S * RATE), np.int16))
    out = Path(__file__).with_name("conversation.wav")
    sf.write(out, np.concatenate(parts), RATE, subtype="PCM_16")
    print(f"wrote {out} ({sum(map(len, parts)) / RATE:.1f} s)")


if __name__ == "__main__":
    main()

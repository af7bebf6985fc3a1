"""How the VAD hears speech through a microphone's DC offset and a room's noise, side by side.

    .venv/bin/python bench/vad.py [--json PATH]

Each recording (at -26 dBFS) is mixed, 2.5 s from the start, into each condition: a DC
offset of half full scale, white noise and 8-talker babble (four languages, two stretches
each) at 5 and 0 dB SNR. The same condition without the speech is the noise alone. Four
detectors judge each: webrtcvad as it is by default (only the DC offset removed), with the
high-pass, with both (high-pass and the noise suppressor: ``[vad] high_pass``, ``denoise``),
and Silero (livekit-plugins-silero).

Per condition, over the recordings: the share of the speech's own utterances (as found in it
alone) that an utterance found in the mix overlaps, the share of its word windows (those within
10 dB of its level) inside one, utterances found beyond the speech (false), and utterances on
the noise alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from livekit.agents import vad  # noqa: E402
from livekit.plugins import silero  # noqa: E402

from audio import load_audio  # noqa: E402
from audio.pcm import samples_to_frame  # noqa: E402
from audio.segmenter import SegmenterOptions, speech_bounds  # noqa: E402
from tests.conftest import SHARED_AUDIO  # noqa: E402
from tests.test_vad import at_level, pcm, white_noise, words  # noqa: E402

RATE = 16000
LEAD_S = 2.5
SPEECH_DBFS = -26
RECORDINGS = ("jfk.flac", "one_two_three_en.wav", "en_num.wav")
BABBLE_TALKERS = ("speech60_de.wav", "speech60_es.wav", "speech60_ru.wav", "speech60_en.wav")
Bounds = list[tuple[float, float]]


def babble(seconds: float, seed: int) -> np.ndarray:
    """A crowd: two stretches of each talker, summed, at the speech's level."""
    rng = np.random.default_rng(seed)
    length = round(seconds * RATE)
    crowd = np.zeros(length)
    for name in BABBLE_TALKERS * 2:
        talker = load_audio(SHARED_AUDIO / name, RATE).astype(np.float64)
        start = int(rng.integers(0, len(talker) - length))
        crowd += at_level(talker[start : start + length], SPEECH_DBFS)
    return at_level(crowd, SPEECH_DBFS)


def conditions(seconds: float, seed: int) -> dict[str, np.ndarray]:
    """Each condition's background, at the level that gives its SNR against the speech."""
    found = {"dc 0.5": np.full(round(seconds * RATE), 0.5 * 32767)}
    for snr in (5, 0):
        found[f"white {snr} dB"] = white_noise(seconds, SPEECH_DBFS - snr, seed=seed + snr)
        found[f"babble {snr} dB"] = babble(seconds, seed + snr) * 10 ** (-snr / 20)
    return found


def ours(options: SegmenterOptions) -> Callable[[np.ndarray], Bounds]:
    def detect(samples: np.ndarray) -> Bounds:
        return [(a / RATE, b / RATE) for a, b in speech_bounds(pcm(samples), options)]

    return detect


def silero_detector() -> Callable[[np.ndarray], Bounds]:
    model = silero.VAD.load()

    async def run(samples: np.ndarray) -> Bounds:
        stream = model.stream()
        step = RATE // 50
        audio = pcm(samples)
        for i in range(0, len(audio), step):
            stream.push_frame(samples_to_frame(audio[i : i + step], RATE))
        stream.end_input()
        found: Bounds = []
        start: float | None = None
        async for event in stream:
            if event.type == vad.VADEventType.START_OF_SPEECH:
                start = event.samples_index / RATE - event.speech_duration
            elif event.type == vad.VADEventType.END_OF_SPEECH and start is not None:
                found.append((start, event.samples_index / RATE - event.silence_duration))
                start = None
        await stream.aclose()
        if start is not None:  # still speaking when the audio ended
            found.append((start, len(audio) / RATE))
        return found

    return lambda samples: asyncio.run(run(samples))


def scored(found: Bounds, speech: np.ndarray) -> tuple[float, float, int]:
    """The speech's own utterances (as found in it alone) that a found one overlaps (share),
    its word windows inside a found utterance (share), and utterances beyond the speech."""
    end = LEAD_S + len(speech) / RATE
    own = [(LEAD_S + a, LEAD_S + b) for a, b in ours(SegmenterOptions())(speech)]
    heard = sum(any(a < d and c < b for a, b in found) for c, d in own)
    times = words(speech, LEAD_S)
    inside = sum(any(a - 0.05 <= t <= b + 0.05 for a, b in found) for t in times)
    false = sum(b < LEAD_S - 0.3 or a > end + 0.3 for a, b in found)
    return heard / len(own), inside / len(times), false


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--recordings", default=",".join(RECORDINGS), help="from shared/audio")
    args = parser.parse_args()
    detectors = {
        "webrtcvad": ours(SegmenterOptions()),
        "+ high-pass": ours(SegmenterOptions(high_pass=True)),
        "+ denoise": ours(SegmenterOptions(high_pass=True, denoise=True)),
        "silero": silero_detector(),
    }
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.recordings.split(","):
        speech = at_level(load_audio(SHARED_AUDIO / name, RATE).astype(np.float64), SPEECH_DBFS)
        seconds = len(speech) / RATE + 2 * LEAD_S
        for condition, noise in conditions(seconds, seed=len(name)).items():
            mix = noise.copy()
            mix[round(LEAD_S * RATE) : round(LEAD_S * RATE) + len(speech)] += speech
            for detector, detect in detectors.items():
                utterances, heard, false = scored(detect(mix), speech)
                row = rows.setdefault(condition, {}).setdefault(
                    detector,
                    {"utterances": 0.0, "heard": 0.0, "false": 0, "alone": 0, "recordings": 0},
                )
                row["utterances"] += utterances
                row["heard"] += heard
                row["false"] += false
                row["alone"] += len(detect(noise))
                row["recordings"] += 1
            print(f"  {name}, {condition}: done", file=sys.stderr, flush=True)
    print(
        "\n| condition | detector | utterances heard | word windows heard | false utterances "
        "| on the noise alone |"
    )
    print("|---|---|---|---|---|---|")
    for condition, by_detector in rows.items():
        for detector, row in by_detector.items():
            for share in ("utterances", "heard"):
                row[share] = round(row[share] / row["recordings"], 3)
            print(
                f"| {condition} | {detector} | {row['utterances']:.0%} | {row['heard']:.0%} | "
                f"{row['false']:.0f} | {row['alone']:.0f} |"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Greedy against beam search in the bundled recognizers, same run: word error rate and time.

    .venv/bin/python bench/beam.py [--beams 1,5] [--voices V,V] [--repeats N] [--json PATH]

Each request of ``bench/quality_cases.py`` is spoken in each voice of ``bench/quality.py``
(Piper's and espeak-ng's) and recognized, as one turn's clip, by tiny.en and by base (told it
hears English) with each beam width; the real recordings with known words (jfk.flac,
one_two_three_en.wav) too. The WER counts numbers however they are written; the time is the
median of ``--repeats`` runs per clip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

import jiwer
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.stt import FasterWhisperOptions, FasterWhisperSTT  # noqa: E402
from audio import load_audio  # noqa: E402
from bench.quality import RATE, VOICES, speak  # noqa: E402
from bench.quality_cases import CONVERSATIONS, normalise  # noqa: E402
from tests.conftest import SHARED_AUDIO  # noqa: E402

RECORDINGS = {
    "jfk.flac": "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country.",
    "one_two_three_en.wav": "one two three",
}
MODELS = ("tiny.en", "base")


def plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]", " ", normalise(text)).split()) or "-"


async def clips(voices: list[str], cache: Path) -> list[tuple[str, str, np.ndarray]]:
    """(voice, what is said, 16 kHz samples) for every request and recording."""
    said = sorted({t.say for c in CONVERSATIONS for t in c if not t.say.startswith("@")})
    found = [(v, text, await speak(text, v, cache)) for v in voices for text in said]
    found += [
        ("recorded", text, load_audio(SHARED_AUDIO / n, RATE)) for n, text in RECORDINGS.items()
    ]
    return found


def measure(model: str, beam: int, clips: list[tuple[str, str, np.ndarray]], repeats: int) -> dict:
    stt = FasterWhisperSTT(FasterWhisperOptions(model=model, language="en", beam_size=beam))
    stt.load()
    by_voice: dict[str, list[tuple[str, str]]] = {}
    times = []
    for voice, text, samples in clips:
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            heard = stt.transcribe(samples).text
            runs.append(time.perf_counter() - started)
        times.append(statistics.median(runs))
        by_voice.setdefault(voice, []).append((plain(text), plain(heard)))
    wer = {
        v: round(jiwer.wer([r for r, _ in p], [h for _, h in p]), 3) for v, p in by_voice.items()
    }
    every = [pair for pairs in by_voice.values() for pair in pairs]
    return {
        "model": model,
        "beam": beam,
        "wer": round(jiwer.wer([r for r, _ in every], [h for _, h in every]), 3),
        "wer_by_voice": wer,
        "median_s": round(statistics.median(times), 3),
        "total_s": round(sum(times), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--voices", default=VOICES)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "quality")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    found = asyncio.run(clips(args.voices.split(","), args.out.resolve() / "speech"))
    print(f"{len(found)} clips", flush=True)
    rows = []
    for model in MODELS:
        for beam in map(int, args.beams.split(",")):
            rows.append(row := measure(model, beam, found, args.repeats))
            voices = ", ".join(f"{w:.3f} {v}" for v, w in row["wer_by_voice"].items())
            print(
                f"{model:<8} beam {beam}: WER {row['wer']:.3f} ({voices}); "
                f"median {row['median_s']:.3f} s, all {row['total_s']:.1f} s",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"clips": len(found), "runs": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Speech recognition on the clip's own window against faster-whisper's 30 s one, same run.

    .venv/bin/python bench/stt.py [--repeats N] [--json PATH]

Real English speech from shared/audio: jfk.flac and one_two_three_en.wav whole (their reference
transcripts are known), and the utterances of speech60_en.wav and en_num.wav as the VAD cuts
them (no reference: faster-whisper's own 30 s transcript stands in, so its "WER" there is the
disagreement between the two). Times are the median of ``--repeats`` runs per clip.

Then early recognition (``audio/early_stt.py``): each utterance of those recordings and the demo
recognized when its speaker paused (after ``--pause`` seconds of silence, each value given) and
after the VAD's hangover, as the segmenter cuts them; how many transcripts differ, and their WER
against the hangover's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jiwer
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.stt import FasterWhisperSTT  # noqa: E402
from audio import load_audio  # noqa: E402
from audio.segmenter import (  # noqa: E402
    SegmenterOptions,
    SpeechSegmenter,
    Transition,
    speech_bounds,
)
from tests.conftest import DEMO, SHARED_AUDIO, words  # noqa: E402

A = TypeVar("A")
T = TypeVar("T")
RATE = 16000
REFERENCES = {
    "jfk.flac": "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country",
    "one_two_three_en.wav": "one two three",
}
EARLY_FILES = ("speech60_en.wav", "en_num.wav", "jfk.flac", "one_two_three_en.wav")


def clips() -> list[tuple[str, np.ndarray]]:
    found = [(name, load_audio(SHARED_AUDIO / name, RATE)) for name in REFERENCES]
    for name in ("speech60_en.wav", "en_num.wav"):
        samples = load_audio(SHARED_AUDIO / name, RATE)
        for i, (first, last) in enumerate(speech_bounds(samples)):
            found.append((f"{name}#{i}", samples[first : last + 1]))
    return found


def paused_and_ended(pause_s: float) -> list[tuple[bytes, bytes]]:
    """(audio at the pause, audio at the end) of each utterance that a pause ends."""
    found = []
    for path in [*(SHARED_AUDIO / name for name in EARLY_FILES), DEMO]:
        audio = np.ascontiguousarray(load_audio(path, RATE), dtype=np.int16).tobytes()
        segmenter = SpeechSegmenter(SegmenterOptions(pause_s=pause_s))
        paused: Transition | None = None
        for transition in [*segmenter.feed(audio), segmenter.finish()]:
            if transition is not None and transition.kind == "pause":
                paused = transition
                continue
            if transition is not None and transition.kind == "end" and paused is not None:
                if transition.silence_s > 0 and transition.speech.startswith(paused.speech):
                    found.append((paused.speech, transition.speech))
            paused = None
    return found


def early(stt: FasterWhisperSTT, pause_s: float) -> dict[str, float | int]:
    pairs = paused_and_ended(pause_s)
    heard = [
        [words(stt.transcribe(np.frombuffer(audio, dtype=np.int16)).text) or "-" for audio in pair]
        for pair in pairs
    ]
    return {
        "pause_s": pause_s,
        "utterances": len(pairs),
        "differing": sum(at_pause != at_end for at_pause, at_end in heard),
        "wer_against_end": round(jiwer.wer([e for _, e in heard], [p for p, _ in heard]), 3),
    }


def timed(work: Callable[[A], T], given: A, repeats: int) -> tuple[T, float]:
    """What ``work`` made of ``given``, and the median of its times."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        heard = work(given)
        times.append(time.perf_counter() - started)
    return heard, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--pause", type=float, action="append", help="seconds (default: 0.09 0.12 0.15 0.18)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    stt = FasterWhisperSTT()
    stt.load()
    window = lambda samples: stt.transcribe(samples).text  # noqa: E731
    full = lambda samples: stt._transcribe_long(samples.astype(np.float32) / 32768.0).text  # noqa: E731

    rows = []
    for name, samples in clips():
        short_text, short_s = timed(window, samples, args.repeats)
        full_text, full_s = timed(full, samples, args.repeats)
        reference = REFERENCES.get(name, words(full_text))
        rows.append(
            {
                "clip": name,
                "audio_s": round(len(samples) / RATE, 2),
                "window_s": round(short_s, 3),
                "full_s": round(full_s, 3),
                "window_wer": round(jiwer.wer(reference, words(short_text) or "-"), 3),
                "full_wer": round(jiwer.wer(reference, words(full_text) or "-"), 3),
                "window_text": short_text,
                "full_text": full_text,
            }
        )
        row = rows[-1]
        print(
            f"{name:<22} {row['audio_s']:>5.1f}s  window {row['window_s']:.3f}s "
            f"wer {row['window_wer']:.2f} | 30 s {row['full_s']:.3f}s wer {row['full_wer']:.2f}"
            f"  {short_text!r}",
            flush=True,
        )
    total = {
        "clips": len(rows),
        "median_window_s": round(statistics.median(r["window_s"] for r in rows), 3),
        "median_full_s": round(statistics.median(r["full_s"] for r in rows), 3),
        "speedup": round(sum(r["full_s"] for r in rows) / sum(r["window_s"] for r in rows), 2),
        "words_differing": round(
            jiwer.wer(
                [words(r["full_text"]) or "-" for r in rows],
                [words(r["window_text"]) or "-" for r in rows],
            ),
            3,
        ),
    }
    for name in REFERENCES:
        row = next(r for r in rows if r["clip"] == name)
        total[f"{name} wer window/full"] = [row["window_wer"], row["full_wer"]]
    print(json.dumps(total, indent=1))
    early_rows = [early(stt, pause_s) for pause_s in args.pause or (0.09, 0.12, 0.15, 0.18)]
    for row in early_rows:
        print(
            f"recognized at a {row['pause_s']:.2f} s pause: {row['differing']} of "
            f"{row['utterances']} utterances heard otherwise than after the hangover, "
            f"WER {row['wer_against_end']:.3f}"
        )
    if args.json:
        figures = {"total": total, "clips": rows, "early": early_rows}
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

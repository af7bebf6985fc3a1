"""Latency of the lite engine end to end, stage by stage, with each turn detector; and the
VAD's throughput.

    .venv/bin/python bench/latency.py [--runs N] [--detector smart-turn|vad] [--no-tools]
                                      [--json PATH]

Plays speech60_en.wav (a minute of real English) and the demo conversation through
``voice-agent run-file`` in real time, once per turn detector (the same run), then reports
median and p90 of each stage: the VAD's hangover (the profile's), the end of turn (end of
speech to commit, which includes the hangover and what of the recognition it does not hide),
the recognition, the LLM's first token, the rest of its first clause (from the first token to
the first text handed to the TTS: its first clause, or its first sentence if that has none),
the TTS's first audio and end to end. A *false cut* is a user turn that ends inside a sentence:
its transcript has no closing punctuation, or the next turn goes on in lower case. Last, the
default CPU model's tool evaluation (``bench/tools.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.models import BUNDLED_LLMS, default_llm  # noqa: E402
from agent.profile import load_profile  # noqa: E402
from audio import WebRTCVAD, load_audio  # noqa: E402
from audio.pcm import samples_to_frame  # noqa: E402
from bench.tools import CASES, CHAT, evaluate_model, scores  # noqa: E402
from tests.conftest import DEMO, SHARED_AUDIO  # noqa: E402

FIGURES = ("e2e_latency_s", "eou_delay_s", "stt_s", "ttft_s", "first_clause_s", "ttfb_s")
DETECTORS = ("vad", "smart-turn")
VAD_HANGOVER_S = load_profile("desktop").vad.min_silence_s


def run_conversation(path: Path, detector: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "agent.cli", "run-file", str(path), "--out", out, "-q"]
        cmd += ["--turn-detector", detector]
        subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
        lines = Path(out, "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def false_cuts(events: list[dict]) -> int:
    said = [e["transcript"].strip() for e in events if e["type"] == "user_turn"]
    said = [t for t in said if t]
    return sum(
        not text.endswith((".", "?", "!")) or (i + 1 < len(said) and said[i + 1][0].islower())
        for i, text in enumerate(said)
    )


def figures(events: list[dict]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {name: [] for name in FIGURES}
    for event in events:
        if event["type"] == "agent_reply":
            metrics = event["metrics"]
            for name, value in metrics.items():
                if value is not None and name in values:
                    values[name].append(value)
            if metrics.get("ttfs_s") is not None and metrics.get("ttft_s") is not None:
                values["first_clause_s"].append(round(metrics["ttfs_s"] - metrics["ttft_s"], 3))
        elif event["type"] == "stt":
            values["stt_s"].append(event["duration_s"])
    return values


async def vad_throughput(frame_ms: int, repeats: int = 5) -> float:
    """Seconds of audio per second of processing, best of ``repeats``."""
    samples = load_audio(SHARED_AUDIO / "speech60_en.wav", 16000)
    step = 16000 * frame_ms // 1000
    frames = [samples_to_frame(samples[i : i + step], 16000) for i in range(0, len(samples), step)]
    best = float("inf")
    for _ in range(repeats):
        stream = WebRTCVAD().stream()
        started = time.perf_counter()
        for frame in frames:
            stream.push_frame(frame)
        stream.end_input()
        async for _ in stream:
            pass
        best = min(best, time.perf_counter() - started)
    return len(samples) / 16000 / best


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"median": None, "p90": None, "count": 0}
    return {
        "median": round(float(np.median(values)), 3),
        "p90": round(float(np.percentile(values, 90)), 3),
        "count": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="plays of each input")
    parser.add_argument("--detector", choices=DETECTORS, action="append", help="default: both")
    parser.add_argument(
        "--no-tools", action="store_true", help="leave out the default model's tool evaluation"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    report: dict[str, object] = {}
    for name, path in (("speech60_en", SHARED_AUDIO / "speech60_en.wav"), ("demo", DEMO)):
        for detector in args.detector or DETECTORS:
            collected: dict[str, list[float]] = {n: [] for n in FIGURES}
            cuts = turns = 0
            for run in range(args.runs):
                print(f"playing {name} with {detector} ({run + 1}/{args.runs})…", file=sys.stderr)
                events = run_conversation(path, detector)
                for figure, values in figures(events).items():
                    collected[figure] += values
                cuts += false_cuts(events)
                turns += sum(e["type"] == "user_turn" for e in events)
            row = {figure: stats(values) for figure, values in collected.items()}
            row["false_cuts"] = {"count": cuts, "of_turns": turns}
            report[f"{name} {detector}"] = row
    report["vad_x_realtime"] = {
        f"{ms}ms_frames": round(asyncio.run(vad_throughput(ms))) for ms in (20, 1000)
    }

    print(f"VAD hangover (the profile's): {VAD_HANGOVER_S:.3f} s")
    print(f"{'input, detector':<24} {'stage':<17} {'median':>8} {'p90':>8} {'n':>4}")
    for name, rows in report.items():
        if name == "vad_x_realtime":
            continue
        for figure, row in rows.items():  # type: ignore[attr-defined]
            if figure == "false_cuts":
                print(f"{name:<24} {'false cuts':<17} {row['count']:>8} of {row['of_turns']} turns")
                continue
            median = "-" if row["median"] is None else f"{row['median']:.3f}"
            p90 = "-" if row["p90"] is None else f"{row['p90']:.3f}"
            print(f"{name:<24} {figure:<17} {median:>8} {p90:>8} {row['count']:>4}")
    for frames, speed in report["vad_x_realtime"].items():  # type: ignore[attr-defined]
        print(f"VAD, {frames}: {speed}x real time")
    if not args.no_tools:
        name = default_llm()
        print(f"scoring {name}'s tool calls (bench/tools.py)…", file=sys.stderr)
        row = asyncio.run(evaluate_model(name, BUNDLED_LLMS[name](), CASES + CHAT))
        del row["outcomes"]
        report["tools"] = {"model": name, **row}
        print(scores(name, row))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

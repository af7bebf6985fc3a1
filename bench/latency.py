"""Latency of the lite engine end to end, and the VAD's throughput.

    .venv/bin/python bench/latency.py [--runs N] [--json PATH]

Plays speech60_en.wav (a minute of real English) and the demo conversation through
``voice-agent run-file`` in real time, then reports median and p90 of each figure.
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

from audio import WebRTCVAD, load_audio  # noqa: E402
from audio.pcm import samples_to_frame  # noqa: E402
from tests.conftest import DEMO, SHARED_AUDIO  # noqa: E402

FIGURES = ("e2e_latency_s", "eou_delay_s", "stt_s", "ttft_s", "ttfb_s")


def run_conversation(path: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "agent.cli", "run-file", str(path), "--out", out, "-q"]
        subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
        lines = Path(out, "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def figures(events: list[dict]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {name: [] for name in FIGURES}
    for event in events:
        if event["type"] == "agent_reply":
            for name, value in event["metrics"].items():
                if value is not None:
                    values[name].append(value)
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
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    report: dict[str, object] = {}
    for name, path in (("speech60_en", SHARED_AUDIO / "speech60_en.wav"), ("demo", DEMO)):
        collected: dict[str, list[float]] = {n: [] for n in FIGURES}
        for run in range(args.runs):
            print(f"playing {name} ({run + 1}/{args.runs}) in real time…", file=sys.stderr)
            for figure, values in figures(run_conversation(path)).items():
                collected[figure] += values
        report[name] = {figure: stats(values) for figure, values in collected.items()}
    report["vad_x_realtime"] = {
        f"{ms}ms_frames": round(asyncio.run(vad_throughput(ms))) for ms in (20, 1000)
    }

    print(f"{'input':<12} {'figure':<14} {'median':>8} {'p90':>8} {'n':>4}")
    for name in ("speech60_en", "demo"):
        for figure, row in report[name].items():  # type: ignore[attr-defined]
            median = "-" if row["median"] is None else f"{row['median']:.3f}"
            p90 = "-" if row["p90"] is None else f"{row['p90']:.3f}"
            print(f"{name:<12} {figure:<14} {median:>8} {p90:>8} {row['count']:>4}")
    for frames, speed in report["vad_x_realtime"].items():  # type: ignore[attr-defined]
        print(f"VAD, {frames}: {speed}x real time")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

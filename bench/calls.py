"""A call centre's load: N phones calling one ``voice-agent serve --sip`` at once, for each N.

    .venv/bin/python bench/calls.py [--calls 1,2,4,8] [--profile call] [--json PATH]

One real server (``serve --sip 127.0.0.1:PORT --no-web``, its own process, the profile's
engine) takes every call. For each N, N phones (bench/sip.py's: aiosipua and aiortp, G.711,
paced 20 ms packets, timing what they receive) call within the first second and each asks
bench/webrtc.py's question after the greeting's silence, so the N questions end together: the
worst moment of a busy hour. Reported per N:

- e2e: the end of a caller's question to the first voiced packet of the answer, median and p90
  over the N callers (an unanswered call counts as missing);
- the server's CPU while the calls last (percent of one core; psutil) and its RSS after them;
- packets the phones lost (RTP sequence numbers) and heard late (a gap over 60 ms).

The last line says how many calls a core holds with the p90 under 1.5 s on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audio.pcm import resample  # noqa: E402
from bench.sip import GREETING_S, PHONE_RATE, Heard, phone_call  # noqa: E402
from bench.webrtc import RATE, question  # noqa: E402
from tests.conftest import free_port, free_udp_port, start_serve, wait_until  # noqa: E402

TARGET_P90_S = 1.5
STAGGER_S = 0.1
"""Between one phone's INVITE and the next."""


async def load(port: int, calls: int, samples: np.ndarray, speech_end: float) -> list[Heard]:
    async def one(index: int) -> Heard:
        await asyncio.sleep(index * STAGGER_S)
        # each question ends at the same moment: the later callers wait less before asking
        lead = int((calls - 1 - index) * STAGGER_S * PHONE_RATE)
        return await phone_call(port, samples[lead:], speech_end - lead / PHONE_RATE)

    return list(await asyncio.gather(*(one(i) for i in range(calls))))


def sessions(web_port: int) -> int:
    """The conversations the server holds (its /status)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/status", timeout=5) as answer:
        return int(json.loads(answer.read())["sessions"])


def figures(heard: list[Heard], cpu_s: float, wall_s: float, rss: int) -> dict[str, Any]:
    answered = [h.e2e_s for h in heard if not np.isnan(h.e2e_s)]
    return {
        "calls": len(heard),
        "answered": len(answered),
        "e2e_median_s": round(float(np.median(answered)), 3) if answered else None,
        "e2e_p90_s": round(float(np.percentile(answered, 90)), 3) if answered else None,
        "server_cpu_percent": round(100 * cpu_s / wall_s, 1),
        "server_rss_mb": round(rss / 2**20),
        "packets": sum(h.packets for h in heard),
        "lost": sum(h.lost for h in heard),
        "late": sum(h.late for h in heard),
    }


async def measure(counts: list[int], profile: str) -> dict[str, Any]:
    port, web = free_udp_port(), free_port()
    print(f"starting serve --sip on the {profile} profile…", file=sys.stderr, flush=True)
    server = start_serve(
        "--profile", profile, "--sip", f"127.0.0.1:{port}", "--no-web",
        "--port", str(web), "--max-sessions", str(max(counts)),
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    process = psutil.Process(server.pid)
    asked, end = await question()
    lead = np.zeros(int((GREETING_S + STAGGER_S * max(counts)) * PHONE_RATE), np.int16)
    samples = np.concatenate([lead, resample(asked, RATE, PHONE_RATE)])
    speech_end = len(lead) / PHONE_RATE + end
    rows: dict[str, Any] = {}
    try:
        await load(port, 1, samples, speech_end)  # warm: the models' first turn is slower
        for calls in counts:
            await asyncio.to_thread(wait_until, lambda: sessions(web) == 0, 30)
            print(f"{calls} simultaneous calls…", file=sys.stderr, flush=True)
            before, started = process.cpu_times(), time.monotonic()
            heard = await load(port, calls, samples, speech_end)
            after, wall_s = process.cpu_times(), time.monotonic() - started
            cpu_s = (after.user + after.system) - (before.user + before.system)
            rss = process.memory_info().rss
            rows[str(calls)] = figures(heard, cpu_s, wall_s, rss)
    finally:
        server.terminate()
        server.wait(60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,2,4,8", help="the Ns to try, comma-separated")
    parser.add_argument("--profile", default="call")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    try:
        counts = sorted({int(n) for n in args.calls.split(",")})
    except ValueError:
        parser.error(f"--calls {args.calls}: give numbers, as 1,2,4,8")
    if not counts or counts[0] < 1:
        parser.error("--calls: each N is 1 or more")
    rows = asyncio.run(measure(counts, args.profile))
    print(
        f"{'calls':>5} {'answered':>8} {'e2e med s':>9} {'p90 s':>6} {'cpu %':>6} "
        f"{'rss MB':>6} {'packets':>7} {'lost':>5} {'late':>5}"
    )
    for calls, row in rows.items():
        median, p90 = row["e2e_median_s"], row["e2e_p90_s"]
        print(
            f"{calls:>5} {row['answered']:>8} {median if median is not None else '-':>9} "
            f"{p90 if p90 is not None else '-':>6} {row['server_cpu_percent']:>6} "
            f"{row['server_rss_mb']:>6} {row['packets']:>7} {row['lost']:>5} "
            f"{row['late']:>5}"
        )
    held = [
        int(calls)
        for calls, row in rows.items()
        if row["answered"] == row["calls"] and (row["e2e_p90_s"] or 99) < TARGET_P90_S
    ]
    cores = os.cpu_count() or 1
    most = max(held, default=0)
    per_core = most / cores
    print(
        f"{most} simultaneous calls answered with p90 under {TARGET_P90_S} s on {cores} cores: "
        f"{per_core:g} per core ({args.profile} profile)"
    )
    if args.json:
        report = {"profile": args.profile, "cores": cores, "calls_per_core": per_core, **rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

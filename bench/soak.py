"""One long kiosk conversation with MQTT traffic, and the agent's memory along it.

    .venv/bin/python bench/soak.py [--minutes 60] [--speed 4] [--warmup 10]
                                   [--max-context 3072] [--json PATH]

Builds a spoken conversation of ``--minutes`` (real speech from shared/audio and the demo's
questions, each followed by room for the answer), plays it through ``voice-agent run-file
--profile kiosk`` on a real Mosquitto broker at ``--speed`` while a dashboard sends a ``say``
and a bad command every minute and reads every event, and samples the agent's RSS every minute
of the conversation (the median of readings taken 12 times a minute). The drift is the
least-squares slope, per hour, of every reading after the warm-up.

The conversation's window is made small (``--max-context``) so that it fills, and trims, within
the warm-up: what grows after that is a leak, not the history the agent is meant to keep.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audio import load_audio  # noqa: E402
from audio.segmenter import speech_bounds  # noqa: E402
from tests.conftest import DEMO, SHARED_AUDIO, Broker  # noqa: E402

RATE = 16000
SAMPLES_PER_MINUTE = 12
"""RSS is read this often per minute of conversation: one reading lands anywhere in a reply's
allocations, so the drift is fitted to all of them, not to one a minute."""
ANSWER_ROOM_S = 6.0
"""Wall-clock seconds after each utterance: room for the reply at any speed."""


def utterances() -> list[np.ndarray]:
    """The demo's three questions and three real recordings, at 16 kHz."""
    demo = load_audio(DEMO, RATE)
    questions = [demo[max(0, a - 3200) : b + 3200] for a, b in speech_bounds(demo)]
    recordings = ["one_two_three_en.wav", "jfk.flac", "en_num.wav"]
    return questions + [load_audio(SHARED_AUDIO / name, RATE) for name in recordings]


def conversation(minutes: float, speed: float) -> tuple[np.ndarray, int]:
    parts, total, turns = [], 0, 0
    pause = np.zeros(int(ANSWER_ROOM_S * speed * RATE), np.int16)
    pool = utterances()
    while total < minutes * 60 * RATE:
        speech = pool[turns % len(pool)]
        parts += [speech, pause]
        total += len(speech) + len(pause)
        turns += 1
    return np.concatenate(parts), turns


def rss_mb(pid: int) -> float | None:
    """None once the process has ended: gone, or a zombie, which has no memory to report."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


async def dashboard(broker: Broker, base: str, seen: list[str], period_s: float) -> None:
    """Reads every event and, every ``period_s``, asks for an announcement and sends junk."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="soak-dashboard") as client:
        await client.subscribe(f"{base}/event/#", qos=1)

        async def read() -> None:
            async for message in client.messages:
                seen.append(str(message.topic).rsplit("/", 1)[1])

        reader = asyncio.create_task(read())
        try:
            n = 0
            while True:
                await asyncio.sleep(period_s)
                n += 1
                await client.publish(f"{base}/cmd/say", f"Reminder number {n}.", qos=1)
                await client.publish(f"{base}/cmd/language", b"\xff" * 1000, qos=1)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def soak(minutes: float, speed: float, warmup: float, max_context: int) -> dict[str, object]:
    audio, turns = conversation(minutes, speed)
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    broker = Broker(folder)
    broker.start()
    try:
        sf.write(folder / "talk.wav", audio, RATE)
        print(f"{len(audio) / RATE / 60:.1f} min of conversation, {turns} user turns, x{speed}")
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cli", "run-file", str(folder / "talk.wav"),
            "--out", str(folder / "out"), "-q", "--speed", str(speed), "--profile", "kiosk",
            "--mqtt", broker.url, "--device-id", "soak", "--max-context", str(max_context),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        seen: list[str] = []
        minute_wall = 60 / speed
        panel = asyncio.create_task(dashboard(broker, "voice-agent/soak", seen, minute_wall))
        samples: list[tuple[float, float]] = []
        started = time.monotonic()
        while agent.returncode is None:
            try:
                await asyncio.wait_for(agent.wait(), minute_wall / SAMPLES_PER_MINUTE)
            except TimeoutError:
                minute = (time.monotonic() - started) / minute_wall
                if (rss := rss_mb(agent.pid)) is None:
                    continue  # it has just ended
                samples.append((round(minute, 3), round(rss, 1)))
                if len(samples) % SAMPLES_PER_MINUTE == 0:
                    last = [rss for _, rss in samples[-SAMPLES_PER_MINUTE:]]
                    print(
                        f"minute {minute:5.1f}: RSS median {np.median(last):7.1f} MB "
                        f"(min {min(last):.1f}, max {max(last):.1f})",
                        flush=True,
                    )
        panel.cancel()
        await asyncio.gather(panel, return_exceptions=True)
        _, stderr = await agent.communicate()
        if agent.returncode != 0:
            raise RuntimeError(f"run-file failed: {stderr.decode()[-2000:]}")
        events = [
            json.loads(line) for line in (folder / "out" / "events.jsonl").read_text().split("\n")
            if line
        ]  # fmt: skip
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
    after = np.array([(m, r) for m, r in samples if m >= warmup]).reshape(-1, 2)
    drift = float(np.polyfit(after[:, 0], after[:, 1], 1)[0]) * 60 if len(after) >= 3 else None
    by_minute: dict[int, list[float]] = {}
    for minute, rss in samples:
        by_minute.setdefault(int(minute), []).append(rss)
    medians = [(m, round(float(np.median(values)), 1)) for m, values in by_minute.items()]
    counts = events[-1]["counts"]
    return {
        "minutes": minutes,
        "speed": speed,
        "max_context": max_context,
        "user_turns_played": turns,
        "counts": counts,
        "mqtt_events_seen": len(seen),
        "rss_median_per_minute_mb": medians,
        "rss_mb": samples,
        "rss_after_warmup_mb": [float(after[:, 1].min()), float(after[:, 1].max())]
        if len(after)
        else [],
        "drift_mb_per_hour": None if drift is None else round(drift, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--speed", type=float, default=4)
    parser.add_argument("--warmup", type=float, default=10, help="minutes left out of the drift")
    parser.add_argument("--max-context", type=int, default=3072, help="the window, in tokens")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    report = asyncio.run(soak(args.minutes, args.speed, args.warmup, args.max_context))
    print(
        f"{report['counts']} — {report['mqtt_events_seen']} MQTT events read; "
        f"RSS after warm-up {report['rss_after_warmup_mb']} MB; "
        f"drift {report['drift_mb_per_hour']} MB/hour"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

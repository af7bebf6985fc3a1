"""Speech that is not for the agent: how often an agent addressed by a wake phrase answers
speech nobody addressed to it, how many addressed requests it answers, and what the phrase
costs the reply, in the same run.

    .venv/bin/python bench/addressing.py [--quick] [--speed 1] [--voices VOICE,VOICE]
                                         [--json PATH]

The desktop profile, its ``[addressing]`` set to ``wake_phrase`` ("hey computer",
``listen_s`` 2 s), hears:

- unaddressed speech: the shared recordings (four 60 s lectures, in English, German, Spanish
  and Russian, jfk.flac and en_num.wav), played as is (a person talking near the desk) and as
  a television (two at once, 10 dB quieter); false replies per hour of it, and false wakes;
- addressed requests: ``REQUESTS``, each after "Hey computer,", said by each voice of
  ``--voices`` (as bench/quality.py: ``piper`` or an espeak-ng name), far enough apart that
  each needs the phrase again; the share answered (a turn and a reply), and their median e2e.
  The same requests without the phrase, addressed ``always``: the median e2e the phrase adds.

``--quick``: jfk.flac as the unaddressed speech, and two requests in one voice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.profile import AddressingSettings, load_profile  # noqa: E402
from agent.session import SessionFactory  # noqa: E402
from audio import load_audio  # noqa: E402
from bench.quality import RATE, play, speak  # noqa: E402
from tests.conftest import SHARED_AUDIO  # noqa: E402

WAKE_PHRASE = "Hey computer,"
LISTEN_S = 2.0
REQUESTS = [
    "what time is it?",
    "what is twelve times eleven?",
    "set a timer for five minutes.",
    "how many centimetres are in an inch?",
    "what is the date today?",
    "what is the square root of eighty one?",
    "what time is it in Tokyo?",
    "what is fifteen percent of two hundred?",
    "how many minutes are in a day?",
    "what is one hundred minus thirty seven?",
]
ROOM_S = 9.0
"""After each request: its reply, the listening that follows it, and a margin."""
LECTURES = ["speech60_en.wav", "speech60_de.wav", "speech60_es.wav", "speech60_ru.wav"]
OTHERS = ["jfk.flac", "en_num.wav"]
TV_DB = -10.0
VOICES = "piper,en-gb-x-rp+f3:150:65,en-us+m3:160:50"


def unaddressed(names: list[str], television: bool) -> np.ndarray:
    """The recordings one after another, or, as a television, two at a time and quieter."""
    clips = [load_audio(SHARED_AUDIO / name, RATE).astype(np.float32) for name in names]
    if television:
        pairs = [clips[i : i + 2] for i in range(0, len(clips), 2)]
        gain = 10 ** (TV_DB / 20)
        clips = [gain * _mixed(pair) for pair in pairs]
    gap = np.zeros(RATE, np.float32)
    joined = np.concatenate([part for clip in clips for part in (clip, gap)])
    return np.clip(joined, -32768, 32767).astype(np.int16)


def _mixed(clips: list[np.ndarray]) -> np.ndarray:
    mix = np.zeros(max(len(c) for c in clips), np.float32)
    for clip in clips:
        mix[: len(clip)] += clip
    return mix


async def requests(voice: str, phrase: bool, cache: Path) -> tuple[np.ndarray, list[float]]:
    """The requests in ``voice``, the wake phrase before each if ``phrase``; where each ends."""
    parts, ends, at = [np.zeros(RATE, np.int16)], [], 1.0
    for request in REQUESTS:
        text = f"{WAKE_PHRASE} {request}" if phrase else request.capitalize()
        speech = await speak(text, voice, cache)
        at += len(speech) / RATE
        ends.append(at)
        parts += [speech, np.zeros(int(ROOM_S * RATE), np.int16)]
        at += ROOM_S
    return np.concatenate(parts), ends


async def played(
    factory: SessionFactory, samples: np.ndarray, folder: Path, speed: float
) -> list[dict[str, Any]]:
    folder.mkdir(parents=True)
    wav = folder / "heard.wav"
    sf.write(wav, samples, RATE, subtype="PCM_16")
    events, problem = await play(factory, wav, folder, speed, None)
    if problem:
        raise RuntimeError(f"{folder.name}: {problem}")
    return events


def _replies(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "agent_reply"]


def _answered(events: list[dict[str, Any]], ends: list[float]) -> list[float | None]:
    """The e2e of each request that got a turn of its own and a reply to it; what was heard
    of each other one is printed."""
    e2e = []
    for request, end in zip(REQUESTS, ends, strict=True):
        turns = [e for e in events if e["type"] == "user_turn" and abs((e["end"] or 0) - end) < 1.5]
        replies = [r for r in _replies(events) if end < r["t"] < end + ROOM_S]
        if turns and replies:
            e2e.append(replies[0]["metrics"].get("e2e_latency_s"))
            continue
        heard = [
            e["transcript"]
            for e in events
            if e["type"] in ("user_turn", "ignored") and abs(e["t"] - end) < 3.0
        ]
        print(f"  missed {request!r}: heard {' | '.join(heard) or 'nothing'}", flush=True)
    return e2e


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


async def factory_for(mode: str) -> SessionFactory:
    desktop = load_profile("desktop")
    addressing = AddressingSettings(mode=mode, listen_s=LISTEN_S)  # type: ignore[arg-type]
    return await SessionFactory.load(desktop.model_copy(update={"addressing": addressing}))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--voices", default=VOICES)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    voices = args.voices.split(",")[:1] if args.quick else args.voices.split(",")
    if args.quick:
        del REQUESTS[2:]
    names = ["jfk.flac"] if args.quick else LECTURES + OTHERS
    results: dict[str, Any] = {"wake_phrase": WAKE_PHRASE, "listen_s": LISTEN_S}
    with tempfile.TemporaryDirectory(prefix="addressing-") as tmp:
        folder, cache = Path(tmp), Path(tmp) / "voices"
        factory = await factory_for("wake_phrase")
        try:
            for television in (False,) if args.quick else (False, True):
                name = "television" if television else "nearby"
                samples = unaddressed(names, television)
                events = await played(factory, samples, folder / name, args.speed)
                hours = len(samples) / RATE / 3600
                results[name] = {
                    "audio_s": round(len(samples) / RATE, 1),
                    "ignored": len([e for e in events if e["type"] == "ignored"]),
                    "false_wakes": len(
                        [e for e in events if e["type"] == "addressing" and e["by"] != "timeout"]
                    ),
                    "false_replies": len(_replies(events)),
                    "false_replies_per_hour": round(len(_replies(events)) / hours, 1),
                }
                print(name, json.dumps(results[name]), flush=True)
            e2e: dict[str, list[float | None]] = {"wake_phrase": [], "always": []}
            for voice in voices:
                samples, ends = await requests(voice, True, cache)
                answered = _answered(
                    await played(factory, samples, folder / voice, args.speed), ends
                )
                e2e["wake_phrase"] += answered
                print(f"{voice}: {len(answered)} of {len(ends)} answered", flush=True)
        finally:
            await factory.aclose()
        factory = await factory_for("always")
        try:
            for voice in voices:
                samples, ends = await requests(voice, False, cache)
                events = await played(factory, samples, folder / f"always-{voice}", args.speed)
                e2e["always"] += _answered(events, ends)
        finally:
            await factory.aclose()
    asked = len(REQUESTS) * len(voices)
    with_phrase, always = _median(e2e["wake_phrase"]), _median(e2e["always"])
    results["addressed"] = {
        "requests": asked,
        "answered": len(e2e["wake_phrase"]),
        "answered_share": round(len(e2e["wake_phrase"]) / asked, 3),
        "e2e_median_s": with_phrase,
        "answered_always": len(e2e["always"]),
        "e2e_median_s_always": always,
        "phrase_adds_s": None
        if with_phrase is None or always is None
        else round(with_phrase - always, 3),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

"""Answer quality end to end: spoken conversations through the real session, scored turn by turn.

    .venv/bin/python bench/quality.py [--profile NAME ...] [--smoke] [--speed X]
                                      [--voices VOICE,VOICE] [--llm-model NAME]
                                      [--out DIR] [--json PATH]

The tool bench asks typed questions; this asks what a user hears after speech recognition,
turn taking, the model, the tools and the voice. The conversations of ``bench/quality_cases.py``
are spoken by Piper's packaged US voice and espeak-ng's (one voice a conversation, taken in turn
from ``--voices``: ``piper[:WORDS_PER_MINUTE]`` or an espeak-ng NAME[:WORDS_PER_MINUTE[:PITCH]];
real recordings where a turn is no request) and each is played
into a session of its own as ``run-file --speed X`` plays it, over the profile's models loaded
once (kiosk: on a Mosquitto with a fake lamp and door that report what they are set to). Its
``events.jsonl`` is scored: a user turn belongs to the turn whose stretch of the recording it
started in (a turn heard in two pieces keeps its replies), and what follows it is its answer.

A turn is *right* when its reply holds its facts (numbers in digits or words), with the right
tool and arguments that do the job (for arithmetic and units, no call and the right figure will
do), no call it did not need (a call to a made-up tool is never run, but refused with an
apology: counted apart, and not right), an admission where the answer cannot be known offline
(and no made-up figure), a format instruction's word limit, no repeat of an earlier reply and no
recital of the prompt. Brevity (35 words, two sentences) and e2e latency are reported beside
it; e2e is on the recording's clock, so at ``--speed`` 2 the model's time counts double. A turn
that cannot be scored is a miss, with the reason in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import difflib
import hashlib
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.control import ControlledSession  # noqa: E402
from agent.models import BUNDLED_LLMS, default_llm  # noqa: E402
from agent.profile import Profile, load_profile  # noqa: E402
from agent.session import SessionFactory, bridge_for  # noqa: E402
from agent.transports.file import SAMPLE_RATE, play_conversation  # noqa: E402
from audio import load_audio  # noqa: E402
from audio.piper import NATURAL_RATE, PiperWorker  # noqa: E402
from bench.quality_cases import CONVERSATIONS, DEVICES, SMOKE, Turn, normalise  # noqa: E402
from tests.conftest import SHARED_AUDIO, Broker  # noqa: E402

RATE = 16000
PROFILES = ("desktop", "kiosk", "call")
VOICES = "piper,en-gb-x-rp+f3:150:65,en-us+m3:160:50"
LEAD_S = 1.0
GREETING_S = 4.0
"""Extra silence before the first turn where the profile greets: its greeting is not
interruptible, and what is said over it is not heard."""
EARLY_S = 1.0
"""A user turn may start this much before its speech (the VAD's pre-roll)."""
BRIEF_WORDS, BRIEF_SENTENCES = 35, 2
REPEAT_RATIO, REPEAT_MIN_WORDS = 0.8, 5
HEARD_RATIO = 0.8
"""A transcript this close to what was said (difflib's ratio) counts as heard right."""
ADMITS = re.compile(
    r"can't|cannot|can not|unable|not able|don't have|do not have|offline|no access"
    r"|internet|real[- ]time|don't know|do not know|not sure|no way to",
    re.I,
)
FIGURE = re.compile(r"\d\d|[02-9]")
"""A made-up figure, in a normalised reply: any number but a lone 1 ("that one")."""
REFUSED = "which it was not offered"
"""An ``error`` event's words for a call to a tool the profile does not offer: never run (the
user hears an apology), so it is counted apart from the calls that ran."""
DEFERRALS = ("transfer_call", "look_up_online")
"""Handing the caller to a person (the call profile's prompt asks for it), or the tool that
says what cannot be looked up offline, admit as well."""


async def speak(text: str, voice: str, cache: Path) -> np.ndarray:
    """``text`` in ``voice`` at 16 kHz, synthesized once: ``piper[:RATE]`` (the packaged
    neural voice) or an espeak-ng NAME[:RATE[:PITCH]]."""
    name, rate, pitch = (voice.split(":") + ["160", "50"])[:3]
    path = cache / f"{hashlib.sha1(f'{voice}|{text}'.encode()).hexdigest()[:16]}.wav"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        if name == "piper":
            pace = int(rate) if ":" in voice else NATURAL_RATE
            samples = await PiperWorker.shared().synthesize(
                text, rate=pace, volume=1.0, sample_rate=RATE
            )
            sf.write(path, samples, RATE, subtype="PCM_16")
        else:
            command = ["espeak-ng", "-v", name, "-s", rate, "-p", pitch, "-w", str(path), text]
            subprocess.run(command, check=True)
    return load_audio(path, RATE)


async def conversation_wav(
    turns: list[Turn], voice: str, lead_s: float, cache: Path, path: Path
) -> list[float]:
    """Writes the user's side of a conversation; the second each turn starts at."""
    parts, starts, at = [np.zeros(int(lead_s * RATE), np.int16)], [], lead_s
    for turn in turns:
        if turn.say.startswith("@"):
            speech = load_audio(SHARED_AUDIO / turn.say[1:], RATE)
        else:
            speech = await speak(turn.say, voice, cache)
        starts.append(at)
        parts += [speech, np.zeros(int(turn.room_s * RATE), np.int16)]
        at += len(speech) / RATE + turn.room_s
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return starts


async def fake_devices(port: int, topics: dict[str, str]) -> None:
    """The kiosk's devices: each starts in its DEVICES state and reports what it is set to."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="quality-devices") as client:
        for name, topic in topics.items():
            await client.publish(f"{topic}/state", DEVICES[name], qos=1, retain=True)
            await client.subscribe(f"{topic}/set", qos=1)
        async for message in client.messages:
            state = str(message.topic).removesuffix("/set") + "/state"
            await client.publish(state, message.payload, qos=1, retain=True)


async def play(
    factory: SessionFactory, wav: Path, out: Path, speed: float, broker: Broker | None
) -> tuple[list[dict[str, Any]], str]:
    """``wav`` played into a new session as ``run-file`` plays it: the session's events, and
    what went wrong ("" if nothing)."""
    profile, problem = factory.profile, ""
    devices = None
    if broker is not None:
        devices = asyncio.create_task(fake_devices(broker.port, profile.devices))
    try:
        bridge = bridge_for(profile)
        if bridge is not None:
            await bridge.start()
        controlled = ControlledSession.open(factory, bridge)
        try:
            await play_conversation(
                controlled,
                controlled.agent,
                load_audio(wav, SAMPLE_RATE),
                out,
                speed=speed,
                settle_s=profile.vad.min_silence_s + profile.endpointing.max_delay + 1.0,
                echo=False,
                source=str(wav),
            )
        finally:
            await controlled.aclose()
    except Exception as e:  # the conversation's turns become misses, with the reason
        problem = f"{type(e).__name__}: {e}"
    if devices is not None:
        devices.cancel()
        await asyncio.gather(devices, return_exceptions=True)
    log = out / "events.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return events, problem


@dataclass
class Heard:
    """What the session logged between one expected turn's start and the next's."""

    transcripts: list[str] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def by_turn(events: list[dict[str, Any]], starts: list[float]) -> list[Heard]:
    """Each user turn goes to the expected turn its speech started in; replies, calls and
    errors to the user turn logged last before them."""
    heard = [Heard() for _ in starts]
    current: Heard | None = None
    for event in events:
        kind = event["type"]
        if kind == "user_turn":
            index = bisect.bisect_right(starts, event.get("start", event["t"]) + EARLY_S) - 1
            current = heard[index] if index >= 0 else None
            if current is not None:
                current.transcripts.append(event["transcript"])
        elif current is None:
            continue  # a greeting, before the user has said anything
        elif kind == "agent_reply":
            current.replies.append(event)
        elif kind == "tool_call":
            current.tools.append(event)
        elif kind == "error":
            current.errors.append(str(event.get("message", "")))
    return heard


def expectation(turn: Turn, offered: list[str]) -> tuple[str, bool, tuple[str, ...]]:
    """The tool, whether an admission is due, and the facts, on a profile offering
    ``offered``: a turn whose tool is missing is answered in words, or admitted."""
    if not turn.tool or turn.tool in offered:
        return turn.tool, turn.admit, turn.facts
    if turn.optional:
        return "", False, turn.facts
    return "", turn.elsewhere == "admit", ()


def similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def repeats(reply: str, earlier: str) -> bool:
    """The same words, or nearly (a short reply only when the same: "door opened." is no
    repeat of "door is open.")."""
    a, b = reply.lower(), earlier.lower()
    return a == b or (len(a.split()) >= REPEAT_MIN_WORDS and similar(a, b) >= REPEAT_RATIO)


def score(turn: Turn, offered: list[str], heard: Heard, earlier: list[str]) -> dict[str, Any]:
    tool, admit, facts = expectation(turn, offered)
    reply = " ".join(r["text"] for r in heard.replies).strip()
    said = normalise(reply)
    calls = [turn.args(c["arguments"]) for c in heard.tools if c["name"] == tool]
    deferred = admit and any(c["name"] in DEFERRALS for c in heard.tools)
    allowed = (tool, *DEFERRALS) if admit else (tool,)
    false_calls = [c["name"] for c in heard.tools if c["name"] not in allowed]
    words = re.findall(r"[\w'.:-]+", reply)
    admitted = deferred or (ADMITS.search(reply) is not None and not FIGURE.search(said))
    scores: dict[str, Any] = {
        "replied": bool(reply),
        "facts": all(re.search(f, said, re.I) for f in facts) if facts else None,
        "tool": not false_calls and (any(calls) if tool and not turn.optional else all(calls)),
        "false_call": bool(false_calls),
        "refused_call": any(REFUSED in e for e in heard.errors),
        "admitted": admitted if admit else None,
        "format": len(words) <= turn.words if turn.words else None,
        "repeat": bool(reply)
        and not heard.tools
        and not (admit and admitted)  # "Sorry, I can't check news: …" in the tool's words
        and any(repeats(reply, e) for e in earlier),
        "recited": any("recited" in e for e in heard.errors),
        "brief": 0 < len(words) <= BRIEF_WORDS
        and len(re.findall(r"[.!?]\s+(?=[A-Z])", reply)) < BRIEF_SENTENCES,
    }
    scores["right"] = (
        scores["replied"]
        and all(scores[k] is not False for k in ("facts", "tool", "admitted", "format"))
        and not (scores["repeat"] or scores["recited"] or scores["refused_call"])
    )
    return scores


def record(turn: Turn, profile: Profile, heard: Heard, earlier: list[str]) -> dict[str, Any]:
    """One turn's record for the JSON; a turn that cannot be scored is a miss."""
    transcript = " ".join(t.strip() for t in heard.transcripts)
    e2e = [r["metrics"].get("e2e_latency_s") for r in heard.replies if r.get("metrics")]
    row: dict[str, Any] = {
        "category": turn.category,
        "said": turn.heard or turn.say,
        "heard": transcript,
        "heard_ratio": round(similar(normalise(transcript), normalise(turn.heard or turn.say)), 2),
        "reply": " ".join(r["text"] for r in heard.replies).strip(),
        "tools": [
            {k: c.get(k) for k in ("name", "arguments", "output", "source")} for c in heard.tools
        ],
        "interrupted": any(r.get("interrupted") for r in heard.replies),
        "e2e_s": next((v for v in e2e if v is not None), None),
        "expected_tool": (tool := expectation(turn, profile.tools)[0]),
        "tool_required": bool(tool) and not turn.optional,
    }
    try:
        row["scores"] = score(turn, profile.tools, heard, earlier)
    except Exception as e:  # a turn the scorer cannot read is a miss, not a crash
        row["scores"] = {"right": False, "problem": f"{type(e).__name__}: {e}"}
    return row


@contextlib.contextmanager
def mqtt_broker(profile: Profile) -> Iterator[Broker | None]:
    """A Mosquitto of its own for a profile with MQTT on (the kiosk's devices talk through it)."""
    if not profile.mqtt.enabled:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="quality-broker-") as folder:
        broker = Broker(Path(folder))
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


def score_conversation(
    turns: list[Turn], profile: Profile, heard: list[Heard], problem: str, labels: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each turn's record, labelled. A reply with a call is the tool's own sentence, so only
    a reply without one can repeat the replies before it."""
    rows: list[dict[str, Any]] = []
    earlier: list[str] = []
    for index, (turn, what) in enumerate(zip(turns, heard, strict=True), 1):
        rows.append(row := record(turn, profile, what, earlier) | labels | {"turn": index})
        if problem:
            row["scores"]["problem"] = problem
        if row["reply"]:
            earlier.append(row["reply"])
    return rows


async def run_profile(
    name: str, conversations: list[list[Turn]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every conversation that applies to profile ``name``, each a session of its own over
    models loaded once."""
    profile = load_profile(name)
    if args.llm_model:
        lite = profile.lite.model_copy(update={"llm_model": args.llm_model})
        profile = profile.model_copy(update={"lite": lite})
    voices = args.voices.split(",")
    lead = LEAD_S + (GREETING_S if profile.greeting else 0.0)
    rows: list[dict[str, Any]] = []
    with mqtt_broker(profile) as broker:
        if broker is not None:
            mqtt = profile.mqtt.model_copy(update={"url": broker.url, "device_id": "quality"})
            profile = profile.model_copy(update={"mqtt": mqtt})
        factory = await SessionFactory.load(profile)
        try:
            for number, conversation in enumerate(conversations, 1):
                turns = [t for t in conversation if name in t.profiles]
                if not turns:
                    continue
                folder = args.out / name / f"conversation{number:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                voice = voices[(number - 1) % len(voices)]
                wav = folder / "user.wav"
                starts = await conversation_wav(turns, voice, lead, args.out / "speech", wav)
                print(f"{name}: conversation {number}, {voice}", file=sys.stderr)
                events, problem = await play(factory, wav, folder, args.speed, broker)
                heard = by_turn(events, starts)
                labels = {"profile": name, "conversation": number, "voice": voice}
                rows += score_conversation(turns, profile, heard, problem, labels)
        finally:
            await factory.aclose()
    return rows


def tally(
    rows: list[dict[str, Any]], key: str, hit: Callable[[dict], bool]
) -> dict[str, list[int]]:
    """[hits, rows] for each value of ``key``."""
    pairs: dict[str, list[int]] = {}
    for row in rows:
        pair = pairs.setdefault(row[key], [0, 0])
        pair[0] += bool(hit(row))
        pair[1] += 1
    return pairs


def intent_answered(row: dict[str, Any]) -> bool:
    """A turn a sentence template answered (its calls' source), not the model."""
    return bool(row["tools"]) and all(c.get("source") == "intent" for c in row["tools"])


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def count(key: str, value: object = True) -> int:
        return sum(r["scores"].get(key) == value for r in rows)

    e2e = [r["e2e_s"] for r in rows if r["e2e_s"] is not None]
    by_intent = [r["e2e_s"] for r in rows if r["e2e_s"] is not None and intent_answered(r)]
    tool_turns = [r for r in rows if r["expected_tool"]]  # arithmetic and units too
    toolless = [r for r in rows if not r["expected_tool"]]
    return {
        "turns": len(rows),
        "right": count("right"),
        "categories": tally(rows, "category", lambda r: r["scores"]["right"]),
        "tool_requests": [sum(bool(r["scores"]["right"]) for r in tool_turns), len(tool_turns)],
        "false_calls": [sum(bool(r["scores"].get("false_call")) for r in toolless), len(toolless)],
        "admitted": [count("admitted"), count("admitted") + count("admitted", False)],
        "repeats": count("repeat"),
        "recitals": count("recited"),
        "refused_calls": count("refused_call"),
        "wrong_and_misheard": [
            sum(not r["scores"]["right"] and r["heard_ratio"] < HEARD_RATIO for r in rows),
            sum(not r["scores"]["right"] for r in rows),
        ],
        "brief": count("brief"),
        "heard_right": tally(rows, "voice", lambda r: r["heard_ratio"] >= HEARD_RATIO),
        "interrupted": sum(r["interrupted"] for r in rows),
        "no_reply": count("replied", False),
        "e2e_median_s": round(float(np.median(e2e)), 3) if e2e else None,
        "e2e_p90_s": round(float(np.percentile(e2e, 90)), 3) if e2e else None,
        "intent_answers": len(by_intent),
        "e2e_intent_median_s": round(float(np.median(by_intent)), 3) if by_intent else None,
    }


def table(name: str, s: dict[str, Any]) -> str:
    def ratio(pair: list[int]) -> str:
        return f"{pair[0]}/{pair[1]}"

    lines = [f"{name}: {s['right']}/{s['turns']} right ({s['right'] / s['turns']:.0%})"]
    lines += [f"  {category:<14} {ratio(pair):>6}" for category, pair in s["categories"].items()]
    e2e = "-" if s["e2e_median_s"] is None else f"{s['e2e_median_s']:.2f} / {s['e2e_p90_s']:.2f} s"
    lines += [
        f"  tool requests right {ratio(s['tool_requests'])}, false calls "
        f"{ratio(s['false_calls'])} turns without one, "
        f"admitted unknowns {ratio(s['admitted'])}, repeats {s['repeats']}, "
        f"recitals {s['recitals']}, made-up calls refused {s['refused_calls']}",
        f"  misheard (transcript under {HEARD_RATIO:.0%} like what was said): "
        f"{ratio(s['wrong_and_misheard'])} of the turns not right",
        f"  brief {s['brief']}/{s['turns']}, interrupted {s['interrupted']}, "
        f"no reply {s['no_reply']}; e2e median / p90 {e2e}, "
        f"of the {s['intent_answers']} answered by templates "
        f"{s['e2e_intent_median_s'] if s['e2e_intent_median_s'] is not None else '-'} s",
        "  heard right: "
        + ", ".join(f"{ratio(pair)} ({voice})" for voice, pair in s["heard_right"].items()),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", choices=PROFILES, help="default: all")
    parser.add_argument("--smoke", action="store_true", help="one short conversation, desktop")
    parser.add_argument("--speed", type=float, default=1.0, help="play the input X times faster")
    parser.add_argument("--voices", default=VOICES, help="voices, one a conversation")
    parser.add_argument("--llm-model", choices=BUNDLED_LLMS, help="default: the profile's")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "quality")
    parser.add_argument("--json", type=Path, help="also write every turn's record here")
    args = parser.parse_args()
    args.out = args.out.resolve()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("livekit").setLevel(logging.ERROR)
    profiles = args.profile or (["desktop"] if args.smoke else list(PROFILES))
    conversations = [SMOKE] if args.smoke else CONVERSATIONS
    started = time.monotonic()
    model = args.llm_model or default_llm()
    report: dict[str, Any] = {
        "speed": args.speed,
        "voices": args.voices,
        "llm_model": model,
        "profiles": {},
    }
    rows: list[dict[str, Any]] = []
    for name in profiles:
        rows += (done := asyncio.run(run_profile(name, conversations, args)))
        report["profiles"][name] = summary(done)
        print(table(f"{name} profile ({model})", report["profiles"][name]), flush=True)
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["turns"] = rows
    print(f"{len(rows)} turns in {report['wall_s']:.0f} s at x{args.speed}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""The console hearing its own voice through the room, and a person talking over it: how often
it interrupts itself, and how many real barge-ins it hears, with the echo canceller on and off,
in the same run.

    .venv/bin/python bench/echo.py [--minutes 10] [--barge-ins 10] [--delay-ms 100]
                                   [--gain-db -10] [--json PATH]

A real PulseAudio server (tests/sound_server.py) is the desk: the console speaks on a null sink
whose monitor is looped back into its microphone ``--delay-ms`` later and ``--gain-db`` quieter
(a loudspeaker heard by a laptop's microphone). A real Mosquitto carries ``cmd/say``: the console
reads a passage (about 40 s) again and again until ``--minutes`` of its speech have passed.
During ``--barge-ins`` of the passages, 8 s in, a person's recorded speech (jfk.flac) is played
into the microphone at full level, as someone nearer to it than the loudspeaker.

- self-interruptions: passages nobody spoke over that were cut, or paused as for a false
  interruption, and turns the agent took from its own voice; per hour of its speech;
- read to the end: passages nobody spoke over that were not cut;
- not said: passages asked for but never begun (its own voice, heard as the user's, held the
  floor until the bench gave up waiting);
- barge-ins heard: passages spoken over that were cut.
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
from typing import Any

import aiomqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import SHARED_AUDIO, Broker  # noqa: E402
from tests.sound_server import SoundServer, sound_server  # noqa: E402

PASSAGE = (
    "The lighthouse stood on the northern cliff for more than two hundred years. Every night "
    "its keeper climbed the narrow stairs, trimmed the wick, and watched the lamp turn slowly "
    "over the dark water. Ships from every harbour along the coast knew its light, and sailors "
    "told their children stories about the keeper who never slept. In the winter storms the "
    "waves reached the windows of the lamp room, and the whole tower sang in the wind. When "
    "the keeper grew old, his daughter took the lamp, and the ships never noticed the change."
)
BARGE_IN_AT_S = 8.0
PERSON = SHARED_AUDIO / "jfk.flac"
DEVICE_ID = "bench"


class Console:
    """``voice-agent console`` on the harness's devices, its events read as they are written."""

    def __init__(self, server: SoundServer, broker: Broker, folder: Path, aec: bool) -> None:
        profile = folder / "profile.toml"
        desktop = (REPO / "agent" / "profiles" / "desktop.toml").read_text()
        profile.write_text(desktop + f"\n[console]\necho_cancellation = {str(aec).lower()}\n")
        self.events_path = folder / "console" / "events.jsonl"
        command = [
            sys.executable, "-m", "agent.cli", "console", "--profile", str(profile),
            "--input-device", "mic", "--output-device", "speaker", "--out", str(folder),
            "--mqtt", broker.url, "--device-id", DEVICE_ID,
        ]  # fmt: skip
        self.log = (folder / "console.log").open("w")
        self.process = subprocess.Popen(
            command, cwd=REPO, env=server.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.folder = folder

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def said(self, text: str) -> bool:
        return text in (self.folder / "console.log").read_text()

    async def until(self, done: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if self.process.poll() is not None:
                raise RuntimeError((self.folder / "console.log").read_text()[-3000:])
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    def stop(self) -> None:
        self.process.send_signal(2)
        self.process.wait(timeout=60)
        self.log.close()


async def run(server: SoundServer, broker: Broker, folder: Path, aec: bool, args: Any) -> dict:
    console = Console(server, broker, folder, aec)
    said: list[tuple[dict[str, Any], bool]] = []
    try:
        await console.until(lambda: console.said("MQTT connected"), timeout=300)
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            # the barge-ins spread over the passages the minutes take (about 30 s each)
            expected = max(args.barge_ins, round(args.minutes * 2))
            every = expected / args.barge_ins if args.barge_ins else expected + 1
            n = 0
            while _speaking_s(console.events()) < args.minutes * 60 and n < 3 * expected:
                over = int(n % every) == 0 and sum(o for _, o in said) < args.barge_ins
                before = len(console.events())
                await _passage(console, client, server, over)
                n += 1
                events = console.events()[before:]
                print(f"  {'on' if aec else 'off'}: passage {n}: {_outcome(events)}")
                if reply := _passage_reply(events):
                    said.append((reply, over))
    finally:
        console.stop()
    return {**_scored(console.events(), said), "not_said": n - len(said)}


async def _passage(
    console: Console, client: aiomqtt.Client, server: SoundServer, over: bool
) -> None:
    """One passage said, spoken over by the person if ``over``, and whatever follows it."""
    replies = len([e for e in console.events() if e["type"] == "agent_reply"])
    await client.publish(f"voice-agent/{DEVICE_ID}/cmd/say", PASSAGE.encode(), qos=1)
    if over:
        await console.until(lambda: _speaking(console.events()), timeout=60)
        await asyncio.sleep(BARGE_IN_AT_S)
        server.speak(PERSON).wait()
    await console.until(lambda: _replied(console.events(), replies), timeout=180)
    await asyncio.sleep(3.0)  # an answer to the person may follow
    await console.until(lambda: _listening(console.events()), timeout=180)


def _outcome(events: list[dict[str, Any]]) -> str:
    """What a passage came to, and what was heard during it (``events``: those written since
    it was asked for): the line that tells a failed run's story."""
    reply = _passage_reply(events)
    if reply is None:
        return "not said"
    start = reply.get("start") or reply["t"]
    heard = [
        f"{e['type']} {e.get('by') or e.get('transcript', '')!r}"
        for e in events
        if e["type"] in ("interruption", "user_turn") and e["t"] >= start
    ]
    cut = "cut" if reply["interrupted"] else "read to its end"
    return f"{cut}; heard: {', '.join(heard) or 'nothing'}"


def _passage_reply(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The passage's own reply among ``events`` (those since it was asked for), if said."""
    replies = [e for e in events if e["type"] == "agent_reply" and e["text"][:40] in PASSAGE]
    return replies[0] if replies else None


def _speaking(events: list[dict[str, Any]]) -> bool:
    states = [e["agent"] for e in events if e["type"] == "state"]
    return bool(states) and states[-1] == "speaking"


def _replied(events: list[dict[str, Any]], replies_before: int) -> bool:
    replies = [e for e in events if e["type"] == "agent_reply"]
    return len(replies) > replies_before and _listening(events)


def _listening(events: list[dict[str, Any]]) -> bool:
    states = [e["agent"] for e in events if e["type"] == "state"]
    return bool(states) and states[-1] == "listening"


def _scored(events: list[dict[str, Any]], said: list[tuple[dict[str, Any], bool]]) -> dict:
    """``said``: each passage's reply, and whether the person spoke over it."""
    speaking_s = _speaking_s(events)
    quiet = [reply for reply, over in said if not over]
    over = [reply for reply, was_over in said if was_over]
    windows = [(p.get("start") or p["t"], p["t"]) for p in quiet]
    paused = [
        e
        for e in events
        if e["type"] == "interruption"
        and e["by"] == "noise"
        and any(a <= e["t"] <= b for a, b in windows)
    ]
    own_turns = [
        e
        for e in events
        if e["type"] == "user_turn" and any(a <= e["t"] <= b + 2.0 for a, b in windows)
    ]
    cut = sum(p["interrupted"] for p in quiet)
    hours = speaking_s / 3600
    return {
        "agent_speech_s": round(speaking_s, 1),
        "passages": len(said),
        "self_interruptions": cut + len(paused) + len(own_turns),
        "cut": cut,
        "read_to_end": len(quiet) - cut,
        "paused": len(paused),
        "own_voice_turns": len(own_turns),
        "own_voice_heard": [e.get("transcript", "") for e in own_turns],
        "self_interruptions_per_hour": round((cut + len(paused) + len(own_turns)) / hours, 1)
        if hours
        else None,
        "barge_ins": len(over),
        "barge_ins_heard": sum(p["interrupted"] for p in over),
    }


def _speaking_s(events: list[dict[str, Any]]) -> float:
    total, since = 0.0, None
    for e in events:
        if e["type"] != "state":
            continue
        if e["agent"] == "speaking" and since is None:
            since = e["t"]
        elif e["agent"] != "speaking" and since is not None:
            total += e["t"] - since
            since = None
    return total


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="of the agent's speech")
    parser.add_argument("--barge-ins", type=int, default=10)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--gain-db", type=float, default=-10.0)
    parser.add_argument("--aec", choices=("both", "on", "off"), default="both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "delay_ms": args.delay_ms,
        "gain_db": args.gain_db,
        "minutes": args.minutes,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Broker(folder)
        broker.start()
        try:
            (folder / "pulse").mkdir()
            with sound_server(folder / "pulse") as server:
                server.echo(args.delay_ms, args.gain_db)
                for aec in (True, False):
                    if args.aec in ("both", "on" if aec else "off"):
                        name = "aec_on" if aec else "aec_off"
                        (folder / name).mkdir()
                        results[name] = await run(server, broker, folder / name, aec, args)
                        print(name, json.dumps(results[name]), flush=True)
        finally:
            broker.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

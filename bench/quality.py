"""Answer quality end to end: spoken conversations through the real session, scored turn by turn.

    .venv/bin/python bench/quality.py [--profile NAME ...] [--smoke] [--speed X]
                                      [--voices VOICE,VOICE] [--llm-model NAME]
                                      [--languages en,de,es,fr] [--fixed-language]
                                      [--phone] [--typed] [--out DIR] [--json PATH]

The tool bench asks typed questions; this asks what a user hears after speech recognition,
turn taking, the model, the tools and the voice. The conversations of ``bench/quality_cases.py``
are spoken by Piper's packaged US voice and espeak-ng's (one voice a conversation, taken in turn
from ``--voices``: ``piper[:WORDS_PER_MINUTE]`` or an espeak-ng NAME[:WORDS_PER_MINUTE[:PITCH]];
real recordings where a turn is no request) and each is played
into a session of its own as ``run-file --speed X`` plays it (``--phone``: at 8 kHz in G.711
u-law, as a SIP caller is heard), over the profile's models loaded
once (kiosk: on a Mosquitto with a fake lamp and door that report what they are set to). Its
``events.jsonl`` is scored (``bench/quality_scores.py``).

``--languages`` asks the call profile the same calls in each language instead (espeak-ng's
voice of the language, Piper's for English), the first words said over the greeting, and scores
the language each reply is in as well; ``--fixed-language`` sets each call's line to its
language (``[lite] stt_language``) instead of telling it apart. ``--typed`` types the turns into
the session instead of speaking them (each as heard in its language): the answer alone, the
templates, model, tools and voice, without the recognizer.

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
import contextlib
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import soundfile as sf
from livekit.agents import AgentStateChangedEvent

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.control import ControlledSession  # noqa: E402
from agent.models import BUNDLED_LLMS, default_llm  # noqa: E402
from agent.profile import Profile, load_profile  # noqa: E402
from agent.session import ConversationSession, SessionFactory, bridge_for  # noqa: E402
from agent.transports.file import SAMPLE_RATE, play_conversation  # noqa: E402
from audio import load_audio  # noqa: E402
from audio.pcm import resample  # noqa: E402
from audio.piper import NATURAL_RATE, PiperWorker  # noqa: E402
from bench.quality_cases import (  # noqa: E402
    CALLER_VOICES,
    CALLERS,
    CONVERSATIONS,
    DEVICES,
    SMOKE,
    Turn,
)
from bench.quality_scores import (  # noqa: E402
    by_order,
    by_turn,
    score_conversation,
    summary,
    table,
)
from tests.conftest import SHARED_AUDIO, Broker  # noqa: E402

RATE = 16000
PROFILES = ("desktop", "kiosk", "call")
VOICES = "piper,en-gb-x-rp+f3:150:65,en-us+m3:160:50"
LEAD_S = 1.0
GREETING_S = 4.0
"""Extra silence before the first turn where the profile greets (unless the turn is meant to
be said over the greeting)."""
PHONE_RATE = 8000
QUIET_S = 1.5
"""--typed: the next turn is typed once the agent has listened this long."""
TYPED_TURN_S = 10.0
"""--typed: the silence played for each turn, room for it and its reply."""


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
    turns: list[Turn], voice: str, lead_s: float, cache: Path, path: Path, phone: bool = False
) -> list[float]:
    """Writes the user's side of a conversation (``phone``: as a telephone line carries it);
    the second each turn starts at."""
    parts, starts, at = [np.zeros(int(lead_s * RATE), np.int16)], [], lead_s
    for turn in turns:
        if turn.say.startswith("@"):
            speech = load_audio(SHARED_AUDIO / turn.say[1:], RATE)
        else:
            speech = await speak(turn.say, voice, cache)
        starts.append(at)
        parts += [speech, np.zeros(int(turn.room_s * RATE), np.int16)]
        at += len(speech) / RATE + turn.room_s
    audio = np.concatenate(parts)
    if phone:
        sf.write(path, resample(audio, RATE, PHONE_RATE), PHONE_RATE, subtype="ULAW")
    else:
        sf.write(path, audio, RATE, subtype="PCM_16")
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


async def type_turns(session: ConversationSession, turns: list[Turn], greets: bool) -> None:
    """Each turn typed into the session, as heard in its language, once the agent has been
    listening for ``QUIET_S`` (the greeting, the last reply and its tools' are done)."""
    listening = asyncio.Event()
    spoke = asyncio.Event()

    def changed(event: AgentStateChangedEvent) -> None:
        (listening.set if event.new_state == "listening" else listening.clear)()
        if event.new_state == "speaking":
            spoke.set()

    session.on("agent_state_changed", changed)
    if greets:
        await spoke.wait()
    for turn in turns:
        while True:
            await listening.wait()
            await asyncio.sleep(QUIET_S)
            if listening.is_set():
                break
        session.reply_language.name(turn.language)
        listening.clear()
        session.generate_reply(user_input=turn.say)


async def play(
    factory: SessionFactory,
    wav: Path,
    out: Path,
    speed: float,
    broker: Broker | None,
    typed: list[Turn] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """``wav`` played into a new session as ``run-file`` plays it (``typed``: and these turns
    typed into it): the session's events, and what went wrong ("" if nothing)."""
    profile, problem = factory.profile, ""
    devices = None
    if broker is not None:
        devices = asyncio.create_task(fake_devices(broker.port, profile.devices))
    try:
        bridge = bridge_for(profile)
        if bridge is not None:
            await bridge.start()
        controlled = ControlledSession.open(factory, bridge)
        typing = None
        if typed is not None:
            greets = bool(profile.greeting)
            typing = asyncio.create_task(type_turns(controlled.session, typed, greets))
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
            if typing is not None:
                typing.cancel()
                await asyncio.gather(typing, return_exceptions=True)
            await controlled.aclose()
    except Exception as e:  # the conversation's turns become misses, with the reason
        problem = f"{type(e).__name__}: {e}"
    if devices is not None:
        devices.cancel()
        await asyncio.gather(devices, return_exceptions=True)
    log = out / "events.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return events, problem


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


async def run_profile(
    name: str,
    conversations: list[list[Turn]],
    args: argparse.Namespace,
    voices: list[str],
    label: str,
    stt_language: str = "",
) -> list[dict[str, Any]]:
    """Every conversation that applies to profile ``name``, each a session of its own over
    models loaded once, and spoken by ``voices`` in turn; heard in ``stt_language`` if given."""
    profile = load_profile(name)
    lite = profile.lite.model_copy(
        update={"llm_model": args.llm_model or profile.lite.llm_model}
        | ({"stt_language": stt_language} if stt_language else {})
    )
    profile = profile.model_copy(update={"lite": lite})
    greeting_s = GREETING_S if profile.greeting else 0.0
    rows: list[dict[str, Any]] = []
    with mqtt_broker(profile) as broker:
        if broker is not None:
            mqtt = profile.mqtt.model_copy(update={"url": broker.url, "device_id": "quality"})
            profile = profile.model_copy(update={"mqtt": mqtt})
        factory = await SessionFactory.load(profile)
        try:
            for number, conversation in enumerate(conversations, 1):
                turns = [
                    t
                    for t in conversation
                    if name in t.profiles and not (args.typed and t.say.startswith("@"))
                ]
                if not turns:
                    continue
                folder = args.out / label / f"conversation{number:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                voice = voices[(number - 1) % len(voices)]
                wav = folder / "user.wav"
                lead = LEAD_S + (0.0 if turns[0].over_greeting else greeting_s)
                cache = args.out / "speech"
                if args.typed:  # silence, for as long as the typed turns may take
                    voice = "typed"
                    silence = np.zeros(int((lead + TYPED_TURN_S * len(turns)) * RATE), np.int16)
                    sf.write(wav, silence, RATE, subtype="PCM_16")
                else:
                    starts = await conversation_wav(turns, voice, lead, cache, wav, args.phone)
                print(f"{label}: conversation {number}, {voice}", file=sys.stderr)
                typed = turns if args.typed else None
                events, problem = await play(factory, wav, folder, args.speed, broker, typed)
                heard = by_order(events, len(turns)) if args.typed else by_turn(events, starts)
                labels = {"profile": label, "conversation": number, "voice": voice}
                rows += score_conversation(turns, profile, heard, problem, labels)
        finally:
            await factory.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", choices=PROFILES, help="default: all")
    parser.add_argument("--smoke", action="store_true", help="one short conversation, desktop")
    parser.add_argument("--speed", type=float, default=1.0, help="play the input X times faster")
    parser.add_argument("--voices", default=VOICES, help="voices, one a conversation")
    parser.add_argument("--llm-model", choices=BUNDLED_LLMS, help="default: the profile's")
    parser.add_argument(
        "--languages", help=f"the call profile's calls in these ({','.join(CALLERS)})"
    )
    parser.add_argument("--phone", action="store_true", help="at 8 kHz u-law, as over SIP")
    parser.add_argument(
        "--typed",
        action="store_true",
        help="the turns typed, not spoken: the answer alone (templates, model, tools, language)",
    )
    parser.add_argument(
        "--fixed-language",
        action="store_true",
        help="with --languages: each call's line set to its language (stt_language)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "out" / "quality")
    parser.add_argument("--json", type=Path, help="also write every turn's record here")
    args = parser.parse_args()
    args.out = args.out.resolve()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("livekit").setLevel(logging.ERROR)
    slices = [  # label, profile, conversations, voices, the language heard in ("": any)
        (name, name, [SMOKE] if args.smoke else CONVERSATIONS, args.voices.split(","), "")
        for name in args.profile or (["desktop"] if args.smoke else list(PROFILES))
    ]
    if args.languages:
        languages = args.languages.split(",")
        if unknown := set(languages) - set(CALLERS):
            parser.error(
                f"no calls in {', '.join(sorted(unknown))} (there are {', '.join(CALLERS)})"
            )
        slices = [
            (f"call-{code}", "call", CALLERS[code][:1] if args.smoke else CALLERS[code],
             [CALLER_VOICES[code]], code if args.fixed_language else "")
            for code in languages
        ]  # fmt: skip
    started = time.monotonic()
    model = args.llm_model or default_llm()
    report: dict[str, Any] = {
        "speed": args.speed,
        "voices": args.voices,
        "phone": args.phone,
        "fixed_language": args.fixed_language,
        "typed": args.typed,
        "llm_model": model,
        "profiles": {},
    }
    rows: list[dict[str, Any]] = []
    line = " over the phone (8 kHz u-law)" if args.phone else ""
    line = ", typed" if args.typed else line
    for label, name, conversations, voices, heard_in in slices:
        done = asyncio.run(run_profile(name, conversations, args, voices, label, heard_in))
        rows += done
        report["profiles"][label] = summary(done)
        print(table(f"{label} profile ({model}){line}", report["profiles"][label]), flush=True)
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["turns"] = rows
    print(f"{len(rows)} turns in {report['wall_s']:.0f} s at x{args.speed}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

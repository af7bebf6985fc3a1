"""End of the caller's speech to the agent's first audio at a SIP phone, against run-file, in the
same run.

    .venv/bin/python bench/sip.py [--rounds N] [--profile call] [--json PATH]

One process loads the profile's models once and answers SIP calls on 127.0.0.1 (the server of
``serve --sip``). Each round plays the same question (bench/webrtc.py's: "What is the capital
of France?", espeak-ng) after the greeting's silence:

- ``run-file``: through the file transport at 8 kHz, timing the first voiced sample of
  agent.wav after the end of the question;
- ``sip``: a SIP phone (aiosipua's UAC and aiortp: INVITE, G.711 µ-law, paced 20 ms packets)
  calls the server and times the arrival of the first voiced packet after the question's
  end. A desk phone's own playout buffer (typically 40–60 ms) comes on top.

Both measure from the same sample, so the difference is what the call adds: µ-law both ways,
the server's RTP clock and jitter buffer, the 8 kHz voice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiortp import RTPSession
from aiosipua import SipUAC, SipUAS, build_sdp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.conversations import ConversationPool  # noqa: E402
from agent.profile import load_profile  # noqa: E402
from agent.session import SessionFactory  # noqa: E402
from agent.transports.sip import SipOptions, SipServer  # noqa: E402
from agent.transports.sip_wire import UdpTransport  # noqa: E402
from audio.pcm import resample  # noqa: E402
from bench.webrtc import RATE, VOICED_DBFS, dbfs, file_round, question  # noqa: E402
from tests.conftest import free_udp_port  # noqa: E402

PHONE_RATE = 8000
FRAME = PHONE_RATE // 50
GREETING_S = 4.0
"""Silence before the question: the greeting is said first."""


LATE_S = 0.06
"""A gap this long between two packets the phone receives is heard (three packets' time)."""


@dataclass
class Heard:
    """What one phone heard of its call."""

    e2e_s: float
    """From the end of its question to the first voiced packet (nan: no answer)."""
    packets: int
    lost: int
    """By the RTP sequence numbers."""
    late: int
    """Gaps longer than ``LATE_S`` between packets."""


async def phone_call(agent_port: int, samples: np.ndarray, speech_end: float) -> Heard:
    """A call that asks ``samples`` (8 kHz) and hangs up once the answer starts."""
    transport = UdpTransport(local_addr=("127.0.0.1", free_udp_port()))
    uac = SipUAC(transport)
    uas = SipUAS(transport, uac=uac)  # takes the agent's BYE, if it hangs up first
    await uas.start()
    rtp_port = free_udp_port()
    offer = build_sdp("127.0.0.1", rtp_port, 0, "PCMU")
    call = uac.send_invite(
        "sip:bench@127.0.0.1", f"sip:agent@127.0.0.1:{agent_port}", ("127.0.0.1", agent_port), offer
    )
    await call.wait_answered()
    assert call.sdp_answer is not None and call.sdp_answer.rtp_address is not None
    rtp = await RTPSession.create(
        ("127.0.0.1", rtp_port), call.sdp_answer.rtp_address, 0, jitter_prefetch=1
    )
    started = time.monotonic()
    heard: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    arrivals: list[float] = []

    def on_audio(pcm: bytes, _timestamp: int) -> None:
        now = time.monotonic()
        arrivals.append(now)
        voiced = dbfs(np.frombuffer(pcm, np.int16)) > VOICED_DBFS
        if voiced and now > started + speech_end and not heard.done():
            heard.set_result(now - started - speech_end)

    rtp.on_audio = on_audio
    try:
        for sent, start in enumerate(range(0, len(samples), FRAME)):
            chunk = samples[start : start + FRAME]
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), np.int16)])
            rtp.send_audio_pcm(chunk.tobytes(), start)
            await asyncio.sleep(started + (sent + 1) / 50 - time.monotonic())
            if heard.done():
                break
        gaps = np.diff(arrivals)
        return Heard(
            heard.result() if heard.done() else float("nan"),
            packets=rtp.stats.get("packets_received", len(arrivals)),
            lost=rtp.stats.get("packets_lost", 0),
            late=int(np.sum(gaps > LATE_S)),
        )
    finally:
        call.hangup(uac)
        await rtp.close()
        await uas.stop()


async def measure(rounds: int, profile: str) -> dict[str, list[float]]:
    factory = await SessionFactory.load(load_profile(profile))
    pool = ConversationPool(1)
    port = free_udp_port()
    server = SipServer(factory, SipOptions.parse(f"127.0.0.1:{port}", []), pool, None)
    await server.start()
    asked, end = await question()
    lead = np.zeros(int(GREETING_S * PHONE_RATE), np.int16)
    samples = np.concatenate([lead, resample(asked, RATE, PHONE_RATE)])
    speech_end = GREETING_S + end
    results: dict[str, list[float]] = {"run-file": [], "sip": []}
    try:
        for round_ in range(rounds):
            print(f"round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)
            results["run-file"].append(await file_round(factory, samples, speech_end, PHONE_RATE))
            results["sip"].append((await phone_call(port, samples, speech_end)).e2e_s)
            while pool.active:  # the call's session ends before the next round
                await asyncio.sleep(0.1)
    finally:
        await pool.aclose()
        await server.aclose()
        await factory.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", default="call")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = asyncio.run(measure(args.rounds, args.profile))
    base = float(np.nanmedian(results["run-file"]))
    report: dict[str, object] = {"profile": args.profile}
    print(f"{'transport':<10} {'median s':>9} {'p90 s':>7} {'vs file':>8} {'answered':>9}")
    for name, values in results.items():
        answered = [v for v in values if not np.isnan(v)]
        median = float(np.median(answered)) if answered else float("nan")
        row = {
            "median_s": round(median, 3),
            "p90_s": round(float(np.percentile(answered, 90)), 3) if answered else float("nan"),
            "minus_run_file_s": round(median - base, 3),
            "answered": len(answered),
            "calls": len(values),
        }
        report[name] = row
        print(
            f"{name:<10} {row['median_s']:>9.3f} {row['p90_s']:>7.3f} "
            f"{row['minus_run_file_s']:>+8.3f} {len(answered):>4}/{len(values)}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

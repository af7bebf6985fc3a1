"""End of speech to first agent audio over WebRTC, against run-file, in the same run.

    .venv/bin/python bench/webrtc.py [--rounds N] [--sessions 1,2,4] [--json PATH]

One process loads the lite engine once. Each round plays the same question, one utterance
without pauses (espeak-ng: "What is the capital of France?", after a second of silence), into
fresh sessions:

- ``run-file``: through the file transport, timing the first voiced sample of agent.wav;
- ``webrtc xK``: K aiortc clients at once against ``serve``'s server on this machine's own
  address, each timing the first voiced frame it receives.

Both measure from the end of the recorded speech (the same sample) to the agent's first voiced
audio, so the difference is what WebRTC adds (Opus, pacing, the server's jitter buffer) plus,
with K > 1, what sharing the models costs. A WebRTC call has two figures: ``arrived``, when the
packet carrying that audio reached the client (what the server adds), and ``played``, when it
left aiortc's own playout buffer, which holds four packets (80 ms) before it plays anything; a
browser's adaptive buffer holds less on a clean link (tests/browser_calls.py reads Chromium's).
After each round, with every session ended, the process's resident memory is read: a
conversation must not leave any behind.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import av
import numpy as np
import soundfile as sf
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.control import ControlledSession  # noqa: E402
from agent.conversations import ConversationPool  # noqa: E402
from agent.profile import load_profile  # noqa: E402
from agent.serve import ServeOptions, VoiceServer  # noqa: E402
from agent.session import SessionFactory  # noqa: E402
from agent.transports.file import SAMPLE_RATE, play_conversation  # noqa: E402
from audio import Pyttsx3Options, Pyttsx3TTS  # noqa: E402
from audio.pcm import resample  # noqa: E402

RATE = 48000
FRAME = RATE // 50
QUESTION = "What is the capital of France?"
VOICED_DBFS = -40.0
TAIL_S = 8.0
"""Silence after the question: time for the answer."""


async def question() -> tuple[np.ndarray, float]:
    """The question at 48 kHz after 1 s of silence, and where its speech ends (seconds)."""
    frame = await Pyttsx3TTS(Pyttsx3Options(language="en-us")).synthesize(QUESTION).collect()
    speech = resample(np.frombuffer(frame.data, np.int16), frame.sample_rate, RATE)
    samples = np.concatenate([np.zeros(RATE, np.int16), speech, np.zeros(int(TAIL_S * RATE))])
    return samples.astype(np.int16), (RATE + last_voiced(speech, RATE)) / RATE


def last_voiced(samples: np.ndarray, rate: int) -> int:
    """The end of the last 10 ms window above the voiced level."""
    window = rate // 100
    levels = [dbfs(samples[i : i + window]) for i in range(0, len(samples), window)]
    voiced = [i for i, level in enumerate(levels) if level > VOICED_DBFS]
    return (voiced[-1] + 1) * window if voiced else 0


def first_voiced(samples: np.ndarray, rate: int, after: int) -> int | None:
    window = rate // 100
    for start in range(after, len(samples), window):
        if dbfs(samples[start : start + window]) > VOICED_DBFS:
            return start
    return None


def dbfs(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
    return 20 * np.log10(max(rms, 1e-9) / 32768)


async def file_round(
    factory: SessionFactory, samples: np.ndarray, speech_end: float, rate: int = RATE
) -> float:
    """End of speech to the first voiced sample of agent.wav, through the file transport;
    ``samples`` at ``rate``."""
    controlled = ControlledSession.open(factory, None)
    with tempfile.TemporaryDirectory() as out:
        await play_conversation(
            controlled,
            controlled.agent,
            resample(samples, rate, SAMPLE_RATE),
            Path(out),
            speed=1.0,
            settle_s=2.0,
            echo=False,
            source="bench",
        )
        agent, agent_rate = sf.read(Path(out) / "agent.wav", dtype="int16")
    await controlled.aclose()
    start = first_voiced(agent, agent_rate, int(speech_end * agent_rate))
    return float("nan") if start is None else start / agent_rate - speech_end


class Microphone(MediaStreamTrack):
    """The question, paced to the wall clock as a microphone would deliver it."""

    kind = "audio"

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__()
        self._samples = samples
        self._pts = 0
        self.started: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.started is None:
            self.started = time.monotonic()
        else:
            self._pts += FRAME
            await asyncio.sleep(self.started + self._pts / RATE - time.monotonic())
        chunk = self._samples[self._pts : self._pts + FRAME]
        chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._pts, fractions.Fraction(1, RATE)
        return frame


async def webrtc_call(url: str, samples: np.ndarray, speech_end: float) -> tuple[float, float]:
    """Seconds from the end of speech to the first voiced packet's arrival, and to its playout
    out of aiortc's own jitter buffer (a browser's differs: see the module's docstring)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = Microphone(samples)
    pc.addTrack(mic)
    pc.createDataChannel("events")
    heard: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
    arrivals: dict[int, float] = {}
    """When each RTP timestamp first arrived, in arrival order (the first is the origin)."""

    def time_arrivals(receiver: RTCRtpReceiver) -> None:
        handle = receiver._handle_rtp_packet

        async def timed(packet: RtpPacket, arrival_time_ms: int) -> None:
            arrivals.setdefault(packet.timestamp, time.monotonic())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = timed  # type: ignore[method-assign]

    async def listen(track: MediaStreamTrack) -> None:
        try:
            while not heard.done():
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                now = time.monotonic()
                pcm = frame.to_ndarray().reshape(-1)
                due = mic.started is not None and now > mic.started + speech_end
                if due and dbfs(pcm) > VOICED_DBFS:
                    origin = next(iter(arrivals))
                    arrived = arrivals.get((origin + (frame.pts or 0)) % 2**32, now)
                    start = (mic.started or now) + speech_end
                    heard.set_result((arrived - start, now - start))
        except MediaStreamError:
            pass

    listening: list[asyncio.Task[None]] = []

    def on_track(track: MediaStreamTrack) -> None:
        time_arrivals(next(r for r in pc.getReceivers() if r.track is track))
        listening.append(asyncio.create_task(listen(track)))

    pc.on("track", on_track)
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        async with http.post(url + "offer", json=offer) as response:
            answer = await response.json()
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    try:
        return await asyncio.wait_for(heard, len(samples) / RATE + 10)
    except TimeoutError:
        return float("nan"), float("nan")
    finally:
        await pc.close()
        for task in listening:
            task.cancel()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(
    rounds: int, concurrency: list[int]
) -> tuple[dict[str, list[float]], list[float]]:
    factory = await SessionFactory.load(load_profile("desktop"))
    pool = ConversationPool(max(concurrency))
    server = VoiceServer(factory, ServeOptions(max_sessions=pool.max_sessions), pool)
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/"
    samples, speech_end = await question()
    results: dict[str, list[float]] = {"run-file": []}
    for k in concurrency:
        results |= {f"webrtc x{k} arrived": [], f"webrtc x{k} played": []}
    memory: list[float] = []
    try:
        for round_ in range(rounds):
            print(f"round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)
            results["run-file"].append(await file_round(factory, samples, speech_end))
            for k in concurrency:
                calls = [webrtc_call(url, samples, speech_end) for _ in range(k)]
                for arrived, played in await asyncio.gather(*calls):
                    results[f"webrtc x{k} arrived"].append(arrived)
                    results[f"webrtc x{k} played"].append(played)
                while pool.active:  # each call's session ends before the next round
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the finished sessions are collected
            memory.append(round(rss_mb(), 1))
    finally:
        await pool.aclose()
        await runner.cleanup()
        await factory.aclose()
    return results, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", default="1,2,4", help="concurrent WebRTC calls to try")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    concurrency = [int(k) for k in args.sessions.split(",")]
    results, memory = asyncio.run(measure(args.rounds, concurrency))

    base = float(np.nanmedian(results["run-file"]))
    report: dict[str, object] = {}
    print(f"{'transport':<20} {'median s':>9} {'p90 s':>7} {'vs file':>8} {'answered':>9}")
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
            f"{name:<20} {row['median_s']:>9.3f} {row['p90_s']:>7.3f} "
            f"{row['minus_run_file_s']:>+8.3f} {len(answered):>4}/{len(values)}"
        )
    report["rss_mb_after_each_round"] = memory
    calls_per_round = 1 + sum(concurrency)
    if len(memory) >= 2:
        per_call = (memory[-1] - memory[0]) / ((len(memory) - 1) * calls_per_round)
        report["rss_mb_per_conversation"] = round(per_call, 2)
        print(f"resident memory after each round (MB): {memory}; {per_call:+.2f} MB a conversation")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

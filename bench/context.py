"""What a long conversation costs Phi-4-multimodal per turn, with the KV cache reused and
without, and one simulated hour through the context window.

    .venv/bin/python bench/context.py [--lengths 1024,4096,16384,65536,100000]
                                      [--minutes 60] [--window TOKENS] [--json PATH]

Runs the tiny random-weight checkpoint (tests/tiny_phi4mm.py) on this CPU through the
session's own path: the chat context rendered by ``PromptWindow`` (exact counts, trims) and
``Phi4MMEngine.generate`` (cache reuse), with real speech from shared/audio.

1. Per-turn time against history length: a spoken 5 s turn after a history of spoken turns
   and replies, with the history's cache reused (the median of 5 turns, and of each stage:
   rendering, then to the first text, then the rest) and recomputed from scratch (as an
   evicted cache or an adapter switch costs), side by side, and their ratios.
2. One simulated hour: a 5 s turn every 6 s of conversation (600 an hour), a 640x480 camera
   frame every minute, 24-token replies, the model's whole 128K window: peak tokens, trims
   (when, and what went), the trim turns' time, the median turn with and without a frame, the
   slowest turn that neither trims nor carries a frame, and peak memory. Turns are transcribed
   by a stand-in sentence (the model's ASR would double the run time; its cost is in
   bench/phi4mm.py), so audio can give way to text as it does live.

The tiny model makes the matrix products nearly free, but not the attention: every token
still reads the whole history's keys and values. So what grows with history here is that
reading and the engine's own overhead (rendering, counting, cache bookkeeping). The full-size
model's figures come from ``bench/phi4mm.py gpu``.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import llm
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.context import ContextMeter, ContextOptions, Trim  # noqa: E402
from agent.engines.phi4mm.engine import Phi4MMEngine, Phi4MMOptions  # noqa: E402
from agent.engines.phi4mm.parts import Media  # noqa: E402
from agent.engines.phi4mm.turn_media import adapter_for  # noqa: E402
from agent.engines.phi4mm.window import PromptWindow  # noqa: E402
from audio import load_audio  # noqa: E402
from tests.conftest import SHARED_AUDIO  # noqa: E402

RATE = 16000
TURN_S = 5.0
TURNS_PER_MINUTE = 10
REPLY_TOKENS = 24
REUSED_TURNS = 5
INSTRUCTIONS = "You are a helpful kiosk assistant. Answer in one short sentence."
TRANSCRIPT = "this stands in for what the visitor said in the five seconds of this turn"


def clips() -> list[np.ndarray]:
    """5 s pieces of real speech in four languages."""
    size = int(TURN_S * RATE)
    out = []
    for name in ("speech60_en.wav", "speech60_de.wav", "speech60_es.wav", "speech60_ru.wav"):
        speech = load_audio(SHARED_AUDIO / name, RATE)
        out += [speech[i : i + size] for i in range(0, len(speech) - size + 1, size)]
    return out


class Conversation:
    """A chat context and its turns' media, as the realtime session keeps them."""

    def __init__(self, engine: Phi4MMEngine, max_tokens: int = 0) -> None:
        self.engine = engine
        self.ctx = llm.ChatContext()
        self.media: dict[str, tuple[Media, ...]] = {}
        self.meter = ContextMeter()
        self.trims: list[Trim] = []
        self.meter.on("context_trimmed", self.trims.append)
        window = max_tokens or engine.context_window
        self.window = PromptWindow(
            engine, ContextOptions(max_tokens=max_tokens), lambda: window, self.meter
        )
        self.thread = f"bench-{id(self)}"
        self._pool = clips()
        self._turns = 0
        self.stages: dict[str, float] = {}
        """The latest reply's stages, in seconds."""

    def media_of(self, item_id: str) -> tuple[Media, ...]:
        return self.media.get(item_id, ())

    def add_turn(self, image: Image.Image | None = None) -> str:
        n, self._turns = self._turns, self._turns + 1
        item_id = f"u{n}"
        media = [Media(f"{item_id}-image", image=image)] if image is not None else []
        media.append(Media(f"{item_id}-audio", audio=self._pool[n % len(self._pool)]))
        self.media[item_id] = tuple(media)
        self.ctx.add_message(id=item_id, role="user", content=f"{TRANSCRIPT} {n}")
        return item_id

    def reply(self, *, thread: str | None = None) -> tuple[float, str]:
        """One request as the session makes it: seconds, and the reply it added. Its stages
        are left in ``stages``: rendering within the window, then until the first text (the
        engine's own bookkeeping and the prefill), then the rest of the decoding."""
        started = time.perf_counter()
        items = list(self.ctx.items)
        parts, trim = self.window.prepare(INSTRUCTIONS, [], items, self.media_of, lambda _: True)
        self.meter.report(trim)
        rendered = time.perf_counter()
        pieces: list[str] = []
        first_text: list[float] = []

        def on_text(text: str) -> None:
            if not first_text:
                first_text.append(time.perf_counter())
            pieces.append(text)

        self.engine.generate(
            parts,
            adapter_for([media for part in parts for media in part.media]),
            on_text=on_text,
            cancelled=threading.Event(),
            max_new_tokens=REPLY_TOKENS,
            thread=thread or self.thread,
        )
        ended = time.perf_counter()
        seconds = ended - started
        first = first_text[0] if first_text else ended
        self.stages = {
            "window_s": rendered - started,
            "to_text_s": first - rendered,
            "rest_s": ended - first,
        }
        text = "".join(pieces).strip() or "..."
        self.ctx.add_message(role="assistant", content=text)
        return seconds, text

    def grow_to(self, tokens: int) -> None:
        """Add exchanges with words for replies (no generation) until the history holds
        ``tokens``; the cache is filled by the first request after."""
        while self.meter.latest < tokens:
            for _ in range(2):
                self.add_turn()
                self.ctx.add_message(role="assistant", content="word " * REPLY_TOKENS)
            self.window.prepare(
                INSTRUCTIONS,
                [],
                list(self.ctx.items),
                self.media_of,
                lambda _: True,
            )


def by_history(engine: Phi4MMEngine, lengths: list[int]) -> list[dict[str, Any]]:
    rows = []
    talk = Conversation(engine)
    for length in lengths:
        print(f"history of {length:,} tokens ...", file=sys.stderr, flush=True)
        talk.grow_to(length)
        talk.add_turn()
        talk.reply()  # fills the cache with the whole history
        reused, stages = [], []
        for _ in range(REUSED_TURNS):
            talk.add_turn()
            reused.append(talk.reply()[0])
            stages.append(talk.stages)
        talk.add_turn()
        fresh_thread = f"fresh-{length}"
        recompute, _ = talk.reply(thread=fresh_thread)
        engine.forget(fresh_thread)
        rows.append(
            {
                "history_tokens": talk.meter.latest,
                "turn_reused_s": round(statistics.median(reused), 4),
                **{
                    f"reused_{name}": round(statistics.median(s[name] for s in stages), 4)
                    for name in stages[0]
                },
                "turn_recomputed_s": round(recompute, 4),
            }
        )
    engine.forget(talk.thread)
    base = rows[0]["turn_reused_s"]
    for row in rows:
        row["reused_vs_first"] = round(row["turn_reused_s"] / base, 2)
        row["recomputed_vs_reused"] = round(row["turn_recomputed_s"] / row["turn_reused_s"], 1)
    return rows


def camera_frame(minute: int) -> Image.Image:
    """A 640x480 frame that changes every minute (its tokens depend on its size only)."""
    pixels = np.random.default_rng(minute).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def simulated_hour(engine: Phi4MMEngine, minutes: int, window: int) -> dict[str, Any]:
    talk = Conversation(engine, window)
    times, trim_turns, peak = [], [], 0
    for turn in range(minutes * TURNS_PER_MINUTE):
        minute, first_of_minute = divmod(turn, TURNS_PER_MINUTE)
        talk.add_turn(camera_frame(minute) if first_of_minute == 0 else None)
        trims_before = len(talk.trims)
        seconds, _ = talk.reply()
        times.append(seconds)
        peak = max(peak, talk.meter.latest)
        if len(talk.trims) > trims_before:
            trim_turns.append(turn)
        if turn % 60 == 59:
            print(
                f"minute {minute + 1}: {talk.meter.latest:,} tokens, median turn "
                f"{statistics.median(times):.3f} s, {len(talk.trims)} trims",
                file=sys.stderr,
                flush=True,
            )
    framed = set(range(0, len(times), TURNS_PER_MINUTE))
    others = {i: t for i, t in enumerate(times) if i not in trim_turns and i not in framed}
    median = statistics.median(others.values())
    slowest = max(others, key=others.__getitem__)
    engine.forget(talk.thread)
    return {
        "turns": len(times),
        "window_tokens": window or engine.context_window,
        "peak_tokens": peak,
        "trims": [
            {
                "minute": round(turn / TURNS_PER_MINUTE, 1),
                **vars(trim),
                "turn_s": round(times[turn], 3),
            }
            for turn, trim in zip(trim_turns, talk.trims, strict=True)
        ],
        "median_turn_s": round(median, 4),
        "median_turn_with_frame_s": round(
            statistics.median(times[i] for i in framed if i not in trim_turns), 4
        ),
        "slowest_other_turn_s": round(others[slowest], 4),
        "slowest_other_turn_minute": round(slowest / TURNS_PER_MINUTE, 1),
        "slowest_other_vs_median": round(others[slowest] / median, 2),
        "turns_over_2x_median": sum(t > 2 * median for t in others.values()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,4096,16384,65536,100000")
    parser.add_argument("--minutes", type=int, default=60, help="of simulated conversation")
    parser.add_argument(
        "--window", type=int, default=0, help="simulated run's window (default: the model's)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    try:
        lengths = sorted(int(n) for n in args.lengths.split(","))
    except ValueError:
        parser.error("--lengths takes token counts separated by commas, e.g. 1024,4096")
    from tests.tiny_phi4mm import build_tiny_phi4mm

    with tempfile.TemporaryDirectory() as folder:
        engine = Phi4MMEngine(
            Phi4MMOptions(
                model=str(build_tiny_phi4mm(Path(folder) / "tiny")), max_new_tokens=REPLY_TOKENS
            )
        )
        engine.load()
        gc.freeze()  # as the session factory does once its models are loaded (agent/session.py)
        report = {
            "model": "tiny random-weight Phi-4-MM, CPU",
            "by_history": by_history(engine, lengths),
            "simulated": simulated_hour(engine, args.minutes, args.window)
            if args.minutes
            else None,
        }
    print_tables(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


def print_tables(report: dict[str, Any]) -> None:
    print(
        "history tokens | turn, cache reused | turn, recomputed | reused vs first | "
        "recomputed vs reused"
    )
    for row in report["by_history"]:
        print(
            f"{row['history_tokens']:>14,} | {row['turn_reused_s']:>16.3f} s | "
            f"{row['turn_recomputed_s']:>14.3f} s | {row['reused_vs_first']:>15.2f}x | "
            f"{row['recomputed_vs_reused']:>19.1f}x"
        )
    print("\nreused turn, medians: rendering in the window | then to the first text | the rest")
    for row in report["by_history"]:
        print(
            f"{row['history_tokens']:>14,} | {row['reused_window_s']:>8.3f} s | "
            f"{row['reused_to_text_s']:>8.3f} s | {row['reused_rest_s']:>8.3f} s"
        )
    if report["simulated"]:
        print(json.dumps(report["simulated"], indent=2))


if __name__ == "__main__":
    main()

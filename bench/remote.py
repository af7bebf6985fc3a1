"""Time to first token and throughput of an OpenAI-compatible server with 1, 4 and 16
conversations at once: how many callers one server (or one GPU) holds.

    .venv/bin/python bench/remote.py --base-url URL [--model NAME] [--concurrency 1,4,16]
        [--turns 3] [--json PATH]

Each conversation is what the remote engine sends: the desktop prompt with its tools, then
spoken-assistant questions one turn after another, each reply kept in the history as a real
conversation's is. K conversations run at once, each starting when the last one did. Per K:
the first token's median and p90 (from sending the request), each reply's decoding rate
(tokens after the first, per second, median), the server's total output rate over the run,
and failed requests. The key comes from ``VOICE_AGENT_API_KEY``, as for the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import openai
from livekit.agents import llm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.prompt import untitled  # noqa: E402
from agent.profile import load_profile  # noqa: E402
from prompts import load_prompt  # noqa: E402
from tools import resolve_tools  # noqa: E402

QUESTIONS = (
    "What is the tallest mountain in Europe?",
    "How long does it take to boil an egg?",
    "Why is the sky blue?",
    "Give me a tip for sleeping better.",
)
MAX_TOKENS = 48


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.9 * len(values)) - 1)]


async def conversation(
    client: openai.AsyncOpenAI, model: str, tools: list[dict], turns: int
) -> list[dict[str, float]]:
    """One conversation's turns: first token (s), decoding rate (tokens/s), tokens; or failed."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": load_prompt("desktop")}]
    measured = []
    for question in (QUESTIONS * turns)[:turns]:
        messages.append({"role": "user", "content": question})
        sent, first, pieces, reply = time.perf_counter(), None, 0, []
        try:
            stream = await client.chat.completions.create(  # type: ignore[call-overload]
                model=model, messages=messages, tools=tools, max_tokens=MAX_TOKENS,
                temperature=0, stream=True,
            )  # fmt: skip
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        if choice.delta.content or choice.delta.tool_calls:
                            first = first or time.perf_counter()
                            pieces += 1
                            reply.append(choice.delta.content or "")
        except openai.OpenAIError as e:
            print(f"  a request failed: {type(e).__name__}", file=sys.stderr)
            measured.append({"failed": 1.0})
            continue
        done = time.perf_counter()
        messages.append({"role": "assistant", "content": "".join(reply)})
        if first is None:
            measured.append({"failed": 1.0})
            continue
        rate = (pieces - 1) / (done - first) if pieces > 1 and done > first else 0.0
        measured.append({"first_token_s": first - sent, "rate": rate, "tokens": pieces})
    return measured


async def measure(
    base_url: str, model: str, concurrency: list[int], turns: int
) -> dict[str, dict[str, float]]:
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key=os.environ.get("VOICE_AGENT_API_KEY") or "none", max_retries=0
    )
    if not model:
        model = (await client.models.list()).data[0].id
    profile = load_profile("desktop")
    tools = untitled(
        llm.ToolContext(resolve_tools(profile.tools)).parse_function_tools("openai", strict=False)
    )
    await conversation(client, model, tools, 1)  # the server reads the prompt once, unmeasured
    figures: dict[str, dict[str, float]] = {}
    for k in concurrency:
        started = time.perf_counter()
        runs = await asyncio.gather(*(conversation(client, model, tools, turns) for _ in range(k)))
        wall = time.perf_counter() - started
        turns_done = [turn for run in runs for turn in run if "failed" not in turn]
        firsts = [turn["first_token_s"] for turn in turns_done]
        figures[str(k)] = {
            "requests": len(turns_done),
            "failed": sum(1 for run in runs for turn in run if "failed" in turn),
            "first_token_median_s": round(statistics.median(firsts), 3) if firsts else 0.0,
            "first_token_p90_s": round(p90(firsts), 3) if firsts else 0.0,
            "decode_tokens_per_s": round(statistics.median(t["rate"] for t in turns_done), 1)
            if turns_done
            else 0.0,
            "total_tokens_per_s": round(sum(t["tokens"] for t in turns_done) / wall, 1),
        }
        print(f"  {k} at once: done in {wall:.0f} s", file=sys.stderr, flush=True)
    await client.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="", help="the server's first model if not given")
    parser.add_argument("--concurrency", default="1,4,16", help="conversations at once")
    parser.add_argument("--turns", type=int, default=3, help="turns per conversation")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    try:
        concurrency = [int(k) for k in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency: not a list of numbers: {args.concurrency!r}")
    try:
        figures = asyncio.run(measure(args.base_url, args.model, concurrency, args.turns))
    except openai.OpenAIError as e:
        sys.exit(f"bench/remote.py: {args.base_url} does not answer: {type(e).__name__}")
    print(
        "\n| at once | requests | failed | first token median / p90 | decoding, each reply "
        "| the server's output |"
    )
    print("|---|---|---|---|---|---|")
    for k, row in figures.items():
        print(
            f"| {k} | {row['requests']:.0f} | {row['failed']:.0f} | "
            f"{row['first_token_median_s']:.2f} / {row['first_token_p90_s']:.2f} s | "
            f"{row['decode_tokens_per_s']:.1f} tokens/s | "
            f"{row['total_tokens_per_s']:.1f} tokens/s |"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

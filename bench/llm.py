"""The lite engine's LLM on each runtime, in the same run: first token and decoding speed.

    .venv/bin/python bench/llm.py [--requests 6] [--model NAME] [--runtime R ...] [--json PATH]

Each runtime loads a bundled model (SmolLM2-135M unless ``--model`` names the other) and
answers the same requests (a system prompt and a new question each time, so only the question
is prefilled: the system turn is cached), up to 48 tokens. The first request warms up and is
left out; medians of the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from livekit.agents import llm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.llm import LocalLLM, LocalLLMOptions  # noqa: E402
from agent.models import BUNDLED_LLMS  # noqa: E402

RUNTIMES = ("llama.cpp", "transformers")
MODEL = "SmolLM2-135M-Instruct"
"""The small bundled model: transformers would spend minutes de-quantising the default one."""
SYSTEM = "You are a helpful voice assistant."


async def measure(runtime: str, requests: int, model_name: str) -> dict[str, float]:
    options = LocalLLMOptions(model=model_name, max_new_tokens=48, runtime=runtime)  # type: ignore[arg-type]
    model = LocalLLM(options)
    await asyncio.to_thread(model.load)
    firsts, rates = [], []
    for i in range(requests):
        ctx = llm.ChatContext()
        ctx.add_message(role="system", content=SYSTEM)
        ctx.add_message(role="user", content=f"Tell me a short story about cat number {i}.")
        started, first, usage = time.perf_counter(), None, None
        async for chunk in model.chat(chat_ctx=ctx, tools=[]):
            if chunk.delta and chunk.delta.content and first is None:
                first = time.perf_counter() - started
            usage = chunk.usage or usage
        total = time.perf_counter() - started
        if i and first is not None and usage is not None and usage.completion_tokens > 1:
            firsts.append(first)
            rates.append((usage.completion_tokens - 1) / (total - first))
    return {
        "first_token_s": round(statistics.median(firsts), 3),
        "decode_tokens_per_s": round(statistics.median(rates), 1),
        "requests": len(firsts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--model", choices=BUNDLED_LLMS, default=MODEL)
    parser.add_argument("--runtime", choices=RUNTIMES, action="append", help="default: both")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    runtimes = args.runtime or RUNTIMES
    report = {r: asyncio.run(measure(r, args.requests, args.model)) for r in runtimes}
    print(f"{'runtime':<14} {'first token s':>14} {'decode tok/s':>13}")
    for runtime, row in report.items():
        print(f"{runtime:<14} {row['first_token_s']:>14.3f} {row['decode_tokens_per_s']:>13.1f}")
    if len(report) == len(RUNTIMES):
        base = report["transformers"]["decode_tokens_per_s"]
        print(f"llama.cpp decodes {report['llama.cpp']['decode_tokens_per_s'] / base:.1f}x faster")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The lite engine's LLM on each runtime, in the same run: first token and decoding speed.

    .venv/bin/python bench/llm.py [--requests 6] [--model NAME] [--runtime R ...] [--json PATH]
    .venv/bin/python bench/llm.py --ladder [--requests 6] [--json PATH]

Each runtime loads a bundled model (SmolLM2-135M unless ``--model`` names the other) and
answers the same requests (a system prompt and a new question each time, so only the question
is prefilled: the system turn is cached), up to 48 tokens. The first request warms up and is
left out; medians of the rest.

``--ladder`` puts the bundled Qwen models side by side on llama.cpp: each as shipped (Q4_K_M)
and requantised to Q8_0, on every core and on half of them, behind the desktop profile's
prompt: the time to the first 8 tokens (a short first clause) and the decoding speed after it.
It is what ``agent/models.py`` chooses the default model and ``llama_cpp.py`` the quantisation
by.
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

import llama_cpp
from livekit.agents import llm
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.llama_cpp import requantised  # noqa: E402
from agent.engines.lite.llm import LocalLLM, LocalLLMOptions  # noqa: E402
from agent.models import BUNDLED_LLMS  # noqa: E402
from agent.profile import load_profile  # noqa: E402

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


LADDER = ("Qwen2.5-Coder-0.5B-Instruct", "Qwen2.5-Coder-1.5B-Instruct")
QUESTIONS = (
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "Tell me a joke.",
    "Which ocean is the largest?",
    "How many days are in a leap year?",
    "Who painted the Mona Lisa?",
)
CLAUSE_TOKENS = 8


def rung(gguf: Path, tokenizer: Any, threads: int, requests: int) -> dict[str, float]:
    """The first clause's time and the decoding speed of ``gguf`` on ``threads`` threads."""
    model = llama_cpp.Llama(
        model_path=str(gguf), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    system = [{"role": "system", "content": load_profile("desktop").instructions()}]
    clauses, rates = [], []
    for question in (QUESTIONS * requests)[: requests + 1]:
        messages = [*system, {"role": "user", "content": question}]
        ids = tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=False
        )
        started, clause, count = time.perf_counter(), 0.0, 0
        for token in model.generate(ids, temp=0, reset=True):  # the system turn stays cached
            count += 1
            if count == CLAUSE_TOKENS:
                clause = time.perf_counter() - started
            if token == model.token_eos() or count >= 48:
                break
        total = time.perf_counter() - started
        if clause and count > CLAUSE_TOKENS:
            clauses.append(clause)
            rates.append((count - CLAUSE_TOKENS) / (total - clause))
    del model
    return {
        "first_clause_s": round(statistics.median(clauses[1:]), 3),
        "decode_tokens_per_s": round(statistics.median(rates[1:]), 1),
    }


def ladder(requests: int) -> dict[str, dict[str, float]]:
    cores = os.cpu_count() or 1
    report = {}
    for name in LADDER:
        shipped = BUNDLED_LLMS[name]()
        tokenizer = AutoTokenizer.from_pretrained(str(shipped.parent), gguf_file=shipped.name)
        for quantisation, gguf in (("Q4_K_M", shipped), ("Q8_0", requantised(shipped))):
            for threads in sorted({cores, max(1, cores // 2)}, reverse=True):
                row = rung(gguf, tokenizer, threads, requests)
                report[f"{name} {quantisation} {threads} threads"] = row
                print(
                    f"{name:<28} {quantisation:<7} {threads:>2} threads: first clause "
                    f"{row['first_clause_s']:.3f} s, {row['decode_tokens_per_s']:.1f} tok/s",
                    flush=True,
                )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--model", choices=BUNDLED_LLMS, default=MODEL)
    parser.add_argument("--runtime", choices=RUNTIMES, action="append", help="default: both")
    parser.add_argument(
        "--ladder", action="store_true", help="the Qwen models, quantisations, cores"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.ladder:
        figures = ladder(args.requests)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return
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

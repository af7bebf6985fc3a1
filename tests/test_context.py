"""The context window keeps a long conversation within its token budget: trimmed rarely, in one
step, oldest exchanges first, instructions never, a tool call never without its result."""

from __future__ import annotations

import json
import math

import pytest
from livekit.agents import llm

from agent.context import ContextOptions, ContextWindow, MediaKind, Request
from agent.engines.lite.llm import LocalLLM, LocalLLMOptions
from tests.conftest import DEMO, voice_agent

WINDOW, RESERVE = 2000, 50


def tokens(request: Request) -> int:
    """A stand-in for a tokenizer and a processor, 4 per item plus a word each, and a turn's
    media at their price until they are read as text: 400 turns through the real chat template
    would take minutes, and the policy takes any exact counter; the real tokenizers are
    exercised below and in test_phi4mm_context.py."""
    total = 0
    for item in request.items:
        text = item.text_content if isinstance(item, llm.ChatMessage) else str(item)
        total += 4 + len((text or "").split())
        as_text = request.as_text.get(item.id, frozenset())
        total += sum(MEDIA_TOKENS[kind] for kind in media(item.id) if kind not in as_text)
    return total


MEDIA_TOKENS = {"image": 60, "audio": 25}


def media(item_id: str) -> frozenset[MediaKind]:
    """Every fifth question comes with an image, every question but the sixth ones is spoken."""
    if not item_id.startswith("q"):
        return frozenset()
    n = int(item_id[1:])
    kinds: set[MediaKind] = set() if n % 6 == 0 else {"audio"}
    return frozenset(kinds | ({"image"} if n % 5 == 0 else set()))


def conversation(turns: int) -> list[llm.ChatItem]:
    """Instructions, then user turns answered by a reply or by a tool call, its result and a
    reply; a late developer message too."""
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You are a kiosk. " * 20)
    for n in range(turns):
        ctx.add_message(id=f"q{n}", role="user", content=f"question {n} " + "word " * (n % 7 * 5))
        if n % 3 == 0:
            ctx.items.append(llm.FunctionCall(call_id=f"c{n}", name="get_time", arguments="{}"))
            ctx.items.append(
                llm.FunctionCallOutput(
                    call_id=f"c{n}", name="get_time", output="noon", is_error=False
                )
            )
        ctx.add_message(role="assistant", content=f"answer {n} " + "word " * 12)
        if n == 40:
            ctx.add_message(role="developer", content="Answer in German from now on.")
    return list(ctx.items)


def test_hundreds_of_turns_stay_in_the_budget_trimmed_rarely_and_in_order():
    window = ContextWindow(ContextOptions(trigger=0.8, target=0.5), WINDOW, RESERVE)
    everything = conversation(400)
    users = [i for i, item in enumerate(everything) if getattr(item, "role", "") == "user"]
    trims = []
    for turn, end in enumerate(users[1:] + [len(everything)]):
        request = window.kept(everything[:end])
        if window.needs_trim(tokens(request)):
            request, trim = window.trim(request, tokens, media)
            trims.append((turn, trim))
            assert trim.after + RESERVE <= 0.5 * WINDOW < trim.before + RESERVE
            assert_cut_in_order(request, trim)
        items = request.items
        assert tokens(request) + RESERVE <= 0.8 * WINDOW, (
            "never past the trigger, let alone the window"
        )
        pinned = [i for i in everything[:end] if getattr(i, "role", "") in ("system", "developer")]
        assert [i for i in items if i in pinned] == pinned, "instructions are never trimmed"
        conversational = [i for i in items if i not in pinned]
        assert conversational[0].role == "user", "what is kept starts at a user turn"
        calls = {i.call_id for i in items if isinstance(i, llm.FunctionCall)}
        results = {i.call_id for i in items if isinstance(i, llm.FunctionCallOutput)}
        assert calls == results, "a tool call and its result stay or leave together"
        assert items[-1] is everything[end - 1], "the newest turn is always there"
        latest = [i for i in items if getattr(i, "role", "") == "user"][-1]
        assert latest.id not in request.as_text, "the latest turn keeps its images and audio"
    assert 10 <= len(trims) <= 60, trims
    assert all(trim.images for _, trim in trims), "images go first"
    assert any(trim.audio for _, trim in trims) and any(trim.turns for _, trim in trims)
    gaps = [b[0] - a[0] for a, b in zip(trims, trims[1:], strict=False)]
    assert min(gaps) >= 5, "one trim buys many turns"


def assert_cut_in_order(request: Request, trim) -> None:
    """Images go before any audio, audio before any exchange, and each oldest first."""
    older = [i for i in request.items if getattr(i, "role", "") == "user"][:-1]

    def live(kind: MediaKind) -> list[bool]:
        """Per older turn carrying ``kind``: is it still there?"""
        return [
            kind not in request.as_text.get(i.id, frozenset()) for i in older if kind in media(i.id)
        ]

    for kind in ("image", "audio"):
        assert live(kind) == sorted(live(kind)), f"{kind} leaves oldest first"
    if trim.audio:
        assert not any(live("image")), "no audio went while an older image was kept"
    if trim.turns:
        assert not any(live("image") + live("audio")), "no turn went while media could go"


def test_a_trim_asks_the_counter_once_per_candidate():
    """A remote engine's count is a round trip to its server: fitting a long conversation asks
    it for the whole request and a binary search's candidates, never one of them twice."""
    window = ContextWindow(ContextOptions(trigger=0.8, target=0.5), WINDOW, RESERVE)
    asked: list[str] = []

    def counted(request: Request) -> int:
        asked.append(json.dumps([item.id for item in request.items] + sorted(request.as_text)))
        return tokens(request)

    items = conversation(120)
    request, _, total, trim = window.fit(items, lambda request: request, counted, media)
    assert trim is not None and total == trim.after == tokens(request)
    assert len(asked) == len(set(asked)), "no candidate counted twice"
    assert len(asked) <= 2 + math.ceil(math.log2(len(items))), asked


def test_a_turn_larger_than_the_target_is_kept_alone():
    window = ContextWindow(ContextOptions(), 200, RESERVE)
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="Be brief.")
    ctx.add_message(role="user", content="hello")
    ctx.add_message(role="user", content="word " * 90)
    request, trim = window.trim(Request(list(ctx.items)), tokens)
    assert [getattr(i, "role", "") for i in request.items] == ["system", "user"]
    assert trim.turns == 1


def test_bad_shares_are_refused():
    with pytest.raises(ValueError, match="target < trigger"):
        ContextOptions(trigger=0.5, target=0.6)


async def test_the_lite_engine_trims_with_its_own_tokenizer():
    model = LocalLLM(LocalLLMOptions(context=ContextOptions(max_tokens=512)))
    model.load()
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You are a helpful voice assistant.")
    trimmed = []
    for n in range(30):
        ctx.add_message(role="user", content=f"Tell me fact number {n} about the sea.")
        ids, trim = model.prepare(ctx, [])
        trimmed += [trim] if trim else []
        assert len(ids) + model.options.max_new_tokens <= 0.8 * 512
        ctx.add_message(role="assistant", content=f"Fact {n}: the sea is salty and very deep.")
    assert trimmed and all(t.after < t.before for t in trimmed)
    assert model.runtime.decode(ids).startswith("system\nYou are a helpful voice assistant.")


def test_a_run_with_a_small_window_trims_and_keeps_answering(tmp_path):
    result = voice_agent(
        "run-file", str(DEMO), "--out", str(tmp_path), "-q", "--max-context", "1350", "--speed", "2"
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert "context_trimmed" in kinds
    replies = [e for e in events if e["type"] == "agent_reply"]
    assert len(replies) == 3 and all(r["text"] for r in replies), "every question answered"
    assert kinds.index("context_trimmed") < max(
        i for i, k in enumerate(kinds) if k == "agent_reply"
    )
    turns = [e for e in events if e["type"] == "user_turn"]
    # the desktop prompt with its nine tools is 990 tokens; a template's answer reads none
    counted = [e for e in replies + turns if "context_tokens" in e]
    assert len(counted) >= len(turns) and all(0 < e["context_tokens"] <= 1350 for e in counted)
    trim = next(e for e in events if e["type"] == "context_trimmed")
    assert trim["after"] < trim["before"] and trim["turns"] >= 1

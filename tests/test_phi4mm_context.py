"""Phi-4-multimodal's window: spoken turns, images and tool calls counted by the processor and
trimmed in the documented order, and a KV cache that gives the next token the same logits as a
full recompute after a trim, across LongRoPE's 4,096 switch and after an interrupted reply."""

from __future__ import annotations

import json
import threading
import uuid

import numpy as np
import pytest
import torch
from livekit.agents import llm
from PIL import Image

from agent.context import ContextMeter, ContextOptions, Trim
from agent.engines.phi4mm.engine import Phi4MMEngine, Phi4MMOptions
from agent.engines.phi4mm.kv_cache import RoomyLayer
from agent.engines.phi4mm.parts import Media, PromptPart
from agent.engines.phi4mm.prompt import IMAGE_NOTE
from agent.engines.phi4mm.reuse import PASS_TOKENS
from agent.engines.phi4mm.turn_media import adapter_for
from agent.engines.phi4mm.window import PromptWindow
from audio import load_audio
from tests.conftest import DEMO, SHARED_AUDIO, voice_agent

MAX_NEW = 8
# fp32 on the CPU: a reused cache and a fresh pass add the same products in other orders
# (chunked prefill against one pass), which moves the tiny model's logits (|x| < 2) by ~1e-6.
# A wrong cache (a lost token, the other RoPE factors, another clip's keys) moves them by >1e-2.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def engine(tiny_phi4mm) -> Phi4MMEngine:
    engine = Phi4MMEngine(Phi4MMOptions(model=str(tiny_phi4mm), max_new_tokens=MAX_NEW))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SHARED_AUDIO / "jfk.flac", 16000)


def fresh(engine: Phi4MMEngine, parts: list[PromptPart], adapter="speech") -> torch.Tensor:
    """The logits of reading the whole request anew, in a conversation of its own."""
    thread = f"fresh-{uuid.uuid4().hex}"
    logits, stats = engine.next_token_logits(parts, adapter, thread=thread)
    engine.forget(thread)
    assert stats.cached_tokens == 0
    return logits


def assert_cache_is_right(engine, parts, adapter="speech", *, thread="chat") -> int:
    """The reused cache's next-token logits equal a full recompute's; returns tokens reused."""
    warm, stats = engine.next_token_logits(parts, adapter, thread=thread)
    cold = fresh(engine, parts, adapter)
    difference = (warm - cold).abs().max().item()
    assert difference <= TOLERANCE, f"reused cache is off by {difference}"
    return stats.cached_tokens


def user(text: str, key: str, clip: np.ndarray) -> PromptPart:
    return PromptPart(f"<|user|><|audio_1|>{text}<|end|>", (Media(key, audio=clip),))


def test_the_cache_stays_right_before_and_after_longrope_4096(engine, speech):
    system = PromptPart("<|system|>You are a helpful assistant.<|end|>")
    words = "one two three four " * 60
    history = [system]
    crossed = False
    for n in range(40):
        history += [user(words, f"t{n}", speech[: 16000 * (1 + n % 3)])]
        parts = [*history, PromptPart("<|assistant|>")]
        tokens = sum(engine.count_tokens(p) for p in parts)
        reused = assert_cache_is_right(engine, parts, thread="rope")
        if tokens + MAX_NEW <= engine.original_context:
            heard_before = sum(engine.count_tokens(p) for p in history[:-2])
            assert reused >= heard_before, "short of 4,096 the history is reused"
            last_short = tokens
        elif not crossed:
            crossed = True
            assert reused == 0, "the switch to the long factors recomputes once"
            assert last_short > engine.original_context - 1000, "checked just before the switch"
        else:
            assert reused > engine.original_context, "past the switch, reuse resumes"
            break
        history += [PromptPart(f"<|assistant|>answer {n}<|end|>")]
    assert crossed
    engine.forget("rope")


def test_an_interrupted_reply_leaves_the_cache_true_to_what_was_heard(engine, speech):
    system = PromptPart("<|system|>Be brief.<|end|>")
    first = [system, user("", "i1", speech[:32000]), PromptPart("<|assistant|>")]

    class HeardTwo(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            self.pieces: list[str] = []

        def is_set(self) -> bool:
            return len(self.pieces) >= 3

    barge_in = HeardTwo()
    engine.generate(first, "speech", on_text=barge_in.pieces.append, cancelled=barge_in, thread="i")
    heard = "".join(barge_in.pieces[:2])  # the user spoke over the third piece
    follow_up = [*first[:2], PromptPart(f"<|assistant|>{heard}<|end|>")]
    follow_up += [user("", "i2", speech[32000:64000]), PromptPart("<|assistant|>")]
    reused = assert_cache_is_right(engine, follow_up, thread="i")
    assert reused >= sum(engine.count_tokens(p) for p in first[:2]), "the heard turn is reused"
    engine.forget("i")


class Conversation:
    """A kiosk conversation as the realtime session keeps it: spoken turns (each with its
    transcript once heard), a camera frame every fifth turn, a tool call every fourth."""

    def __init__(self, speech: np.ndarray) -> None:
        self.ctx = llm.ChatContext()
        self.ctx.add_message(role="system", content="You are a kiosk. Answer in a sentence.")
        self.media: dict[str, tuple[Media, ...]] = {}
        self._speech = speech
        self._frame = Image.fromarray(
            np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
        )

    def user_turn(self, n: int) -> str:
        item_id = f"u{n}"
        start = 16000 * (n % 8)
        clip = self._speech[start : start + 16000 + 4000 * (n % 3)]
        media = [Media(f"{item_id}-image", image=self._frame)] if n % 5 == 0 else []
        self.media[item_id] = (*media, Media(f"{item_id}-audio", audio=clip))
        self.ctx.add_message(id=item_id, role="user", content=f"spoken words {n}")
        return item_id

    def reply(self, n: int) -> None:
        if n % 4 == 0:
            call = llm.FunctionCall(call_id=f"c{n}", name="get_time", arguments="{}")
            self.ctx.items.append(call)
            self.ctx.items.append(
                llm.FunctionCallOutput(
                    call_id=f"c{n}", name="get_time", output="It is noon.", is_error=False
                )
            )
        self.ctx.add_message(role="assistant", content=f"Here is answer {n}.")

    def media_of(self, item_id: str) -> tuple[Media, ...]:
        return self.media.get(item_id, ())


def test_a_long_spoken_conversation_with_images_stays_in_its_window(engine, speech):
    window, trims = 4000, []
    meter = ContextMeter()
    meter.on("context_trimmed", trims.append)
    prompt = PromptWindow(engine, ContextOptions(max_tokens=window), lambda: window, meter)
    talk = Conversation(speech)
    for n in range(80):
        latest = talk.user_turn(n)
        parts, trim = prompt.prepare("", [], list(talk.ctx.items), talk.media_of, lambda _: True)
        tokens = sum(engine.count_tokens(p) for p in parts)
        assert tokens + MAX_NEW <= 0.8 * window, "never past the trigger"
        assert meter.after_turn[latest] == tokens, "the meter has the request's exact size"
        text = "".join(p.text for p in parts)
        assert text.startswith("<|system|>You are a kiosk."), "instructions are never trimmed"
        assert parts[-2].media == talk.media[latest], "the latest turn keeps its image and audio"
        if trim is not None:
            trims_order(trim, parts)
            assert trim.after + MAX_NEW <= 0.5 * window
            meter.emit("context_trimmed", trim)
            media = [m for p in parts for m in p.media]
            assert_cache_is_right(engine, parts, adapter_for(media), thread="long")
        talk.reply(n)
        assert text.count("<|tool_call|>") == text.count("<|tool|>It is noon.")
    assert 3 <= len(trims) <= 12, trims
    assert trims[0].images and not trims[0].turns, "images go before anything else"
    assert any(t.audio for t in trims) and any(t.turns for t in trims), trims
    engine.forget("long")


def trims_order(trim: Trim, parts: list[PromptPart]) -> None:
    """An older turn still shown an image means no audio or turn went; audio still heard in an
    older turn means no turn went."""
    older = parts[1:-2]
    images_left = any(m.image is not None for p in older for m in p.media)
    audio_left = any(m.audio is not None for p in older for m in p.media)
    if trim.audio:
        assert not images_left
    if trim.turns:
        assert not images_left and not audio_left
    if trim.images and not trim.turns:
        assert IMAGE_NOTE in "".join(p.text for p in older), "an image leaves a note"


def test_an_untranscribed_turn_keeps_its_audio(engine, speech):
    talk = Conversation(speech)
    for n in range(3):
        talk.user_turn(n)
        talk.reply(n)
    talk.user_turn(3)
    prompt = PromptWindow(engine, ContextOptions(max_tokens=600), lambda: 600, ContextMeter())
    parts, trim = prompt.prepare("", [], list(talk.ctx.items), talk.media_of, lambda _: False)
    assert trim is not None and trim.audio == 0, "no transcript yet: the audio cannot go"
    heard = [p for p in parts if any(m.audio is not None for m in p.media)]
    assert all("spoken words" not in p.text for p in heard)


def test_a_phi4mm_run_with_a_small_window_trims_and_keeps_answering(tiny_phi4mm, tmp_path):
    # the clock alone, as the desktop offered before its eight tools (1,246 tokens) outgrew 700
    profile = tmp_path / "clock.toml"
    profile.write_text(
        'name = "clock"\nprompt = "desktop"\ntools = ["get_time"]\n[voice]\nenglish = "espeak"\n'
    )
    result = voice_agent(
        "run-file",
        str(DEMO),
        "--out",
        str(tmp_path),
        "-q",
        "--speed",
        "2",
        "--engine",
        "phi4mm",
        "--model",
        str(tiny_phi4mm),
        "--max-context",
        "700",
        "--profile",
        str(profile),
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    trims = [e for e in events if e["type"] == "context_trimmed"]
    replies = [e for e in events if e["type"] == "agent_reply"]
    turns = [e for e in events if e["type"] == "user_turn"]
    assert trims and all(t["after"] < t["before"] for t in trims)
    assert len(replies) >= 3 and all(r["text"] for r in replies), "every question answered"
    assert all(0 < e["context_tokens"] <= 700 for e in replies + turns)


def test_caches_past_the_memory_budget_go_least_recently_used_first(engine, tiny_phi4mm, speech):
    def engine_with_room_for(tokens: int) -> Phi4MMEngine:
        gib = tokens * engine.kv_bytes_per_token / 2**30
        return Phi4MMEngine(Phi4MMOptions(model=str(tiny_phi4mm), kv_cache_gib=gib))

    system = PromptPart("<|system|>You are a helpful assistant.<|end|>")
    request = [
        system,
        user("one two three four " * 60, "b1", speech[:16000]),
        PromptPart("<|assistant|>"),
    ]
    size = sum(engine.count_tokens(p) for p in request)

    tight = engine_with_room_for(int(size * 1.5))
    tight.next_token_logits(request, "speech", thread="a")
    tight.next_token_logits(request, "vision", thread="a")  # the same talk, now with a frame
    assert list(tight.cached_tokens()) == [("a", "vision")], "the older adapter's cache went"
    _, again = tight.next_token_logits(request, "speech", thread="a")
    assert again.cached_tokens == 0, "switching back prefills the conversation again"

    roomy = engine_with_room_for(size * 3)
    roomy.next_token_logits(request, "speech", thread="a")
    roomy.next_token_logits(request, "speech", thread="b")
    _, again = roomy.next_token_logits(request, "speech", thread="a")
    assert again.cached_tokens == again.prompt_tokens - 1, "within the budget both stay"


def test_a_decoded_token_is_written_after_the_history_not_into_a_copy_of_it():
    """transformers' own cache layer concatenates: each token would copy the whole history."""
    history_keys, history_values = torch.randn(1, 2, 1000, 8), torch.randn(1, 2, 1000, 8)
    layer = RoomyLayer()
    layer.update(history_keys, history_values)
    storage = layer.keys.data_ptr()
    steps = [(torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8)) for _ in range(50)]
    for keys, values in steps:
        layer.update(keys, values)
    assert layer.keys.data_ptr() == storage, "the same memory, not a new copy"
    assert torch.equal(layer.keys[..., :1000, :], history_keys)
    assert torch.equal(layer.values[..., 1000:, :], torch.cat([v for _, v in steps], dim=-2))

    layer.crop(-30)  # an interrupted reply: its unheard tokens leave the cache
    retold = torch.randn(1, 2, 5, 8)
    keys, values = layer.update(retold, retold)
    assert keys.shape[-2] == 1025 and torch.equal(keys[..., 1020:, :], retold)
    assert torch.equal(values[..., :1000, :], history_values)

    grown, _ = layer.update(torch.randn(1, 2, 600, 8), torch.randn(1, 2, 600, 8))
    assert grown.shape[-2] == 1625 and torch.equal(grown[..., :1000, :], history_keys), (
        "outgrowing its room, the cache moves with its history"
    )


def test_a_spoken_turn_scans_the_history_once_and_no_pass_holds_two_clips(engine, speech):
    """Every prefill pass attends over the whole history, so a turn's passes are its cost at
    100K tokens; two clips in one pass would be encoded together, unlike when cached."""
    passes: list[tuple[int, int]] = []  # (tokens, clips)

    def record(_model, _args, kwargs):
        features = kwargs.get("audio_input_features")
        passes.append((kwargs["input_ids"].shape[1], 0 if features is None else len(features)))

    system = PromptPart("<|system|>Be brief.<|end|>")
    talk = [system, user("", "p1", speech[:16000]), PromptPart("<|assistant|>Sure.<|end|>")]
    talk += [user("", "p2", speech[16000:32000]), PromptPart("<|assistant|>")]
    hook = engine.loaded.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        engine.next_token_logits(talk, "speech", thread="p")
        assert [clips for _, clips in passes] == [1, 1], "each clip in a pass alone"

        passes.clear()
        talk[-1:] = [PromptPart("<|assistant|>Fine.<|end|>"), user("", "p3", speech[:8000])]
        talk.append(PromptPart("<|assistant|>"))
        engine.next_token_logits(talk, "speech", thread="p")
        assert [clips for _, clips in passes] == [1], "the reply's end and the turn: one pass"

        passes.clear()
        typed = PromptPart("<|user|>" + "one two three four " * 700 + "<|end|>")
        talk[-1:] = [typed, PromptPart("<|assistant|>")]
        engine.next_token_logits(talk, "speech", thread="p")
        assert len(passes) >= 3 and max(tokens for tokens, _ in passes) <= PASS_TOKENS, (
            "a long text goes in passes of bounded size (each one's mask is tokens x history)"
        )
    finally:
        hook.remove()
    assert_cache_is_right(engine, talk, thread="p")
    engine.forget("p")

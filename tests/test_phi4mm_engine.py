"""The Phi-4-multimodal engine on a tiny random-weight checkpoint, loaded through the real
transformers + peft code path (the real weights cannot be fetched here)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from huggingface_hub import constants

from agent.engines.phi4mm.checkpoint import (
    WeightsNotFoundError,
    load_checkpoint,
    pick_attention,
    pick_device,
    resolve_checkpoint,
)
from agent.engines.phi4mm.engine import Phi4MMEngine, Phi4MMOptions
from agent.engines.phi4mm.parts import Media, PromptPart
from audio import load_audio
from tests.conftest import SHARED_AUDIO

SYSTEM = PromptPart("<|system|>You are a helpful assistant.<|end|>")
CUE = PromptPart("<|assistant|>")


@pytest.fixture(scope="module")
def engine(tiny_phi4mm) -> Phi4MMEngine:
    engine = Phi4MMEngine(Phi4MMOptions(model=str(tiny_phi4mm), max_new_tokens=8))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_audio(SHARED_AUDIO / "one_two_three_en.wav", 16000)


def spoken(clip: np.ndarray, key: str) -> PromptPart:
    return PromptPart("<|user|><|audio_1|><|end|>", (Media(key, audio=clip),))


def run(engine: Phi4MMEngine, parts, adapter="speech", **kwargs):
    pieces: list[str] = []
    stats = engine.generate(
        parts, adapter, on_text=pieces.append, cancelled=threading.Event(), **kwargs
    )
    return pieces, stats


def test_loading_takes_the_users_path_with_both_adapters(tiny_phi4mm):
    loaded = load_checkpoint(resolve_checkpoint(str(tiny_phi4mm), "refs/pr/70"))
    assert set(loaded.model.peft_config) == {"speech", "vision"}
    assert loaded.processor.audio_token == "<|audio|>" and loaded.processor.audio_token_id == 200011
    assert (loaded.device.type, loaded.dtype, loaded.attention) == ("cpu", torch.float32, "sdpa")


def test_adapters_change_the_logits_and_disabling_restores_the_base(tiny_phi4mm, clip):
    from transformers import Phi4MultimodalForCausalLM

    loaded = load_checkpoint(resolve_checkpoint(str(tiny_phi4mm), "refs/pr/70"))
    inputs = loaded.processor(
        text="<|user|><|audio|><|end|><|assistant|>",
        audio=[clip.astype(np.float32) / 32768],
        sampling_rate=16000,
        return_tensors="pt",
    )
    model = loaded.model

    def logits() -> torch.Tensor:
        with torch.inference_mode():
            return model(**inputs).logits[0, -1]

    model.enable_adapters()
    model.set_adapter("speech")
    speech = logits()
    model.set_adapter("vision")
    vision = logits()
    model.disable_adapters()
    base = logits()
    plain = Phi4MultimodalForCausalLM.from_pretrained(str(tiny_phi4mm), dtype=torch.float32).eval()
    with torch.inference_mode():
        reference = plain(**inputs).logits[0, -1]
    assert not torch.allclose(speech, vision) and not torch.allclose(speech, base)
    assert torch.equal(base, reference)


def test_absent_weights_name_the_model_the_revision_and_what_was_looked_for(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as error:
        resolve_checkpoint("microsoft/Phi-4-multimodal-instruct", "refs/pr/70")
    message = str(error.value)
    assert "microsoft/Phi-4-multimodal-instruct" in message and "refs/pr/70" in message
    assert "speech-lora/" in message and "download-model" in message


def test_a_folder_missing_an_adapter_is_refused_by_name(tiny_phi4mm, tmp_path):
    import shutil

    broken = shutil.copytree(tiny_phi4mm, tmp_path / "broken")
    shutil.rmtree(broken / "vision-lora")
    with pytest.raises(WeightsNotFoundError, match="vision-lora/adapter_config.json"):
        resolve_checkpoint(str(broken), "refs/pr/70")


def test_device_and_attention_defaults_on_a_cpu_machine():
    assert pick_device("auto") == (torch.device("cpu"), torch.float32)
    assert pick_attention("auto", torch.device("cpu")) == "sdpa"
    assert pick_attention("eager", torch.device("cpu")) == "eager"


def test_text_streams_and_an_interrupt_stops_within_a_step(engine, clip):
    pieces, stats = run(engine, [SYSTEM, spoken(clip, "s1"), CUE], max_new_tokens=24)
    assert stats.generated_tokens > 1 and len(pieces) > 1

    class BargeIn(threading.Event):
        """Set while the third token is being decoded; counts the steps that looked at it."""

        checks = 0

        def is_set(self) -> bool:
            self.checks += 1
            return self.checks >= 3

    stopped = engine.generate(
        [SYSTEM, spoken(clip, "s2"), CUE],
        "speech",
        on_text=lambda _: None,
        cancelled=BargeIn(),
        max_new_tokens=24,
    )
    assert stopped.generated_tokens == 3, "decoding stops at the step that sees the interrupt"


def test_a_reply_asked_to_avoid_an_earlier_one_starts_otherwise_from_the_same_cache(engine, clip):
    """How a loop is broken (agent/relay.py): the same turn again, its first reply's opening
    token banned, begins another way; and unbanned, it is the first reply again."""
    turn = [SYSTEM, spoken(clip, "a1"), CUE]
    first, _ = run(engine, turn)
    tokenizer = engine.loaded.processor.tokenizer
    again, stats = run(engine, turn, avoid="".join(first))
    opening = [tokenizer.encode("".join(t), add_special_tokens=False)[:1] for t in (first, again)]
    assert again and opening[0] != opening[1]
    assert stats.cached_tokens > 0, "the turn's prompt is not encoded again"
    assert run(engine, turn)[0] == first


def test_a_follow_up_turn_reuses_the_history_and_matches_a_cold_start(engine, tiny_phi4mm, clip):
    first, _ = run(engine, [SYSTEM, spoken(clip, "r1"), CUE])
    history = [SYSTEM, spoken(clip, "r1"), PromptPart(f"<|assistant|>{''.join(first)}<|end|>")]
    follow_up = [*history, spoken(clip[:16000], "r2"), CUE]
    warm, stats = run(engine, follow_up)
    assert stats.cached_tokens > stats.prompt_tokens / 2

    cold_engine = Phi4MMEngine(Phi4MMOptions(model=str(tiny_phi4mm), max_new_tokens=8))
    cold, cold_stats = run(cold_engine, follow_up)
    assert cold_stats.cached_tokens == 0
    assert warm == cold, "reusing the cache must not change the answer"


def test_a_turn_the_encoder_forgot_and_encodes_again_is_still_taken_from_the_cache(engine, clip):
    """Unchanged parts are passed over by identity; an equal copy is compared token by token."""
    turn = spoken(clip, "e1")
    reply, _ = run(engine, [SYSTEM, turn, CUE])
    engine.encoder.forget(turn)
    history = [SYSTEM, spoken(clip, "e1"), PromptPart(f"<|assistant|>{''.join(reply)}<|end|>")]
    _, stats = run(engine, [*history, PromptPart("<|user|>And then?<|end|>"), CUE])
    assert stats.cached_tokens > engine.count_tokens(SYSTEM) + engine.count_tokens(turn)


def test_the_same_words_from_another_clip_are_not_taken_from_the_cache(engine, clip):
    run(engine, [SYSTEM, spoken(clip, "x1"), CUE])
    _, stats = run(engine, [SYSTEM, spoken(clip[::-1].copy(), "x2"), CUE])
    # the turn holding the other clip is prefilled again from its start
    assert stats.cached_tokens == engine.count_tokens(SYSTEM)


def test_crossing_longrope_4096_recomputes_once_and_matches_transformers(tiny_phi4mm, clip):
    engine = Phi4MMEngine(Phi4MMOptions(model=str(tiny_phi4mm), max_new_tokens=8))
    words = PromptPart("<|user|>" + "one two three four " * 250 + "<|end|>")
    _, short = run(engine, [SYSTEM, spoken(clip, "l1"), words, CUE])
    assert short.prompt_tokens + 8 < engine.original_context

    long = [SYSTEM, spoken(clip, "l1"), words, words, words, words, CUE]
    crossed, crossing = run(engine, long)
    assert crossing.prompt_tokens > engine.original_context
    assert crossing.cached_tokens == 0, "keys cached with the short factors must be recomputed"

    # transformers' own answer: the whole prompt in one pass, long factors throughout
    loaded = engine.loaded
    text = "".join(p.text for p in long).replace("<|audio_1|>", "<|audio|>")
    inputs = loaded.processor(
        text=text, audio=[clip.astype(np.float32) / 32768], sampling_rate=16000, return_tensors="pt"
    )
    with torch.inference_mode():
        reference = loaded.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    expected = loaded.processor.tokenizer.decode(reference[0, inputs["input_ids"].shape[1] :])
    assert "".join(crossed).strip() == expected.replace("<|end|>", "").strip()

    longer = [*long[:-1], PromptPart("<|user|>and five<|end|>"), CUE]
    warm, after = run(engine, longer)
    assert after.cached_tokens > engine.original_context, "past the boundary, reuse resumes"
    cold, _ = run(Phi4MMEngine(Phi4MMOptions(model=str(tiny_phi4mm), max_new_tokens=8)), longer)
    assert warm == cold


def test_asr_leaves_the_conversation_cache_alone(engine, clip):
    run(engine, [SYSTEM, spoken(clip, "a1"), CUE])
    engine.transcribe([clip])
    _, stats = run(engine, [SYSTEM, spoken(clip, "a1"), CUE])
    assert stats.cached_tokens == stats.prompt_tokens - 1

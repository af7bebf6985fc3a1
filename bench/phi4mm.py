"""Where a Phi-4-multimodal turn spends its time: features, audio encode + prefill, first token,
decode speed.

    .venv/bin/python bench/phi4mm.py cpu [--turns N] [--json PATH]
        the tiny random-weight checkpoint on this CPU, 5 s turns of real speech, and the time
        the model's own ASR of each turn takes (run after the reply, so not on its path)
    .venv/bin/python bench/phi4mm.py gpu [--json PATH]
        the full-size architecture (config values of the real model, random weights, bf16,
        both LoRAs at their real ranks) on a CUDA GPU: time to first token for 5 s of audio
        after 1K, 8K, 32K and 100K tokens of context (the history's cache reused), decode
        tokens/s, a whole turn (33 tokens of reply) and its ratio to the turn after 1K (the
        context issue's target: at most 1.5x at 100K), and what rebuilding that history's
        cache costs: from nothing (an evicted cache, a trim near its start) and under the
        other adapter (a switch to vision)
    .venv/bin/python bench/phi4mm.py gpu --smoke
        the same script on a miniature config, on the CPU, to check it still runs

Nothing is downloaded: the tokenizer is the test suite's (real special-token ids). The gpu mode
needs only PyTorch, transformers, peft and soundfile, none of the agent's other packages, so it
runs on a stock PyTorch image (see README *Figures*); ``--speech`` names the 16 kHz recording
to cut the turn from where the shared recordings are not beside the repository.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.phi4mm.kv_cache import conversation_cache  # noqa: E402

TURN_S = 5.0
DECODE_TOKENS = 32
PREFILL_CHUNK = 8192


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def split_turn(
    model: Any, processor: Any, clip: np.ndarray, context_ids: list[int]
) -> dict[str, float]:
    """Seconds for each stage of one spoken turn after ``context_ids`` of history, on the
    cache the engine keeps (appending in place)."""
    device = next(model.parameters()).device
    started = time.perf_counter()
    inputs = processor(
        text="<|user|><|audio|><|end|><|assistant|>",
        audio=[clip.astype(np.float32) / 32768],
        sampling_rate=16000,
        return_tensors="pt",
    )
    features = time.perf_counter() - started
    turn_ids = inputs.pop("input_ids").to(device)
    media = {k: v.to(device) for k, v in inputs.items() if k.startswith("audio_")}
    media["audio_input_features"] = media["audio_input_features"].to(model.dtype)
    cache = conversation_cache(model.config)
    with torch.inference_mode():
        prefill_history(model, context_ids, cache)
        sync(device)
        started = time.perf_counter()
        seen = len(context_ids) + turn_ids.shape[1] - 1
        model(
            input_ids=turn_ids[:, :-1],
            attention_mask=torch.ones((1, seen), dtype=torch.long, device=device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **media,
        )
        sync(device)
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        token = turn_ids[:, -1:]
        logits = model(input_ids=token, past_key_values=cache, use_cache=True).logits
        token = logits[:, -1:].argmax(-1)
        sync(device)
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            token = (
                model(input_ids=token, past_key_values=cache, use_cache=True)
                .logits[:, -1:]
                .argmax(-1)
            )
        sync(device)
        decode = time.perf_counter() - started
    return {
        "features_s": features,
        "encode_prefill_s": prefill,
        "first_token_s": first,
        "ttft_s": features + prefill + first,
        "decode_tokens_per_s": DECODE_TOKENS / decode,
        "turn_s": features + prefill + first + decode,
        "audio_tokens": int(inputs["audio_embed_sizes"].sum()),
    }


def prefill_history(model: Any, ids: list[int], cache: Any) -> None:
    """The history into ``cache`` in 8K-token passes, as a long conversation is built up."""
    device = next(model.parameters()).device
    for start in range(0, len(ids), PREFILL_CHUNK):
        chunk = torch.tensor([ids[start : start + PREFILL_CHUNK]], device=device)
        model(
            input_ids=chunk,
            attention_mask=torch.ones((1, start + chunk.shape[1]), dtype=torch.long, device=device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )


def recompute_s(model: Any, ids: list[int], adapter: str) -> float:
    """Seconds to rebuild a history's cache from nothing under ``adapter``: what an evicted
    cache, a trim near the start, or a switch to the other adapter costs."""
    device = next(model.parameters()).device
    model.set_adapter(adapter)
    cache = conversation_cache(model.config)
    sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        prefill_history(model, ids, cache)
    sync(device)
    seconds = time.perf_counter() - started
    model.set_adapter("speech")
    return seconds


def speech_turns(count: int, path: Path | None) -> list[np.ndarray]:
    """``count`` 5 s turns of real speech, 16 kHz int16 as the processor takes it."""
    import soundfile

    if path is None:
        from tests.conftest import SHARED_AUDIO

        path = SHARED_AUDIO / "speech60_en.wav"
    speech, rate = soundfile.read(path, dtype="int16")
    if rate != 16000 or speech.ndim != 1:
        raise SystemExit(f"{path}: the bench cuts its turns from 16 kHz mono speech")
    size = int(TURN_S * 16000)
    return [speech[i * size : (i + 1) * size] for i in range(min(count, len(speech) // size))]


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0]}


def bench_cpu(turns: int, speech: Path | None) -> dict[str, Any]:
    from agent.engines.phi4mm.engine import Phi4MMEngine, Phi4MMOptions
    from tests.tiny_phi4mm import build_tiny_phi4mm

    with tempfile.TemporaryDirectory() as folder:
        engine = Phi4MMEngine(Phi4MMOptions(model=str(build_tiny_phi4mm(Path(folder) / "tiny"))))
        engine.load()
        model, processor = engine.loaded.model, engine.loaded.processor
        model.enable_adapters()
        model.set_adapter("speech")
        clips = speech_turns(turns, speech)
        split_turn(model, processor, clips[0], [])  # warm-up
        rows = []
        for clip in clips:
            row = split_turn(model, processor, clip, [])
            started = time.perf_counter()
            engine.transcribe([clip])  # the turn's transcript, made once its reply is done
            row["asr_s"] = time.perf_counter() - started
            rows.append(row)
    return {
        "model": "tiny random-weight Phi-4-MM",
        "device": "cpu",
        "turns": len(rows),
        **medians(rows),
    }


def released_config() -> Any:
    """The released model's sizes (Phi-4-mini backbone: 32 layers, 24 query and 8 KV heads,
    head dim 128, 3/4 of it rotated; the class defaults differ). The 48 LongRoPE factors are
    placeholders: they change the positions' angles, not the amount of work."""
    from transformers import Phi4MultimodalConfig

    rotated_pairs = 48
    return Phi4MultimodalConfig(
        vocab_size=200064,
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=32,
        num_attention_heads=24,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.75,
            "original_max_position_embeddings": 4096,
            "short_factor": [1.0] * rotated_pairs,
            "long_factor": [8.0] * rotated_pairs,
        },
    )


def full_size_model(smoke: bool) -> tuple[Any, Any, torch.device]:
    from peft import LoraConfig
    from transformers import (
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalForCausalLM,
        Phi4MultimodalImageProcessor,
        Phi4MultimodalProcessor,
    )

    from tests.tiny_phi4mm import LORA_TARGET, _config, _tokenizer

    if smoke:
        device, dtype = torch.device("cpu"), torch.float32
        config = _config()  # the test suite's miniature
        ranks = {"speech": 8, "vision": 4}
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu mode needs a CUDA GPU (use --smoke to check the script on a CPU)")
        device, dtype = torch.device("cuda"), torch.bfloat16
        config = released_config()
        ranks = {"speech": 320, "vision": 256}
    print(f"building the model with random weights on {device}", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    with device:
        model = Phi4MultimodalForCausalLM(config).to(dtype).eval()
    for name, rank in ranks.items():  # zero-initialised B: timing, not output, is measured
        model.add_adapter(
            LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGET), adapter_name=name
        )
    model.to(device=device, dtype=dtype)
    model.set_adapter("speech")
    processor = Phi4MultimodalProcessor(
        image_processor=Phi4MultimodalImageProcessor(),
        audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=_tokenizer(),
    )
    return model, processor, device


def bench_gpu(smoke: bool, speech: Path | None) -> dict[str, Any]:
    model, processor, device = full_size_model(smoke)
    clip = speech_turns(1, speech)[0]
    contexts = [64, 256] if smoke else [1024, 8192, 32768, 102400]
    split_turn(model, processor, clip, list(range(100, 164)))  # warm-up
    report: dict[str, Any] = {
        "model": "Phi-4-MM architecture, random weights" + (" (miniature)" if smoke else ""),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
    }
    shortest_turn_s = 0.0
    for context in contexts:
        ids = [100 + (i % 900) for i in range(context)]
        try:
            row = split_turn(model, processor, clip, ids)
            row["recompute_history_s"] = recompute_s(model, ids, "speech")
            row["adapter_switch_s"] = recompute_s(model, ids, "vision")
        except torch.OutOfMemoryError:  # the shorter histories' figures still stand
            report[f"context_{context}"] = {"error": "out of GPU memory"}
            print(f"{context:,} tokens of history: out of GPU memory", file=sys.stderr)
            break
        row["recompute_vs_reused_turn"] = (row["recompute_history_s"] + row["ttft_s"]) / row[
            "ttft_s"
        ]
        shortest_turn_s = shortest_turn_s or row["turn_s"]
        row["turn_vs_shortest"] = row["turn_s"] / shortest_turn_s
        report[f"context_{context}"] = {k: round(v, 4) for k, v in row.items()}
        print(
            f"{context:,} tokens of history: turn {row['turn_s']:.3f} s "
            f"({row['turn_vs_shortest']:.2f}x the shortest), first token after "
            f"{row['ttft_s']:.3f} s, rebuilt in {row['recompute_history_s']:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    if device.type == "cuda":
        report["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["cpu", "gpu"])
    parser.add_argument("--turns", type=int, default=8, help="cpu: 5 s turns to time")
    parser.add_argument("--smoke", action="store_true", help="gpu: miniature config on the CPU")
    parser.add_argument("--speech", type=Path, help="16 kHz mono speech (default: speech60_en)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.mode == "cpu":
        report = bench_cpu(args.turns, args.speech)
    else:
        report = bench_gpu(args.smoke, args.speech)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

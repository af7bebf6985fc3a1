"""A tiny random-weight Phi-4-multimodal checkpoint, built offline for the test suite.

No model hub is reachable, so tests load this few-MB folder through the same calls users make for
microsoft/Phi-4-multimodal-instruct in its transformers-native layout (HF revision refs/pr/70):
config.json, generation_config.json and model.safetensors (Phi4MultimodalForCausalLM, float32),
tokenizer.json, tokenizer_config.json, chat_template.jinja and processor_config.json
(Phi4MultimodalProcessor), and the speech-lora/ and vision-lora/ PEFT adapter subfolders.

Confirmed (transformers' Phi-4-MM config defaults, conversion script, published checkpoint): vocab
200064, <|endoftext|> 199999, <|image|> 200010, <|audio|> 200011, <|endofprompt|> 200018 and the
chat tokens 200019-200022, eos [199999, 200020], tied embeddings, longrope switching at 4096 of
131072 positions, audio time_reduction 8, 448-pixel crops of 14-pixel patches, the LoRA target
regex. Inferred, not checked against the real tokenizer.json: the tool tokens 200023-200027 and
<|tag|> 200028. Widths, depths, LoRA ranks and weights are tiny and random, and the BPE is trained
on stdlib docstrings, so plain text tokenizes differently from the real model.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import logging
import pathlib
import re
import string
import textwrap
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Phi4MultimodalAudioConfig,
    Phi4MultimodalConfig,
    Phi4MultimodalFeatureExtractor,
    Phi4MultimodalForCausalLM,
    Phi4MultimodalImageProcessor,
    Phi4MultimodalProcessor,
    Phi4MultimodalVisionConfig,
    PreTrainedTokenizerFast,
)

# (content, id, special, rstrip) as in the real transformers-native tokenizer.
SPECIAL_TOKENS = [
    ("<|endoftext|>", 199999, True, False),
    ("<|image|>", 200010, True, False),
    ("<|audio|>", 200011, True, False),
    ("<|endofprompt|>", 200018, True, False),
    ("<|assistant|>", 200019, True, True),
    ("<|end|>", 200020, True, True),
    ("<|user|>", 200021, True, True),
    ("<|system|>", 200022, True, True),
    ("<|tool|>", 200023, False, True),
    ("<|/tool|>", 200024, False, True),
    ("<|tool_call|>", 200025, False, True),
    ("<|/tool_call|>", 200026, False, True),
    ("<|tool_response|>", 200027, False, True),
    ("<|tag|>", 200028, True, True),
]
VOCAB_SIZE = 200064
EOS_TOKEN_IDS = [199999, 200020]
BPE_VOCAB_SIZE = 1024
# The real target regex, as transformers' convert_phi4_multimodal_weights_to_hf.py writes it.
LORA_TARGET = r"model.layers.\d+.((self_attn.(qkv|o)_proj)|(mlp.(gate_up|down)_proj))"

# The chat template published with the transformers-native processor.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image|>' }}"
    "{% elif content['type'] == 'audio' %}{{ '<|audio|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
    "{{ '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% endif %}"
    "{{ '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


def _corpus() -> list[str]:
    """English text that exists offline: docstrings of a few stdlib modules."""
    docs = []
    for module in (argparse, inspect, json, logging, pathlib, re, string, textwrap):
        docs += [doc for _, obj in inspect.getmembers(module) if (doc := inspect.getdoc(obj))]
    return docs


def _tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE whose special tokens sit at the real, sparse ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    # Added tokens get the next free id, so ids like 199999 can't be requested directly: put the
    # strings into the BPE vocab at the wanted ids first; adding them then reuses those ids.
    trained = json.loads(tok.to_str())["model"]
    vocab = trained["vocab"] | {content: idx for content, idx, _, _ in SPECIAL_TOKENS}
    tok.model = models.BPE(vocab=vocab, merges=[tuple(pair) for pair in trained["merges"]])
    tok.add_special_tokens(
        [AddedToken(c, special=s, rstrip=r, normalized=False) for c, _, s, r in SPECIAL_TOKENS]
    )
    wrong = [c for c, idx, _, _ in SPECIAL_TOKENS if tok.token_to_id(c) != idx]
    if wrong:
        raise RuntimeError(f"special tokens landed at the wrong ids: {wrong}")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        # Phi4MultimodalProcessor reads tokenizer.image_token(_id) and audio_token(_id).
        extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"},
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        add_prefix_space=False,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def _config() -> Phi4MultimodalConfig:
    """Tiny widths and depths; the values that change behaviour stay as in the real config."""
    audio = Phi4MultimodalAudioConfig(
        hidden_size=16,
        intermediate_size=24,
        num_blocks=2,
        num_attention_heads=2,
        ext_pw_out_channel=16,
        depthwise_separable_out_channel=16,
        nemo_conv_channels=16,
        time_reduction=8,  # sets the number of audio tokens per second
        bias_max_distance=500,  # real value; the default is 1000
        audio_token_id=200011,
    )
    vision = Phi4MultimodalVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=448,  # the processor hard-codes 448-pixel crops of 14-pixel patches
        patch_size=14,
        crop_size=448,
        image_token_id=200010,
    )
    # hidden 8 with one head keeps the fp32 embedding (vocab x hidden) at 6.4 MB; head_dim 8 with
    # the real partial_rotary_factor 0.75 rotates 6 dims, i.e. 3 longrope factors.
    return Phi4MultimodalConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.75,
            "short_factor": [1.0] * 3,
            "long_factor": [1.5] * 3,  # differs from short, so crossing 4096 tokens shows
        },
        tie_word_embeddings=True,
        bos_token_id=199999,
        eos_token_id=EOS_TOKEN_IDS,
        pad_token_id=199999,
        dtype="float32",
        vision_config=vision,
        audio_config=audio,
    )


def _model(known_ids: list[int]) -> Phi4MultimodalForCausalLM:
    """Random weights; the default init zeroes parts of the multimodal path, so redraw them.

    Ids the tiny tokenizer does not define get zero embeddings: with tied weights their logits
    are then 0, so generation picks tokens that decode to (nonsense) text rather than nothing.
    """
    model = Phi4MultimodalForCausalLM(_config()).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_tokens_extend" in name and param.dim() >= 2:
                param.normal_(0, 0.3)
        image_embed = model.model.embed_tokens_extend.image_embed
        image_embed.global_img_feature_extensor.normal_(0, 0.5)
        image_embed.sub_img_feature_extensor.normal_(0, 0.5)
        model.model.embed_tokens.weight.normal_(0, 1.0)
        unknown = torch.ones(VOCAB_SIZE, dtype=torch.bool)
        unknown[known_ids] = False
        model.model.embed_tokens.weight[unknown] = 0.0
    model.generation_config = GenerationConfig(
        bos_token_id=199999, eos_token_id=EOS_TOKEN_IDS, pad_token_id=199999
    )
    return model


def _save_lora(
    model: Phi4MultimodalForCausalLM, out_dir: Path, name: str, r: int, dropout: float
) -> None:
    """Writes `<name>-lora/` with random non-zero A and B, so each adapter moves the logits."""
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=dropout,
        target_modules=LORA_TARGET,
        task_type="CAUSAL_LM",
    )
    # A copy per adapter: PEFT warns about several adapters injected into one model.
    lora_model = inject_adapter_in_model(config, copy.deepcopy(model), adapter_name=name)
    with torch.no_grad():
        for param_name, param in lora_model.named_parameters():
            if re.search(rf"\.lora_[AB]\.{name}\.", param_name):
                param.normal_(0, 0.5)
    state = get_peft_model_state_dict(lora_model, adapter_name=name)
    folder = out_dir / f"{name}-lora"
    config.save_pretrained(str(folder))
    tensors = {key: value.contiguous() for key, value in state.items()}
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})


def build_tiny_phi4mm(out_dir: Path, *, seed: int = 0) -> Path:
    """Writes the tiny checkpoint into `out_dir` (absent or empty) and returns it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    processor = Phi4MultimodalProcessor(
        image_processor=Phi4MultimodalImageProcessor(),
        audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)
    # Seeded on a forked RNG: deterministic output, and the caller's random state is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _model(sorted(tokenizer.get_vocab().values()))
        model.save_pretrained(out_dir)
        # Real ranks are 320 (speech) and 256 (vision), alpha 2r, dropout 0.01 and 0.0.
        _save_lora(model, out_dir, "speech", r=8, dropout=0.01)
        _save_lora(model, out_dir, "vision", r=4, dropout=0.0)
    return out_dir


def main() -> None:
    """`python -m tests.tiny_phi4mm OUT_DIR`: build the checkpoint for manual runs and benches."""
    parser = argparse.ArgumentParser(description="Build the tiny Phi-4-multimodal checkpoint.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out_dir = build_tiny_phi4mm(args.out_dir, seed=args.seed)
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        print(f"{path.relative_to(out_dir)!s:40} {path.stat().st_size:>10,d} B")


if __name__ == "__main__":
    main()

"""Finding and loading Phi-4-multimodal: processor, weights, and both LoRA adapters.

The transformers-native weights live at revision ``refs/pr/70`` of the hub repository (its
main branch holds the older remote-code format). Nothing here reaches a hub at run time: a
model id is looked up in the local Hugging Face cache only, and ``download_model`` is the one
place that fetches, for users with internet.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...models import ModelNotFoundError, is_path

logger = logging.getLogger("voice_agent")

DEFAULT_MODEL = "microsoft/Phi-4-multimodal-instruct"
DEFAULT_REVISION = "refs/pr/70"
ADAPTER_FOLDERS = {"speech": "speech-lora", "vision": "vision-lora"}
REQUIRED_FILES = (
    "config.json",
    "tokenizer_config.json",
    *(f"{f}/adapter_config.json" for f in ADAPTER_FOLDERS.values()),
)


class WeightsNotFoundError(ModelNotFoundError):
    pass


@dataclass(frozen=True)
class LoadedModel:
    processor: Any
    model: Any
    device: torch.device
    dtype: torch.dtype
    attention: str


def resolve_checkpoint(model: str, revision: str) -> Path:
    """The local folder holding ``model`` (a folder, or a hub id already in the cache)."""
    folder = Path(model)
    if not folder.is_dir():
        if is_path(model):
            raise WeightsNotFoundError(f"{model}: no such model folder")
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(
                str(snapshot_download(repo_id=model, revision=revision, local_files_only=True))
            )
        except (LocalEntryNotFoundError, ValueError, OSError):
            raise WeightsNotFoundError(
                f"Phi-4-multimodal weights for {model} at revision {revision} are not on this "
                f"machine (looked in the Hugging Face cache {constants.HF_HUB_CACHE} for config, "
                "weights, tokenizer, speech-lora/ and vision-lora/): run `voice-agent "
                "download-model` where there is internet, or pass --model FOLDER"
            ) from None
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise WeightsNotFoundError(
            f"{folder} is not a Phi-4-multimodal checkpoint: missing {', '.join(missing)}"
        )
    return folder


def pick_device(requested: str) -> tuple[torch.device, torch.dtype]:
    """``auto``: CUDA in bf16 when there is a GPU, else the CPU in fp32."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelNotFoundError(f"device {requested!r} asked for, but no CUDA GPU is visible")
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32


def pick_attention(requested: str, device: torch.device) -> str:
    """``auto``: flash-attention 2 on a GPU when it is installed, else PyTorch's SDPA."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_checkpoint(folder: Path, *, device: str = "auto", attention: str = "auto") -> LoadedModel:
    from transformers import AutoProcessor, Phi4MultimodalForCausalLM

    torch_device, dtype = pick_device(device)
    attn = pick_attention(attention, torch_device)
    processor = AutoProcessor.from_pretrained(str(folder))
    model: Any = Phi4MultimodalForCausalLM.from_pretrained(
        str(folder), dtype=dtype, attn_implementation=attn
    )
    model = model.to(torch_device).eval()
    for name, subfolder in ADAPTER_FOLDERS.items():
        # the adapter's own folder rather than subfolder=: vLLM issue #15440 saw subfolder
        # lookups miss local checkpoints
        model.load_adapter(str(folder / subfolder), adapter_name=name)
    model.eval()  # the adapters arrive in training mode: their dropout would be live
    model.disable_adapters()
    logger.info("Phi-4-multimodal loaded on %s (%s, %s attention)", torch_device, dtype, attn)
    return LoadedModel(processor, model, torch_device, dtype, attn)


def download_model(model: str, revision: str, target: Path | None) -> Path:
    """Fetch the checkpoint (about 13 GB) into the HF cache, or into ``target``."""
    from huggingface_hub import snapshot_download

    path = snapshot_download(
        repo_id=model, revision=revision, local_dir=str(target) if target else None
    )
    return Path(str(path))

"""System prompts, one text file per profile, shipped with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


class PromptNotFoundError(LookupError):
    pass


def available_prompts() -> list[str]:
    return sorted(
        p.name.removesuffix(".txt")
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".txt")
    )


def load_prompt(name_or_path: str) -> str:
    """A built-in prompt by name (``desktop``) or a text file by path."""
    if name_or_path in available_prompts():
        return resources.files(__name__).joinpath(f"{name_or_path}.txt").read_text("utf-8").strip()
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text("utf-8").strip()
    built_in = ", ".join(available_prompts())
    raise PromptNotFoundError(
        f"unknown prompt {name_or_path!r} (built-in: {built_in}; or a file path)"
    )

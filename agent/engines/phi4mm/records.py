"""What one conversation's turns and replies were, for its event log: LiveKit times no nodes
for a realtime model, so the session times them itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .turn_audio import MODEL_SAMPLE_RATE


@dataclass
class ImageRecord:
    """A camera frame a turn sent (``at``: when it was taken, wall clock)."""

    source: str
    at: float
    size: tuple[int, int]
    tokens: int = 0


@dataclass
class TurnRecord:
    """What a committed user turn sent to the model (wall-clock times)."""

    speech_started_at: float
    speech_ended_at: float
    committed_at: float
    clips: list[np.ndarray]
    images: list[ImageRecord] = field(default_factory=list)
    tokens: int = 0


@dataclass(frozen=True)
class ReplyRecord:
    ttft_s: float
    """From the reply being asked for to its first text."""
    first_text_at: float
    eou_delay_s: float | None
    """From the end of the speech it answers to the commit of that turn."""


@dataclass
class Records:
    turns: dict[str, TurnRecord] = field(default_factory=dict)
    replies: dict[str, ReplyRecord] = field(default_factory=dict)

    def details(self, item_id: str) -> dict[str, Any]:
        """What the event log adds to a turn or a reply."""
        if (turn := self.turns.get(item_id)) is not None:
            return {
                "speech_started_at": turn.speech_started_at,
                "speech_ended_at": turn.speech_ended_at,
                "audio_s": round(sum(len(c) for c in turn.clips) / MODEL_SAMPLE_RATE, 3),
                "tokens": turn.tokens,
                "images": [
                    {"source": i.source, "at": i.at, "size": list(i.size), "tokens": i.tokens}
                    for i in turn.images
                ],
            }
        if (reply := self.replies.get(item_id)) is not None:
            return {
                "ttft_s": reply.ttft_s,
                "first_text_at": reply.first_text_at,
                "eou_delay_s": reply.eou_delay_s,
            }
        return {}

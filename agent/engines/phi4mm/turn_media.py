"""What each turn of a conversation showed the model: its speech clips, and the camera frame
that joined it (the newest frame pushed since the last turn, scaled to ``max_side``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from livekit import rtc

from ...vision import FrameNote, VisionOptions, fit, frame_to_image
from .engine import Adapter
from .parts import Media
from .records import ImageRecord


class TurnMedia:
    def __init__(self, vision: VisionOptions) -> None:
        self._vision = vision
        self._media: dict[str, tuple[Media, ...]] = {}
        self._pending: tuple[rtc.VideoFrame, FrameNote | None] | None = None
        self._newest: rtc.VideoFrame | None = None
        """Kept after it joined a turn: what ``look`` shows again."""

    def push_frame(self, frame: rtc.VideoFrame, note: FrameNote | None) -> None:
        self._pending = (frame, note)
        self._newest = frame

    def add_turn(self, item_id: str, clips: list[np.ndarray], now: float) -> list[ImageRecord]:
        """The turn's clips, with the frame pushed since the last turn if there is one."""
        media, images = [], []
        if self._pending is not None:
            frame, note = self._pending
            image = fit(frame_to_image(frame), self._vision.max_side)
            media.append(Media(key=f"{item_id}-image", image=image))
            note = note or FrameNote(source="video", at=now)
            images.append(ImageRecord(note.source, note.at, image.size))
            self._pending = None
        media += [Media(key=f"{item_id}-audio{i}", audio=c) for i, c in enumerate(clips)]
        self._media[item_id] = tuple(media)
        return images

    def add_look(self, item_id: str) -> bool:
        """A turn of the newest frame alone; False when no frame has come yet."""
        if self._newest is None:
            return False
        image = fit(frame_to_image(self._newest), self._vision.max_side)
        self._media[item_id] = (Media(key=f"{item_id}-image", image=image),)
        return True

    def of(self, item_id: str) -> tuple[Media, ...]:
        return self._media.get(item_id, ())


def adapter_for(media: Sequence[Media]) -> Adapter:
    """As the reference implementation chooses (modeling_phi4mm.py, ``input_mode``, from all
    of a request's media): an image, with or without audio → vision; audio alone → speech; text
    only → no adapter. So a conversation keeps one adapter while its images are in the window,
    instead of switching caches with every turn."""
    if any(m.image is not None for m in media):
        return "vision"
    return "speech" if any(m.audio is not None for m in media) else None

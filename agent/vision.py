"""Camera frames for the engine that sees: where they come from, which are kept, what size.

LiveKit pushes a session's video into the realtime model at a rate its sampler sets (1 frame a
second while the user speaks, 0.3 while silent), and our model attaches the latest frame to the
next user turn. A frame costs the model ~500 to 1,600 tokens, so here the rate is LiveKit's but
on the conversation's own clock (a recording played at ``--speed`` has one), and a frame that
hardly differs from the last one kept is dropped.

Sources: a camera (``console --camera``), image files and a video file placed on a recording's
timeline (``run-file --image FILE@SECONDS --video FILE``), all read by PyAV (FFmpeg: V4L2
cameras and every common format), which aiortc already brings.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import av
import numpy as np
from livekit import rtc
from livekit.agents.voice import io
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from .profile import Profile

logger = logging.getLogger("voice_agent")

THUMBNAIL = (32, 24)
"""Frames are compared at this size, in grey: enough to see a person move or a sign appear."""


class FrameSourceError(ValueError):
    """An image, video or camera the user named cannot be read."""


@dataclass(frozen=True)
class VisionOptions:
    speaking_fps: float = 1.0
    silent_fps: float = 0.3
    change_threshold: float = 0.03
    """Mean difference of the grey thumbnails (0 to 1) a frame needs to be kept."""
    max_side: int = 448
    """Frames are scaled down to fit: 448 px is one crop of the model (477 tokens at 4:3)."""


def vision_options(profile: Profile) -> VisionOptions:
    """The profile's ``[vision]`` as the sampler and the model read it (``camera_fallback`` is
    the command line's)."""
    return VisionOptions(**profile.vision.model_dump(exclude={"camera_fallback"}))


@dataclass(frozen=True)
class FrameNote:
    """Where a kept frame came from and when (the clock's seconds)."""

    source: str
    at: float


@runtime_checkable
class FrameReader(Protocol):
    """A model that wants to know where the next frame it is pushed comes from."""

    def note_frame(self, note: FrameNote) -> None: ...


@runtime_checkable
class LabelledFrames(Protocol):
    @property
    def current_source(self) -> str: ...


class FrameSampler:
    """``AgentSession(video_sampler=...)``: LiveKit's rates on ``clock``, then only frames
    that changed. LiveKit's own sampler reads the wall clock, which a sped-up recording
    outruns, so the rate test is repeated here with a clock the transport can set."""

    def __init__(self, options: VisionOptions, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.clock = clock
        self._last_at: float | None = None
        self._last_kept: np.ndarray | None = None

    def __call__(self, frame: rtc.VideoFrame, session: Any) -> bool:
        now = self.clock()
        speaking = getattr(session, "user_state", "") == "speaking"
        fps = self.options.speaking_fps if speaking else self.options.silent_fps
        if fps <= 0 or (self._last_at is not None and now - self._last_at < 1 / fps):
            return False
        self._last_at = now
        thumbnail = _thumbnail(frame_to_image(frame))
        if self._last_kept is not None:
            if float(np.abs(thumbnail - self._last_kept).mean()) < self.options.change_threshold:
                return False
        self._last_kept = thumbnail
        video = getattr(session, "input", None) and session.input.video
        model = getattr(session, "llm", None)
        if isinstance(model, FrameReader):
            source = video.current_source if isinstance(video, LabelledFrames) else "video"
            model.note_frame(FrameNote(source=source, at=time.time()))
        return True


def frame_to_image(frame: rtc.VideoFrame) -> Image.Image:
    rgba = (
        frame if frame.type == rtc.VideoBufferType.RGBA else frame.convert(rtc.VideoBufferType.RGBA)
    )
    return Image.frombytes("RGBA", (rgba.width, rgba.height), bytes(rgba.data)).convert("RGB")


def image_to_frame(image: Image.Image) -> rtc.VideoFrame:
    rgba = image.convert("RGBA")
    return rtc.VideoFrame(rgba.width, rgba.height, rtc.VideoBufferType.RGBA, rgba.tobytes())


def fit(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` scaled down (never up) so its longer side is at most ``max_side``."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _thumbnail(image: Image.Image) -> np.ndarray:
    grey = image.convert("L").resize(THUMBNAIL, Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float32) / 255.0


@dataclass(frozen=True)
class TimedImage:
    path: Path
    at: float


def parse_timed_image(value: str) -> TimedImage:
    """``FILE`` or ``FILE@SECONDS`` (a path may itself hold ``@``: the last one counts)."""
    path, _, seconds = value.rpartition("@")
    if not path:
        return TimedImage(Path(value), 0.0)
    try:
        at = float(seconds)
    except ValueError:
        return TimedImage(Path(value), 0.0)
    if not (at >= 0 and np.isfinite(at)):
        raise FrameSourceError(f"{value}: the time after @ must be seconds from the start")
    return TimedImage(Path(path), at)


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise FrameSourceError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise FrameSourceError(f"{path}: not an image this agent can read ({e})") from None


def video_frames(path: Path) -> Generator[tuple[float, Image.Image], None, None]:
    """(seconds, frame) for each frame of a video file, decoded as it is read."""
    try:
        container = av.open(str(path))
    except FileNotFoundError:
        raise FrameSourceError(f"{path}: no such video file") from None
    except av.FFmpegError as e:
        raise FrameSourceError(f"{path}: not a video this agent can read ({e})") from None
    with container:
        if not container.streams.video:
            raise FrameSourceError(f"{path}: has no video stream")
        try:
            for frame in container.decode(video=0):
                if frame.time is not None:
                    yield float(frame.time), frame.to_image()
        except av.FFmpegError as e:
            raise FrameSourceError(f"{path}: the video breaks off ({e})") from None


@dataclass
class FrameFiles:
    """The image and video files of a run, opened before any model loads so that a missing
    or broken one is refused at once."""

    stills: list[tuple[float, str, Image.Image]]
    video: Path | None

    @classmethod
    def open(cls, images: list[TimedImage], video: Path | None) -> FrameFiles:
        stills = [(item.at, f"image:{item.path}", load_image(item.path)) for item in images]
        if video is not None:
            probe = video_frames(video)
            next(probe, None)
            probe.close()
        return cls(sorted(stills, key=lambda still: still[0]), video)

    def __bool__(self) -> bool:
        return bool(self.stills) or self.video is not None

    def timeline(self) -> Iterator[tuple[float, str, Image.Image]]:
        """Every frame, in time order: the stills merged into the video's frames."""
        stills = iter(self.stills)
        still = next(stills, None)
        if self.video is not None:
            for at, image in video_frames(self.video):
                while still is not None and still[0] <= at:
                    yield still
                    still = next(stills, None)
                yield at, f"video:{self.video}", image
        while still is not None:
            yield still
            still = next(stills, None)


class TimelineVideoInput(io.VideoInput):
    """Frames played into the session at their times on ``clock``; after the last one it
    waits until closed, like a camera that shows nothing new. A video that breaks off on the
    way ends there, with a warning."""

    def __init__(
        self,
        files: FrameFiles,
        clock: Callable[[], float],
        wall_delay: Callable[[float], float],
    ) -> None:
        super().__init__(label="files")
        self._frames = files.timeline()
        self._clock = clock
        self._wall_delay = wall_delay
        self._closed = asyncio.Event()
        self.current_source = "files"

    async def __anext__(self) -> rtc.VideoFrame:
        try:
            at, source, image = next(self._frames)
        except StopIteration:
            await self._closed.wait()
            raise StopAsyncIteration from None
        except FrameSourceError as e:
            logger.warning("%s", e)
            self._frames = iter(())
            return await self.__anext__()
        wait = self._wall_delay(at - self._clock())
        if wait > 0:
            await asyncio.sleep(wait)
        self.current_source = f"{source}@{at:g}"
        return image_to_frame(image)

    def close(self) -> None:
        self._closed.set()


def camera_device(index: int) -> str:
    return f"/dev/video{index}"


def open_camera(device: str, fmt: str | None = "v4l2") -> Any:
    """An open capture (``fmt`` None: whatever FFmpeg makes of ``device``, e.g. a file)."""
    try:
        return av.open(device, format=fmt, options={"video_size": "640x480"} if fmt else {})
    except (FileNotFoundError, av.FFmpegError, OSError) as e:
        raise FrameSourceError(f"camera {device}: cannot be opened ({e})") from None


def probe_camera(device: str, fmt: str | None = "v4l2") -> None:
    """Raise FrameSourceError unless ``device`` opens and gives a frame."""
    with open_camera(device, fmt) as capture:
        try:
            if next(capture.decode(video=0), None) is None:
                raise FrameSourceError(f"camera {device}: gives no picture")
        except (av.FFmpegError, IndexError) as e:
            raise FrameSourceError(f"camera {device}: gives no picture ({e})") from None


class CameraVideoInput(io.VideoInput):
    """A camera read on a thread of its own; the session is handed the newest frame (older
    ones are dropped unread). A camera that fails on the way ends the video, with a warning:
    the conversation goes on by voice."""

    def __init__(self, device: str, fmt: str | None = "v4l2") -> None:
        super().__init__(label=f"camera:{device}")
        self.current_source = f"camera:{device}"
        self._capture = open_camera(device, fmt)
        self._loop = asyncio.get_running_loop()
        self._newest: asyncio.Queue[Image.Image | None] = asyncio.Queue(maxsize=1)
        self._stopped = threading.Event()
        self._reader = threading.Thread(target=self._read, name="camera", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for frame in self._capture.decode(video=0):
                if self._stopped.is_set():
                    break
                self._loop.call_soon_threadsafe(self._offer, frame.to_image())
        except (av.FFmpegError, OSError) as e:
            logger.warning("camera %s stopped: %s", self.label, e)
        finally:
            self._capture.close()
            if not self._stopped.is_set():
                self._loop.call_soon_threadsafe(self._offer, None)

    def _offer(self, image: Image.Image | None) -> None:
        if self._newest.full():
            self._newest.get_nowait()
        self._newest.put_nowait(image)

    async def __anext__(self) -> rtc.VideoFrame:
        image = await self._newest.get()
        if image is None:
            raise StopAsyncIteration
        return image_to_frame(image)

    async def aclose(self) -> None:
        self._stopped.set()
        self._offer(None)

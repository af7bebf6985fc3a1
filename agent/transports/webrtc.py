"""A browser's peer connection (aiortc) as the session's microphone, camera, speaker and event
feed.

aiortc's receiver queues every incoming frame without bound, so the microphone is drained all
the time (and resampled by PyAV); its sender calls ``recv`` in a loop, so the agent's voice
track is the clock: it hands out one 20 ms frame per 20 ms of wall time, silence when the agent
is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from livekit import rtc
from livekit.agents.voice import io

from audio.pcm import samples_to_frame
from audio.speaker import FRAME_MS, SpeakerOutput

from ..conversations import MIC_BACKLOG_FRAMES, VOICE_LEAD_FRAMES, CallerAudio
from ..vision import image_to_frame

logger = logging.getLogger("voice_agent")

VOICE_RATE = 48000
"""Opus's own rate: the agent's voice is resampled to it once, by LiveKit."""
MIC_RATE = 24000
"""What the session hears, as from a recording."""
MAX_BUFFERED_RECORDS = 200
MAX_VIDEO_FPS = 5
MIC_JITTER_CAPACITY = 16
"""aiortc's own capacity for audio (packets): only how long it waits before a frame goes out
is changed below."""


def without_unusable_candidates(sdp: str) -> str:
    """``sdp`` less the ICE candidates no packet can reach (a port past 65535, a line that is
    not a candidate): aioice would try them, and its socket would close on the first send."""

    def usable(line: str) -> bool:
        if not line.startswith("a=candidate:"):
            return True
        try:
            candidate = candidate_from_sdp(line.removeprefix("a=candidate:"))
        except (ValueError, AssertionError, IndexError):
            return False
        return 0 < candidate.port <= 65535

    return "".join(line for line in sdp.splitlines(keepends=True) if usable(line))


def hear_promptly(receiver: RTCRtpReceiver) -> None:
    """Hand each microphone frame on as soon as it is whole.

    aiortc holds four frames back (80 ms) to smooth playout for a listener; the microphone
    feeds a VAD and a recognizer, which lose nothing to a rare late packet but would wait 60 ms
    longer at every end of turn. Called before the first packet arrives (aiortc 1.16 keeps the
    buffer private)."""
    receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(  # type: ignore[attr-defined]
        capacity=MIC_JITTER_CAPACITY, prefetch=1
    )


class AgentVoiceTrack(MediaStreamTrack):
    """The agent's voice as an aiortc audio track, paced to the wall clock."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: asyncio.Queue[np.ndarray] = asyncio.Queue(VOICE_LEAD_FRAMES)
        self._samples = VOICE_RATE * FRAME_MS // 1000
        self._start: float | None = None
        self._pts = 0

    async def put(self, samples: np.ndarray) -> None:
        """Wait for room, then queue one frame of int16 mono samples."""
        await self._frames.put(samples)

    def clear(self) -> None:
        while not self._frames.empty():
            self._frames.get_nowait()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += self._samples
            await asyncio.sleep(self._start + self._pts / VOICE_RATE - time.monotonic())
        try:
            samples = self._frames.get_nowait()
        except asyncio.QueueEmpty:
            samples = np.zeros(self._samples, np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = VOICE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, VOICE_RATE)
        return frame


class WebRTCAudioOutput(SpeakerOutput):
    """The session's speaker: frames go to the voice track as fast as it takes them."""

    def __init__(self, track: AgentVoiceTrack) -> None:
        super().__init__("webrtc", sample_rate=VOICE_RATE)
        self._track = track

    def clear_buffer(self) -> None:
        super().clear_buffer()
        self._track.clear()

    async def _emit(self, samples: np.ndarray) -> None:
        await self._track.put(samples)


class _Drain:
    """A browser's track read all the time (aiortc queues what nobody reads without bound),
    each frame handed to ``take`` as it comes."""

    def __init__(self, track: MediaStreamTrack, take: Callable[[Any], None], name: str) -> None:
        self._arrived = asyncio.Event()
        self.ended = asyncio.Event()
        """Set when the browser's track stops (a closed tab, a dropped connection)."""
        self._task = asyncio.create_task(self._receive(track, take), name=name)

    async def _receive(self, track: MediaStreamTrack, take: Callable[[Any], None]) -> None:
        try:
            while True:
                take(await track.recv())
                self._arrived.set()
        except MediaStreamError:
            pass
        finally:
            self.ended.set()
            self._arrived.set()

    async def until(self, ready: Callable[[], bool]) -> bool:
        """Wait until ``ready()``; False once the track has ended with nothing ready."""
        while not ready():
            if self.ended.is_set():
                return False
            self._arrived.clear()
            await self._arrived.wait()
        return True

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class WebRTCAudioInput(CallerAudio):
    """The session's microphone: the browser's track, drained continuously."""

    def __init__(self, track: MediaStreamTrack) -> None:
        super().__init__("webrtc")
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=MIC_RATE)
        self._frames: deque[rtc.AudioFrame] = deque(maxlen=MIC_BACKLOG_FRAMES)
        self._drain = _Drain(track, self._take, "webrtc-mic")
        self.ended = self._drain.ended

    def _take(self, frame: av.AudioFrame) -> None:
        for mono in self._resampler.resample(frame):
            self._frames.append(samples_to_frame(mono.to_ndarray()[0], MIC_RATE))
        self.heard()

    async def __anext__(self) -> rtc.AudioFrame:
        if not await self._drain.until(lambda: bool(self._frames)):
            raise StopAsyncIteration
        return self._frames.popleft()

    async def aclose(self) -> None:
        await self._drain.aclose()


class WebRTCVideoInput(io.VideoInput):
    """The browser's camera: its track drained all the time (newest frame kept), handed on at
    most ``MAX_VIDEO_FPS`` times a second: LiveKit samples far fewer, and each frame handed on
    is converted once."""

    def __init__(self, track: MediaStreamTrack) -> None:
        super().__init__(label="webrtc")
        self.current_source = "webrtc"
        self._newest: av.VideoFrame | None = None
        self._drain = _Drain(track, self._take, "webrtc-camera")

    def _take(self, frame: av.VideoFrame) -> None:
        self._newest = frame

    async def __anext__(self) -> rtc.VideoFrame:
        await asyncio.sleep(1 / MAX_VIDEO_FPS)
        if not await self._drain.until(lambda: self._newest is not None):
            raise StopAsyncIteration
        frame, self._newest = self._newest, None
        assert frame is not None
        return image_to_frame(frame.to_image())

    async def aclose(self) -> None:
        await self._drain.aclose()


class EventChannel:
    """The ``events`` data channel: one JSON record per message, the same records as
    ``events.jsonl``; records written before the channel opens wait for it."""

    def __init__(self) -> None:
        self._channel: RTCDataChannel | None = None
        self._waiting: deque[str] = deque(maxlen=MAX_BUFFERED_RECORDS)

    def attach(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("open", self._flush)
        self._flush()

    def send(self, record: dict[str, Any]) -> None:
        self._waiting.append(json.dumps(record, ensure_ascii=False))
        self._flush()

    def _flush(self) -> None:
        channel = self._channel
        while channel is not None and channel.readyState == "open" and self._waiting:
            channel.send(self._waiting.popleft())

"""Smart Turn v3.2: whether the user has finished their turn, judged from the sound of it.

A fixed endpointing delay waits as long after "What time is it?" as after "I'd like to…"; an
end-of-turn model on the audio (intonation, a trailing word) lets a finished sentence commit at
once and keeps waiting through a pause in the middle of one. The model (8.7 MB ONNX, int8,
BSD-2-Clause, Daily) is Whisper-tiny's encoder with a classifier; it reads the last 8 s at
16 kHz as Whisper log-mel features and says how likely the turn is complete (0.5: pipecat's
threshold). LiveKit asks once the VAD has heard 0.2 s of silence and waits for the answer when
the turn would end: below the threshold it waits ``max_delay`` instead of ``min_delay``.

What was said counts too: a turn that sounds unfinished but whose transcript ends in a question
mark is finished. Synthetic and flat voices ask questions without a rising end: the demo's
espeak "What time is it right now?" scored 0.32 and waited the whole ``max_delay``. Only the
question mark counts: Whisper ends cut sentences with full stops and exclamation marks too
(JFK's "Ask not!" before his pause).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime
from livekit import rtc
from livekit.agents import APIConnectOptions
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from livekit.agents.voice.turn import TurnDetectionEvent
from transformers import WhisperFeatureExtractor

from .pcm import frames_to_mono

SAMPLE_RATE = 16_000
WINDOW_S = 8
COMPLETE_THRESHOLD = 0.5
PREDICTION_TIMEOUT_S = 1.0
TRANSCRIPT_WAIT_S = 0.6
"""How long a turn that sounds unfinished waits for its transcript: the recognizer hands it
over once the VAD's hangover (0.3 s) has ended the utterance."""


class SmartTurnModel:
    """The ONNX session and its feature extractor, loaded once and shared by every session."""

    def __init__(self, path: Path) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # ~50 ms a call; the other core keeps decoding
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._features = WhisperFeatureExtractor(chunk_length=WINDOW_S)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")
        self.name = path.stem

    def probability(self, samples: np.ndarray) -> float:
        """How likely the turn is complete, from int16 mono at 16 kHz (its end is what counts:
        the last 8 s, zero-padded in front as the model was trained)."""
        window = WINDOW_S * SAMPLE_RATE
        audio = samples[-window:].astype(np.float32) / 32768.0
        audio = np.pad(audio, (window - len(audio), 0))
        features = self._features(
            audio,
            sampling_rate=SAMPLE_RATE,
            return_tensors="np",
            padding="max_length",
            max_length=window,
            truncation=True,
            do_normalize=True,
        ).input_features.astype(np.float32)
        (output,) = self._session.run(None, {"input_features": features})
        return float(output[0][0])  # the graph ends in a sigmoid


class _Named:
    """What LiveKit's metrics name the detector by."""

    _model: SmartTurnModel

    @property
    def model(self) -> str:
        return self._model.name

    @property
    def provider(self) -> str:
        return "pipecat"


class SmartTurnDetector(_Named):
    """LiveKit's streaming turn detector, over a shared model; one stream per conversation."""

    def __init__(self, model: SmartTurnModel) -> None:
        self._model = model
        self._streams: weakref.WeakSet[SmartTurnStream] = weakref.WeakSet()

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> SmartTurnStream:
        stream = SmartTurnStream(self._model)
        self._streams.add(stream)
        return stream

    def heard(self, transcript: str) -> None:
        """The recognizer's final transcript of the user's latest words."""
        for stream in self._streams:
            stream.heard(transcript)


class SmartTurnStream(_Named):
    """The user's audio since the last committed turn (the latest 8 s), and one prediction at
    a time on it."""

    def __init__(self, model: SmartTurnModel) -> None:
        self._model = model
        self._frames: deque[rtc.AudioFrame] = deque()
        self._buffered_s = 0.0
        self._pending: asyncio.Future[TurnDetectionEvent] | None = None
        self._transcript: asyncio.Future[str] | None = None
        """The transcript of the words the pending prediction judges, once it comes."""

    @property
    def is_fallback(self) -> bool:
        return False

    @property
    def prediction_timeout(self) -> float:
        return PREDICTION_TIMEOUT_S

    async def unlikely_threshold(self, language: str | None) -> float | None:
        return COMPLETE_THRESHOLD

    async def backchannel_threshold(self, language: str | None) -> float | None:
        return None

    async def supports_language(self, language: str | None) -> bool:
        return True  # trained on 23 languages; a pause is a pause

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        self._frames.append(frame)
        self._buffered_s += frame.duration
        while self._buffered_s - self._frames[0].duration >= WINDOW_S:
            self._buffered_s -= self._frames.popleft().duration

    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        self.cancel_inference()
        frames = list(self._frames)
        asked_at = time.time()

        def judge() -> TurnDetectionEvent:  # on the model's worker, off the event loop
            started = time.perf_counter()
            probability = self._model.probability(frames_to_mono(frames, SAMPLE_RATE))
            return TurnDetectionEvent(
                type="eot_prediction",
                end_of_turn_probability=probability,
                last_speaking_time=asked_at,
                inference_duration=time.perf_counter() - started,
            )

        judged = asyncio.wrap_future(self._model.worker.submit(judge))
        self._transcript = asyncio.get_running_loop().create_future()
        self._pending = asyncio.ensure_future(_with_transcript(judged, self._transcript))
        return self._pending

    def heard(self, transcript: str) -> None:
        if self._transcript is not None and not self._transcript.done():
            self._transcript.set_result(transcript)

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        self._pending = None
        self._transcript = None

    def flush(self, reason: str | None = None) -> None:
        """The turn was committed or cleared: the next one starts from silence."""
        self.cancel_inference()
        self._frames.clear()
        self._buffered_s = 0.0

    def end_input(self) -> None:
        self.flush()

    async def aclose(self) -> None:
        self.flush()


async def _with_transcript(
    judged: asyncio.Future[TurnDetectionEvent], transcript: asyncio.Future[str]
) -> TurnDetectionEvent:
    """The audio's verdict, unless it says unfinished and the words are a question."""
    event = await judged
    if event.end_of_turn_probability >= COMPLETE_THRESHOLD:
        return event
    try:
        said = await asyncio.wait_for(transcript, TRANSCRIPT_WAIT_S)
    except TimeoutError:
        return event
    if not said.rstrip().endswith("?"):
        return event
    return replace(event, end_of_turn_probability=1.0)

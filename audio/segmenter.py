"""webrtcvad's per-window verdicts turned into utterances.

The LiveKit VAD stream and the Phi-4-MM engine's turn trimming both cut speech with this one
piece, so an utterance means the same thing to both.

webrtcvad judges only windows that stand out from the room by a margin. The room's noise floor is
the quietest window of the last few seconds (minimum statistics), so steady noise is never
speech, not even at the start of a stream. webrtcvad itself hears little below -45 dBFS, so it
judges quiet speech amplified. A long utterance is cut into pieces that a recognizer with a 30 s
window hears whole, none of its audio lost.

The windows are judged without a cheap microphone's DC offset (half full scale hid every word),
tracked as a slow running mean, which leaves speech as it was. Where the profile asks
(``high_pass``, ``denoise``), they are judged on a copy cleaned by WebRTC's own audio processing
(LiveKit's ``AudioProcessingModule``): its high-pass filter removes rumble, and its suppressor
steady noise (white noise 5 dB below the speaker hid a third of JFK's words; ``bench/vad.py``).
The audio handed on is the input, untouched: the recognizer copes with an offset and noise
better than with a suppressor's artefacts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import webrtcvad
from livekit import rtc

VAD_SAMPLE_RATE = 16000
APM_CHUNK = VAD_SAMPLE_RATE // 100
"""WebRTC's audio processing takes 10 ms at a time."""
DENOISER_WARMUP_CHUNKS = 100
"""The suppressor learns the room over its first second, and takes a word said in it for
noise: until then the windows are judged as kept."""
DC_TRACKING_S = 0.5
"""The microphone's DC offset is the mean of about this much audio: speech averages out over
it, and an offset that changes (a device plugged in) is followed within a second."""
_GAIN_RELEASE_DB_PER_S = 1.0  # how fast the gain for quiet speech comes back after loud speech


@dataclass(frozen=True)
class SegmenterOptions:
    aggressiveness: int = 3
    """0 (lenient) … 3 (strict); 3 rejects most background noise."""
    frame_ms: int = 30
    """10, 20 or 30: the window webrtcvad judges at once."""
    min_speech_s: float = 0.1
    """Voiced audio needed before speech starts, so clicks don't start turns."""
    min_silence_s: float = 0.3
    """Hangover: silence needed before speech ends, so short pauses don't end turns."""
    pause_s: float = 0.15
    """Silence after which an utterance counts as paused (a ``pause`` transition), so that a
    recognizer may start on it while the hangover decides. Whisper tiny.en heard 2 of 28
    utterances otherwise at the pause than after the hangover at 0.15 s, 3–4 at 0.09–0.12 s
    (``bench/stt.py``): a word's fading end is still in the silence after it."""
    padding_s: float = 0.3
    """Pre-roll kept before the detected start, so the first syllable is not lost."""
    noise_margin_db: float = 8.0
    """Windows less than this above the noise floor are silence whatever webrtcvad says: it takes
    steady noise at the start of a stream for speech. 8 dB keeps steady white noise and hum out
    and lets speech 10 dB above white noise in; less lets pink noise in."""
    noise_floor_s: float = 3.0
    """The noise floor is the quietest window of this span: longer than speech goes without a
    dip, short enough to follow a room that gets noisier."""
    min_level_dbfs: float = -70.0
    """Windows quieter than this are silence and no measure of the room: digital near-silence and
    dither are never speech, and noise that follows them is still noise."""
    gain_target_dbfs: float = -30.0
    """webrtcvad hears the recent speech amplified to about this level, so a quiet speaker is
    heard. Louder, it takes bursts of noise for speech; louder speech is left as it is, so a
    breath after a loud talker stays as faint as it is."""
    max_gain_db: float = 30.0
    """The most that quiet audio is amplified by before webrtcvad judges it."""
    split_after_s: float = 25.0
    """An utterance this long is cut where the speaker next pauses, so a recognizer with a 30 s
    window (Whisper) hears all of a long monologue, in pieces."""
    max_utterance_s: float = 30.0
    """An utterance is cut here even without a pause: no piece carries more audio."""
    high_pass: bool = False
    """Judge speech without rumble below ~80 Hz (traffic, air conditioning). Off unless asked:
    judged high-passed, the "two" of one_two_three_en.wav is 0.15 s of speech, and short words
    said alone make turns too short for the Phi-4-MM engine's clips. The DC offset is removed
    either way."""
    denoise: bool = False
    """Judge speech with steady noise suppressed (off unless asked, as ``high_pass``)."""

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError("VAD aggressiveness must be 0, 1, 2 or 3")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("VAD frame_ms must be 10, 20 or 30")
        if min(self.min_speech_s, self.min_silence_s, self.padding_s, self.pause_s) < 0:
            raise ValueError("VAD durations must not be negative")
        if min(self.noise_margin_db, self.max_gain_db) < 0 or self.noise_floor_s <= 0:
            raise ValueError("VAD noise_floor_s must be positive, margins and gains not negative")
        if not self.padding_s < self.split_after_s <= self.max_utterance_s:
            raise ValueError("VAD needs padding_s < split_after_s <= max_utterance_s")


@dataclass(frozen=True)
class Transition:
    """Speech started, paused (the speaker may go on) or ended, with the state at that window."""

    kind: Literal["start", "pause", "end"]
    samples_index: int
    """16 kHz samples judged so far, this window included."""
    speech_s: float
    silence_s: float
    """Trailing silence of an ending utterance; 0 where a long one was cut."""
    speech: bytes
    """The utterance so far (16 kHz int16), pre-roll included."""


class SpeechSegmenter:
    """Feed 16 kHz int16 audio in any chunk size; get utterance starts and ends back."""

    def __init__(self, opts: SegmenterOptions | None = None) -> None:
        self.opts = opts = opts or SegmenterOptions()
        self._detector = webrtcvad.Vad(opts.aggressiveness)
        self.window = VAD_SAMPLE_RATE * opts.frame_ms // 1000
        self.window_s = opts.frame_ms / 1000
        self._min_speech_w = max(1, round(opts.min_speech_s / self.window_s))
        self._min_silence_w = max(1, round(opts.min_silence_s / self.window_s))
        self._pause_w = max(1, round(opts.pause_s / self.window_s))
        self._split_w = round(opts.split_after_s * 1000) // opts.frame_ms
        self._max_w = max(1, round(opts.max_utterance_s * 1000) // opts.frame_ms)
        self._floor_w = max(1, round(opts.noise_floor_s / self.window_s))
        self._margin = 10 ** (opts.noise_margin_db / 10)
        self._min_power = _power(opts.min_level_dbfs)
        self._target_power = _power(opts.gain_target_dbfs)
        self._quiet_power = _power(opts.gain_target_dbfs - opts.max_gain_db)
        self._release = 10 ** (-_GAIN_RELEASE_DB_PER_S * self.window_s / 10)
        self._dc_rate = self.window_s / DC_TRACKING_S
        self._ramp = np.linspace(0.0, 1.0, self.window, endpoint=False, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        # durations are counted in windows: integer bookkeeping keeps the hot loop cheap
        self._cleaner = _Cleaner(high_pass=self.opts.high_pass, denoise=self.opts.denoise)
        self._dc: float | None = None
        self._pending = self._pending_judged = b""
        self._preroll: deque[bytes] = deque(
            maxlen=max(1, round(self.opts.padding_s / self.window_s))
        )
        self._speech: list[bytes] = []
        # (window number, power) with rising powers: the front is the floor, O(1) per window
        self._floor: deque[tuple[int, float]] = deque()
        self._speech_power = self._quiet_power  # loudest recent voiced window, decaying
        self.speaking = False
        self.samples_index = 0
        self.speech_w = 0  # windows in the current utterance
        self.silence_w = 0  # unvoiced windows since the utterance's last voiced one
        self.raw_speech_w = 0  # consecutive voiced windows
        self.raw_silence_w = 0  # consecutive unvoiced windows

    def feed(self, audio: bytes) -> list[Transition]:
        """Judge every complete window; the remainder waits for the next call."""
        judged = self._pending_judged + self._cleaner.clean(audio)
        audio = self._pending + audio
        size = self.window * 2
        count = len(judged) // size  # the cleaner holds back less than 10 ms
        self._pending, self._pending_judged = audio[count * size :], judged[count * size :]
        if not count:
            return []
        frames = np.frombuffer(judged, dtype=np.int16, count=count * self.window).reshape(count, -1)
        frames = self._without_dc(frames)
        powers = np.square(frames).mean(axis=1).tolist()
        is_speech = self._detector.is_speech
        transitions: list[Transition] = []
        for i, salient in enumerate(self._above_floor(powers)):
            window = audio[i * size : (i + 1) * size]
            voiced = False
            if salient:
                # amplified no louder than the target: clipped, any window sounds like noise
                gain = (self._target_power / max(self._speech_power, powers[i])) ** 0.5
                heard = _amplified(frames[i], max(gain, 1.0))
                if voiced := is_speech(heard, VAD_SAMPLE_RATE):
                    self._speech_power = max(self._speech_power, powers[i])
            self._speech_power = max(self._speech_power * self._release, self._quiet_power)
            self._advance(window, voiced, transitions)
        return transitions

    def _without_dc(self, frames: np.ndarray) -> np.ndarray:
        """The windows less the offset, which glides from window to window: a step at a
        window's edge would sound to webrtcvad, whose filters run across windows, like a click."""
        means = frames.mean(axis=1).tolist()
        offsets = [means[0] if self._dc is None else self._dc]
        for mean in means:
            offsets.append(offsets[-1] + self._dc_rate * (mean - offsets[-1]))
        self._dc = offsets[-1]
        levels = np.asarray(offsets, dtype=np.float32)
        return frames - (levels[:-1, None] + np.diff(levels)[:, None] * self._ramp)

    def finish(self) -> Transition | None:
        """End an utterance still open when the audio stops; then start afresh."""
        transition = self._transition("end") if self.speaking else None
        self.reset()
        return transition

    def _above_floor(self, powers: list[float]) -> list[bool]:
        """Whether each window stands out from the noise floor, which it updates."""
        floor, first = self._floor, self.samples_index // self.window
        salient = []
        for n, power in enumerate(powers, first):
            if power < self._min_power:
                salient.append(False)
                continue
            while floor and floor[-1][1] >= power:
                floor.pop()
            floor.append((n, power))
            while floor[0][0] <= n - self._floor_w:
                floor.popleft()
            salient.append(power >= floor[0][1] * self._margin)
        return salient

    def _advance(self, window: bytes, voiced: bool, transitions: list[Transition]) -> None:
        cut = self.speaking and (
            len(self._speech) >= self._max_w
            or (voiced and self.silence_w > 0 and len(self._speech) >= self._split_w)
        )
        if cut:  # before this window: after a pause, the continuation starts with the speaker
            transitions.append(self._transition("end", silence_w=0))
            self.speaking = True
        self.samples_index += self.window
        if voiced:
            self.raw_speech_w += 1
            self.raw_silence_w = 0
        else:
            self.raw_silence_w += 1
            self.raw_speech_w = 0

        if self.speaking:
            self._speech.append(window)
            self.speech_w += 1
            self.silence_w = 0 if voiced else self.silence_w + 1
            if cut:
                transitions.append(self._transition("start"))
            elif self.silence_w >= self._min_silence_w:
                transitions.append(self._transition("end"))
            elif self.silence_w == self._pause_w:
                transitions.append(self._transition("pause"))
            return

        self._preroll.append(window)
        if voiced and self.raw_speech_w >= self._min_speech_w:
            self.speaking = True
            self._speech = list(self._preroll)
            self._preroll.clear()
            self.speech_w = self.raw_speech_w
            self.silence_w = 0
            transitions.append(self._transition("start"))

    def _transition(
        self, kind: Literal["start", "pause", "end"], silence_w: int | None = None
    ) -> Transition:
        transition = Transition(
            kind=kind,
            samples_index=self.samples_index,
            speech_s=self.speech_w * self.window_s,
            silence_s=(self.silence_w if silence_w is None else silence_w) * self.window_s,
            speech=b"".join(self._speech),
        )
        if kind == "end":
            self.speaking = False
            self._speech = []
            self.speech_w = 0
            self.silence_w = 0
        return transition


class _Cleaner:
    """The audio as the VAD judges it, 10 ms at a time (a remainder waits for the next call):
    high-passed, then denoised, as the options say."""

    def __init__(self, *, high_pass: bool, denoise: bool) -> None:
        self._pending = b""
        self._chunks = 0
        apm = rtc.AudioProcessingModule
        self._high_pass = apm(high_pass_filter=True) if high_pass else None
        self._denoiser = apm(noise_suppression=True) if denoise else None

    def clean(self, audio: bytes) -> bytes:
        if self._high_pass is None and self._denoiser is None:
            return audio
        audio = self._pending + audio
        whole = len(audio) // (APM_CHUNK * 2) * APM_CHUNK * 2
        audio, self._pending = audio[:whole], audio[whole:]
        audio = _processed(self._high_pass, audio)
        cleaned = _processed(self._denoiser, audio)
        if self._chunks < DENOISER_WARMUP_CHUNKS:  # until the suppressor knows the room
            warm = (DENOISER_WARMUP_CHUNKS - self._chunks) * APM_CHUNK * 2
            cleaned = audio[:warm] + cleaned[warm:]
        self._chunks += whole // (APM_CHUNK * 2)
        return cleaned


def _processed(apm: rtc.AudioProcessingModule | None, audio: bytes) -> bytes:
    if apm is None:
        return audio
    out = bytearray()
    for start in range(0, len(audio), APM_CHUNK * 2):
        frame = rtc.AudioFrame(audio[start : start + APM_CHUNK * 2], VAD_SAMPLE_RATE, 1, APM_CHUNK)
        apm.process_stream(frame)  # in place
        out += frame.data.tobytes()
    return bytes(out)


def _power(dbfs: float) -> float:
    return (32768 * 10 ** (dbfs / 20)) ** 2


def _amplified(window: np.ndarray, gain: float) -> bytes:
    return np.clip(window * gain, -32768, 32767).astype(np.int16).tobytes()


def speech_bounds(
    samples: np.ndarray, opts: SegmenterOptions | None = None
) -> list[tuple[int, int]]:
    """(first, last) 16 kHz sample of each utterance in a whole recording, without padding.

    The pieces of a long utterance that was cut abut.
    """
    segmenter = SpeechSegmenter(opts)
    transitions = segmenter.feed(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    if (last := segmenter.finish()) is not None:
        transitions.append(last)
    bounds, start = [], 0
    for t in transitions:
        if t.kind == "start":
            start = t.samples_index - round(t.speech_s * VAD_SAMPLE_RATE)
        elif t.kind == "end":
            bounds.append((start, t.samples_index - round(t.silence_s * VAD_SAMPLE_RATE)))
    return bounds

"""The WebRTC VAD cuts real speech into utterances and ignores silence and low noise."""

from __future__ import annotations

import numpy as np
import pytest
from livekit.agents.vad import VADEventType

from audio import WebRTCVAD, WebRTCVADOptions, load_audio
from audio.pcm import samples_to_frame
from tests.conftest import SHARED_AUDIO

# Pauses in speech60_en.wav found by inspection: every 100 ms window in them is below -45 dBFS.
LONG_PAUSES_EN = [(6.9, 9.2), (19.6, 20.2), (39.0, 39.6), (46.8, 48.7), (50.1, 51.0)]


async def segments(
    samples: np.ndarray, rate: int, options: WebRTCVADOptions | None = None, frame_ms: int = 20
):
    """(start, end) seconds of each utterance, and all events."""
    stream = WebRTCVAD(options).stream()
    step = rate * frame_ms // 1000
    for i in range(0, len(samples), step):
        stream.push_frame(samples_to_frame(samples[i : i + step], rate))
    stream.end_input()
    found, events, start = [], [], 0.0
    async for event in stream:
        events.append(event)
        if event.type == VADEventType.START_OF_SPEECH:
            start = event.samples_index / 16000 - event.speech_duration
        elif event.type == VADEventType.END_OF_SPEECH:
            found.append((start, event.samples_index / 16000 - event.silence_duration))
    return found, events


async def test_a_minute_of_english_is_cut_at_its_pauses():
    samples = load_audio(SHARED_AUDIO / "speech60_en.wav", 16000)
    found, _ = await segments(samples, 16000)
    assert 14 <= len(found) <= 20
    for pause_start, pause_end in LONG_PAUSES_EN:  # 0.1 s: the edges are judged in 100 ms steps
        assert not any(s < pause_end - 0.1 and e > pause_start + 0.1 for s, e in found), found
    # every loud 100 ms window lies inside an utterance
    windows = samples[: len(samples) // 1600 * 1600].reshape(-1, 1600).astype(np.float64)
    loud = np.flatnonzero(20 * np.log10(np.sqrt((windows**2).mean(axis=1)) / 32768 + 1e-9) > -30)
    for index in loud:
        t = index / 10 + 0.05
        assert any(s - 0.05 <= t <= e + 0.05 for s, e in found), t


@pytest.mark.parametrize("rate", [24000, 48000])
async def test_other_input_rates_are_resampled_to_the_same_cuts(rate):
    reference, _ = await segments(load_audio(SHARED_AUDIO / "speech60_en.wav", 16000), 16000)
    found, _ = await segments(load_audio(SHARED_AUDIO / "speech60_en.wav", rate), rate)
    assert len(found) == len(reference)
    assert np.allclose(np.array(found), np.array(reference), atol=0.1)


async def test_end_of_speech_carries_the_utterance_with_its_preroll():
    speech = load_audio(SHARED_AUDIO / "one_two_three_en.wav", 16000)
    samples = np.concatenate([speech, np.zeros(16000, np.int16)])  # the caller then goes quiet
    options = WebRTCVADOptions(padding_s=0.3, min_silence_s=0.3)
    found, events = await segments(samples, 16000, options)
    ends = [e for e in events if e.type == VADEventType.END_OF_SPEECH]
    assert len(found) == 3  # "one", "two", "three", half a second apart
    for (start, end), event in zip(found, ends, strict=True):
        carried = sum(f.duration for f in event.frames)
        # the utterance, up to 0.3 s of pre-roll and the 0.3 s hangover
        assert end - start + 0.3 <= carried + 0.05 <= end - start + 0.65
        assert event.speech_duration > 0 and event.silence_duration >= 0.3


async def test_inference_events_report_speaking_state():
    samples = load_audio(SHARED_AUDIO / "jfk.flac", 16000)
    _, events = await segments(samples, 16000)
    inference = [e for e in events if e.type == VADEventType.INFERENCE_DONE]
    assert any(e.speaking for e in inference) and any(not e.speaking for e in inference)
    assert all(e.raw_accumulated_speech == 0 or e.raw_accumulated_silence == 0 for e in inference)


@pytest.mark.parametrize(
    "noise",
    [
        np.zeros(16000 * 5, np.int16),
        np.random.default_rng(1).normal(0, 100, 16000 * 5).astype(np.int16),  # about -50 dBFS
        (np.sin(np.arange(16000 * 5) * 2 * np.pi * 50 / 16000) * 300).astype(np.int16),  # mains hum
    ],
    ids=["digital-silence", "low-white-noise", "low-hum"],
)
async def test_silence_and_low_noise_are_not_speech(noise):
    found, events = await segments(noise, 16000)
    assert found == []
    assert not any(e.type == VADEventType.START_OF_SPEECH for e in events)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="frame_ms"):
        WebRTCVADOptions(frame_ms=25)
    with pytest.raises(ValueError, match="aggressiveness"):
        WebRTCVADOptions(aggressiveness=4)

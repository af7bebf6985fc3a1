"""The WebRTC VAD cuts real speech into utterances and ignores silence and low noise."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from livekit.agents.vad import VADEventType

from audio import WebRTCVAD, WebRTCVADOptions, load_audio
from audio.pcm import samples_to_frame
from audio.segmenter import speech_bounds
from tests.conftest import SHARED_AUDIO

# Pauses in speech60_en.wav found by inspection: every 100 ms window in them is below -45 dBFS.
LONG_PAUSES_EN = [(6.9, 9.2), (19.6, 20.2), (39.0, 39.6), (46.8, 48.7), (50.1, 51.0)]


CLEANED = WebRTCVADOptions(high_pass=True, denoise=True)
"""As a profile for a cheap microphone or a noisy hall sets ``[vad]``."""


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


def carried(events) -> list[tuple[float, float]]:
    """(start, end) seconds of the audio each END_OF_SPEECH hands on, pre-roll included."""
    ends = [e for e in events if e.type == VADEventType.END_OF_SPEECH]
    return [
        (e.samples_index / 16000 - sum(f.duration for f in e.frames), e.samples_index / 16000)
        for e in ends
    ]


def level_dbfs(samples: np.ndarray) -> np.ndarray:
    """Level of each 30 ms window."""
    windows = samples[: len(samples) // 480 * 480].reshape(-1, 480).astype(np.float64)
    return 10 * np.log10((windows**2).mean(axis=1) / 32768**2 + 1e-12)


def speech_level_dbfs(speech: np.ndarray) -> float:
    """Active speech level: the power of the windows less than 25 dB below the loudest."""
    levels = level_dbfs(speech)
    active = 10 ** (levels[levels > levels.max() - 25] / 10)
    return float(10 * np.log10(active.mean()))


def at_level(speech: np.ndarray, dbfs: float) -> np.ndarray:
    return speech * 10 ** ((dbfs - speech_level_dbfs(speech)) / 20)


def white_noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 32768 * 10 ** (dbfs / 20), round(seconds * 16000))


def pcm(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def words(speech: np.ndarray, offset_s: float) -> list[float]:
    """Middle (seconds) of each 30 ms window of speech no more than 10 dB below its level."""
    loud = np.flatnonzero(level_dbfs(speech) > speech_level_dbfs(speech) - 10)
    return [offset_s + (index + 0.5) * 0.03 for index in loud]


async def test_a_minute_of_english_is_cut_at_its_pauses():
    samples = load_audio(SHARED_AUDIO / "speech60_en.wav", 16000)
    found, _ = await segments(samples, 16000)
    assert 14 <= len(found) <= 20
    for pause_start, pause_end in LONG_PAUSES_EN:  # 0.1 s: the edges are judged in 100 ms steps
        assert not any(s < pause_end - 0.1 and e > pause_start + 0.1 for s, e in found), found
    # every loud 100 ms window lies inside an utterance; speech at the very start of the stream,
    # before the room's noise floor is known, comes with the first utterance as its pre-roll
    windows = samples[: len(samples) // 1600 * 1600].reshape(-1, 1600).astype(np.float64)
    loud = np.flatnonzero(20 * np.log10(np.sqrt((windows**2).mean(axis=1)) / 32768 + 1e-9) > -30)
    for index in loud:
        t = index / 10 + 0.05
        in_preroll = found[0][0] - 0.3 <= t <= found[0][0]
        assert in_preroll or any(s - 0.05 <= t <= e + 0.05 for s, e in found), t


@pytest.mark.parametrize("rate", [24000, 48000])
async def test_other_input_rates_are_resampled_to_the_same_cuts(rate):
    reference, _ = await segments(load_audio(SHARED_AUDIO / "speech60_en.wav", 16000), 16000)
    found, _ = await segments(load_audio(SHARED_AUDIO / "speech60_en.wav", rate), rate)
    assert len(found) == len(reference)
    assert np.allclose(np.array(found), np.array(reference), atol=0.1)


async def test_telephone_speech_is_cut_almost_as_at_full_band():
    """A phone call's G.711 audio is 8 kHz: nothing above 4 kHz. One pause more or fewer is
    told, and the speech found is the same to within a tenth of a second at each edge."""
    reference, _ = await segments(load_audio(SHARED_AUDIO / "speech60_en.wav", 16000), 16000)
    found, _ = await segments(load_audio(SHARED_AUDIO / "speech60_en.wav", 8000), 8000)
    assert abs(len(found) - len(reference)) <= 1
    speech = sum(e - s for s, e in reference)
    overlap = sum(max(0.0, min(e, e2) - max(s, s2)) for s, e in reference for s2, e2 in found)
    assert overlap >= 0.95 * speech, (overlap, speech)


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
        pcm(white_noise(5, -30)),  # steady noise far louder than any fixed gate would allow
        pcm(np.concatenate([np.zeros(16000), white_noise(4, -40)])),  # the mic comes alive
    ],
    ids=[
        "digital-silence",
        "low-white-noise",
        "low-hum",
        "loud-white-noise",
        "noise-after-silence",
    ],
)
async def test_silence_and_low_noise_are_not_speech(noise):
    found, events = await segments(noise, 16000)
    assert found == []
    assert not any(e.type == VADEventType.START_OF_SPEECH for e in events)


@pytest.mark.parametrize("level", [-45, -50])
@pytest.mark.parametrize("room", ["quiet-room", "digital-silence"])
@pytest.mark.parametrize("name", ["jfk.flac", "one_two_three_en.wav"])
async def test_a_quiet_speaker_in_a_quiet_room_is_heard(name, room, level):
    # a user a metre from a laptop mic without gain
    speech = at_level(load_audio(SHARED_AUDIO / name, 16000), level)
    seconds = len(speech) / 16000 + 2
    audio = white_noise(seconds, -75) if room == "quiet-room" else np.zeros(round(seconds * 16000))
    audio[16000 : 16000 + len(speech)] += speech
    found, events = await segments(pcm(audio), 16000)
    assert found and all(1.0 - 0.1 <= s < e <= 1.0 + len(speech) / 16000 + 0.1 for s, e in found)
    heard = carried(events)
    for t in words(speech, 1.0):  # the recognizer gets every word
        assert any(s <= t <= e for s, e in heard), (t, heard)


@pytest.mark.parametrize("name", ["jfk.flac", "one_two_three_en.wav"])
@pytest.mark.parametrize("snr_db", [10, 5, 0])
async def test_steady_noise_never_starts_speech_and_speech_in_it_is_heard(name, snr_db):
    """The noise starts 2.5 s before the speech and goes on 2.5 s after it; at 5 dB SNR (a
    kiosk in a hall) every word is heard, at 0 dB every utterance."""
    speech = at_level(load_audio(SHARED_AUDIO / name, 16000), -26)
    noise = white_noise(len(speech) / 16000 + 5, -26 - snr_db, seed=snr_db)
    alone, _ = await segments(pcm(noise), 16000, CLEANED)
    assert alone == [], "noise alone is no speech"
    noise[40000 : 40000 + len(speech)] += speech
    found, events = await segments(pcm(noise), 16000, CLEANED)
    assert all(2.5 - 0.1 <= s < e <= 2.5 + len(speech) / 16000 + 0.1 for s, e in found), found
    own = [(2.5 + s, 2.5 + e) for s, e in (await segments(pcm(speech), 16000, CLEANED))[0]]
    assert all(any(s < d and c < e for s, e in found) for c, d in own), (own, found)
    if snr_db >= 5:
        heard = carried(events)
        assert all(any(s <= t <= e for s, e in heard) for t in words(speech, 2.5)), heard


@pytest.mark.parametrize("name", ["jfk.flac", "one_two_three_en.wav"])
async def test_a_microphone_with_a_dc_offset_of_half_full_scale_is_heard(name):
    """By default, and cut as the same speech without the offset is."""
    speech = load_audio(SHARED_AUDIO / name, 16000) * 0.4
    audio = np.full(len(speech) + 3 * 16000, 0.5 * 32767)
    audio[16000 : 16000 + len(speech)] += speech
    found, events = await segments(pcm(audio), 16000)
    without, _ = await segments(pcm(audio - 0.5 * 32767), 16000)
    assert len(found) == len(without), (found, without)
    assert np.allclose(found, without, atol=0.1), (found, without)
    assert found and all(1.0 - 0.1 <= s < e <= 1.0 + len(speech) / 16000 + 0.1 for s, e in found)
    heard = carried(events)
    assert all(any(s <= t <= e for s, e in heard) for t in words(speech, 1.0)), heard
    frames = [
        np.frombuffer(f.data, np.int16)
        for e in events
        if e.type == VADEventType.END_OF_SPEECH
        for f in e.frames
    ]
    assert abs(np.concatenate(frames).mean() - 0.5 * 32767) < 2000, (
        "the recognizer gets the audio as it came"
    )


@pytest.mark.parametrize(
    "options",
    [
        WebRTCVADOptions(min_silence_s=2.0),  # cut at a pause after 25 s
        WebRTCVADOptions(min_silence_s=2.0, split_after_s=5.0, max_utterance_s=5.0),  # cut at 5 s
    ],
    ids=["at-pauses", "hard-limit"],
)
async def test_a_long_monologue_is_split_never_truncated(options):
    # JFK's speech over and over, its pauses too short to end the turn
    jfk = load_audio(SHARED_AUDIO / "jfk.flac", 16000)
    samples = np.concatenate([np.tile(jfk, 7)[: 70 * 16000], np.zeros(16000, np.int16)])
    found, events = await segments(samples, 16000, options)
    heard = carried(events)
    assert all(e - s <= options.max_utterance_s for s, e in heard), heard
    # the pieces abut, and every sample from the first word to the last is handed on exactly once
    assert all(start == pytest.approx(end) for (_, end), (start, _) in pairwise(heard))
    assert all(start == pytest.approx(end) for (_, end), (start, _) in pairwise(found))
    ends = [e for e in events if e.type == VADEventType.END_OF_SPEECH]
    audio = np.concatenate([np.frombuffer(f.data, np.int16) for e in ends for f in e.frames])
    first, last = round(heard[0][0] * 16000), round(heard[-1][1] * 16000)
    assert np.array_equal(audio, samples[first:last])
    assert all(first / 16000 <= t <= last / 16000 for t in words(samples, 0.0))
    # the Phi-4-MM turn trimming gets the same pieces
    assert np.allclose(np.array(speech_bounds(samples, options)) / 16000, found)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="frame_ms"):
        WebRTCVADOptions(frame_ms=25)
    with pytest.raises(ValueError, match="aggressiveness"):
        WebRTCVADOptions(aggressiveness=4)
    with pytest.raises(ValueError, match="split_after_s"):
        WebRTCVADOptions(split_after_s=40.0)

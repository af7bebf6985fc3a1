"""Input nobody here wrote: hostile audio files, a quiet speaker, a three-minute monologue and the
fastest playback — each ends in a correct run or one clear line, never a traceback or a hang."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

from audio import AudioDecodeError, load_audio
from audio.segmenter import speech_bounds
from tests.conftest import SHARED_AUDIO, voice_agent

RATE = 24000
JFK = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
)


def hostile_files(folder: Path) -> dict[str, Path]:
    speech = load_audio(SHARED_AUDIO / "jfk.flac", 48000)
    noise = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    noise[[100, 200, 300]] = [np.nan, np.inf, -np.inf]
    whole = (SHARED_AUDIO / "speech60_en.wav").read_bytes()
    files = {
        "nan-and-inf.wav": lambda p: sf.write(p, noise, 16000, subtype="FLOAT"),
        "8-bit.wav": lambda p: sf.write(p, speech[:96000], 48000, subtype="PCM_U8"),
        "6-channels.wav": lambda p: sf.write(p, np.tile(speech[:96000, None], (1, 6)), 48000),
        "96-khz.wav": lambda p: sf.write(p, load_audio(SHARED_AUDIO / "jfk.flac", 96000), 96000),
        "0.05-s.wav": lambda p: sf.write(p, speech[:2400], 48000),
        "truncated.wav": lambda p: p.write_bytes(whole[: len(whole) // 3]),
        "header-only.wav": lambda p: p.write_bytes(whole[:44]),
        "cut-header.wav": lambda p: p.write_bytes(whole[:30]),
    }
    paths = {}
    for name, write in files.items():
        write(folder / name)
        paths[name] = folder / name
    return paths


@pytest.mark.parametrize(
    "name, seconds",
    [
        ("nan-and-inf.wav", 1.0),
        ("8-bit.wav", 2.0),
        ("6-channels.wav", 2.0),
        ("96-khz.wav", 11.0),
        ("0.05-s.wav", 0.05),
        ("truncated.wav", 20.0),  # the part that is there
        ("header-only.wav", None),
        ("cut-header.wav", None),
    ],
)
def test_decoder_hostile_audio_loads_or_is_refused_in_one_line(tmp_path, name, seconds):
    path = hostile_files(tmp_path)[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning for NaN or infinities
        if seconds is None:
            with pytest.raises(AudioDecodeError) as error:
                load_audio(path, RATE)
            assert "\n" not in str(error.value)
            return
        samples = load_audio(path, RATE)
    assert len(samples) / RATE == pytest.approx(seconds, abs=0.01)


def test_a_nan_file_and_a_20_ms_file_run_to_a_summary(tmp_path):
    files = hostile_files(tmp_path)
    for name in ("nan-and-inf.wav", "0.05-s.wav"):
        out = tmp_path / f"out-{name}"
        result = voice_agent("run-file", str(files[name]), "--out", str(out), "-q")
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr and "Traceback" not in result.stderr
        last = json.loads((out / "events.jsonl").read_text().splitlines()[-1])
        assert last["type"] == "summary"


def at_level(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """Scaled so the speech (its windows above -60 dBFS) has an RMS of ``dbfs``."""
    x = samples.astype(np.float64)
    windows = x[: len(x) // 480 * 480].reshape(-1, 480)
    rms = np.sqrt((windows**2).mean(axis=1))
    active = np.sqrt((windows[rms > 32768 * 10**-3] ** 2).mean())
    return np.round(x * 32768 * 10 ** (dbfs / 20) / active).astype(np.int16)


def user_words(out: Path) -> str:
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    heard = " ".join(e["transcript"] for e in events if e["type"] == "user_turn")
    return jiwer.RemovePunctuation()(heard.lower())


def test_a_quiet_speaker_a_metre_from_the_mic_gets_answered(tmp_path):
    speech = load_audio(SHARED_AUDIO / "jfk.flac", RATE)
    room = np.random.default_rng(3).normal(0, 32768 * 10 ** (-75 / 20), RATE).astype(np.int16)
    quiet = np.concatenate([room, at_level(speech, -50), room, room])
    sf.write(tmp_path / "quiet.wav", quiet, RATE)
    result = voice_agent("run-file", str(tmp_path / "quiet.wav"), "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    assert jiwer.wer(JFK, user_words(tmp_path)) < 0.3, user_words(tmp_path)


def test_a_long_monologue_is_heard_to_its_last_word(tmp_path):
    """A patient profile (2 s pauses allowed) hears 79 s without a pause long enough to end
    the turn — JFK, a minute of English with its pauses shortened, JFK again: the recognizer
    gets it in pieces, none of it cut off at the old 60 s buffer's end."""
    jfk = load_audio(SHARED_AUDIO / "jfk.flac", 16000)
    minute = load_audio(SHARED_AUDIO / "speech60_en.wav", 16000)
    gap = np.zeros(4800, np.int16)
    parts = [jfk, gap]
    for start, end in speech_bounds(minute):
        parts += [minute[max(0, start - 1600) : end + 1600], gap]
    sf.write(tmp_path / "long.wav", np.concatenate([*parts, jfk]), 16000)
    profile = tmp_path / "patient.toml"
    profile.write_text('name = "patient"\nprompt = "desktop"\n[vad]\nmin_silence_s = 2.0\n')
    result = voice_agent(
        "run-file", str(tmp_path / "long.wav"), "--out", str(tmp_path), "-q",
        "--profile", str(profile), "--speed", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    heard = user_words(tmp_path)
    assert heard.startswith("and so my fellow americans"), heard
    assert "piketty" in heard, "the middle was heard"
    last = heard.rfind("ask what you can do for your country")
    assert last > heard.index("piketty"), f"the last words, past 60 s, were heard: {heard}"


def test_the_fastest_playback_writes_the_input_and_the_answer_not_more(tmp_path):
    """At 10× the user's side plays fast, but what follows it is the agent answering at its own
    pace: the files hold the input plus the last reply, not a stretched silence. (The reply may
    be the time, 5 s of speech, begun up to 6.4 s after the input here and later on a busy
    machine: 20 s is room for it; a timeline still running at 10× put it 44 s past the input.)"""
    source = SHARED_AUDIO / "one_two_three_en.wav"
    result = voice_agent("run-file", str(source), "--out", str(tmp_path), "-q", "--speed", "10")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    replies = [e for e in events if e["type"] == "agent_reply"]
    assert replies, "the agent answered"
    duration = sf.info(tmp_path / "conversation.wav").duration
    input_s = sf.info(source).duration
    assert input_s <= duration < input_s + 20, duration

"""The end of a turn is heard in the voice: Smart Turn v3.2 on real speech, alone and in a
conversation where the speaker pauses in the middle of a sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from agent.models import bundled_smart_turn
from audio import load_audio
from audio.pcm import samples_to_frame
from audio.turn import SAMPLE_RATE, SmartTurnDetector, SmartTurnModel
from tests.conftest import SHARED_AUDIO, voice_agent

ASK_NOT_END_S = 4.6
"""jfk.flac: "And so my fellow Americans, ask not" and a pause; the sentence goes on."""
SENTENCE_END_S = 10.7
"""jfk.flac: "...for your country" has ended; the recording's last 0.3 s is its reverberation, cut
off by the file's end, where Smart Turn's verdict swings around 0.5 (0.35 on one CI machine, 0.51
here). Judged at 10.6-10.75 s it is 0.89-0.97."""


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel(bundled_smart_turn())


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load_audio(SHARED_AUDIO / "jfk.flac", SAMPLE_RATE)


def test_a_finished_sentence_sounds_finished_and_a_cut_one_does_not(model, jfk):
    assert model.probability(jfk[: int(SENTENCE_END_S * SAMPLE_RATE)]) > 0.5
    assert model.probability(jfk[: int(1.2 * SAMPLE_RATE)]) < 0.2, "cut in the middle of a word"
    assert model.probability(jfk[: int(ASK_NOT_END_S * SAMPLE_RATE)]) < 0.2, "a pause mid-sentence"


async def test_the_stream_judges_what_the_session_heard_since_the_last_turn(model, jfk):
    stream = SmartTurnDetector(model).stream()
    at_48k = load_audio(SHARED_AUDIO / "jfk.flac", 48_000)
    ten_ms = 480
    for start in range(0, int(ASK_NOT_END_S * 48_000), ten_ms):
        stream.push_audio(samples_to_frame(at_48k[start : start + ten_ms], 48_000))
    mid_sentence = await stream.predict()
    stream.flush("turn committed")
    for start in range(0, int(SENTENCE_END_S * 48_000), ten_ms):
        stream.push_audio(samples_to_frame(at_48k[start : start + ten_ms], 48_000))
    whole = await stream.predict()
    assert mid_sentence.end_of_turn_probability < 0.2 < 0.5 < whole.end_of_turn_probability
    assert 0 < whole.inference_duration < 1.0
    assert await stream.unlikely_threshold("en") == 0.5


async def test_a_question_that_sounds_unfinished_is_finished_once_its_words_are_heard(model, jfk):
    """A flat voice asks without a rising end; Whisper's question mark tells. A cut sentence's
    full stop or exclamation mark does not: Whisper writes them after JFK's "ask not" too."""
    detector = SmartTurnDetector(model)
    stream = detector.stream()
    stream.push_audio(samples_to_frame(jfk[: int(ASK_NOT_END_S * SAMPLE_RATE)], SAMPLE_RATE))
    verdicts = {}
    for said in ("And so my fellow Americans, ask not!", "Ask not.", "What time is it right now?"):
        pending = stream.predict()
        detector.heard(said)
        verdicts[said] = (await pending).end_of_turn_probability
    unheard = await stream.predict()  # no transcript comes: the audio's verdict stands
    assert verdicts["What time is it right now?"] == 1.0
    assert verdicts["Ask not."] < 0.2 and verdicts["And so my fellow Americans, ask not!"] < 0.2
    assert unheard.end_of_turn_probability < 0.2


def test_a_pause_inside_a_sentence_does_not_end_the_turn(tmp_path, jfk):
    """JFK stops after "ask not": longer than the profile's min_delay, so the VAD's turn taking
    answers half a sentence; Smart Turn hears that it goes on and waits (up to max_delay, 1.5 s).

    His pause after "Americans" is cut to 0.15 s, so the sentence so far is one utterance, and
    the one after "ask not" to 0.9 s (0.4 s from either delay). Left whole, the first pause (1.1 s)
    commits "And so my fellow Americans." and Smart Turn then judges "ask not" alone, which
    sounds finished after 0.2 s of silence (0.58-0.74) and unfinished 0.1 s earlier: a verdict
    the machine's speed picked (one CI run answered "Ask not!" on its own)."""
    pieces = [(0.0, 2.20), (3.20, 4.75), (4.95, None)]
    said = [jfk[int(start * SAMPLE_RATE) : end and int(end * SAMPLE_RATE)] for start, end in pieces]
    tail = np.zeros(6 * SAMPLE_RATE, np.int16)
    sf.write(tmp_path / "pause.wav", np.concatenate([*said, tail]), SAMPLE_RATE)
    turns = {}
    for detector in ("vad", "smart-turn"):
        out = tmp_path / detector
        run = voice_agent(
            "run-file", str(tmp_path / "pause.wav"), "--out", str(out), "--quiet",
            "--turn-detector", detector,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
        turns[detector] = [e["transcript"] for e in events if e["type"] == "user_turn"]

    def heard_whole(transcripts: list[str]) -> bool:
        return any("ask not" in t.lower() and "country" in t.lower() for t in transcripts)

    assert not heard_whole(turns["vad"]), turns  # "Ask not!" was answered on its own
    assert heard_whole(turns["smart-turn"]), turns
    assert len(turns["smart-turn"]) < len(turns["vad"])

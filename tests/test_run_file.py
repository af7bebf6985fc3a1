"""run-file answers real recorded speech end to end through LiveKit's AgentSession."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from agent.events import counts_line
from audio import load_audio
from tests.conftest import SHARED_AUDIO, voice_agent

RATE = 24000


@pytest.fixture(scope="module")
def jfk_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jfk")
    result = voice_agent("run-file", str(SHARED_AUDIO / "jfk.flac"), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return out, events, result


def test_the_speech_becomes_user_turns_with_transcripts(jfk_run):
    _, events, _ = jfk_run
    turns = [e for e in events if e["type"] == "user_turn"]
    assert turns and all(t["transcript"] for t in turns)
    heard = " ".join(t["transcript"] for t in turns).lower()
    assert "country" in heard and "americans" in heard
    assert all(0 <= t["start"] < t["end"] <= 11.1 for t in turns)
    assert turns[0]["start"] < 0.5, "jfk starts speaking at once"
    recognitions = [e for e in events if e["type"] == "stt"]
    assert len(recognitions) >= len(turns), "each utterance's recognition is timed"
    assert all(r["audio_s"] > 0 and r["duration_s"] > 0 for r in recognitions)


def test_the_agent_answers_aloud_with_metrics(jfk_run):
    out, events, _ = jfk_run
    replies = [e for e in events if e["type"] == "agent_reply"]
    assert replies and all(r["text"] for r in replies)
    agent, rate = sf.read(out / "agent.wav", dtype="int16")
    assert rate == RATE
    answered = [r for r in replies if not r["interrupted"]]
    assert answered, "at least one reply should be heard to its end"
    for reply in answered:
        first_half_second = agent[int(reply["start"] * RATE) : int((reply["start"] + 0.5) * RATE)]
        level = 20 * np.log10(np.sqrt(np.mean(first_half_second.astype(np.float64) ** 2)) / 32768)
        assert level > -40, f"reply at {reply['start']} s should be audible"
    assert all(
        set(r["metrics"]) == {"eou_delay_s", "ttft_s", "ttfs_s", "ttfb_s", "e2e_latency_s"}
        for r in replies
    )
    # a reply to a speech end an earlier (interrupted) reply already answered has no e2e; one
    # that says a tool's answer takes no model time (ttft 0.0)
    timed = [r["metrics"] for r in replies if r["metrics"]["e2e_latency_s"] is not None]
    assert timed and all(value >= 0 for value in timed[-1].values()), replies
    assert timed[-1]["e2e_latency_s"] > 0


def test_the_conversation_is_written_on_one_timeline(jfk_run):
    out, events, _ = jfk_run
    stereo, rate = sf.read(out / "conversation.wav", dtype="int16")
    assert rate == RATE and stereo.shape[1] == 2
    user = load_audio(SHARED_AUDIO / "jfk.flac", RATE)
    # left is the user: the same samples, up to the resampler's dither of a few LSB
    assert np.abs(stereo[: len(user), 0].astype(np.int32) - user).max() <= 4
    agent, _ = sf.read(out / "agent.wav", dtype="int16")
    assert np.array_equal(stereo[:, 1], agent), "right is the agent"
    # the agent never starts talking before the user's first turn has ended
    first_turn_end = next(e["end"] for e in events if e["type"] == "user_turn")
    assert not agent[: int(first_turn_end * RATE)].any()


def test_events_are_ordered_and_end_with_a_summary(jfk_run):
    _, events, result = jfk_run
    times = [e["t"] for e in events]
    assert times == sorted(times)
    summary = events[-1]
    assert summary["type"] == "summary"
    assert summary["counts"]["user_turn"] == sum(e["type"] == "user_turn" for e in events)
    # JFK's first words are no request: the 0.5B model may answer them with its own prompt,
    # which is cut off and reported; nothing else may go wrong
    errors = [e["message"] for e in events if e["type"] == "error"]
    guarded = ("the model recited", "the model called", "tool call is not", "the model said")
    assert all(m.startswith(guarded) for m in errors), errors  # the 0.5B's slips, each reported
    assert summary["counts"]["error"] == len(errors)
    assert summary["metrics"]["e2e_latency_s"]["median"] > 0
    # the live transcript printed what the events recorded, and the counts end it
    assert "user:" in result.stdout and "agent:" in result.stdout
    assert counts_line(summary["counts"]) in result.stdout


def test_the_closing_counts_are_said_in_words():
    counts = {"user_turn": 1, "agent_reply": 2, "tool_call": 0, "error": 1}
    assert counts_line(counts) == "1 user turn, 2 replies, 0 tool calls, 1 error"


def test_a_profiles_greeting_is_spoken_before_anything_else(tmp_path):
    """The words said as it plays are heard, and answered after it. At ``--speed 10`` they
    would all arrive in a quarter of a second, and on two cores their recognition and the
    model's early start held the greeting's voice back by two seconds: a caller speaks at
    ``--speed 1``, and 2 is near enough."""
    profile = tmp_path / "greeter.toml"
    profile.write_text('name = "greeter"\nprompt = "desktop"\ngreeting = "Good morning."\n')
    source = SHARED_AUDIO / "one_two_three_en.wav"
    result = voice_agent(
        "run-file", str(source), "--out", str(tmp_path), "-q", "--profile", str(profile),
        "--speed", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    replies = [e for e in events if e["type"] == "agent_reply"]
    assert replies[0]["text"] == "Good morning." and replies[0]["start"] < 1.0  # Piper's voice
    turns = [e for e in events if e["type"] == "user_turn"]
    assert turns and replies[-1]["start"] > turns[0]["end"], "the user is still answered"


def test_a_conversation_at_its_time_limit_says_goodbye_and_ends(tmp_path):
    profile = tmp_path / "brief.toml"
    profile.write_text(
        'name = "brief"\nprompt = "desktop"\n[call]\nmax_s = 4\ngoodbye = "Bye now."\n'
    )
    result = voice_agent(
        "run-file", str(SHARED_AUDIO / "jfk.flac"), "--out", str(tmp_path), "-q",
        "--profile", str(profile),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    goodbye = [e for e in events if e["type"] == "agent_reply" and e["text"] == "Bye now."]
    assert goodbye and 4.0 <= goodbye[0]["start"] < 6.0 and not goodbye[0]["interrupted"]
    assert events[-1]["type"] == "summary" and events[-1]["t"] < 11.0, "ended before the input"

"""The agent's speaker keeps LiveKit's account of what was played: each reply's segment
finishes when its own audio has played, never on another's."""

from __future__ import annotations

import asyncio

import numpy as np

from audio.file_io import Timeline, TimelineAudioOutput
from audio.pcm import samples_to_frame

RATE = 24000


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


async def test_a_reply_cut_before_its_first_frame_does_not_end_the_next_one(tmp_path):
    speaker = TimelineAudioOutput(Timeline(10.0), sample_rate=RATE, path=tmp_path / "agent.wav")
    # a reply interrupted before its voice made a sound: LiveKit flushes and clears an
    # empty segment
    speaker.flush()
    speaker.clear_buffer()
    # the next reply: half a second of voice
    await speaker.capture_frame(samples_to_frame(tone(0.5), RATE))
    speaker.flush()
    finished = await speaker.wait_for_playout()
    assert not finished.interrupted
    assert abs(finished.playback_position - 0.5) < 0.05, finished
    await speaker.aclose()


async def test_a_reply_cut_mid_way_reports_what_was_heard_and_the_next_plays_whole(tmp_path):
    speaker = TimelineAudioOutput(Timeline(1.0), sample_rate=RATE, path=tmp_path / "agent.wav")
    started = asyncio.Event()
    speaker.on("playback_started", lambda _: started.set())
    await speaker.capture_frame(samples_to_frame(tone(2.0), RATE))
    speaker.flush()
    await started.wait()
    await asyncio.sleep(0.3)
    speaker.clear_buffer()  # the user barged in
    cut = await speaker.wait_for_playout()
    assert cut.interrupted and 0.2 < cut.playback_position < 1.0, cut
    await speaker.capture_frame(samples_to_frame(tone(0.3), RATE))
    speaker.flush()
    whole = await speaker.wait_for_playout()
    assert not whole.interrupted and abs(whole.playback_position - 0.3) < 0.05, whole
    await speaker.aclose()

"""Ctrl-C, or a service manager's SIGTERM, in the middle of a reply: the run stops within 5 s and
keeps what was said — both recordings readable up to the stop, the event log ending in its
summary, the kiosk marked offline."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from audio import load_audio
from tests.conftest import DEMO, REPO
from tests.mqtt_helpers import BASE, Observer, run_file


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
async def test_a_signal_mid_reply_stops_within_5_s_and_keeps_the_recording(broker, tmp_path, sig):
    async with Observer(broker) as observer:
        agent = await run_file(broker, DEMO, tmp_path)
        await observer.wait_for(
            lambda m: m[0] == f"{BASE}/event/state" and '"speaking"' in m[1], timeout=120
        )
        await asyncio.sleep(0.3)  # well inside the reply
        asked = time.monotonic()
        agent.send_signal(sig)
        _, stderr = await asyncio.wait_for(agent.communicate(), 30)
        took = time.monotonic() - asked
        await observer.wait_for(lambda m: m[:2] == (f"{BASE}/status", "offline"), timeout=10)
    assert agent.returncode == 128 + sig, stderr.decode()
    assert took < 5, f"stopping took {took:.1f} s"
    assert "Traceback" not in stderr.decode()

    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    summary = events[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True
    assert summary["signal"] == sig.name

    agent_track, rate = sf.read(tmp_path / "agent.wav", dtype="int16")
    stereo, _ = sf.read(tmp_path / "conversation.wav", dtype="int16")
    assert len(stereo) == len(agent_track)
    duration = len(agent_track) / rate
    assert duration <= summary["t"] < sf.info(DEMO).duration, "up to the stop, not beyond"
    assert np.abs(agent_track).max() > 1000, "the reply that was cut off is in the recording"
    user = load_audio(DEMO, rate)
    assert np.abs(stereo[:, 0].astype(np.int32) - user[: len(stereo)]).max() <= 4


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_while_the_models_load_stops_at_once(tmp_path, sig):
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run-file", str(DEMO), "--out", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert agent.stderr is not None
    assert "loading" in agent.stderr.readline()
    asked = time.monotonic()
    agent.send_signal(sig)
    _, stderr = agent.communicate(timeout=60)
    assert time.monotonic() - asked < 5, "no waiting for the weights to finish loading"
    assert agent.returncode == 128 + sig
    assert f"stopped by {sig.name} before the conversation began" in stderr
    assert "Traceback" not in stderr

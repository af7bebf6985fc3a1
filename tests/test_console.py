"""The desktop assistant through a real sound server (PulseAudio): it lists the microphones
and speakers by the names the desktop gives them, opens the ones named, answers a spoken
conversation on the speaker, says when the microphone is unplugged and plugged back, ends on
Ctrl-C without a traceback, answers push-to-talk only after Enter, and does not interrupt itself
when the speaker is heard by the microphone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.engines.lite.stt import FasterWhisperSTT
from audio.decode import load_audio
from audio.segmenter import speech_bounds
from tests.conftest import DEMO, REPO, voice_agent, words
from tests.sound_server import SoundServer, sound_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with sound_server(tmp_path_factory.mktemp("pulse")) as running:
        yield running


def test_devices_lists_the_sound_servers_microphones_and_speakers(server: SoundServer):
    listed = voice_agent("devices", env=server.env)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert ["input", "mic", "[sound", "server]"] == rows[[r[1] for r in rows].index("mic")][:4]
    assert any(r[:2] == ["output", "speaker"] and r[-1] == "(default)" for r in rows), rows
    assert any(r[:2] == ["input", "pulse"] for r in rows), "PortAudio's own devices too"


def test_a_device_that_is_not_there_is_refused_in_one_line(server: SoundServer):
    refused = voice_agent("console", "--input-device", "headset", env=server.env)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "voice-agent: error: no microphone named 'headset' (`voice-agent devices` lists them)"
    )
    refused = voice_agent("console", "--output-device", "Null Output", env=server.env)
    assert refused.returncode == 2
    assert "'Null Output' names more than one speaker: feed, speaker" in refused.stderr


class Console:
    """``voice-agent console``, its output collected as it comes."""

    def __init__(self, server: SoundServer, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "console", *options],
            cwd=REPO,
            env=server.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, seen: Callable[[list[str]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not seen(self.lines):
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.1)

    def press_enter(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def said(self, text: str) -> Callable[[list[str]], bool]:
        return lambda lines: any(text in line for line in lines)

    def replies(self) -> list[str]:
        return [line.split(" agent: ", 1)[1] for line in self.lines if " agent: " in line]

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        time.sleep(0.2)  # the reader's last lines
        return "".join(self.lines)


def test_the_console_answers_a_conversation_through_the_sound_server(
    server: SoundServer, tmp_path: Path
):
    console = Console(server, "--input-device", "mic", "--output-device", "speaker")
    try:
        console.wait_for(console.said("ready: speak now"), timeout=240)
        recorder = server.record_speaker(tmp_path / "speaker.wav")
        assert server.speak(DEMO).wait(timeout=60) == 0
        console.wait_for(lambda _: len(console.replies()) >= 3, timeout=120)
        time.sleep(8)  # the last reply is spoken to its end
        recorder.terminate()
        recorder.wait(timeout=10)
        server.unplug_microphone()
        console.wait_for(console.said("the microphone mic went away: waiting for it"), 10)
        server.plug_microphone()
        console.wait_for(console.said("the microphone mic is back"), 10)
    finally:
        output = console.stop()
    assert console.process.returncode == 0, output
    assert "microphone: mic (sound server); speaker: speaker (sound server)" in output
    users = [line for line in console.lines if "  user: " in line]
    assert len(users) == 3 and len(console.replies()) == 3, output
    assert "get_time({})" in output, "the clock was asked"
    assert "Traceback" not in output and "Exception" not in output, output
    heard = words(" ".join(spoken_apart(load_audio(tmp_path / "speaker.wav", 16000))))
    assert "paris" in heard.split(), f"the speaker said: {heard}"


def test_push_to_talk_answers_only_what_is_said_after_enter(server: SoundServer, tmp_path):
    desktop = (REPO / "agent" / "profiles" / "desktop.toml").read_text()
    profile = tmp_path / "push_to_talk.toml"
    profile.write_text(desktop + '\n[addressing]\nmode = "push_to_talk"\nlisten_s = 5\n')
    question = tmp_path / "question.wav"
    subprocess.run(["espeak-ng", "-w", str(question), "What time is it?"], check=True)
    console = Console(
        server, "--profile", str(profile), "--input-device", "mic", "--output-device", "speaker"
    )
    try:
        console.wait_for(console.said("ready: press Enter, then speak"), timeout=240)
        assert server.speak(question).wait(timeout=30) == 0
        console.wait_for(console.said("(not for the agent)"), timeout=30)
        console.press_enter()
        console.wait_for(console.said("state: listening (key)"), timeout=10)
        assert server.speak(question).wait(timeout=30) == 0
        console.wait_for(lambda _: len(console.replies()) >= 1, timeout=60)
        console.wait_for(console.said("state: waiting (timeout)"), timeout=30)
    finally:
        output = console.stop()
    assert len(console.replies()) == 1 and "get_time({})" in output, output


def spoken_apart(samples: np.ndarray) -> list[str]:
    """Each utterance on the recording transcribed on its own (Whisper skips whole replies
    of a 40 s recording that is mostly silence)."""
    stt = FasterWhisperSTT()
    return [stt.transcribe(samples[start:end]).text for start, end in speech_bounds(samples)]


def test_its_own_voice_in_the_microphone_does_not_interrupt_it_but_a_person_does(tmp_path):
    """bench/echo.py, short: the speaker looped into the microphone 100 ms later at -10 dB.
    Without the echo canceller the agent's own voice cuts every passage within seconds, or
    holds the floor so that the next is never begun (the echo is real); with it, it reads a
    passage to its end (not every one: the README's figures, from ten minutes; one minute on a
    loaded two-core machine has cut one of two), and a person talking over it still cuts it
    (once of two at the least: on a loaded two-core machine one was missed)."""
    out = tmp_path / "echo.json"
    run = subprocess.run(
        [sys.executable, "bench/echo.py", "--minutes", "1", "--barge-ins", "2", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    on, off = figures["aec_on"], figures["aec_off"]
    assert on["agent_speech_s"] > 30 and on["read_to_end"] >= 1, run.stdout
    assert off["read_to_end"] == 0 and off["cut"] + off["not_said"] > 0, run.stdout
    assert on["barge_ins"] == 2 and on["barge_ins_heard"] >= 1, run.stdout

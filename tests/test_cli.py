"""Bad input gets one clear line on stderr and exit code 2 — never a traceback."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pytest

from tests.conftest import DEMO, voice_agent


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    rng = np.random.default_rng(7)
    (tmp_path / "corrupt.wav").write_bytes(
        b"RIFF" + bytes(rng.integers(0, 256, 4000, dtype=np.uint8))
    )
    (tmp_path / "notes.txt").write_text("call mum at six\n")
    (tmp_path / "a-file").write_text("")
    recorded = 'name = "recorded"\nprompt = "call"\n[call]\nrecord = true\n'
    (tmp_path / "recorded.toml").write_text(recorded)
    for name, sip in {
        "extension": 'registrar = "192.0.2.10"',
        "unreadable-password": 'registrar = "192.0.2.10"\npassword_file = "/nowhere/password"',
        "bad-registrar": f'registrar = "192.0.2.10:sixty"\npassword_file = "{tmp_path}/notes.txt"',
    }.items():
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\nprompt = "call"\n[sip]\n{sip}\n')
    return tmp_path


CASES = {
    "missing": (["run-file", "{d}/nope.wav", "--out", "{d}/out"], "nope.wav: no such file"),
    "empty": (["run-file", "{d}/empty.wav", "--out", "{d}/out"], "the file is empty"),
    "corrupt": (["run-file", "{d}/corrupt.wav", "--out", "{d}/out"], "not a readable audio file"),
    "not-audio": (["run-file", "{d}/notes.txt", "--out", "{d}/out"], "not a readable audio file"),
    "unknown-profile": (
        ["run-file", str(DEMO), "--out", "{d}/out", "--profile", "kitchen"],
        "unknown profile 'kitchen'",
    ),
    "unknown-engine": (
        ["run-file", str(DEMO), "--out", "{d}/out", "--engine", "cloud"],
        "invalid choice: 'cloud'",
    ),
    "unwritable-out": (["run-file", str(DEMO), "--out", "{d}/a-file/out"], "cannot write there"),
    **{
        f"speed-{value}": (
            ["run-file", str(DEMO), "--out", "{d}/out", f"--speed={value}"],
            f"argument --speed: {value!r} is not a number"
            if value == "fast"
            else f"argument --speed: {value} is not between 0.1 and 10",
        )
        for value in ("0", "-1", "nan", "inf", "-inf", "1e9", "100", "fast")
    },
    "no-command": ([], "the following arguments are required"),
    "lite-model-missing": (
        ["run-file", str(DEMO), "--out", "{d}/out", "--model", "{d}/no-model"],
        "no-model: no such model folder",
    ),
    "serve-nothing": (["serve", "--no-web"], "--no-web needs --sip HOST:PORT"),
    "sip-on-every-address": (["serve", "--sip", "0.0.0.0:5060"], "not 0.0.0.0"),
    "sip-unguarded": (["serve", "--sip", "192.0.2.7:5060"], "needs --sip-allow NETWORK"),
    "recording-nowhere": (
        ["serve", "--sip", "127.0.0.1:5060", "--profile", "{d}/recorded.toml"],
        "give --log-dir, where each call's conversation.wav is written",
    ),
    **{
        case: (["serve", "--sip", "127.0.0.1:5060", "--profile", f"{{d}}/{case}.toml"], message)
        for case, message in {
            "extension": "set $VOICE_AGENT_SIP_PASSWORD or [sip] password_file",
            "unreadable-password": "password_file /nowhere/password: No such file or directory",
            "bad-registrar": "[sip] registrar 192.0.2.10:sixty:",
        }.items()
    },
    "extension-without-sip": (
        ["serve", "--profile", "{d}/extension.toml"],
        "the profile's [sip] section needs serve --sip IP:PORT",
    ),
    "phi4mm-model-missing": (
        ["run-file", str(DEMO), "--out", "{d}/out", "--engine", "phi4mm", "--model", "/nowhere"],
        "/nowhere: no such model folder",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(files, case):
    args, message = CASES[case]
    result = voice_agent(*(a.format(d=files) for a in args))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("voice-agent")
    assert "Traceback" not in result.stderr + result.stdout


def test_console_without_audio_devices_says_so():
    sounddevice = pytest.importorskip("sounddevice")
    try:
        sounddevice.query_devices(kind="input")
        pytest.skip("this machine has a microphone; the no-device path cannot be shown here")
    except sounddevice.PortAudioError:
        pass
    result = voice_agent("console")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "voice-agent: error: no microphone found: console needs a default audio input device "
        "(use run-file to answer a recording instead)"
    )


def test_version_names_the_installed_release():
    result = voice_agent("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"voice-agent {version('phi4mm-voice-agent')}"

"""Real phones calling a real ``voice-agent serve --sip``, inside a network namespace of its own.

Run by tests/test_sip.py inside a network namespace (``conftest.isolated``), as
``python tests/sip_calls.py OUT_DIR`` (the lite engine, every scenario, every call recorded),
or ``python tests/sip_calls.py --phi4mm MODEL_DIR OUT_DIR`` (one call, to the
Phi-4-multimodal engine); tests/keypad_calls.py and tests/pbx_calls.py call with its phones.
Each phone is Debian's baresip: its microphone a WAV (``aufile``), and what it hears recorded
by its ``sndfile`` module.

Writes OUT_DIR/result.json: what each phone heard and logged, and what the server wrote.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from paho.mqtt import publish

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audio.decode import load_audio  # noqa: E402
from tests.conftest import SHARED_AUDIO, Broker, start_serve, wait_until  # noqa: E402

HOST = "10.250.0.1"
"""The namespace's one address (conftest.NETWORK_NAMESPACE)."""
SIP_PORT = 5070
WEB_PORT = 8770
AGENT = f"sip:agent@{HOST}:{SIP_PORT}"
OPERATOR_PORT = 5200
OPERATOR = f"sip:operator@{HOST}:{OPERATOR_PORT}"
RATE = 8000
GREETING_S = 6.5
"""Silence before the caller speaks: the greeting (after the recording notice) is heard whole
first."""
CALL_TIMEOUT_S = 90


def microphone_wav(source: Path, out: Path, *, tail_s: float = 40.0) -> Path:
    """The recording as baresip's ``aufile`` wants it (8 kHz, 16-bit mono), after the
    greeting's silence; silence after it, since the phone sends nothing once its file ends."""
    speech = load_audio(source, RATE)
    lead = np.zeros(int(GREETING_S * RATE), np.int16)
    sf.write(out, np.concatenate([lead, speech, np.zeros(int(tail_s * RATE), np.int16)]), RATE)
    return out


class Phone:
    """One baresip user agent, calling from its own SIP port."""

    def __init__(
        self,
        folder: Path,
        microphone: Path,
        port: int,
        *,
        answers: bool = False,
        credentials: tuple[str, str] | None = None,
        quits_after_s: int = 120,
    ) -> None:
        """``answers``: picks up every call (an operator calls are transferred to);
        ``credentials``: the user and password it answers a digest challenge with;
        ``quits_after_s``: baresip's own end, mid-call or not. Its keypad
        is baresip's ``ctrl_tcp`` on ``port + 7`` (RFC 4733 telephone-events; baresip's own SIP
        listens on ``port`` and, over TLS, ``port + 1``)."""
        self.folder = folder
        self.recordings = folder / "heard"
        self.recordings.mkdir(parents=True, exist_ok=True)
        account = (
            f"<sip:operator@{HOST}>;regint=0;answermode=auto"
            if answers
            else (f"<sip:phone{port}@{HOST}>;regint=0")
        )
        if credentials:
            account += f";auth_user={credentials[0]};auth_pass={credentials[1]}"
        (folder / "accounts").write_text(account + "\n")
        (folder / "config").write_text(
            f"sip_listen {HOST}:{port}\n"
            f"audio_source aufile,{microphone}\n"
            "audio_player aubridge,nil\naudio_alert aubridge,nil\n"
            "ausrc_srate 8000\nauplay_srate 8000\n"
            f"snd_path {self.recordings}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module stdio.so\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n"
            "module sndfile.so\nmodule_app account.so\nmodule_app menu.so\n"
            f"module_app ctrl_tcp.so\nctrl_tcp_listen {HOST}:{port + 7}\n"
        )
        self.port = port
        self.quits_after_s = quits_after_s
        self.log_path = folder / "baresip.log"
        self._process: subprocess.Popen[bytes] | None = None

    def dial(self, uri: str = AGENT) -> None:
        self.start("-e", f"/dial {uri}")

    def start(self, *args: str) -> None:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                ["baresip", "-f", str(self.folder), *args, "-t", str(self.quits_after_s)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    @property
    def events(self) -> str:
        """The log without the bit-rate line baresip rewrites ten times a second (a long call's
        tail would be nothing else)."""
        lines = re.split(r"[\r\n]+", self.log)
        return "\n".join(line for line in lines if line and "audio=" not in line)

    def wait_for(self, text: str, timeout_s: float) -> bool:
        return wait_until(lambda: text in self.log, timeout_s)

    def press(self, keys: str) -> None:
        """Type ``keys`` on the phone's keypad (baresip's ``sndcode``, over ``ctrl_tcp``)."""
        message = json.dumps({"command": "sndcode", "params": keys, "token": keys}).encode()
        with socket.create_connection((HOST, self.port + 7), timeout=5) as control:
            control.sendall(f"{len(message)}:".encode() + message + b",")
            control.recv(4096)  # its answer: the keys are being sent

    def hang_up(self) -> None:
        """SIGTERM: baresip hangs up (a BYE) and quits."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        self._process.wait(10)

    def quit(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def seen(self) -> dict[str, Any]:
        heard = sorted(self.recordings.glob("*-dec.wav"))
        sent = sorted(self.recordings.glob("*-enc.wav"))
        return {
            "log": self.events[-4000:],
            "heard": str(heard[-1]) if heard else "",
            "sent": str(sent[-1]) if sent else "",
        }


def records(log_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each conversation's events.jsonl, by session id."""
    return {
        path.parent.name: [json.loads(line) for line in path.read_text().splitlines() if line]
        for path in sorted(log_dir.glob("*/events.jsonl"))
    }


def answered(log_dir: Path) -> str | None:
    """The session id of the conversation whose agent has answered a user turn to the end."""
    for session_id, events in records(log_dir).items():
        kinds = [e["type"] for e in events]
        if "user_turn" in kinds and any(
            e["type"] == "agent_reply" and not e["interrupted"]
            for e in events[kinds.index("user_turn") :]
        ):
            return session_id
    return None


def replying(log_dir: Path, other_than: str | None) -> str | None:
    """The session id of a new conversation whose agent has started speaking after a user
    turn."""
    for session_id, events in records(log_dir).items():
        if session_id == other_than:
            continue
        turn = next((i for i, e in enumerate(events) if e["type"] == "user_turn"), None)
        if turn is not None and any(
            e["type"] == "state" and e.get("agent") == "speaking" for e in events[turn:]
        ):
            return session_id
    return None


def greeted(log_dir: Path, other_than: set[str]) -> str | None:
    """The session id of a new conversation whose greeting has been said."""
    for session_id, events in records(log_dir).items():
        if session_id not in other_than and any(e["type"] == "agent_reply" for e in events):
            return session_id
    return None


def call_profile(
    out_dir: Path, english: str = "piper", *, record: bool = False, tools: tuple[str, ...] = ()
) -> Path:
    """The built-in call profile, transferring to the operator's phone, with ``english`` as
    its English voice, recording each call if ``record``, offering ``tools`` besides its own."""
    text = (REPO / "agent/profiles/call.toml").read_text()
    assert 'transfer_to = ""' in text and "[voice]\n" in text and "record = false" in text
    assert '"transfer_call"]' in text
    text = text.replace('transfer_to = ""', f'transfer_to = "{OPERATOR}"')
    text = text.replace("record = false", f"record = {str(record).lower()}")
    offered = "".join(f', "{tool}"' for tool in tools)
    text = text.replace('"transfer_call"]', f'"transfer_call"{offered}]')
    path = out_dir / "call.toml"
    path.write_text(text.replace("[voice]\n", f'[voice]\nenglish = "{english}"\n'))
    return path


def serve_calls(
    out_dir: Path,
    *args: str,
    stderr: Any,
    english: str = "piper",
    record: bool = False,
    tools: tuple[str, ...] = (),
) -> subprocess.Popen[str]:
    """``serve --sip`` on the call profile, one call at a time, each call's events logged."""
    profile = call_profile(out_dir, english, record=record, tools=tools)
    return start_serve(
        "--profile", str(profile), *args,
        "--sip", f"{HOST}:{SIP_PORT}", "--sip-allow", f"{HOST}/32",
        "--port", str(WEB_PORT), "--max-sessions", "1", "--log-dir", str(out_dir / "logs"),
        stderr=stderr,
    )  # fmt: skip


def recordings(log_dir: Path) -> dict[str, dict[str, Any]]:
    """Each conversation's conversation.wav, by session id: its length as soundfile reads it,
    and its frames as its header says (what the standard library's ``wave``, and players,
    read)."""
    found = {}
    for path in sorted(log_dir.glob("*/conversation.wav")):
        with wave.open(str(path)) as header:
            frames = header.getnframes()
        info = sf.info(path)
        found[path.parent.name] = {
            "path": str(path),
            "seconds": info.frames / info.samplerate,
            "channels": info.channels,
            "header_frames": frames,
            "frames": info.frames,
        }
    return found


def command(broker: Broker, session_id: str | None, name: str) -> None:
    """MQTT's ``cmd/<name>`` to one call's session (the server's device id is ``phone``)."""
    topic = f"voice-agent/phone-{session_id}/cmd/{name}"
    publish.single(topic, "", hostname="127.0.0.1", port=broker.port, qos=1)


def status() -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/status", timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def main(out_dir: Path) -> None:
    result: dict[str, Any] = {}
    jfk = microphone_wav(SHARED_AUDIO / "jfk.flac", out_dir / "jfk-8k.wav")
    broker = Broker(out_dir)
    broker.start()
    with (out_dir / "server.log").open("w") as server_log:
        server = serve_calls(
            out_dir, "--mqtt", broker.url, "--device-id", "phone", stderr=server_log, record=True
        )
        phones = [Phone(out_dir / f"phone{i}", jfk, 5080 + 10 * i) for i in range(4)]
        operator = Phone(out_dir / "operator", jfk, OPERATOR_PORT, answers=True)
        phones.append(operator)
        try:
            # 1: the agent greets, answers, and ends the call itself (as end_conversation does)
            first = phones[0]
            first.dial()
            first.wait_for("Call established", 20)
            done = wait_until(lambda: answered(out_dir / "logs") is not None, CALL_TIMEOUT_S)
            result["first_answered"] = done
            # 2: a second caller while the one place is taken hears busy
            busy = phones[1]
            busy.dial()
            result["busy_refused"] = busy.wait_for("486 Busy Here", 15)
            busy.quit()
            session_id = result["first_session"] = answered(out_dir / "logs")
            command(broker, session_id, "end")
            result["first_hung_up_by_agent"] = first.wait_for("terminated", 15)
            first.quit()
            result["after_first"] = wait_until(lambda: status()["sessions"] == 0, 15)
            # 3: a caller who hangs up while the agent replies frees the session
            dropping = phones[2]
            dropping.dial()
            result["second_replying"] = wait_until(
                lambda: replying(out_dir / "logs", other_than=session_id) is not None,
                CALL_TIMEOUT_S,
            )
            result["second_session"] = replying(out_dir / "logs", other_than=session_id)
            dropping.hang_up()
            result["after_drop"] = wait_until(
                lambda: (s := status())["sessions"] == 0 and s["sessions_in_memory"] == 0, 20
            )
            # 4: the caller is handed to a person (MQTT's cmd/transfer; transfer_call does
            # the same): the agent says so, then REFERs the caller's phone to the operator
            operator.start()
            transferred = phones[3]
            transferred.dial()
            seen = set(records(out_dir / "logs"))
            result["fourth_greeted"] = wait_until(
                lambda: greeted(out_dir / "logs", seen) is not None, 30
            )
            fourth = result["fourth_session"] = greeted(out_dir / "logs", seen)
            command(broker, fourth, "transfer")
            result["operator_answered"] = operator.wait_for("Call established", 40)
            result["after_transfer"] = wait_until(lambda: status()["sessions"] == 0, 20)
            result["status"] = status()
            # 5: the server stops (SIGTERM) during a call: the caller is hung up on, not left
            last = Phone(out_dir / "phone5", jfk, 5140)
            phones.append(last)
            last.dial()
            seen = set(records(out_dir / "logs"))
            result["last_greeted"] = wait_until(
                lambda: greeted(out_dir / "logs", seen) is not None, 30
            )
            result["last_session"] = greeted(out_dir / "logs", seen)
        finally:
            server.send_signal(signal.SIGTERM)
            result["server_exit"] = server.wait(30)
            result["last_hung_up"] = phones[-1].wait_for("Connection reset by peer", 5)
            for phone in phones:
                phone.quit()
            broker.stop()
        result["phones"] = [phone.seen() for phone in phones]
        result["records"] = records(out_dir / "logs")
        result["recordings"] = recordings(out_dir / "logs")
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))


def phi4mm_call(out_dir: Path, model: str) -> None:
    """One caller, greeted and answered by the Phi-4-multimodal engine, who then hangs up."""
    result: dict[str, Any] = {}
    jfk = microphone_wav(SHARED_AUDIO / "jfk.flac", out_dir / "jfk-8k.wav")
    with (out_dir / "server.log").open("w") as server_log:
        # random weights say 128 tokens of noise: espeak-ng reads them in time, Piper does not
        server = serve_calls(
            out_dir, "--engine", "phi4mm", "--model", model, stderr=server_log, english="espeak"
        )
        phone = Phone(out_dir / "phone", jfk, 5080)
        try:
            phone.dial()
            phone.wait_for("Call established", 20)
            result["answered"] = wait_until(
                lambda: answered(out_dir / "logs") is not None, CALL_TIMEOUT_S
            )
            phone.hang_up()
        finally:
            server.send_signal(signal.SIGTERM)
            result["server_exit"] = server.wait(30)
            phone.quit()
        result["phone"] = phone.seen()
        result["records"] = records(out_dir / "logs")
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "--phi4mm":
        phi4mm_call(Path(sys.argv[3]), sys.argv[2])
    else:
        main(Path(sys.argv[1]))

"""``[remote] mode = "audio"``: Phi-4-multimodal on vLLM hears each turn and sees its frames.

vLLM is CUDA-only and no weights reach these machines, so the server here is a recorded-shape
stand-in, labelled as such: it checks each request against the chat-completions schema vLLM
documents for Phi-4-multimodal (the adapter's LoRA name as ``model``, audio as ``input_audio``
WAV, images as ``image_url`` data URLs before it) and answers with what it measured of the
request ("I heard 1.8 seconds of audio."), so the test sees the real session carry the turn's
own audio there and the reply back into the voice.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from agent.profile import ProfileError, load_profile
from audio import load_audio
from audio.segmenter import speech_bounds
from tests.conftest import DEMO, REPO, voice_agent

DESKTOP = REPO / "agent" / "profiles" / "desktop.toml"
BASE_MODEL = "microsoft/Phi-4-multimodal-instruct"
ASR_PROMPT = "Transcribe the audio clip into text."
PART_TYPES = {"text", "image_url", "input_audio"}
LEADS = ("Hello", "Well", "Right", "Okay", "Sure", "Indeed", "Now", "So")


def checked(body: dict[str, Any]) -> dict[str, Any]:
    """What the request carries, once its shape is the one vLLM takes for Phi-4-multimodal;
    raises AssertionError otherwise."""
    assert body["model"] in (BASE_MODEL, "speech", "vision"), body["model"]
    assert isinstance(body["max_tokens"], int) and body["max_tokens"] > 0
    assert "tools" not in body, "the card's tool block is in the system turn, not vLLM's parser"
    seconds, images = [], 0
    for message in body["messages"]:
        assert message["role"] in ("system", "user", "assistant", "tool"), message["role"]
        content = message["content"]
        assert not re.search(r"<\|(audio|image)_\d+\|>", json.dumps(content)), "vLLM places them"
        if isinstance(content, str):
            continue
        kinds = [part["type"] for part in content]
        assert set(kinds) <= PART_TYPES, kinds
        assert kinds == sorted(kinds, key=["image_url", "input_audio", "text"].index), kinds
        for part in content:
            if part["type"] == "input_audio":
                assert part["input_audio"]["format"] == "wav"
                samples, rate = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])))
                assert rate == 16000 and samples.ndim == 1
                seconds.append(len(samples) / rate)
            elif part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/jpeg;base64,")
                Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()
                images += 1
    if images:
        assert body["model"] == "vision", "an image picks the vision adapter"
    elif seconds:
        assert body["model"] == "speech", "audio alone picks the speech adapter"
    last = body["messages"][-1]["content"]
    asr = isinstance(last, list) and any(p.get("text") == ASR_PROMPT for p in last)
    said = [m["content"] for m in body["messages"] if isinstance(m["content"], str)]
    return {"model": body["model"], "seconds": seconds, "images": images, "asr": asr,
            "said": said}  # fmt: skip


class StandIn:
    """The recorded-shape server: lists the card's models, checks and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                models = [{"id": BASE_MODEL, "max_model_len": 131072}]
                models += [{"id": "speech"}, {"id": "vision"}]
                self._send("application/json", json.dumps({"data": models}).encode())

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    seen = checked(body)
                except AssertionError as e:
                    stand_in.problems.append(f"{e}: {json.dumps(body)[:300]}")
                    self._send("application/json", b'{"message": "bad shape"}', 400)
                    return
                stand_in.requests.append(seen)
                heard = sum(seen["seconds"][-1:])
                lead = LEADS[len(stand_in.requests) % len(LEADS)]  # no reply is another's repeat
                if seen["asr"]:
                    text = f"Heard {heard:.1f} seconds."
                elif seen["images"]:
                    text = f"{lead}, I see {seen['images']} picture and heard {heard:.1f} seconds."
                else:
                    text = f"{lead}, I heard {heard:.1f} seconds of audio."
                if not body.get("stream"):
                    reply = {"choices": [{"index": 0, "message": {"role": "assistant",
                             "content": text}, "finish_reason": "stop"}]}  # fmt: skip
                    self._send("application/json", json.dumps(reply).encode())
                    return
                self._send("text/event-stream", b"")
                for piece in re.findall(r"\S+\s*", text):
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

            def _send(self, kind: str, data: bytes, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                if data:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.server.shutdown()


def audio_profile(folder: Path, url: str, extra: str = "") -> Path:
    text = DESKTOP.read_text().replace('engine = "lite"', 'engine = "remote"')
    path = folder / "audio.toml"
    path.write_text(text + f'\n[remote]\nbase_url = "{url}"\nmode = "audio"\n{extra}')
    return path


def test_each_turn_is_heard_by_the_model_on_the_server(stand_in, tmp_path):
    out, profile = tmp_path / "out", audio_profile(tmp_path, stand_in.url)
    run = voice_agent(
        "run-file", str(DEMO), "--out", str(out), "--profile", str(profile), "--speed", "2"
    )
    assert run.returncode == 0, run.stderr
    assert not stand_in.problems, stand_in.problems
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    turns = [r for r in records if r["type"] == "user_turn"]
    replies = [r["text"] for r in records if r["type"] == "agent_reply"]
    assert len(turns) == len(replies) == 3, run.stdout
    utterances = [(b - a) / 16000 for a, b in speech_bounds(load_audio(DEMO, 16000))]
    for spoken, turn, reply in zip(utterances, turns, replies, strict=True):
        heard = float(re.search(r"heard ([\d.]+) seconds", reply).group(1))  # type: ignore[union-attr]
        assert spoken <= heard <= spoken + 1.0, "the turn's own speech, with its pre-roll"
        assert turn["transcript"] == f"Heard {heard:.1f} seconds.", "the model's own ASR"
    chats = [r for r in stand_in.requests if not r["asr"] and r["seconds"]]
    assert {r["model"] for r in chats} == {"speech"}
    assert sum(r["asr"] for r in stand_in.requests) == 3, "one transcript a turn"


def test_a_picture_goes_with_the_turn_to_the_vision_adapter(stand_in, tmp_path):
    picture = tmp_path / "desk.png"
    Image.fromarray(np.full((480, 640, 3), 200, np.uint8)).save(picture)
    out, profile = tmp_path / "out", audio_profile(tmp_path, stand_in.url)
    run = voice_agent(
        "run-file", str(DEMO), "--out", str(out), "--profile", str(profile),
        "--image", str(picture), "--speed", "2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not stand_in.problems, stand_in.problems
    assert "I see 1 picture" in run.stdout
    assert any(r["model"] == "vision" and r["images"] == 1 for r in stand_in.requests)


def test_the_text_mode_cannot_be_shown_a_picture(tmp_path):
    picture = tmp_path / "desk.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(picture)
    text = DESKTOP.read_text().replace('engine = "lite"', 'engine = "remote"')
    (tmp_path / "text.toml").write_text(text)
    run = voice_agent(
        "run-file", str(DEMO), "--out", str(tmp_path / "out"),
        "--profile", str(tmp_path / "text.toml"), "--image", str(picture),
    )  # fmt: skip
    assert run.returncode == 2 and "the remote engine cannot see" in run.stderr


def test_an_adapter_the_model_does_not_have_is_refused_with_the_profile(tmp_path):
    text = DESKTOP.read_text().replace('engine = "lite"', 'engine = "remote"')
    path = tmp_path / "bad.toml"
    path.write_text(text + '\n[remote]\nmode = "audio"\nadapters = { hearing = "speech" }\n')
    with pytest.raises(ProfileError, match="remote.adapters: no adapter 'hearing'"):
        load_profile(str(path))


def test_a_request_carries_no_more_clips_than_the_server_takes(stand_in, tmp_path):
    """``[remote] max_audio_clips`` (vLLM's ``--limit-mm-per-prompt``): the turns before are
    read as their transcripts."""
    profile = audio_profile(tmp_path, stand_in.url, "max_audio_clips = 1\n")
    out = tmp_path / "out"
    run = voice_agent("run-file", str(DEMO), "--out", str(out), "--profile", str(profile))
    assert run.returncode == 0, run.stderr
    assert not stand_in.problems, stand_in.problems
    chats = [r for r in stand_in.requests if not r["asr"] and r["seconds"]]
    assert len(chats) == 3 and all(len(r["seconds"]) == 1 for r in chats), chats
    assert any(s.startswith("Heard ") for s in chats[-1]["said"]), "earlier turns, as text"

"""Camera frames reach Phi-4-multimodal priced and chosen: sampled at LiveKit's rates on the
conversation's clock, kept only when the picture changed, attached to the next spoken turn with
the vision adapter; image and video files play along a recording; bad ones are refused."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from agent.engines.phi4mm.engine import Phi4MMEngine, Phi4MMOptions
from agent.engines.phi4mm.realtime import Phi4MMRealtimeModel
from agent.vision import (
    CameraVideoInput,
    FrameFiles,
    FrameNote,
    FrameSampler,
    FrameSourceError,
    TimedImage,
    VisionOptions,
    image_to_frame,
    parse_timed_image,
)
from tests.conftest import SHARED_AUDIO, voice_agent
from tests.scripted import ScriptedToolModel, converse, spoken
from tests.test_phi4mm_session import reply_of, spoken_turn
from tools import resolve_tools
from tools.look import NO_CAMERA


def noise(seed: int, size=(640, 480)) -> Image.Image:
    """A picture of 8x6 random blocks: each seed a different scene, even in a thumbnail."""
    blocks = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST)


class Listener:
    """What the sampler reads of a session: whether the user is speaking. A stand-in: a real
    session would need live speech to flip that state on the test's schedule."""

    user_state = "listening"


def test_frames_are_sampled_at_livekits_rates_on_the_conversations_clock():
    clock = [0.0]
    sampler = FrameSampler(VisionOptions(), clock=lambda: clock[0])
    session = Listener()
    kept = []
    for tick in range(300):  # 10 s of a 30 fps camera whose picture changes every frame
        clock[0] = tick / 30
        session.user_state = "speaking" if clock[0] < 5 else "listening"
        if sampler(image_to_frame(noise(tick, (64, 48))), session):
            kept.append(round(clock[0], 2))
    speaking = [t for t in kept if t < 5]
    assert len(speaking) == 5, "1 frame a second while the user speaks"
    assert 1 <= len(kept) - len(speaking) <= 2, "0.3 a second while silent"


def test_a_picture_that_did_not_change_is_not_sent_again():
    clock = [0.0]
    sampler = FrameSampler(VisionOptions(), clock=lambda: clock[0])
    still, other = image_to_frame(noise(1)), image_to_frame(noise(2))
    session = Listener()
    session.user_state = "speaking"
    kept = []
    for second in range(8):
        clock[0] = float(second)
        kept.append(sampler(other if second >= 5 else still, session))
    assert kept == [True, False, False, False, False, True, False, False]


def test_an_image_may_be_placed_in_time():
    assert parse_timed_image("sign.png@2.5") == TimedImage(Path("sign.png"), 2.5)
    assert parse_timed_image("photos@home/a.png").at == 0.0, "an @ in a path is part of it"
    with pytest.raises(FrameSourceError, match="seconds"):
        parse_timed_image("sign.png@-1")


def make_video(path, scenes: list[Image.Image], seconds_each: float, fps: int = 10) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = scenes[0].size
        stream.pix_fmt = "yuv420p"
        for scene in scenes:
            for _ in range(int(seconds_each * fps)):
                for packet in stream.encode(av.VideoFrame.from_image(scene)):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_video_and_stills_play_in_time_order(tmp_path):
    video = tmp_path / "walk.mp4"
    make_video(video, [noise(1, (160, 120)), noise(2, (160, 120))], seconds_each=1.0)
    still = tmp_path / "sign.png"
    noise(3, (160, 120)).save(still)
    files = FrameFiles.open([TimedImage(still, 2.5), TimedImage(still, 0.55)], video)
    timeline = list(files.timeline())
    times = [at for at, _, _ in timeline]
    assert times == sorted(times) and len(timeline) == 22
    assert [at for at, source, _ in timeline if source.startswith("image:")] == [0.55, 2.5]
    clock = [0.0]
    sampler = FrameSampler(VisionOptions(speaking_fps=10), clock=lambda: clock[0])
    session = Listener()
    session.user_state = "speaking"
    kept = []
    for at, source, image in timeline:
        clock[0] = at
        if sampler(image_to_frame(image), session):
            kept.append(source.split(":")[0])
    # a picture is kept when it differs from the one kept before it
    assert kept == ["video", "image", "video", "video", "image"]


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "no such image file"),
        (lambda d: write_text(d / "notes.png", "not a picture"), "not an image"),
    ],
)
def test_a_missing_or_broken_image_is_refused_in_one_line(tmp_path, make, message):
    with pytest.raises(FrameSourceError, match=message):
        FrameFiles.open([TimedImage(make(tmp_path), 0.0)], None)


def test_a_broken_video_is_refused(tmp_path):
    broken = tmp_path / "clip.mp4"
    broken.write_bytes(b"\x00" * 1000)
    with pytest.raises(FrameSourceError, match="not a video"):
        FrameFiles.open([], broken)


class RecordingEngine(Phi4MMEngine):
    """The real engine, noting each conversation request's adapter (not the ASR's)."""

    def __init__(self, options: Phi4MMOptions) -> None:
        super().__init__(options)
        self.adapters: list[str | None] = []

    def generate(self, parts, adapter, **kwargs):
        if kwargs.get("thread") != "asr":
            self.adapters.append(adapter)
        return super().generate(parts, adapter, **kwargs)


async def test_a_frame_joins_the_next_spoken_turn_priced_by_the_processor(tiny_phi4mm):
    engine = RecordingEngine(Phi4MMOptions(model=str(tiny_phi4mm), max_new_tokens=4))
    model = Phi4MMRealtimeModel(engine=engine)
    session = model.session()
    model.note_frame(FrameNote(source="camera:0", at=time.time()))
    session.push_video(image_to_frame(noise(5)))
    await spoken_turn(session)
    await reply_of(session)
    await spoken_turn(session)  # no new frame: the picture is already in the window
    await reply_of(session)
    assert engine.adapters == ["vision", "vision"], "an image in the window: the vision adapter"
    turns = [i for i in session.chat_ctx.items if getattr(i, "role", "") == "user"]
    first, second = (model.item_details(t.id) for t in turns)
    image = first["images"][0]
    shown = Image.new("RGB", (448, 336))  # 640x480 fitted into the default 448 px
    alone = engine.loaded.processor(text="<|image|>", images=[shown], return_tensors="pt")
    assert image["size"] == [448, 336] and image["source"] == "camera:0"
    assert image["tokens"] == alone["input_ids"].shape[1] == 477
    assert first["tokens"] > image["tokens"] and second["images"] == []
    await session.aclose()


def test_run_file_shows_an_image_with_the_first_turn(tiny_phi4mm, tmp_path):
    picture = tmp_path / "sign.png"
    noise(7).save(picture)
    result = voice_agent(
        "run-file",
        str(SHARED_AUDIO / "one_two_three_en.wav"),
        "--out",
        str(tmp_path / "out"),
        "-q",
        "--engine",
        "phi4mm",
        "--model",
        str(tiny_phi4mm),
        "--image",
        f"{picture}@0",
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    turns = [e for e in events if e["type"] == "user_turn"]
    [image] = turns[0]["images"]
    assert image["source"] == f"image:{picture}@0" and image["size"] == [448, 336]
    assert image["tokens"] == 477 and 0 <= image["time"] < turns[0]["end"]
    assert all(t["images"] == [] for t in turns[1:]), "the same picture is not sent twice"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "sign.png"], "the lite engine cannot see"),
        (["--engine", "phi4mm", "--image", "missing.png"], "missing.png: no such image file"),
        (["--engine", "phi4mm", "--video", "missing.mp4"], "missing.mp4: no such video file"),
    ],
)
def test_images_the_engine_cannot_take_are_refused_before_anything_loads(args, message, tmp_path):
    result = voice_agent("run-file", str(SHARED_AUDIO / "jfk.flac"), "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


async def test_a_camera_is_read_on_its_own_thread_newest_frame_first(tmp_path):
    recording = tmp_path / "camera.mp4"  # FFmpeg reads a file as it reads a V4L2 device
    make_video(recording, [noise(1, (160, 120)), noise(2, (160, 120))], seconds_each=1.0)
    camera = CameraVideoInput(str(recording), fmt=None)
    first = await camera.__anext__()
    assert (first.width, first.height) == (160, 120) and camera.label == f"camera:{recording}"
    frames = [first]
    with pytest.raises(StopAsyncIteration):  # the recording ends like a camera unplugged
        while True:
            frames.append(await asyncio.wait_for(camera.__anext__(), 5))
    assert 1 <= len(frames) <= 20, "frames nobody read in time were dropped, not queued"
    await camera.aclose()


def test_a_camera_that_is_not_there_is_refused_or_skipped_as_the_profile_says(tmp_path):
    refused = voice_agent("console", "--engine", "phi4mm", "--camera", "63")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "camera /dev/video63: cannot be opened" in refused.stderr
    profile = tmp_path / "kiosk.toml"
    profile.write_text(
        'name = "kiosk"\nprompt = "kiosk"\nengine = "phi4mm"\n'
        '[vision]\ncamera_fallback = "audio-only"\n'
    )
    skipped = voice_agent("console", "--profile", str(profile), "--camera", "63")
    assert "going on by voice alone" in skipped.stderr
    # then the console goes on without it: here it stops at the missing microphone instead
    assert skipped.returncode == 2 and "no microphone found" in skipped.stderr
    lite = voice_agent("console", "--camera")
    assert lite.returncode == 2 and "the lite engine cannot see" in lite.stderr


async def test_look_shows_the_model_the_newest_frame_with_its_next_request(tiny_phi4mm):
    engine = RecordingEngine(Phi4MMOptions(model=str(tiny_phi4mm), max_new_tokens=4))
    model = Phi4MMRealtimeModel(engine=engine)
    session = model.session()
    model.look()
    await reply_of(session)
    blind = [i.text_content for i in session.chat_ctx.items if getattr(i, "role", "") == "user"]
    assert blind == ["(The camera has shown nothing yet.)"]
    session.push_video(image_to_frame(noise(8)))
    await spoken_turn(session)
    await reply_of(session)  # the frame went with this turn
    assert model.look() == "Here is what the camera shows now; answer from it."
    await reply_of(session)  # the tool's continuation: the same picture, looked at again
    looks = [i for i in session.chat_ctx.items if i.id.startswith("look_")]
    assert len(looks) == 2 and looks[-1].text_content == "(the camera now)"
    assert engine.adapters[-1] == "vision"
    await session.aclose()


async def test_an_engine_without_eyes_tells_the_model_it_has_no_camera(tmp_path):
    events = await converse(
        tmp_path,
        await spoken("What does the sign say?", pause_s=5.0),
        ScriptedToolModel(("look", {})),
        resolve_tools(["look"]),
    )
    call = next(e for e in events if e["type"] == "tool_call")
    assert call["name"] == "look" and call["output"] == NO_CAMERA

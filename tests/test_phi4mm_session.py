"""The Phi-4-multimodal realtime session: what each turn sends to the model, and what the
LiveKit session gets back."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from livekit.agents import llm
from PIL import Image

from agent.engines.phi4mm.engine import Adapter, Phi4MMEngine
from agent.engines.phi4mm.parts import Media, PromptPart
from agent.engines.phi4mm.realtime import Phi4MMRealtimeModel
from agent.engines.phi4mm.turn_audio import ENCODER_WINDOW_S, TurnAudio
from agent.engines.phi4mm.turn_media import adapter_for
from agent.generation import GenerationStats
from agent.profile import load_profile
from agent.relay import RecitedInstructions
from audio import load_audio
from audio.pcm import samples_to_frame
from prompts import phrase
from tests.conftest import SHARED_AUDIO, voice_agent
from tools import get_time

RATE = 24000


def push(turn: TurnAudio, samples: np.ndarray, rate: int = RATE, frame_ms: int = 20) -> None:
    step = rate * frame_ms // 1000
    for i in range(0, len(samples), step):
        turn.push(samples_to_frame(samples[i : i + step], rate))


@pytest.mark.parametrize("rate", [RATE, 8000])  # 8 kHz: a phone call's G.711
def test_only_the_speech_of_the_turn_reaches_the_model_resampled_to_16k(rate):
    speech = load_audio(SHARED_AUDIO / "jfk.flac", rate)
    turn = TurnAudio()
    silence = np.zeros(rate, np.int16)
    push(turn, np.concatenate([silence, silence, speech, silence, silence, silence]), rate)
    committed = turn.commit()
    assert len(committed.clips) == 1
    seconds = len(committed.clips[0]) / 16000
    # jfk speaks from 0.1 s to 10.9 s of its 11 s; 0.2 s of padding each side
    assert 10.6 <= seconds <= 11.4
    assert 13.7 <= committed.lead_s <= 14.0 and 2.8 <= committed.tail_s <= 3.3
    assert turn.commit().clips == [], "a commit empties the buffer"


def test_silence_and_cleared_audio_send_nothing():
    turn = TurnAudio()
    push(turn, np.zeros(3 * RATE, np.int16))
    assert turn.commit().clips == []
    push(turn, load_audio(SHARED_AUDIO / "one_two_three_en.wav", RATE))
    turn.clear()
    assert turn.commit().clips == []


def test_a_minute_of_speech_is_split_into_equal_pieces_that_fit_the_encoder():
    turn = TurnAudio()
    push(turn, load_audio(SHARED_AUDIO / "speech60_en.wav", 16000), rate=16000, frame_ms=100)
    clips = turn.commit().clips
    assert len(clips) == 2
    assert all(len(c) <= ENCODER_WINDOW_S * 16000 for c in clips)
    assert abs(len(clips[0]) - len(clips[1])) <= 1


def test_the_adapter_follows_the_reference_implementations_rule():
    audio = Media("a", audio=np.zeros(16000, np.int16))
    image = Media("i", image=Image.new("RGB", (8, 8)))
    assert adapter_for([audio]) == "speech"
    assert adapter_for([image, audio]) == "vision"
    assert adapter_for([image]) == "vision"
    assert adapter_for([]) is None


class ScriptedEngine(Phi4MMEngine):
    """Stands in for Phi-4-MM where a test needs a known reply (a tool call, a malformed call):
    random tiny weights cannot produce one. It records what the session asked for."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply
        self.requests: list[tuple[list[PromptPart], Adapter]] = []

    def load(self) -> None:
        pass

    def count_tokens(self, part: PromptPart) -> int:
        return 7

    def generate(
        self,
        parts: Sequence[PromptPart],
        adapter: Adapter,
        *,
        on_text: Callable[[str], None],
        cancelled: threading.Event,
        max_new_tokens: int | None = None,
        thread: str = "chat",
        avoid: str = "",
    ):
        self.requests.append((list(parts), adapter))
        for i in range(0, len(self.reply), 4):
            if cancelled.is_set():
                break
            on_text(self.reply[i : i + 4])
        return GenerationStats(prompt_tokens=7 * len(parts), cached_tokens=0, generated_tokens=9)

    @property
    def context_window(self) -> int:
        return 131072

    def transcribe(self, clips, *, max_new_tokens: int = 0) -> str:
        return "what time is it"


async def reply_of(session: llm.RealtimeSession) -> tuple[str, list[llm.FunctionCall]]:
    created = await session.generate_reply()
    text = ""
    async for message in created.message_stream:
        async for piece in message.text_stream:
            text += piece
    calls = [call async for call in created.function_stream]
    return text, calls


async def spoken_turn(session) -> None:
    question = load_audio(SHARED_AUDIO / "one_two_three_en.wav", RATE)
    for i in range(0, len(question), 480):
        session.push_audio(samples_to_frame(question[i : i + 480], RATE))
    session.commit_audio()


async def test_a_tool_call_is_sent_as_a_function_call_never_spoken():
    engine = ScriptedEngine('<|tool_call|>[{"name": "get_time", "arguments": {}}]<|/tool_call|>')
    model = Phi4MMRealtimeModel()
    model.engine = engine
    session = model.session()
    await session.update_instructions("Be brief.")
    await session.update_tools([get_time])
    transcripts: list[llm.InputTranscriptionCompleted] = []
    session.on("input_audio_transcription_completed", transcripts.append)
    await spoken_turn(session)

    text, calls = await reply_of(session)
    assert text == "" and [c.name for c in calls] == ["get_time"]
    assert json.loads(calls[0].arguments) == {}
    assert any(isinstance(i, llm.FunctionCall) for i in session.chat_ctx.items)
    parts, adapter = engine.requests[0]
    assert adapter == "speech" and '"name": "get_time"' in parts[0].text
    await asyncio.sleep(0.1)
    assert [t.transcript for t in transcripts] == ["what time is it"]
    turn_id = transcripts[0].item_id
    assert model.item_details(turn_id)["tokens"] == 7 and model.item_details(turn_id)["audio_s"] > 2

    # the tool result comes back through LiveKit; the continuation keeps the turn's adapter
    engine.reply = "It is ten."
    ctx = session.chat_ctx
    ctx.insert(
        llm.FunctionCallOutput(
            call_id=calls[0].call_id, name="get_time", output="10:00", is_error=False
        )
    )
    await session.update_chat_ctx(ctx)
    text, calls = await reply_of(session)
    assert text == "It is ten." and calls == []
    assert engine.requests[1][1] == "speech"
    assert "<|tool|>10:00<|end|>" in "".join(p.text for p in engine.requests[1][0])
    await session.aclose()


async def test_a_malformed_call_gets_a_spoken_apology_and_an_error_event():
    model = Phi4MMRealtimeModel()
    model.engine = ScriptedEngine('<|tool_call|>[{"name": "get_time", "arguments": {')
    session = model.session()
    errors: list[llm.RealtimeModelError] = []
    session.on("error", errors.append)
    await spoken_turn(session)
    text, calls = await reply_of(session)
    assert text == phrase("failed", "en") and calls == []
    assert len(errors) == 1 and errors[0].recoverable
    await session.aclose()


async def test_a_reply_that_recites_the_instructions_is_cut_off_on_this_engine_too():
    instructions = load_profile("call").instructions()
    model = Phi4MMRealtimeModel()
    model.engine = ScriptedEngine(instructions.split("\n")[1])
    session = model.session()
    await session.update_instructions(instructions)
    errors: list[llm.RealtimeModelError] = []
    session.on("error", errors.append)
    await spoken_turn(session)
    text, calls = await reply_of(session)
    assert text == phrase("repeat", "en") and calls == []
    assert [type(e.error) for e in errors] == [RecitedInstructions]
    await session.aclose()


async def test_a_call_to_a_tool_it_was_not_offered_is_an_apology_not_livekits_error_message():
    """A small model makes up tools from the user's words ("ask what you can do for your
    country" once became a call to ``country``); LiveKit would answer it with its own error
    text, which the lite engine speaks as the tool's answer."""
    model = Phi4MMRealtimeModel()
    model.engine = ScriptedEngine('<|tool_call|>[{"name": "country", "arguments": {}}]')
    session = model.session()
    await session.update_tools([get_time])
    errors: list[llm.RealtimeModelError] = []
    session.on("error", errors.append)
    await spoken_turn(session)
    text, calls = await reply_of(session)
    assert text == phrase("failed", "en") and calls == []
    assert len(errors) == 1 and "country" in str(errors[0].error)
    await session.aclose()


async def test_truncation_keeps_only_what_was_heard():
    model = Phi4MMRealtimeModel()
    model.engine = ScriptedEngine("One. Two. Three. Four.")
    session = model.session()
    await spoken_turn(session)
    created = await session.generate_reply()
    message = [m async for m in created.message_stream][0]
    [piece async for piece in message.text_stream]
    session.truncate(
        message_id=message.message_id,
        modalities=["text"],
        audio_end_ms=900,
        audio_transcript="One. Two.",
    )
    replies = [
        i
        for i in session.chat_ctx.items
        if isinstance(i, llm.ChatMessage) and i.role == "assistant"
    ]
    assert [r.text_content for r in replies] == ["One. Two."]
    await session.aclose()


def test_run_file_with_phi4mm_on_real_speech(tiny_phi4mm, tmp_path):
    # random weights say 128 tokens of noise: espeak-ng reads them in time, Piper does not
    profile = tmp_path / "espeak.toml"
    profile.write_text('name = "espeak"\nprompt = "desktop"\n[voice]\nenglish = "espeak"\n')
    result = voice_agent(
        "run-file",
        str(SHARED_AUDIO / "one_two_three_en.wav"),
        "--profile",
        str(profile),
        "--out",
        str(tmp_path),
        "--engine",
        "phi4mm",
        "--model",
        str(tiny_phi4mm),
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    turns = [e for e in events if e["type"] == "user_turn"]
    replies = [e for e in events if e["type"] == "agent_reply"]
    assert turns and replies, events
    # random weights: the transcript is nonsense, but it is the model's own, for each turn
    assert all(t["transcript"] and t["audio_s"] > 0.2 and t["tokens"] > 3 for t in turns), turns
    assert all(0 <= t["start"] < t["end"] <= 2.8 for t in turns), turns
    # a reply the next turn cut off before its first frame has no voice to time
    heard = [r["metrics"] for r in replies if r["start"] is not None]
    assert heard and all(v is not None and v >= 0 for m in heard for v in m.values()), replies
    unheard = [r["metrics"] for r in replies if r["start"] is None]
    assert all(m["ttfb_s"] is None and m["e2e_latency_s"] is None for m in unheard), unheard
    summary = events[-1]
    errors = [e for e in events if e["type"] == "error"]
    assert summary["type"] == "summary" and summary["counts"]["error"] == 0, errors
    assert summary["agent_speech_s"] > 0


def test_absent_weights_exit_2_naming_model_and_revision(tmp_path):
    result = voice_agent(
        "run-file",
        str(SHARED_AUDIO / "one_two_three_en.wav"),
        "--out",
        str(tmp_path),
        "--engine",
        "phi4mm",
        env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")},
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert (
        "\\n" not in line and "microsoft/Phi-4-multimodal-instruct" in line and "refs/pr/70" in line
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model", "someone/missing-model"],
            "could not download someone/missing-model@refs/pr/70",
        ),
        (["--revision"], "expected one argument"),
    ],
)
def test_download_model_arguments_and_offline_failure(args, message, tmp_path):
    result = voice_agent(
        "download-model", *args, "--dir", str(tmp_path), env={"HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1

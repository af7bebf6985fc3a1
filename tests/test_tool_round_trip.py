"""A spoken question that needs a tool: the call, its output and the spoken answer.

The bundled 135M model cannot be relied on to call tools, and no tool-capable model can be
loaded offline here, so this test stands in a scripted model for the LLM only (and says so).
Everything else is real: espeak speech in, webrtcvad, whisper, the session's tool execution,
the real get_time, TTS out, events on disk.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import numpy as np
from livekit.agents import Agent, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from agent.profile import load_profile
from agent.run_file import SAMPLE_RATE, play_conversation
from agent.session import build_session
from audio import Pyttsx3Options, Pyttsx3TTS
from audio.pcm import resample
from tools import get_time


class ScriptedToolModel(llm.LLM):
    """Stands in for a tool-capable model: asks for get_time, then reads its output out."""

    def chat(self, *, chat_ctx, tools=None, conn_options=DEFAULT_API_CONNECT_OPTIONS, **_):
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        outputs = [item for item in self._chat_ctx.items if item.type == "function_call_output"]
        if outputs:
            delta = llm.ChoiceDelta(role="assistant", content=f"It is {outputs[-1].output}.")
        else:
            assert "get_time" in [t.id for t in self._tools], "the profile offers get_time"
            call = llm.FunctionToolCall(name="get_time", arguments="{}", call_id="call-1")
            delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
        self._event_ch.send_nowait(llm.ChatChunk(id="scripted", delta=delta))


async def test_a_time_question_runs_get_time_and_speaks_its_answer(tmp_path):
    question = (
        await Pyttsx3TTS(Pyttsx3Options(language="en-us"))
        .synthesize("What time is it right now?")
        .collect()
    )
    speech = resample(np.frombuffer(question.data, np.int16), question.sample_rate, SAMPLE_RATE)
    silence = np.zeros(SAMPLE_RATE // 2, np.int16)
    samples = np.concatenate([silence, speech, np.zeros(SAMPLE_RATE * 5, np.int16)])

    profile = load_profile("desktop")
    session, real_agent = await build_session(profile)
    agent = Agent(instructions=real_agent.instructions, tools=[get_time], llm=ScriptedToolModel())
    summary = await play_conversation(
        session, agent, samples, tmp_path, speed=1.0, settle_s=2.0, echo=False, source="question"
    )

    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds.index("user_turn") < kinds.index("tool_call") < kinds.index("agent_reply")
    turn = next(e for e in events if e["type"] == "user_turn")
    assert "time" in turn["transcript"].lower()
    call = next(e for e in events if e["type"] == "tool_call")
    assert call["name"] == "get_time" and call["arguments"] == {} and not call["is_error"]
    assert str(datetime.now().year) in call["output"]
    reply = next(e for e in events if e["type"] == "agent_reply")
    assert reply["text"] == f"It is {call['output']}."
    assert reply["metrics"]["e2e_latency_s"] > 0
    assert summary["counts"]["tool_call"] == 1 and summary["agent_speech_s"] > 1.0


async def test_get_time_reads_other_zones_and_refuses_unknown_ones():
    tokyo = await get_time("Asia/Tokyo")
    assert re.search(r"\d{2}:\d{2} JST$", tokyo)
    try:
        await get_time("Mars/Olympus")
    except llm.ToolError as e:
        assert "Mars/Olympus" in e.message
    else:
        raise AssertionError("an unknown zone must be a tool error the model can read")

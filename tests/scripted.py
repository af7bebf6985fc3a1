"""A scripted LLM for tests that need a model that calls tools.

The bundled 135M model cannot be relied on to call tools, and no tool-capable model can be
loaded offline here, so these tests stand a scripted model in for the LLM only. It answers each
user turn with the next scripted tool call, then reads the tool's output (or error) aloud.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import Agent, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from agent.control import ControlledSession
from agent.profile import load_profile
from agent.session import SessionFactory
from agent.transports.file import SAMPLE_RATE, play_conversation
from audio import Pyttsx3Options, Pyttsx3TTS
from audio.pcm import resample
from tools.services import AgentServices


class ScriptedToolModel(llm.LLM):
    def __init__(self, *calls: tuple[str, dict[str, Any]]) -> None:
        super().__init__()
        self.calls = list(calls)
        self.offered: list[list[str]] = []
        """The tool names the session offered, per request."""

    def chat(self, *, chat_ctx, tools=None, conn_options=DEFAULT_API_CONNECT_OPTIONS, **_):
        self.offered.append([t.id for t in tools or []])
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        model = self._llm
        assert isinstance(model, ScriptedToolModel)
        last = self._chat_ctx.items[-1] if self._chat_ctx.items else None
        if isinstance(last, llm.FunctionCallOutput):
            delta = llm.ChoiceDelta(role="assistant", content=last.output)
        elif model.calls:
            name, arguments = model.calls.pop(0)
            call = llm.FunctionToolCall(name=name, arguments=json.dumps(arguments), call_id=name)
            delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
        else:
            delta = llm.ChoiceDelta(role="assistant", content="All done.")
        self._event_ch.send_nowait(llm.ChatChunk(id="scripted", delta=delta))


async def spoken(*lines: str, pause_s: float = 6.0) -> np.ndarray:
    """A user's side of a call at 24 kHz: each line spoken by espeak-ng, then a pause."""
    voice = Pyttsx3TTS(Pyttsx3Options(language="en-us"))
    parts = [np.zeros(SAMPLE_RATE // 2, np.int16)]
    for line in lines:
        frame = await voice.synthesize(line).collect()
        parts.append(resample(np.frombuffer(frame.data, np.int16), frame.sample_rate, SAMPLE_RATE))
        parts.append(np.zeros(int(pause_s * SAMPLE_RATE), np.int16))
    return np.concatenate(parts)


async def converse(
    tmp_path: Path, samples: np.ndarray, model: llm.LLM, tools: list, profile: str = "desktop"
) -> list[dict[str, Any]]:
    """Plays ``samples`` into a real session whose agent thinks with ``model``; the events."""
    factory = await SessionFactory.load(load_profile(profile))
    controlled = ControlledSession.open(factory, None, owns_factory=True)
    real_agent = controlled.agent
    agent = Agent(instructions=real_agent.instructions, tools=tools, llm=model)
    await play_conversation(
        controlled, agent, samples, tmp_path, speed=1.0, settle_s=2.0, echo=False, source="spoken"
    )
    await controlled.aclose()
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


class CallerContext:
    """What a tool that speaks reads of its ``RunContext``: the session's services, with the
    language the caller was heard in (a session needs a running conversation)."""

    def __init__(self, language: str = "en") -> None:
        self.userdata = AgentServices(language=language)

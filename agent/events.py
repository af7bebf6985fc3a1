"""What happened in a session, as JSON lines on the input's timeline and a live transcript."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

from livekit.agents import AgentSession, llm
from livekit.agents.metrics import STTMetrics
from livekit.agents.voice import io
from livekit.agents.voice.events import (
    AgentFalseInterruptionEvent,
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    FunctionToolsExecutedEvent,
    UserInputTranscribedEvent,
    UserStateChangedEvent,
)
from livekit.agents.voice.io import PlaybackStartedEvent

from audio.file_io import Timeline
from audio.language import TurnLanguage
from audio.tts import Pyttsx3TTS

from .addressing import AddressingChanged
from .context import ContextMeter, Trim, meter_of
from .session import ConversationSession
from .tool_calls import INTENT_CALL_PREFIX

METRIC_NAMES = ("eou_delay_s", "ttft_s", "ttfs_s", "ttfb_s", "e2e_latency_s")
"""Per reply; the summary adds ``stt_s``, the recognizer's time per utterance."""


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def counts_line(counts: dict[str, int]) -> str:
    """A session's counts as the summary line says them: "3 user turns, 1 reply, …"."""
    nouns = [
        ("user_turn", "user turn", "user turns"),
        ("agent_reply", "reply", "replies"),
        ("tool_call", "tool call", "tool calls"),
        ("error", "error", "errors"),
    ]
    return ", ".join(f"{counts[k]} {one if counts[k] == 1 else many}" for k, one, many in nouns)


def tool_calls(event: FunctionToolsExecutedEvent) -> list[dict[str, Any]]:
    """Each call of a batch with its result, as the event log and the MQTT bridge report it."""
    return [
        {
            "name": call.name,
            "arguments": json.loads(call.arguments or "{}"),
            "output": output.output,
            "is_error": output.is_error,
            "source": "intent" if call.call_id.startswith(INTENT_CALL_PREFIX) else "model",
        }
        for call, output in event.zipped()
    ]


@runtime_checkable
class ItemDetails(Protocol):
    """An engine that knows more about the turns and replies it handled than LiveKit reports."""

    def item_details(self, item_id: str) -> dict[str, Any]: ...


class EventLog:
    """Writes ``events.jsonl`` (when given a path), hands each record to ``on_record`` (a
    browser's data channel) and prints each turn as it happens."""

    def __init__(
        self,
        path: Path | None,
        timeline: Timeline,
        *,
        echo: TextIO | None = sys.stdout,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._file = None if path is None else path.open("w", encoding="utf-8")
        self._on_record = on_record
        self._timeline = timeline
        self._echo = echo
        self._turn_start: float | None = None  # first speech since the last committed turn
        self._speech_start: float | None = None  # of the latest speech
        self._speech_end: float | None = None
        self._unanswered_end: float | None = None  # end of user speech not yet answered aloud
        self._eou_delay: float | None = None
        self._e2e: float | None = None
        self._reply_started_at: float | None = None  # wall clock of this reply's first frame
        self._details: ItemDetails | None = None
        self._meter: ContextMeter | None = None
        self._voice: Pyttsx3TTS | None = None
        self._held_turn: tuple[str, dict[str, Any]] | None = None
        self._language = TurnLanguage()
        """The language the recognizer heard the latest turn in, when it tells."""
        self.counts = {
            "user_turn": 0,
            "agent_reply": 0,
            "tool_call": 0,
            "interruption": 0,
            "context_trimmed": 0,
            "error": 0,
        }
        self.metrics: dict[str, list[float]] = {name: [] for name in (*METRIC_NAMES, "stt_s")}

    def attach(self, session: AgentSession, speaker: io.AudioOutput) -> None:
        self._details = session.llm if isinstance(session.llm, ItemDetails) else None
        self._meter = meter_of(session.llm)
        self._voice = session.tts if isinstance(session.tts, Pyttsx3TTS) else None
        if self._meter is not None:
            self._meter.on("context_trimmed", self._on_trim)
            self._meter.on("turn_measured", self._on_turn_measured)
        speaker.on("playback_started", self._on_playback_started)
        session.on("agent_state_changed", self._on_agent_state)
        session.on("user_state_changed", self._on_user_state)
        session.on("conversation_item_added", self._on_item)
        session.on("user_input_transcribed", self._on_transcribed)
        session.on("function_tools_executed", self._on_tools)
        session.on("agent_false_interruption", self._on_false_interruption)
        session.on("error", self._on_error)
        if session.stt is not None:  # the plugin's own metrics: the session's are deprecated
            session.stt.on("metrics_collected", self._on_stt_metrics)
        if isinstance(session, ConversationSession):
            session.userdata.keypad.on("pressed", lambda key: self.write("dtmf", digit=key))
            if not session.addressing.always:
                session.addressing.on("changed", self._on_addressing)
                session.addressing.on("ignored", self._on_ignored)

    def write(self, kind: str, **fields: Any) -> None:
        record = {"type": kind, "t": round(self._timeline.now(), 3), **fields}
        if self._file is not None:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()
        if self._on_record is not None:
            self._on_record(record)
        if kind in self.counts:
            self.counts[kind] += 1

    def say(self, who: str, text: str) -> None:
        if self._echo is not None:
            print(f"[{self._timeline.now():7.2f}s] {who:>6}: {text}", file=self._echo, flush=True)

    def _on_agent_state(self, event: AgentStateChangedEvent) -> None:
        self.write("state", agent=event.new_state)

    def _on_user_state(self, event: UserStateChangedEvent) -> None:
        # LiveKit backdates these to the VAD's speech boundaries
        if event.new_state == "speaking":
            self._speech_start = self._timeline.at(event.created_at)
            if self._turn_start is None:
                self._turn_start = self._speech_start
        elif event.old_state == "speaking":
            self._speech_end = self._unanswered_end = self._timeline.at(event.created_at)

    def _on_playback_started(self, event: PlaybackStartedEvent) -> None:
        self._reply_started_at = event.created_at
        if self._unanswered_end is not None:
            self._e2e = self._timeline.at(event.created_at) - self._unanswered_end
            self._unanswered_end = None

    def _on_item(self, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if not isinstance(item, llm.ChatMessage):
            return
        if item.role == "user":
            details = self._item_details(item.id)
            for image in details.get("images", []):  # taken at (wall clock) → on the timeline
                image["time"] = _rounded(self._timeline.at(image.pop("at")))
            start_at = details.pop("speech_started_at", 0.0)
            end_at = details.pop("speech_ended_at", 0.0)
            start = self._timeline.at(start_at) if start_at else self._turn_start
            end = self._timeline.at(end_at) if end_at else self._speech_end
            if start is None:  # a transcript that came after its turn was committed
                start = self._speech_start
            if not end_at:
                self._eou_delay = None if end is None else self._timeline.at(event.created_at) - end
            self._log_turn(
                item.id,
                {
                    "start": _rounded(start),
                    "end": _rounded(end),
                    "transcript": item.text_content or "",
                    **details,
                    **({"language": self._language.language} if self._language.language else {}),
                },
            )
            self._language = TurnLanguage()
            self.say("user", item.text_content or "(nothing recognised)")
            self._turn_start = None
        elif item.role == "assistant":
            self._on_reply(item)

    def _on_reply(self, item: llm.ChatMessage) -> None:
        self._release_turn()
        metrics = item.metrics or {}
        values = {
            "eou_delay_s": self._eou_delay,
            "ttft_s": metrics.get("llm_node_ttft"),
            "ttfs_s": metrics.get("llm_node_ttfs"),
            "ttfb_s": metrics.get("tts_node_ttfb"),
            "e2e_latency_s": self._e2e,
        }
        details = self._item_details(item.id)
        if values["ttft_s"] is None and "ttft_s" in details:
            # LiveKit times no nodes for a realtime model, and its transcripts come after the
            # reply: the engine timed the turn and its first text; the TTS's share is what
            # remains until the first audio frame
            values["ttft_s"] = details["ttft_s"]
            values["ttfb_s"] = (
                None  # cut off before its first frame
                if self._reply_started_at is None
                else self._reply_started_at - details["first_text_at"]
            )
            values["eou_delay_s"] = details["eou_delay_s"]
            del values["ttfs_s"]  # its text reaches the voice through no LLM node
        for name, value in values.items():
            if value is not None:
                self.metrics[name].append(value)
        self._eou_delay = self._e2e = None  # a tool follow-up is not a second answer
        text = item.text_content or ""
        self.write(
            "agent_reply",
            start=_rounded(
                None
                if self._reply_started_at is None
                else self._timeline.at(self._reply_started_at)
            ),
            text=text,
            **({"language": self._voice.language_of(text)} if self._voice and text else {}),
            interrupted=item.interrupted,
            metrics={name: _rounded(value) for name, value in values.items()},
            **({} if self._meter is None else {"context_tokens": self._meter.latest}),
        )
        self._reply_started_at = None  # the next reply's frames are its own
        self.say(
            "agent", (item.text_content or "") + (" [interrupted]" if item.interrupted else "")
        )
        if item.interrupted:
            self.write("interruption", by="user", resumed=False)

    def _on_transcribed(self, event: UserInputTranscribedEvent) -> None:
        if event.is_final and event.language:
            self._language.heard(event.transcript, str(event.language))

    def _log_turn(self, item_id: str, record: dict[str, Any]) -> None:
        """Write a user turn with the context's size after it; a turn whose request is still
        being rendered waits for it (ms), or for the next turn, reply or tool call."""
        self._release_turn()
        if self._meter is not None and item_id not in self._meter.after_turn:
            self._held_turn = (item_id, record)
        else:
            self._write_turn(item_id, record)

    def _on_turn_measured(self, item_id: str) -> None:
        if self._held_turn is not None and self._held_turn[0] == item_id:
            self._release_turn()

    def _release_turn(self) -> None:
        if self._held_turn is not None:
            held, self._held_turn = self._held_turn, None
            self._write_turn(*held)

    def _write_turn(self, item_id: str, record: dict[str, Any]) -> None:
        tokens = None if self._meter is None else self._meter.after_turn.get(item_id)
        self.write("user_turn", **record, **({} if tokens is None else {"context_tokens": tokens}))

    def _on_trim(self, trim: Trim) -> None:
        self.write("context_trimmed", **asdict(trim))
        went = f"{trim.images} images, {trim.audio} turns' audio, {trim.turns} old turns"
        self.say("context", f"trimmed {went}: {trim.before} → {trim.after} tokens")

    def _item_details(self, item_id: str) -> dict[str, Any]:
        return {} if self._details is None else self._details.item_details(item_id)

    def _on_tools(self, event: FunctionToolsExecutedEvent) -> None:
        self._release_turn()
        for record in tool_calls(event):
            self.write("tool_call", **record)
            self.say("tool", f"{record['name']}({record['arguments']}) -> {record['output']}")

    def _on_stt_metrics(self, metrics: STTMetrics) -> None:
        self.write(
            "stt", audio_s=round(metrics.audio_duration, 3), duration_s=round(metrics.duration, 3)
        )
        self.metrics["stt_s"].append(metrics.duration)

    def _on_addressing(self, change: AddressingChanged) -> None:
        self.write("addressing", state=change.state, by=change.by)
        self.say("state", f"{change.state} ({change.by})")

    def _on_ignored(self, transcript: str) -> None:
        """Speech not for the agent: no turn, and the next turn starts afresh."""
        self.write("ignored", start=_rounded(self._turn_start), transcript=transcript)
        self.say("heard", f"{transcript} (not for the agent)")
        self._turn_start = self._unanswered_end = None

    def _on_false_interruption(self, event: AgentFalseInterruptionEvent) -> None:
        self.write("interruption", by="noise", resumed=event.resumed)

    def _on_error(self, event: ErrorEvent) -> None:
        message = getattr(event.error, "error", None) or event.error
        self.write("error", source=type(event.source).__name__, message=str(message))
        self.say("error", str(message))

    def summary(self, **fields: Any) -> dict[str, Any]:
        self._release_turn()
        figures = {
            name: {"median": round(statistics.median(v), 3), "count": len(v)}
            for name, v in self.metrics.items()
            if v
        }
        record = {"counts": dict(self.counts), "metrics": figures, **fields}
        self.write("summary", **record)
        return record

    def close(self) -> None:
        self._release_turn()
        if self._file is not None:
            self._file.close()

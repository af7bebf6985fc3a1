"""What an operator scrapes from ``serve``'s ``GET /metrics`` (Prometheus' text format).

The figures come from the same event records as ``events.jsonl``, so a dashboard and a
conversation's log never disagree; the process's own (RSS, CPU, open files) are the
client library's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)

ACTIVE = Gauge("voice_agent_conversations_active", "Conversations held now")
STARTED = Counter(
    "voice_agent_conversations", "Conversations begun, by how they came", ["transport"]
)
REFUSED = Counter(
    "voice_agent_conversations_refused",
    "Offers and calls refused, by how they came and why",
    ["transport", "reason"],
)
SIP_CALLS = Counter("voice_agent_sip_calls", "SIP INVITEs, by outcome", ["outcome"])
TURNS = Counter("voice_agent_user_turns", "The callers' turns")
REPLIES = Counter("voice_agent_replies", "The agent's replies")
E2E = Histogram(
    "voice_agent_e2e_latency_seconds",
    "From the end of the caller's speech to the agent's first audio",
    buckets=LATENCY_BUCKETS,
)
STAGES = Histogram(
    "voice_agent_stage_latency_seconds",
    "Each stage of a reply: eou_delay (end of speech to end of turn), ttft (first token), "
    "ttfs (first sentence), ttfb (the voice's first audio), stt (a recognition)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
TOOL_CALLS = Counter(
    "voice_agent_tool_calls",
    "Tool calls, by tool, by who chose it (model, intent), by result",
    ["tool", "source", "result"],
)
ERRORS = Counter("voice_agent_errors", "Errors a conversation logged, by source", ["source"])
INTERRUPTIONS = Counter("voice_agent_interruptions", "Replies cut short, by what", ["by"])


def count_active(active: Callable[[], int]) -> None:
    ACTIVE.set_function(active)


def observe(record: dict[str, Any]) -> None:
    """One event record (as ``events.jsonl`` has it) into the figures."""
    kind = record["type"]
    if kind == "user_turn":
        TURNS.inc()
    elif kind == "agent_reply":
        REPLIES.inc()
        for name, value in record["metrics"].items():
            if value is None:
                continue
            if name == "e2e_latency_s":
                E2E.observe(value)
            else:
                STAGES.labels(name.removesuffix("_s")).observe(value)
    elif kind == "stt":
        STAGES.labels("stt").observe(record["duration_s"])
    elif kind == "tool_call":
        result = "error" if record["is_error"] else "ok"
        TOOL_CALLS.labels(record["name"], record["source"], result).inc()
    elif kind == "error":
        ERRORS.labels(record["source"]).inc()
    elif kind == "interruption":
        INTERRUPTIONS.labels(record["by"]).inc()

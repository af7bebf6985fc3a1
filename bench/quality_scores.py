"""How ``bench/quality.py`` scores a conversation's events, turn by turn, and sums them up.

A user turn belongs to the turn whose stretch of the recording it started in (a turn heard in
two pieces keeps its replies), and what follows it is its answer. The reply's language is told
by the identifier the voice uses (``audio/language.py``).
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.profile import Profile
from audio.language import TextLanguage
from bench.quality_cases import Turn, normalise

EARLY_S = 1.0
"""A user turn may start this much before its speech (the VAD's pre-roll)."""
BRIEF_WORDS, BRIEF_SENTENCES = 35, 2
REPEAT_RATIO, REPEAT_MIN_WORDS = 0.8, 5
HEARD_RATIO = 0.8
"""A transcript this close to what was said (difflib's ratio) counts as heard right."""
LOST_RATIO = 0.5
"""Words said over the greeting heard less like this are lost."""
ADMITS = re.compile(
    r"can't|cannot|can not|unable|not able|don't have|do not have|offline|no access"
    r"|internet|real[- ]time|don't know|do not know|not sure|no way to"
    r"|kann nicht|kann ich nicht|nicht möglich|keinen zugriff|weiß (es )?nicht"
    r"|no puedo|no tengo|no sé|no es posible|sin conexión"
    r"|je ne peux pas|je n'ai pas|je ne sais pas|impossible|hors ligne",
    re.I,
)
FIGURE = re.compile(r"\d\d|[02-9]")
"""A made-up figure, in a normalised reply: any number but a lone 1 ("that one")."""
REFUSED = "which it was not offered"
"""An ``error`` event's words for a call to a tool the profile does not offer: never run (the
user hears an apology), so it is counted apart from the calls that ran."""
DEFERRALS = ("transfer_call", "look_up_online")
"""Handing the caller to a person (the call profile's prompt asks for it), or the tool that
says what cannot be looked up offline, admit as well."""


@dataclass
class Heard:
    """What the session logged between one expected turn's start and the next's."""

    transcripts: list[str] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def by_turn(events: list[dict[str, Any]], starts: list[float]) -> list[Heard]:
    """Each user turn goes to the expected turn its speech started in; replies, calls and
    errors to the user turn logged last before them."""
    return _assign(
        events,
        len(starts),
        lambda event, _: bisect.bisect_right(starts, event.get("start", event["t"]) + EARLY_S) - 1,
    )


def by_order(events: list[dict[str, Any]], count: int) -> list[Heard]:
    """Typed turns: the n-th user turn is the n-th expected one."""
    return _assign(events, count, lambda _, index: index + 1)


def _assign(
    events: list[dict[str, Any]], count: int, place: Callable[[dict[str, Any], int], int]
) -> list[Heard]:
    heard = [Heard() for _ in range(count)]
    current: Heard | None = None
    index = -1
    for event in events:
        kind = event["type"]
        if kind == "user_turn":
            index = place(event, index)
            current = heard[index] if 0 <= index < count else None
            if current is not None:
                current.transcripts.append(event["transcript"])
        elif current is None:
            continue  # a greeting, before the user has said anything
        elif kind == "agent_reply":
            current.replies.append(event)
        elif kind == "tool_call":
            current.tools.append(event)
        elif kind == "error":
            current.errors.append(str(event.get("message", "")))
    return heard


def expectation(turn: Turn, offered: list[str]) -> tuple[str, bool, tuple[str, ...]]:
    """The tool, whether an admission is due, and the facts, on a profile offering
    ``offered``: a turn whose tool is missing is answered in words, or admitted."""
    if not turn.tool or turn.tool in offered:
        return turn.tool, turn.admit, turn.facts
    if turn.optional:
        return "", False, turn.facts
    return "", turn.elsewhere == "admit", ()


def similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def repeats(reply: str, earlier: str) -> bool:
    """The same words, or nearly (a short reply only when the same: "door opened." is no
    repeat of "door is open.")."""
    a, b = reply.lower(), earlier.lower()
    return a == b or (len(a.split()) >= REPEAT_MIN_WORDS and similar(a, b) >= REPEAT_RATIO)


def in_language(turn: Turn, heard: Heard, identify: TextLanguage) -> bool | None:
    """Every reply said in the turn's language, or too short to tell (then the voice speaks
    it in the caller's); None without a reply."""
    told = [identify.of(r["text"]) for r in heard.replies if r["text"].strip()]
    return all(t in (turn.language, None) for t in told) if told else None


def score(
    turn: Turn, offered: list[str], heard: Heard, earlier: list[str], identify: TextLanguage
) -> dict[str, Any]:
    tool, admit, facts = expectation(turn, offered)
    reply = " ".join(r["text"] for r in heard.replies).strip()
    said = normalise(reply)
    calls = [turn.args(c["arguments"]) for c in heard.tools if c["name"] == tool]
    deferred = admit and any(c["name"] in DEFERRALS for c in heard.tools)
    allowed = (tool, *DEFERRALS) if admit else (tool,)
    false_calls = [c["name"] for c in heard.tools if c["name"] not in allowed]
    words = re.findall(r"[\w'.:-]+", reply)
    admitted = deferred or (ADMITS.search(reply) is not None and not FIGURE.search(said))
    scores: dict[str, Any] = {
        "replied": bool(reply),
        "facts": all(re.search(f, said, re.I) for f in facts) if facts else None,
        "tool": not false_calls and (any(calls) if tool and not turn.optional else all(calls)),
        "false_call": bool(false_calls),
        "refused_call": any(REFUSED in e for e in heard.errors),
        "admitted": admitted if admit else None,
        "format": len(words) <= turn.words if turn.words else None,
        "repeat": bool(reply)
        and not heard.tools
        and not (admit and admitted)  # "Sorry, I can't check news: …" in the tool's words
        and any(repeats(reply, e) for e in earlier),
        "recited": any("recited" in e for e in heard.errors),
        "language": in_language(turn, heard, identify),
        "brief": 0 < len(words) <= BRIEF_WORDS
        and len(re.findall(r"[.!?]\s+(?=[A-Z])", reply)) < BRIEF_SENTENCES,
    }
    scores["right"] = (
        scores["replied"]
        and all(scores[k] is not False for k in ("facts", "tool", "admitted", "format", "language"))
        and not (scores["repeat"] or scores["recited"] or scores["refused_call"])
    )
    return scores


def record(
    turn: Turn, profile: Profile, heard: Heard, earlier: list[str], identify: TextLanguage
) -> dict[str, Any]:
    """One turn's record for the JSON; a turn that cannot be scored is a miss."""
    transcript = " ".join(t.strip() for t in heard.transcripts)
    said = turn.heard or ("" if turn.say.startswith("@") else turn.say)
    e2e = [r["metrics"].get("e2e_latency_s") for r in heard.replies if r.get("metrics")]
    row: dict[str, Any] = {
        "category": turn.category,
        "language": turn.language,
        "said": said or turn.say,
        "heard": transcript,
        "heard_ratio": round(similar(normalise(transcript), normalise(said)), 2) if said else None,
        "over_greeting": turn.over_greeting,
        "reply": " ".join(r["text"] for r in heard.replies).strip(),
        "reply_languages": [identify.of(r["text"]) for r in heard.replies],
        "tools": [
            {k: c.get(k) for k in ("name", "arguments", "output", "source")} for c in heard.tools
        ],
        "interrupted": any(r.get("interrupted") for r in heard.replies),
        "e2e_s": next((v for v in e2e if v is not None), None),
        "expected_tool": (tool := expectation(turn, profile.tools)[0]),
        "tool_required": bool(tool) and not turn.optional,
    }
    try:
        row["scores"] = score(turn, profile.tools, heard, earlier, identify)
    except Exception as e:  # a turn the scorer cannot read is a miss, not a crash
        row["scores"] = {"right": False, "problem": f"{type(e).__name__}: {e}"}
    return row


def score_conversation(
    turns: list[Turn], profile: Profile, heard: list[Heard], problem: str, labels: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each turn's record, labelled. A reply with a call is the tool's own sentence, so only
    a reply without one can repeat the replies before it."""
    rows: list[dict[str, Any]] = []
    earlier: list[str] = []
    identify = TextLanguage(tuple(profile.voice.languages) or (profile.voice.language,))
    for index, (turn, what) in enumerate(zip(turns, heard, strict=True), 1):
        row = record(turn, profile, what, earlier, identify) | labels | {"turn": index}
        rows.append(row)
        if problem:
            row["scores"]["problem"] = problem
        if row["reply"]:
            earlier.append(row["reply"])
    return rows


def tally(
    rows: list[dict[str, Any]], key: str, hit: Callable[[dict], bool]
) -> dict[str, list[int]]:
    """[hits, rows] for each value of ``key``."""
    pairs: dict[str, list[int]] = {}
    for row in rows:
        pair = pairs.setdefault(row[key], [0, 0])
        pair[0] += bool(hit(row))
        pair[1] += 1
    return pairs


def lost(row: dict[str, Any]) -> bool:
    """Its words are not heard: no transcript, or one less than half like them (a turn heard
    only from its next one on, or misheard)."""
    return not row["heard"] or (row["heard_ratio"] or 0.0) < LOST_RATIO


def intent_answered(row: dict[str, Any]) -> bool:
    """A turn a sentence template answered (its calls' source), not the model."""
    return bool(row["tools"]) and all(c.get("source") == "intent" for c in row["tools"])


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def count(key: str, value: object = True) -> int:
        return sum(r["scores"].get(key) == value for r in rows)

    e2e = [r["e2e_s"] for r in rows if r["e2e_s"] is not None]
    by_intent = [r["e2e_s"] for r in rows if r["e2e_s"] is not None and intent_answered(r)]
    tool_turns = [r for r in rows if r["expected_tool"]]  # arithmetic and units too
    toolless = [r for r in rows if not r["expected_tool"]]
    referenced = [r for r in rows if r["heard_ratio"] is not None]
    over_greeting = [r for r in rows if r["over_greeting"]]
    return {
        "turns": len(rows),
        "right": count("right"),
        "categories": tally(rows, "category", lambda r: r["scores"]["right"]),
        "tool_requests": [sum(bool(r["scores"]["right"]) for r in tool_turns), len(tool_turns)],
        "false_calls": [sum(bool(r["scores"].get("false_call")) for r in toolless), len(toolless)],
        "admitted": [count("admitted"), count("admitted") + count("admitted", False)],
        "repeats": count("repeat"),
        "recitals": count("recited"),
        "refused_calls": count("refused_call"),
        "wrong_and_misheard": [
            sum(not r["scores"]["right"] and r["heard_ratio"] < HEARD_RATIO for r in referenced),
            sum(not r["scores"]["right"] for r in referenced),
        ],
        "in_language": [count("language"), count("language") + count("language", False)],
        "unsure_language": sum(None in r["reply_languages"] for r in rows),
        "over_greeting_lost": [sum(lost(r) for r in over_greeting), len(over_greeting)],
        "brief": count("brief"),
        "heard_right": tally(referenced, "voice", lambda r: r["heard_ratio"] >= HEARD_RATIO),
        "interrupted": sum(r["interrupted"] for r in rows),
        "no_reply": count("replied", False),
        "e2e_median_s": round(float(np.median(e2e)), 3) if e2e else None,
        "e2e_p90_s": round(float(np.percentile(e2e, 90)), 3) if e2e else None,
        "intent_answers": len(by_intent),
        "e2e_intent_median_s": round(float(np.median(by_intent)), 3) if by_intent else None,
    }


def table(name: str, s: dict[str, Any]) -> str:
    def ratio(pair: list[int]) -> str:
        return f"{pair[0]}/{pair[1]}"

    lines = [f"{name}: {s['right']}/{s['turns']} right ({s['right'] / s['turns']:.0%})"]
    lines += [f"  {category:<14} {ratio(pair):>6}" for category, pair in s["categories"].items()]
    e2e = "-" if s["e2e_median_s"] is None else f"{s['e2e_median_s']:.2f} / {s['e2e_p90_s']:.2f} s"
    lines += [
        f"  tool requests right {ratio(s['tool_requests'])}, false calls "
        f"{ratio(s['false_calls'])} turns without one, "
        f"admitted unknowns {ratio(s['admitted'])}, repeats {s['repeats']}, "
        f"recitals {s['recitals']}, made-up calls refused {s['refused_calls']}",
        f"  misheard (transcript under {HEARD_RATIO:.0%} like what was said): "
        f"{ratio(s['wrong_and_misheard'])} of the turns not right",
        f"  brief {s['brief']}/{s['turns']}, interrupted {s['interrupted']}, "
        f"no reply {s['no_reply']}; e2e median / p90 {e2e}, "
        f"of the {s['intent_answers']} answered by templates "
        f"{s['e2e_intent_median_s'] if s['e2e_intent_median_s'] is not None else '-'} s",
        "  heard right: "
        + ", ".join(f"{ratio(pair)} ({voice})" for voice, pair in s["heard_right"].items()),
        f"  replies in the turn's language {ratio(s['in_language'])} turns "
        f"({s['unsure_language']} with a reply too short to tell); "
        f"said over the greeting and lost or misheard {ratio(s['over_greeting_lost'])}",
    ]
    return "\n".join(lines)

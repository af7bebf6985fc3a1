"""A caller's keypad on a real phone calling a real ``voice-agent serve --sip``, inside a
network namespace of its own: entries asked for and read by ``collect_digits``, keys typed
unasked, and the call's recording when the server is killed mid-call.

Run by tests/test_sip.py as ``python tests/keypad_calls.py OUT_DIR`` (``conftest.isolated``).
Writes OUT_DIR/result.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.intents import KEYPAD_PROMPT  # noqa: E402
from agent.transports.file import SAMPLE_RATE  # noqa: E402
from audio.pcm import resample  # noqa: E402
from tests.conftest import wait_until  # noqa: E402
from tests.scripted import spoken  # noqa: E402
from tests.sip_calls import (  # noqa: E402
    RATE,
    Phone,
    greeted,
    microphone_wav,
    recordings,
    records,
    serve_calls,
)

KEYED = [f"{n:04d}#" for n in range(1234, 10000, 876)][:10]
"""Ten account numbers, each typed once the agent has been asked to read one (``REQUEST``)."""
REQUEST = "I'd like to enter my account number."
REQUEST_EVERY_S = 12.0
"""The caller's requests start this far apart: each is asked for, typed and read back before
the next (about 9 s)."""
TOLD = ["42#", "7"]
"""Typed with no request: told to the model at the terminator, and after the pause."""


def keypad_call(out_dir: Path) -> None:
    """One recorded caller who asks ten times to enter an account number and types ``KEYED``
    as the agent asks for each, then types ``TOLD`` unasked; a few seconds after the last is
    told to the model, the server is killed (SIGKILL)."""
    result: dict[str, Any] = {}
    logs = out_dir / "logs"
    said = resample(asyncio.run(spoken(REQUEST, pause_s=0.0)), SAMPLE_RATE, RATE)
    gap = np.zeros(int(REQUEST_EVERY_S * RATE) - len(said), np.int16)
    sf.write(out_dir / "requests.wav", np.concatenate([said, gap] * len(KEYED)), RATE)
    # baresip hangs up when its microphone's file ends: silence enough for the unasked keys
    microphone = microphone_wav(out_dir / "requests.wav", out_dir / "caller-8k.wav", tail_s=30)
    with (out_dir / "server.log").open("w") as server_log:
        server = serve_calls(out_dir, stderr=server_log, record=True, tools=("collect_digits",))
        phone = Phone(out_dir / "phone", microphone, 5080, quits_after_s=200)
        try:
            phone.dial()
            result["answered"] = wait_until(lambda: greeted(logs, set()) is not None, 60)
            session = result["session"] = greeted(logs, set())
            events = lambda: records(logs).get(session or "", [])  # noqa: E731
            result["asked"] = 0
            for keys in KEYED:
                if not wait_until(lambda: asked_for_keys(events(), result["asked"] + 1), 30):
                    break
                result["asked"] += 1
                phone.press(keys)
                wait_until(lambda: len(collected(events())) >= result["asked"], 20)
            for count, keys in enumerate(TOLD, 1):
                phone.press(keys)
                wait_until(lambda wanted=count: len(told(events())) >= wanted, 15)
            time.sleep(3.0)  # the agent answers on: the kill comes mid-call
            result["last_event_t"] = events()[-1]["t"] if session else 0.0
        finally:
            server.kill()
            server.wait(30)
            phone.quit()
        result["records"] = records(logs)
        result["recordings"] = recordings(logs)
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))


def asked_for_keys(events: list[dict[str, Any]], times: int) -> bool:
    """Whether the agent has asked for the keypad ``times`` times: each time the tool reads it
    once the request is said."""
    asked = [e for e in events if e["type"] == "agent_reply" and e["text"] == KEYPAD_PROMPT]
    return len(asked) >= times


def told(events: list[dict[str, Any]]) -> list[str]:
    """The caller's turns of keys typed unasked."""
    return [e["transcript"] for e in events if "on the keypad" in e.get("transcript", "")]


def collected(events: list[dict[str, Any]]) -> list[str]:
    """What ``collect_digits`` returned, call by call."""
    return [
        e["output"] for e in events if e["type"] == "tool_call" and e["name"] == "collect_digits"
    ]


if __name__ == "__main__":
    keypad_call(Path(sys.argv[1]))

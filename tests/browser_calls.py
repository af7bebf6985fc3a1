"""Real browsers talking to a real ``voice-agent serve``, inside a network namespace of their own.

Run by tests/test_serve.py inside a network namespace of its own (``conftest.isolated``), as
``python tests/browser_calls.py OUT_DIR``. Headless Chromium's microphone is a WAV file; the
page counts the agent's voiced audio and keeps every data-channel record.

Writes OUT_DIR/result.json: what each browser saw, and what the server said about itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from paho.mqtt import publish
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import SHARED_AUDIO, Broker, start_serve, wait_until  # noqa: E402

PORT = 8765
URL = f"http://127.0.0.1:{PORT}/"
SEEING_PORT = 8766
"""A second server, on the tiny random-weight Phi-4-multimodal: the engine that sees."""
LEAD_IN_S = 2.0
"""Silence before the question: the call connects while the microphone already plays."""
REPLY_TIMEOUT_MS = 90_000
DROP_DETECTED_S = 40
"""A browser that vanishes sends nothing: the server hangs up after the profile's
``[call] media_timeout_s`` (30 s) without its audio."""
CHROMIUM_FLAGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def microphone_wav(source: Path, out: Path) -> Path:
    """The recording as Chromium's fake microphone wants it: 16-bit PCM, after a lead-in."""
    samples, rate = sf.read(source, dtype="int16", always_2d=True)
    mono = samples.mean(axis=1).astype(np.int16)
    silence = np.zeros(int(LEAD_IN_S * rate), np.int16)
    sf.write(out, np.concatenate([silence, mono, silence]), rate, subtype="PCM_16")
    return out


def browser(playwright: Playwright, wav: Path) -> Browser:
    return playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"],
    )


def call(browser_: Browser, url: str = URL + "?raw=1") -> Page:
    page = browser_.new_page()
    page.goto(url)
    page.click("#start")
    page.wait_for_function("window.voiceAgent.sessionId !== null", timeout=20_000)
    return page


ANSWERED_LAST_TURN = """(playedMs) => {
    const records = window.voiceAgent.records;
    const last = records.map((r) => r.type).lastIndexOf("user_turn");
    return performance.now() > playedMs && last >= 0
        && records.slice(last).some((r) => r.type === "agent_reply" && r.text)
        && window.voiceAgent.agentVoiceMs >= 200;
}"""


def wait_for_reply(page: Page, wav: Path) -> None:
    """Until the recording has played and its last turn has been answered aloud."""
    played_ms = page.evaluate("performance.now()") + sf.info(wav).duration * 1000
    page.wait_for_function(ANSWERED_LAST_TURN, arg=played_ms, timeout=REPLY_TIMEOUT_MS)


PLAYOUT_DELAY_MS = """async () => {
    if (!pc) return null;
    for (const report of (await pc.getStats()).values())
        if (report.type === "inbound-rtp" && report.kind === "audio"
            && report.jitterBufferEmittedCount)
            return 1000 * report.jitterBufferDelay / report.jitterBufferEmittedCount;
    return null;
}"""
"""Chromium's mean jitter-buffer delay on the agent's voice, for bench/webrtc.py's figures."""


def seen(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("window.voiceAgent")
    state["transcript"] = page.inner_text("#transcript")
    state["playout_delay_ms"] = page.evaluate(PLAYOUT_DELAY_MS)
    return state


def status() -> dict[str, Any]:
    with urllib.request.urlopen(URL + "status", timeout=5) as response:
        result: dict[str, Any] = json.load(response)
        return result


def post(body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        URL + "offer", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def camera_call(browser_: Browser, wav: Path, out_dir: Path) -> dict[str, Any]:
    """One call with Chromium's fake camera (a moving test pattern) to a Phi-4-multimodal
    server: what the page saw."""
    from tests.tiny_phi4mm import build_tiny_phi4mm

    tiny = build_tiny_phi4mm(out_dir / "tiny-phi4mm")
    with open(out_dir / "server-phi4mm.log", "w") as log:
        server = start_serve(
            "--port", str(SEEING_PORT), "--engine", "phi4mm", "--model", str(tiny), stderr=log
        )  # fmt: skip
    try:
        page = call(browser_, f"http://127.0.0.1:{SEEING_PORT}/?raw=1&camera=1")
        wait_for_reply(page, wav)
        return seen(page)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(out_dir: Path) -> None:
    log_dir = out_dir / "logs"
    broker = Broker(out_dir)
    broker.start()
    with open(out_dir / "server.log", "w") as log:  # the server's whole life
        server = start_serve(
            "--port", str(PORT), "--max-sessions", "2", "--log-dir", str(log_dir),
            "--mqtt", broker.url, "--device-id", "web", stderr=log,
        )  # fmt: skip
    result: dict[str, Any] = {}
    try:
        jfk = microphone_wav(SHARED_AUDIO / "jfk.flac", out_dir / "jfk.wav")
        counting = microphone_wav(SHARED_AUDIO / "one_two_three_en.wav", out_dir / "count.wav")
        dropped = microphone_wav(SHARED_AUDIO / "jfk.flac", out_dir / "dropped.wav")
        with sync_playwright() as playwright:
            first, second = browser(playwright, jfk), browser(playwright, counting)
            # two conversations at once, each with its own question
            pages = [call(first), call(second)]
            result["full"] = post(b'{"sdp": "v=0", "type": "offer"}')
            try:
                for page, wav in zip(pages, (jfk, counting), strict=True):
                    wait_for_reply(page, wav)
            finally:
                result["pair"] = [seen(page) for page in pages]
            result["status_during"] = status()
            pages[1].close()
            result["one_left_after_close"] = wait_until(lambda: status()["sessions"] == 1, 15)
            pages[0].close()
            result["none_left"] = wait_until(lambda: status()["sessions"] == 0, 15)
            result["status_before_third"] = status()
            # a tab closed while the agent speaks
            third = call(second)
            third.wait_for_function("window.voiceAgent.agentVoiceMs > 0", timeout=REPLY_TIMEOUT_MS)
            third.close()
            result["third_ended"] = wait_until(lambda: status()["sessions"] == 0, 15)
            # the browser's keep-alive connection may hold a request task for a moment
            tasks = result["status_before_third"]["tasks"]
            result["tasks_settled"] = wait_until(lambda: status()["tasks"] <= tasks, 10)
            result["sessions_freed"] = wait_until(lambda: status()["sessions_in_memory"] == 0, 10)
            result["status_after_third"] = status()
            # the agent ends a conversation: end_conversation and MQTT's cmd/end both shut the
            # session down; the dashboard's command is the one a test can give at will
            ending = call(first)
            wait_for_reply(ending, jfk)
            topic = f"voice-agent/web-{ending.evaluate('window.voiceAgent.sessionId')}/cmd/end"
            publish.single(topic, b"", qos=1, hostname="127.0.0.1", port=broker.port)
            result["ended_by_agent"] = wait_until(lambda: status()["sessions"] == 0, 20)
            ending.wait_for_function(
                "['ended', 'closed', 'failed', 'disconnected'].includes(window.voiceAgent.state)",
                timeout=20_000,
            )
            result["page_after_end"] = seen(ending)
            # a browser that dies without a word (killed, or its network gone)
            doomed = call(browser(playwright, dropped))
            doomed.wait_for_function("window.voiceAgent.agentVoiceMs > 0", timeout=REPLY_TIMEOUT_MS)
            result["dropped_session"] = doomed.evaluate("window.voiceAgent.sessionId")
            subprocess.run(["pkill", "-KILL", "-f", f"fake-audio-capture={dropped}"], check=True)
            killed = time.monotonic()
            result["dropped_ended"] = wait_until(lambda: status()["sessions"] == 0, DROP_DETECTED_S)
            result["dropped_ended_after_s"] = round(time.monotonic() - killed, 1)
            result["sessions_freed_after_drop"] = wait_until(
                lambda: status()["sessions_in_memory"] == 0, 10
            )
            result["camera_call"] = camera_call(first, jfk, out_dir)
            first.close()
            second.close()
        result["bad_offers"] = [
            post(b"not json"),
            post(b'{"sdp": 1, "type": "offer"}'),
            post(b'{"sdp": "v=0 garbage", "type": "offer"}'),
            post(b'{"sdp": "' + b"x" * 100_000 + b'", "type": "offer"}'),
        ]
        result["status_end"] = status()
    finally:
        server.terminate()
        result["server_exit"] = server.wait(timeout=30)
        broker.stop()
        result["logs"] = {
            p.parent.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(log_dir.glob("*/events.jsonl"))
        }
        (out_dir / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(Path(sys.argv[1]))

"""``voice-agent serve``: browsers talk to the agent over WebRTC, many at once, on one load.

The calls are real: headless Chromium (its microphone a recording from shared/audio) against
the real server, in a network namespace of their own (tests/browser_calls.py says why). One
run of that script serves every test here that needs a browser.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from .conftest import free_port, run_isolated, start_serve, voice_agent


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is missing: .ci/setup installs it")
    return run_isolated(
        "tests/browser_calls.py", tmp_path_factory.mktemp("browser-calls"), timeout=500
    )


def test_a_spoken_question_gets_a_spoken_answer_and_a_live_transcript(calls):
    assert not calls["problem"], calls["problem"]
    jfk, counting = calls["pair"]
    assert "ask what you can do for your country" in jfk["transcript"].lower()
    assert "agent: " in jfk["transcript"], "the reply is shown"
    assert jfk["agentVoiceMs"] >= 200, "the agent's voice was heard in the page"
    kinds = {record["type"] for record in jfk["records"]}
    assert {"user_turn", "agent_reply", "state"} <= kinds, "the events channel carries the log"


def test_a_browsers_camera_reaches_the_engine_that_sees(calls):
    records = calls["camera_call"]["records"]
    turns = [r for r in records if r["type"] == "user_turn"]
    images = [image for turn in turns for image in turn["images"]]
    assert turns[0]["images"], "the first spoken turn carries a frame"
    # Chromium's 640x480 test pattern, fitted into 448 px: one crop
    assert all(i["source"] == "webrtc" and i["size"] == [448, 336] for i in images)
    assert all(i["tokens"] == 477 for i in images)
    assert any(r["type"] == "agent_reply" and r["text"] for r in records)


def test_two_browsers_at_once_have_independent_conversations(calls):
    assert not calls["problem"], calls["problem"]
    jfk, counting = calls["pair"]
    assert jfk["sessionId"] != counting["sessionId"]
    assert "three" in counting["transcript"].lower() or "3" in counting["transcript"]
    assert "country" not in counting["transcript"].lower(), "no words from the other call"
    assert "three" not in jfk["transcript"].lower()
    assert calls["status_during"]["sessions"] == 2


def test_each_conversation_writes_its_own_events_log(calls):
    logs = calls["logs"]
    pair = {page["sessionId"] for page in calls["pair"]}
    assert pair <= set(logs)
    for session_id in pair:
        records = logs[session_id]
        assert records[-1]["type"] == "summary" and records[-1]["session_id"] == session_id
        assert any(r["type"] == "agent_reply" for r in records)


def test_a_full_server_answers_503_and_disturbs_nothing(calls):
    status, body = calls["full"]
    assert status == 503 and "try later" in body["error"]
    assert all("agent: " in page["transcript"] for page in calls["pair"])


def test_a_tab_closed_mid_reply_ends_its_session_and_frees_what_it_held(calls):
    assert calls["one_left_after_close"] and calls["none_left"] and calls["third_ended"]
    after = calls["status_after_third"]
    assert after["sessions"] == 0
    assert after["threads"] <= calls["status_during"]["threads"], "no thread per conversation"
    assert calls["tasks_settled"], "no task left behind"
    assert calls["sessions_freed"], "the finished sessions were freed"
    assert len(calls["logs"]) == 5, "five conversations in all"
    assert all(records[-1]["type"] == "summary" for records in calls["logs"].values())


def test_the_agent_ending_the_conversation_ends_the_call(calls):
    assert calls["ended_by_agent"], "the session ended when the agent ended it"
    page = calls["page_after_end"]
    assert "agent: " in page["transcript"]
    assert page["state"] in ("ended", "closed", "failed", "disconnected"), page["state"]
    assert calls["logs"][page["sessionId"]][-1]["type"] == "summary"


def test_a_browser_that_vanishes_ends_its_session_within_40_s(calls):
    assert calls["dropped_ended"], "the server noticed the silent browser"
    assert calls["sessions_freed_after_drop"], "and freed its session"
    assert calls["logs"][calls["dropped_session"]][-1]["type"] == "summary"


@pytest.mark.parametrize(
    "case, status",
    [("not json", 400), ("wrong shape", 400), ("not sdp", 400), ("oversized", 413)],
)
def test_a_bad_offer_is_a_4xx_with_a_json_error(calls, case, status):
    order = ["not json", "wrong shape", "not sdp", "oversized"]
    code, body = calls["bad_offers"][order.index(case)]
    assert code == status and body["error"]
    assert calls["status_end"]["sessions"] == calls["status_end"]["sessions_in_memory"] == 0


def test_the_server_stops_cleanly_on_sigterm(calls):
    assert calls["server_exit"] == 0


def test_serving_beyond_loopback_needs_a_token():
    result = voice_agent("serve", "--host", "0.0.0.0", env={"VOICE_AGENT_TOKEN": ""})
    assert result.returncode == 2
    assert "needs a token" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_tls_needs_both_a_certificate_and_a_key(tmp_path):
    result = voice_agent("serve", "--tls-cert", str(tmp_path / "cert.pem"))
    assert result.returncode == 2 and "both --tls-cert and --tls-key" in result.stderr


def test_https_with_a_token_refuses_clients_without_it(tmp_path):
    """A certificate of its own, a token, and requests with and without it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = start_serve(
        "--port", str(port), "--token", "s3cret", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    try:
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        base = f"https://127.0.0.1:{port}"

        def status_of(path: str, **headers: str) -> int:
            request = urllib.request.Request(base + path, headers=headers, method="GET")
            if path == "/offer":
                request = urllib.request.Request(base + path, data=b"{}", headers=headers)
            try:
                with urllib.request.urlopen(request, context=insecure, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as e:
                return e.code

        assert status_of("/") == 401 and status_of("/?token=wrong") == 401
        assert status_of("/?token=s3cret") == 200
        assert status_of("/offer") == 401
        assert status_of("/offer", Authorization="Bearer s3cret") == 400, "past the token"
        assert status_of("/status?token=s3cret") == 200
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0

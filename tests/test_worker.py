"""``voice-agent worker``: the agent in a LiveKit server's rooms.

No LiveKit server runs here, so these tests hold the worker to what it promises without one:
one line and exit code 2, before any model loads. The job entrypoint it runs is the one the
console test starts (tests/test_cli.py).
"""

from __future__ import annotations

from .conftest import free_port, voice_agent

NO_SERVER = {"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": ""}


def test_an_unreachable_server_is_one_line_and_exit_2():
    url = f"ws://127.0.0.1:{free_port()}"
    result = voice_agent("worker", "--url", url, "--api-key", "k", "--api-secret", "s")
    assert result.returncode == 2
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert f"cannot reach the LiveKit server at {url}" in result.stderr


def test_without_a_server_it_says_how_to_name_one():
    result = voice_agent("worker", env=NO_SERVER)
    assert result.returncode == 2 and "LIVEKIT_URL" in result.stderr and "devkey" in result.stderr


def test_a_url_that_is_not_livekits_is_refused():
    result = voice_agent("worker", "--url", "localhost:7880", "--api-key", "k", "--api-secret", "s")
    assert result.returncode == 2 and "not a LiveKit URL" in result.stderr

"""``voice-agent worker``: the agent in a LiveKit server's rooms.

No LiveKit server runs here. Without one, the worker must refuse in one line with exit code 2,
before any model loads. Its registration is checked against a fake server that speaks
LiveKit's worker protocol (protobuf over a WebSocket) as far as registering; what follows a
dispatch (joining the room's media) needs a real server. The job entrypoint it runs is the one
the console test starts (tests/test_cli.py).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading

import jwt
from aiohttp import web
from livekit.protocol import agent

from .conftest import REPO, free_port, voice_agent

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


class FakeLiveKit:
    """Stands in for a LiveKit server (none runs here): it takes a worker's registration on
    ``/agent`` the way LiveKit does and answers it, in a thread of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.registrations: list[tuple[str, agent.WorkerMessage]] = []
        self._registered = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeLiveKit:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def wait_for_registration(self, timeout: float) -> bool:
        return self._registered.wait(timeout)

    def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/agent", self._agent)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._loop.run_forever()

    async def _agent(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        message = agent.WorkerMessage()
        message.ParseFromString(await ws.receive_bytes())
        self.registrations.append((request.headers.get("Authorization", ""), message))
        answer = agent.ServerMessage()
        answer.register.worker_id = "W_TEST"
        await ws.send_bytes(answer.SerializeToString())
        self._registered.set()
        async for _ in ws:  # the worker's status updates, until it leaves
            pass
        return ws


def test_the_worker_registers_with_the_server_and_loads_the_models_once():
    with FakeLiveKit() as server:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "worker",
                "--log-format",
                "json",
                "--url",
                f"ws://127.0.0.1:{server.port}",
                "--api-key",
                "devkey",
                "--api-secret",
                "secret",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.wait_for_registration(120), "the worker never registered"
            authorization, message = server.registrations[0]
            assert message.register.type == agent.JobType.JT_ROOM
            claims = jwt.decode(
                authorization.removeprefix("Bearer "), "secret", algorithms=["HS256"]
            )
            assert claims["iss"] == "devkey", "the worker signs with the given key"
        finally:
            worker.send_signal(signal.SIGINT)
            stdout, stderr = worker.communicate(timeout=120)
    lines = [json.loads(line) for line in stdout.splitlines()]  # LiveKit's JSON, alone
    loads = [line for line in lines if line["message"].startswith("loading language model")]
    assert len(loads) == 1, "one job process, one load"
    assert loads[0]["name"] == "voice_agent" and "conversation_id" in loads[0]
    assert "loading" not in stderr, "no second copy of the log in text"

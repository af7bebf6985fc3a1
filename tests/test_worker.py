"""``voice-agent worker``: the agent in a LiveKit server's rooms.

No LiveKit server runs here. Without one, the worker must refuse in one line with exit code 2,
before any model loads. Its registration is checked against a fake server that speaks
LiveKit's worker protocol (protobuf over a WebSocket) as far as registering; what follows a
dispatch (joining the room's media) needs a real server; the job entrypoint it runs is held in
LiveKit's own local room instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time

import jwt
from aiohttp import web
from livekit.protocol import agent

from agent.models import cache_dir

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


JOB_IN_A_LOCAL_ROOM = """
import sys
from livekit.agents import cli
from agent.profile import load_profile
from agent.transports.livekit import agent_server
sys.argv = [sys.argv[0], "console"]
cli.run_app(agent_server(load_profile("desktop")))
"""


def test_the_job_entrypoint_holds_a_session_in_a_room(tmp_path):
    """What a dispatch runs, in the only room LiveKit opens without a server: its own console
    room (a test harness here; ``voice-agent console`` has its own sound card path), on ALSA's
    null device and a pseudo-terminal. The session starts and Ctrl-C ends it."""
    (tmp_path / ".asoundrc").write_text('pcm.!default { type plug slave.pcm "null" }\n')
    env = {**os.environ, "HOME": str(tmp_path), "VOICE_AGENT_CACHE": str(cache_dir())}
    env.pop("PULSE_SERVER", None)
    _, terminal = pty.openpty()
    job = subprocess.Popen(
        [sys.executable, "-c", JOB_IN_A_LOCAL_ROOM],
        cwd=REPO,
        env=env,
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert job.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (line := job.stdout.readline()):
        lines.append(line)
        if "using audio io: `Console`" in line:
            break
    try:
        assert any("using audio io: `Console`" in line for line in lines), "".join(lines)
    finally:
        job.send_signal(signal.SIGINT)
        rest, _ = job.communicate(timeout=60)
    assert "session closed" in rest
    assert job.returncode == 0

"""``--engine remote``: the lite engine's ears and text pipeline, its answers from a model on
OpenAI-compatible servers, on one or several replicas.

The servers are real: llama-cpp-python's own ``llama_cpp.server`` over the bundled
Qwen2.5-Coder-0.5B, the weights the lite engine runs in process, two replicas of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from livekit.agents import llm

from agent.engines.lite.llama_cpp import fastest_weights
from agent.engines.lite.shared import LiteModels
from agent.engines.remote.llm import RemoteLLM
from agent.engines.remote.shared import load
from agent.engines.remote.tokens import estimate, server_counter
from agent.models import QWEN_CODER_05B
from agent.profile import ProfileError, load_profile
from prompts import load_prompt, phrase
from tests.conftest import DEMO, REPO, free_port, start_serve, voice_agent, wait_until
from tools import resolve_tools

DESKTOP = REPO / "agent" / "profiles" / "desktop.toml"


class LlamaServer:
    """``python -m llama_cpp.server`` on a free loopback port: started, killed, frozen."""

    def __init__(self, weights: Path, api_key: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._weights = weights
        self._key = ["--api_key", api_key] if api_key else []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self._weights)]
            + ["--port", str(self.port), "--n_ctx", "4096", "--model_alias", "qwen"]
            + ["--n_threads", str(os.cpu_count()), "--n_threads_batch", str(os.cpu_count())]
            + ["--interrupt_requests", "False"]  # by default a request cancels the one running
            + self._key,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_until(self.answers, 60):
            self.kill()
            raise RuntimeError(f"llama_cpp.server did not start on port {self.port}")

    def answers(self) -> bool:
        try:
            return bool(json.load(_opened(f"{self.url}/models"))["data"])
        except urllib.error.HTTPError:
            return True  # it answers, if not to everyone
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def freeze(self, frozen: bool) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def _opened(url: str) -> Any:
    return urllib.request.urlopen(url, timeout=2)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[LlamaServer]]:
    weights = fastest_weights(QWEN_CODER_05B())
    replicas = [LlamaServer(weights), LlamaServer(weights)]
    try:
        for server in replicas:
            server.start()
        yield replicas
    finally:
        for server in replicas:
            server.kill()


def remote_profile(folder: Path, urls: list[str], **remote: object) -> Path:
    """The desktop profile on the remote engine, with ``[remote]`` as given."""
    settings = {"base_url": urls, "health_interval_s": 0.5, **remote}
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    text = DESKTOP.read_text().replace('engine = "lite"', 'engine = "remote"')
    path = folder / "remote.toml"
    path.write_text(text + "\n[remote]\n" + "\n".join(lines) + "\n")
    return path


async def loaded(folder: Path, urls: list[str], **remote: object) -> LiteModels:
    profile = load_profile(str(remote_profile(folder, urls, **remote)))
    return await load(profile, load_prompt("desktop"), resolve_tools(profile.tools))


def conversation(models: LiteModels) -> RemoteLLM:
    """A new conversation's model."""
    return cast(RemoteLLM, models.model.fork())


def replica_url(model: RemoteLLM) -> str:
    assert model.replica is not None, "it has talked to one"
    return model.replica.url


def state_of(model: RemoteLLM, url: str) -> dict:
    return next(replica for replica in model.replicas.status() if replica["url"] == url)


async def ask(model: llm.LLM, chat: llm.ChatContext, question: str) -> str:
    """The reply to ``question`` after ``chat``, which then holds both."""
    chat.add_message(role="user", content=question)
    pieces = []
    async with model.chat(chat_ctx=chat) as stream:
        async for chunk in stream:
            if chunk.delta is not None and chunk.delta.content:
                pieces.append(chunk.delta.content)
    reply = "".join(pieces).strip()
    chat.add_message(role="assistant", content=reply)
    return reply


def test_the_demo_is_answered_by_the_model_on_a_server(servers, tmp_path):
    profile = remote_profile(tmp_path, [servers[0].url])
    run = voice_agent(
        "run-file", str(DEMO), "--out", str(tmp_path / "out"), "--profile", str(profile),
        "--speed", "2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "counted by the server's tokenizer" in run.stderr
    replies = [line for line in run.stdout.splitlines() if " agent: " in line]
    assert len(replies) == 3, run.stdout
    assert "get_time({})" in run.stdout, "the clock is asked, not the model"
    assert "Paris" in replies[-1], run.stdout


async def test_each_conversation_stays_on_one_replica_and_they_are_spread(servers, tmp_path):
    models = await loaded(tmp_path, [server.url for server in servers])
    try:
        conversations = [conversation(models) for _ in range(4)]
        chats = [llm.ChatContext() for _ in conversations]
        where: list[list[str]] = [[], [], [], []]
        for question in ("What is the capital of Italy?", "And of Spain?"):
            for n, (model, chat) in enumerate(zip(conversations, chats, strict=True)):
                assert await ask(model, chat, question)
                where[n].append(replica_url(model))
        assert all(first == second for first, second in where), where
        assert sorted(first for first, _ in where) == sorted([s.url for s in servers] * 2)
    finally:
        await models.aclose()


async def test_a_replica_that_dies_costs_no_turn_and_comes_back(servers, tmp_path):
    models = await loaded(tmp_path, [server.url for server in servers])
    try:
        model, chat = conversation(models), llm.ChatContext()
        assert "Rome" in await ask(model, chat, "What is the capital of Italy?")
        dead = next(s for s in servers if s.url == replica_url(model))
        dead.kill()
        reply = await ask(model, chat, "And what is the capital of France?")
        assert "Paris" in reply, "the next turn is answered elsewhere, with the whole context"
        assert replica_url(model) != dead.url
        assert state_of(model, dead.url)["state"] == "down"
        assert "cannot connect" in state_of(model, dead.url)["last_error"]
        dead.start()
        back = await until(lambda: state_of(model, dead.url)["state"] == "up", 30)
        assert back, "asked every health_interval_s, and taken back"
    finally:
        await models.aclose()


async def until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Whether ``predicate()`` came true within ``timeout_s``, the loop running meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def test_a_reply_cut_short_by_its_replica_ends_with_one_apology(servers, tmp_path):
    models = await loaded(tmp_path, [server.url for server in servers], first_token_timeout_s=5)
    try:
        model, chat = conversation(models), llm.ChatContext()
        chat.add_message(role="user", content="Tell me a long story about a dragon.")
        pieces: list[str] = []
        frozen = None
        async with model.chat(chat_ctx=chat) as stream:
            async for chunk in stream:
                if chunk.delta is not None and chunk.delta.content:
                    pieces.append(chunk.delta.content)
                    if frozen is None:  # the replica stops mid-reply
                        frozen = next(s for s in servers if s.url == replica_url(model))
                        frozen.freeze(True)
        assert frozen is not None
        frozen.freeze(False)
        reply = "".join(pieces)
        apology = phrase("repeat", "en")
        assert reply.endswith(apology) and reply.count(apology) == 1, reply
        assert len(reply) > len(apology) + 1, "what was said before stays said"
        chat.add_message(role="assistant", content=reply)
        assert await ask(model, chat, "What is the capital of France?")
        assert replica_url(model) != frozen.url
    finally:
        await models.aclose()


async def test_no_replica_answering_is_said_not_left_silent(tmp_path):
    closed = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    models = await loaded(tmp_path, closed, model="qwen", context_tokens=4096)
    try:
        reply = await ask(conversation(models), llm.ChatContext(), "What is the capital of Italy?")
        assert reply == phrase("unreachable", "en")
    finally:
        await models.aclose()


def test_starting_with_no_server_is_one_clear_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    profile = remote_profile(tmp_path, [url])
    started = time.monotonic()
    run = voice_agent(
        "run-file", str(DEMO), "--out", str(tmp_path / "out"), "--profile", str(profile)
    )
    assert run.returncode == 2, run.stderr
    said = run.stderr.strip().splitlines()[-1]
    expected = f"voice-agent: error: no server of the remote engine lists a model: {url}: "
    assert said.startswith(expected + "cannot connect"), run.stderr
    assert "Traceback" not in run.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "urls, message",
    [([], "name at least one server"), (["ftp://x"], "not an http(s) URL: 'ftp://x'")],
)
def test_a_bad_server_address_is_refused_with_the_profile(tmp_path, urls, message):
    with pytest.raises(ProfileError, match=re.escape(f"remote.base_url: {message}")):
        load_profile(str(remote_profile(tmp_path, urls)))


def test_the_token_estimate_counts_more_than_the_server_does(servers):
    """Where a server has no tokenizer to ask, the window is trimmed early, never late."""
    count, _ = server_counter(servers[0].url, "qwen")
    schemas = llm.ToolContext(resolve_tools(["get_time", "calculate"])).parse_function_tools(
        "openai", strict=False
    )
    for text in (
        load_prompt("desktop"),
        "What is seventeen times twenty three? And what is that plus eight?",
        "Wie spät ist es? Wie viel ist siebzehn mal dreiundzwanzig?",
        "¿Qué hora es en Madrid? ¿Cuánto es diecisiete por veintitrés?",
    ):
        messages = [{"role": "user", "content": text}]
        assert estimate(messages, schemas) >= count(messages, schemas), text


def test_serve_shows_each_replica_in_its_status(servers, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    profile = remote_profile(tmp_path, [servers[0].url, dead])
    port = free_port()
    server = start_serve("--profile", str(profile), "--port", str(port))
    try:
        with _opened(f"http://127.0.0.1:{port}/status") as response:
            replicas = {r["url"]: r for r in json.load(response)["replicas"]}
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert replicas[servers[0].url]["state"] == "up"
    assert replicas[dead]["state"] == "down", "the warm-up found it dead"
    assert replicas[dead]["last_error"].startswith("cannot connect")


def test_the_bench_measures_a_server_at_several_conversations_at_once(servers, tmp_path):
    figures_path = tmp_path / "remote.json"
    run = subprocess.run(
        [sys.executable, "bench/remote.py", "--base-url", servers[0].url]
        + ["--concurrency", "1,2", "--turns", "1", "--json", str(figures_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    figures = json.loads(figures_path.read_text())
    assert [figures[k]["requests"] for k in ("1", "2")] == [1, 2]
    assert all(row["failed"] == 0 and row["first_token_median_s"] > 0 for row in figures.values())
    assert "| 2 | 2 | 0 |" in run.stdout, run.stdout


def test_the_key_is_sent_from_the_environment_and_a_refusal_is_one_line(tmp_path):
    key = "s3cret-key"
    server = LlamaServer(fastest_weights(QWEN_CODER_05B()), api_key=key)
    server.start()
    try:
        profile = remote_profile(tmp_path, [server.url], model="qwen")
        args = ("run-file", str(DEMO), "--out", str(tmp_path / "out"), "--profile", str(profile))
        wrong = voice_agent(*args, env={"VOICE_AGENT_API_KEY": "guess"})
        assert wrong.returncode == 2, wrong.stderr
        said = wrong.stderr.strip().splitlines()[-1]
        assert said.startswith(f"voice-agent: error: {server.url} refuses a request for 'qwen'")
        assert "HTTP 401" in said and "guess" not in wrong.stderr
        right = voice_agent(*args, "--speed", "2", env={"VOICE_AGENT_API_KEY": key})
        assert right.returncode == 0, right.stderr
        assert "Paris" in right.stdout and key not in right.stdout + right.stderr
    finally:
        server.kill()

"""The servers one model is served by, and which conversation talks to which.

A conversation stays on the replica it was given while that replica answers, so the server's
prefix cache holds its history; conversations are spread over the replicas that answer. A
replica that fails is left out, asked every few seconds whether it is back, and its
conversations go on elsewhere with their whole context re-sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import openai
from livekit.agents.utils import aio

from ...models import ModelNotFoundError

logger = logging.getLogger("voice_agent")


class NoReplicaError(ModelNotFoundError):
    """Every replica has failed and none is back yet."""


@dataclass(eq=False)
class Replica:
    url: str
    client: openai.AsyncOpenAI
    up: bool = True
    talking: weakref.WeakSet[object] = field(default_factory=weakref.WeakSet)
    """The conversations that talk to it (each gone with its session)."""
    failures: int = 0
    last_error: str = ""
    down_since: float = 0.0

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": "up" if self.up else "down",
            "conversations": len(self.talking),
            "failures": self.failures,
            **({"last_error": self.last_error} if self.last_error else {}),
        }


class Replicas:
    def __init__(
        self,
        urls: list[str],
        *,
        api_key: str | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        health_interval_s: float,
    ) -> None:
        timeout = openai.Timeout(read_timeout_s, connect=connect_timeout_s)
        self.replicas = [
            Replica(
                url,
                openai.AsyncOpenAI(
                    base_url=url, api_key=api_key or "none", timeout=timeout, max_retries=0
                ),
            )
            for url in urls
        ]
        self._health_interval_s = health_interval_s
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start asking failed replicas whether they are back (on the running loop)."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_failed(), name="replica-health")

    async def aclose(self) -> None:
        if self._watch is not None:
            await aio.cancel_and_wait(self._watch)
        for replica in self.replicas:
            await replica.client.close()

    def assign(self, conversation: object, avoid: Replica | None = None) -> Replica:
        """A replica for ``conversation`` (leaving the one it had): of those that answer,
        other than ``avoid`` where another answers, the one with the fewest conversations,
        the first listed on a tie."""
        for replica in self.replicas:
            replica.talking.discard(conversation)
        up = [replica for replica in self.replicas if replica.up]
        up = [replica for replica in up if replica is not avoid] or up
        if not up:
            raise NoReplicaError(
                "no server of the remote engine answers: "
                + "; ".join(f"{r.url}: {r.last_error}" for r in self.replicas)
            )
        chosen = min(up, key=lambda replica: len(replica.talking))
        chosen.talking.add(conversation)
        return chosen

    def failed(self, replica: Replica, error: BaseException) -> None:
        replica.failures += 1
        replica.last_error = _described(error)
        if replica.up:
            replica.up = False
            replica.down_since = time.monotonic()
            logger.warning("remote replica %s failed: %s", replica.url, replica.last_error)

    def status(self) -> list[dict[str, Any]]:
        return [replica.status() for replica in self.replicas]

    async def listing(self) -> tuple[Replica, list[dict[str, Any]]]:
        """The first answering replica and the models it lists at /v1/models (as the server
        sends them: vLLM adds each one's ``max_model_len``)."""
        for replica in self.replicas:
            try:
                listed = [model.model_dump() async for model in replica.client.models.list()]
            except openai.OpenAIError as e:
                self.failed(replica, e)
                continue
            if listed:
                return replica, listed
        raise NoReplicaError(
            "no server of the remote engine lists a model: "
            + "; ".join(f"{r.url}: {r.last_error}" for r in self.replicas)
        )

    async def _watch_failed(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            for replica in self.replicas:
                if not replica.up and await _answers(replica):
                    replica.up = True
                    down_s = time.monotonic() - replica.down_since
                    logger.info("remote replica %s is back after %.0f s", replica.url, down_s)


async def _answers(replica: Replica) -> bool:
    try:
        await replica.client.models.list()
    except openai.OpenAIError:
        return False
    return True


def _described(error: BaseException) -> str:
    """One line: what went wrong, without the request's body or the key."""
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}"
    if isinstance(error, openai.APITimeoutError):
        return "timed out"
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__
        return f"cannot connect ({type(cause).__name__ if cause else 'connection error'})"
    return type(error).__name__

"""LiveKit rooms: ``worker`` joins the rooms a LiveKit server dispatches to it (LiveKit SIP
calls arrive as rooms too). Each job process loads the models once, in its setup; each job gets
a session of its own over them.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from livekit.agents import AgentServer, JobContext, JobProcess, cli

from .. import logs, telemetry
from ..control import ControlledSession
from ..profile import Profile
from ..session import SessionFactory

LOAD_TIMEOUT_S = 300.0
"""A job process's setup loads the models: the first run converts the GGUF (~30 s)."""
REACH_TIMEOUT_S = 3.0
FACTORY = "voice_agent.factory"


class WorkerConfigError(ValueError):
    """The worker cannot start as asked; the message is meant for the user."""


@dataclass(frozen=True)
class LiveKitServer:
    url: str
    api_key: str
    api_secret: str

    def checked(self) -> LiveKitServer:
        """Refuse, in one line, what LiveKit would retry for minutes."""
        if not (self.url and self.api_key and self.api_secret):
            raise WorkerConfigError(
                "a LiveKit server is needed: --url/--api-key/--api-secret or LIVEKIT_URL, "
                "LIVEKIT_API_KEY, LIVEKIT_API_SECRET (for `livekit-server --dev`: "
                "ws://127.0.0.1:7880, devkey, secret)"
            )
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise WorkerConfigError(f"{self.url}: not a LiveKit URL (ws://HOST:PORT or wss://…)")
        try:
            port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
            with socket.create_connection((parts.hostname, port), timeout=REACH_TIMEOUT_S):
                pass
        except (OSError, ValueError) as e:
            raise WorkerConfigError(f"cannot reach the LiveKit server at {self.url}: {e}") from None
        return self


def load_models(profile: Profile, proc: JobProcess) -> None:
    """A job process's setup: the models, loaded on a loop of their own (LiveKit calls this
    from inside its own); spans go to an OTLP collector if one is configured."""
    logs.tag_records()
    telemetry.export_spans()
    with ThreadPoolExecutor(max_workers=1) as loader:
        proc.userdata[FACTORY] = loader.submit(asyncio.run, SessionFactory.load(profile)).result()


def agent_server(profile: Profile, **options: Any) -> AgentServer:
    server = AgentServer(
        setup_fnc=functools.partial(load_models, profile),
        initialize_process_timeout=LOAD_TIMEOUT_S,
        **options,
    )
    server.rtc_session()(join_room)
    return server


async def join_room(ctx: JobContext) -> None:
    """A job: a session of its own in the room, over the process's models (module-level, so
    that LiveKit can hand it to its job processes)."""
    logs.conversation_id.set(ctx.room.name)
    controlled = await ControlledSession.join(ctx.proc.userdata[FACTORY], ctx.room.name)
    ctx.add_shutdown_callback(controlled.aclose)
    await controlled.session.start(controlled.agent, room=ctx.room)
    # a phone call through LiveKit SIP is a participant: greeted once it is in the room
    controlled.control.start(greet_after=ctx.wait_for_participant)


def run_worker(profile: Profile, livekit: LiveKitServer) -> None:
    server = agent_server(
        profile,
        ws_url=livekit.url,
        api_key=livekit.api_key,
        api_secret=livekit.api_secret,
        num_idle_processes=1,  # each process holds a copy of the models
        job_memory_warn_mb=4000,  # the models alone are ~1.5 GB
    )
    sys.argv = [sys.argv[0], "start"]  # LiveKit's CLI reads its sub-command from argv
    cli.run_app(server)

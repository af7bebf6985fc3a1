"""The agent as a PBX's extension: registered with a real Kamailio (the README's recipe),
reached through it, and taking only the calls that answer its digest challenge."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from aiosipua import SipRequest, SipUAC
from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.headers import parse_auth, stringify_auth

from agent.profile import SipSettings
from agent.transports import sip_extension
from agent.transports.sip_extension import CallAuthenticator, Extension
from agent.transports.sip_wire import GuardedUAS, UdpTransport
from tests.conftest import free_udp_port, run_isolated
from tests.pbx_calls import EXPIRES, PASSWORD, start_pbx, stop_pbx


@pytest.fixture(scope="module")
def pbx_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("pbx-calls")
    result = run_isolated("tests/pbx_calls.py", out, timeout=300)
    assert not result["problem"], result["problem"]
    return result


def test_the_agent_registers_and_a_caller_reaches_it_through_the_pbx(pbx_calls):
    assert pbx_calls["registered"] and pbx_calls["registered_s"] < 5, pbx_calls["server_log"]
    assert pbx_calls["answered"], pbx_calls["caller"]["log"]


def test_a_caller_without_the_password_is_challenged_and_never_answered(pbx_calls):
    assert pbx_calls["stranger_refused"], pbx_calls["stranger"]["log"]
    assert pbx_calls["sessions"] == 1  # the caller's who knew it


def test_a_restarted_pbx_reaches_the_agent_again_within_one_registration(pbx_calls):
    assert pbx_calls["probe_after_restart"] == 480  # the restart forgot the agent
    assert pbx_calls["reachable_again"] and pbx_calls["reachable_again_s"] <= EXPIRES


def test_the_agent_unregisters_as_it_stops_and_never_logs_its_password(pbx_calls):
    assert pbx_calls["server_exit"] == 0
    assert "unregistered sip:agent@" in pbx_calls["server_log"]
    assert pbx_calls["probe_after_stop"] == 480
    assert PASSWORD not in pbx_calls["server_log"]


async def extension_for(registrar: str, password: str) -> tuple[Extension, GuardedUAS]:
    """An extension on the server's own SIP stack (its UAS hands the UAC the responses)."""
    transport = UdpTransport(local_addr=("127.0.0.1", free_udp_port()))
    uac = SipUAC(transport)
    uas = GuardedUAS(transport, uac=uac)
    await uas.start()
    extension = Extension(uac, SipSettings(registrar=registrar), password)
    extension.start()
    return extension, uas


async def test_a_wrong_password_is_told_in_one_line_and_tried_again(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sip_extension, "RETRY_S", 0.5)
    port = free_udp_port()
    pbx = start_pbx(tmp_path, 1, f"127.0.0.1:{port}")
    caplog.set_level(logging.INFO, "voice_agent")
    extension, uas = await extension_for(f"127.0.0.1:{port}", "not-the-password")
    try:
        await asyncio.sleep(2.5)
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert refusals == [
            f"the registrar at 127.0.0.1:{port} refused sip:agent@127.0.0.1; "
            "check [sip] user and the password (retrying)"
        ]
        assert not extension.registered
    finally:
        await extension.aclose()
        await uas.stop()
        stop_pbx(pbx)


async def test_a_registrar_that_does_not_answer_is_told_once_and_asked_again(caplog, monkeypatch):
    monkeypatch.setattr(sip_extension, "RETRY_S", 0.5)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.settimeout(3)
    caplog.set_level(logging.INFO, "voice_agent")
    extension, uas = await extension_for(f"127.0.0.1:{silent.getsockname()[1]}", "pw")
    try:
        registers = []
        deadline = time.monotonic() + 3
        while len(registers) < 3 and time.monotonic() < deadline:
            data = await asyncio.to_thread(silent.recv, 65536)
            registers.append(data.split(b" ", 1)[0])
        assert registers == [b"REGISTER"] * 3
        silences = [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert len(silences) == 1 and not extension.registered
    finally:
        await extension.aclose()
        await uas.stop()
        silent.close()


def invite(credentials: str | None) -> SipRequest:
    request = SipRequest(method="INVITE", uri="sip:agent@10.0.0.1")
    if credentials is not None:
        request.headers.set_single("Authorization", credentials)
    return request


def answer(challenge: str, user: str, password: str) -> str:
    """What a phone sends back: aiosipua's own client-side digest."""
    credentials = build_credentials(
        SipDigestAuth(user, password), parse_auth(challenge), "INVITE", "sip:agent@10.0.0.1"
    )
    assert credentials is not None
    return stringify_auth(credentials)


def test_only_a_call_answering_a_fresh_challenge_with_the_password_is_taken(monkeypatch):
    gate = CallAuthenticator("agent", "s3cret")
    challenge = gate.challenge()
    assert not gate.admits(invite(None))
    assert gate.admits(invite(answer(challenge, "agent", "s3cret")))
    assert not gate.admits(invite(answer(challenge, "agent", "guess")))
    assert not gate.admits(invite(answer(challenge, "someone", "s3cret")))
    forged = challenge.replace('nonce="', 'nonce="1')  # a nonce this process did not sign
    assert not gate.admits(invite(answer(forged, "agent", "s3cret")))
    assert not CallAuthenticator("agent", "s3cret").admits(  # another process's nonce
        invite(answer(challenge, "agent", "s3cret"))
    )
    later = time.time() + sip_extension.NONCE_LIFETIME_S + 1
    monkeypatch.setattr(sip_extension.time, "time", lambda: later)
    assert not gate.admits(invite(answer(challenge, "agent", "s3cret")))

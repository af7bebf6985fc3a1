"""The agent as an extension of a PBX: registered with its registrar (RFC 3261 §10, digest
authentication), and, where the profile asks, taking only calls that answer a digest challenge.

aiosipua's ``Registration`` sends the REGISTERs, answers the registrar's challenge and renews
the binding at nine tenths of what was granted; this keeps it bound through what it leaves to
its user: a registrar that does not answer, refuses, or lets the binding lapse.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiosipua import SipRequest, SipResponse, SipUAC
from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.headers import AuthChallenge, parse_auth
from aiosipua.registration import Registration, RegistrationState

from ..profile import SipSettings
from .sip_wire import SipConfigError

logger = logging.getLogger("voice_agent")

RETRY_S = 5.0
"""After no answer, a refusal or a lapse, the REGISTER is sent again this often."""
UNREGISTER_TIMEOUT_S = 2.0
NONCE_LIFETIME_S = 300
REALM = "voice-agent"


def sip_password(settings: SipSettings) -> str:
    """The extension's password, from ``password_file`` or ``password_env``."""
    if settings.password_file:
        try:
            password = Path(settings.password_file).read_text().strip()
        except OSError as e:
            raise SipConfigError(
                f"[sip] password_file {settings.password_file}: {e.strerror or e}"
            ) from None
    else:
        password = os.environ.get(settings.password_env, "")
    if not password:
        raise SipConfigError(
            f"[sip] needs the password of {settings.user}: set ${settings.password_env} "
            "or [sip] password_file"
        )
    return password


def registrar_address(settings: SipSettings) -> tuple[str, str, int]:
    """``[sip] registrar`` as its host as written, and the IP address and port it is reached
    at (a name is looked up once, at start)."""
    try:
        where = urlsplit(f"//{settings.registrar}")
        host, port = where.hostname or "", where.port or 5060
        ip = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]
    except (ValueError, OSError) as e:
        raise SipConfigError(f"[sip] registrar {settings.registrar}: {e}") from None
    return host, str(ip), port


def check_settings(settings: SipSettings, serving_sip: bool) -> None:
    """Refuse, before any model loads, a ``[sip]`` section that cannot work."""
    if not (settings.registrar or settings.authenticate_calls):
        return
    if not serving_sip:
        raise SipConfigError("the profile's [sip] section needs serve --sip IP:PORT")
    sip_password(settings)
    if settings.registrar:
        registrar_address(settings)


class _Binding(Registration):
    """A ``Registration`` that says when the registrar has answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered = asyncio.Event()
        self.on_expired = lambda _: self.answered.set()  # the renewal got no answer

    def _handle_response(self, response: SipResponse) -> None:
        sent = self._cseq
        super()._handle_response(response)
        if response.status_code >= 200 and self._cseq == sent:
            self.answered.set()  # final: not a challenge (or a 423) it sent again for


class Extension:
    """Keeps ``sip:USER@DOMAIN`` bound to this agent's SIP address until ``aclose``."""

    def __init__(self, uac: SipUAC, settings: SipSettings, password: str) -> None:
        host, ip, port = registrar_address(settings)
        self.aor = f"sip:{settings.user}@{settings.domain or host}"
        self._binding = _Binding(
            uac,
            self.aor,
            (ip, port),
            expires=settings.expires,
            auth=SipDigestAuth(settings.user, password),
            user_agent="voice-agent",
        )
        self._where = f"{ip}:{port}"
        self._task: asyncio.Task[None] | None = None

    @property
    def registered(self) -> bool:
        return self._binding.state is RegistrationState.REGISTERED

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="sip-registration")

    async def aclose(self) -> None:
        """Unregister (``Expires: 0``), waiting briefly for the registrar's answer."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.registered:
            self._binding.answered.clear()
            self._binding.unregister()
            try:
                await asyncio.wait_for(self._binding.answered.wait(), UNREGISTER_TIMEOUT_S)
                logger.info("unregistered %s", self.aor)
            except TimeoutError:
                logger.warning("the registrar at %s did not answer the unregistration", self._where)

    async def _keep(self) -> None:
        told = ""  # each state is told once, as it begins
        while True:
            if not self.registered:
                self._binding.register()
            self._binding.answered.clear()
            try:
                timeout = None if self.registered else RETRY_S
                await asyncio.wait_for(self._binding.answered.wait(), timeout)
                state = self._binding.state.value
            except TimeoutError:
                state = "silent"
            if state != told:
                self._tell(state)
            told = state
            if state == "failed":
                await asyncio.sleep(RETRY_S)

    def _tell(self, state: str) -> None:
        if state == "registered":
            granted = self._binding.granted_expires
            logger.info("registered %s at %s for %d s", self.aor, self._where, granted)
        elif state == "failed":
            logger.warning(
                "the registrar at %s refused %s; check [sip] user and the password (retrying)",
                self._where,
                self.aor,
            )
        elif state == "silent":
            logger.warning("the registrar at %s does not answer; retrying", self._where)
        else:  # expired: the renewal got no answer
            logger.warning("the registration of %s lapsed; registering again", self.aor)


class CallAuthenticator:
    """Digest authentication of incoming INVITEs (RFC 3261 §22.4), with stateless nonces: a
    timestamp signed with a key of this process, good for ``NONCE_LIFETIME_S``."""

    def __init__(self, user: str, password: str) -> None:
        self._credentials = SipDigestAuth(user, password)
        self._key = os.urandom(16)

    def challenge(self) -> str:
        """A ``WWW-Authenticate`` value for a 401."""
        stamp = str(int(time.time()))
        nonce = f"{stamp}.{self._sign(stamp)}"
        return f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm=MD5'

    def admits(self, request: SipRequest) -> bool:
        """The request carries this extension's credentials, answering a fresh nonce."""
        header = request.headers.get_first("authorization")
        if not header:
            return False
        try:
            given = parse_auth(header, credentials=True).params
            stamp, _, signature = given.get("nonce", "").partition(".")
            fresh = 0 <= time.time() - int(stamp) <= NONCE_LIFETIME_S
            nonce_count = int(given.get("nc", "1"), 16)
        except ValueError:
            return False
        if not fresh or not hmac.compare_digest(signature, self._sign(stamp)):
            return False
        if given.get("username") != self._credentials.username or given.get("realm") != REALM:
            return False
        challenge = AuthChallenge("Digest", {
            "realm": REALM, "nonce": given["nonce"], "qop": given.get("qop", ""),
            "algorithm": given.get("algorithm", "MD5"),
        })  # fmt: skip
        expected = build_credentials(
            self._credentials,
            challenge,
            request.method,
            given.get("uri", ""),
            nonce_count=nonce_count,
            cnonce=given.get("cnonce"),
        )
        return expected is not None and hmac.compare_digest(
            expected.params["response"], given.get("response", "")
        )

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]

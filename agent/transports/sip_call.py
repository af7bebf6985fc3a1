"""One phone call answered over SIP: the caller's audio in, the agent's voice out (RTP,
G.711), and the line the session's tools act on (a transfer by REFER).

The agent's voice is paced by a clock of its own: one 20 ms packet every 20 ms for the whole
call, silence when the agent is quiet, since a PBX may hang up on a call that sends no RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path

import numpy as np
from aiosipua import IncomingCall, SipUAC
from aiosipua.rtp_bridge import CallSession
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.events import AgentStateChangedEvent

from audio.recording import CallRecording
from audio.speaker import FRAME_MS, SpeakerOutput
from tools.keypad import KEYS

from ..control import ControlledSession
from ..conversations import (
    MIC_BACKLOG_FRAMES,
    VOICE_LEAD_FRAMES,
    CallerAudio,
    CallMedia,
    hold,
)

logger = logging.getLogger("voice_agent")

MAX_CLOCK_LAG_S = 0.2
"""A clock this late (a stalled loop) starts again instead of sending a burst of packets."""
SETTLE_S = 0.7
"""Quiet this long after its last words, the agent has said what it was going to say."""
SPEAKING_WAIT_S = 20.0
TRANSFER_WAIT_S = 30.0
"""How long the caller's side may take to reach the transfer's target."""
TRANSFER_FAILED = "Sorry, the transfer did not go through."
KEY_MS = 160
"""How long each key the agent presses sounds (RFC 4733 events), with ``KEY_GAP_MS`` between."""
KEY_GAP_MS = 100


class SipAudioInput(CallerAudio):
    """The caller's audio, as the RTP session decodes it (8 kHz for G.711)."""

    def __init__(self) -> None:
        super().__init__("sip")
        self._frames: deque[rtc.AudioFrame] = deque(maxlen=MIC_BACKLOG_FRAMES)
        self._arrived = asyncio.Event()

    def take(self, pcm: bytes, rate: int) -> None:
        self._frames.append(rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2))
        self.heard()
        self._arrived.set()

    def end(self) -> None:
        self.ended.set()
        self._arrived.set()

    async def __anext__(self) -> rtc.AudioFrame:
        while not self._frames:
            if self.ended.is_set():
                raise StopAsyncIteration
            self._arrived.clear()
            await self._arrived.wait()
        return self._frames.popleft()


class SipAudioOutput(SpeakerOutput):
    """The agent's voice: frames wait in a short queue for the call's RTP clock (which also
    keeps the recording's time, if there is one)."""

    def __init__(self, rtp: CallSession, rate: int, recording: CallRecording | None) -> None:
        super().__init__("sip", sample_rate=rate)
        self._rtp = rtp
        self._recording = recording
        self.timestamp = 0
        """The RTP timestamp of the next packet: where a key pressed now starts."""
        self._frames: asyncio.Queue[np.ndarray] = asyncio.Queue(VOICE_LEAD_FRAMES)
        self._clock = asyncio.create_task(self._send(), name="sip-voice-clock")

    async def _emit(self, samples: np.ndarray) -> None:
        await self._frames.put(samples)

    def clear_buffer(self) -> None:
        super().clear_buffer()
        while not self._frames.empty():
            self._frames.get_nowait()

    async def _send(self) -> None:
        samples = self.rate * FRAME_MS // 1000
        silence = np.zeros(samples, np.int16)
        start, sent = time.monotonic(), 0
        while True:
            try:
                frame = self._frames.get_nowait()
            except asyncio.QueueEmpty:
                frame = silence
            self._rtp.send_audio_pcm(frame.tobytes(), self.timestamp)
            if self._recording is not None:
                self._recording.sent(frame)
            sent += 1
            self.timestamp = (sent * samples) & 0xFFFFFFFF
            lag = time.monotonic() - (start + sent * FRAME_MS / 1000)
            if lag > MAX_CLOCK_LAG_S:  # the timestamps go on; the packets do not burst
                start += lag
            await asyncio.sleep(start + sent * FRAME_MS / 1000 - time.monotonic())

    async def stop(self) -> None:
        await super().stop()
        self._clock.cancel()
        await asyncio.gather(self._clock, return_exceptions=True)


class PhoneCall:
    """One answered call: its dialog, its RTP session and its conversation; the line the
    session's tools act on (``tools.services.PhoneLine``)."""

    def __init__(
        self,
        conversation_id: str,
        call: IncomingCall,
        rtp: CallSession,
        rtp_port: int,
        *,
        uac: SipUAC,
        transfer_to: str,
    ) -> None:
        self.id = conversation_id
        self.call = call
        self.rtp = rtp
        self.rtp_port = rtp_port
        self.mic = SipAudioInput()
        self.hung_up = asyncio.Event()
        """The caller sent BYE (or CANCEL before the answer)."""
        self.transferred = asyncio.Event()
        self._uac = uac
        self._transfer_to = transfer_to
        self._transfer: asyncio.Task[None] | None = None
        self._transfer_status: asyncio.Future[int] | None = None
        self._session: AgentSession | None = None
        self._speaker: SipAudioOutput | None = None
        self._keys: asyncio.Task[None] | None = None

    def pressed(self, key: str) -> None:
        """A key of the caller's keypad (RFC 4733 or SIP INFO)."""
        if self._session is not None:
            self._session.userdata.keypad.pressed(key)

    def caller_hung_up(self) -> None:
        self.hung_up.set()
        self.mic.end()

    async def run(self, controlled: ControlledSession, log_dir: Path | None) -> None:
        """The conversation, recorded under ``log_dir/<id>/`` where the profile says so."""
        self._session = controlled.session
        rate = self.rtp.codec_sample_rate
        call = controlled.control.call
        recording = None
        if call.record and log_dir is not None:
            (log_dir / self.id).mkdir(parents=True, exist_ok=True)
            recording = CallRecording(log_dir / self.id / "conversation.wav", rate)

        def heard(pcm: bytes, _timestamp: int) -> None:
            self.mic.take(pcm, rate)
            if recording is not None:
                recording.heard(pcm)

        self.rtp.on_audio = heard
        self.rtp.on_dtmf = lambda key, _duration: self.pressed(key)
        speaker = self._speaker = SipAudioOutput(self.rtp, rate, recording)
        media = CallMedia(self.mic, speaker, ended=[self.hung_up, self.transferred])
        notice = call.record_notice if recording is not None else ""
        try:
            await hold(controlled, self.id, media, log_dir=log_dir, notice=notice)
        finally:
            if recording is not None:
                recording.close()
                logger.info("call %s recorded: %.0f s", self.id, recording.duration_s)
            for task in (self._transfer, self._keys):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if not self.hung_up.is_set():
                self.call.hangup()

    def press(self, keys: str) -> None:
        """Press ``keys`` on the line (RFC 4733 telephone-events), after any still pressing;
        raises ValueError, for the model, when a key is no key of a keypad."""
        if not keys or any(key not in KEYS for key in keys.upper()):
            raise ValueError(f"{keys!r}: a keypad has only the keys {KEYS}")
        previous = self._keys
        self._keys = asyncio.create_task(self._press(keys.upper(), previous), name="keys")

    async def _press(self, keys: str, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        for key in keys:
            timestamp = self._speaker.timestamp if self._speaker is not None else 0
            self.rtp.rtp_session.send_dtmf(key, KEY_MS, timestamp=timestamp)
            await asyncio.sleep((KEY_MS + KEY_GAP_MS) / 1000)

    def transfer(self) -> None:
        if not self._transfer_to:
            raise ValueError("no one to transfer to: the profile sets no [call] transfer_to")
        if self._transfer is None or self._transfer.done():
            self._transfer = asyncio.create_task(self._refer(), name=f"transfer-{self.id}")

    def transfer_progress(self, status: int) -> None:
        """A NOTIFY from the caller's side about the transfer it was asked to make."""
        if status >= 200 and self._transfer_status and not self._transfer_status.done():
            self._transfer_status.set_result(status)

    async def _refer(self) -> None:
        assert self._session is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_said(self._session), SPEAKING_WAIT_S)
        target = self._transfer_to
        if not target.startswith(("sip:", "sips:")):  # a number, for the trunk or PBX
            target = f"sip:{target}@{self.call.source_addr[0]}:{self.call.source_addr[1]}"
        self._transfer_status = asyncio.get_running_loop().create_future()
        logger.info("transferring call %s to %s", self.id, target)
        try:
            self._uac.send_refer(self.call.dialog, target, self.call.source_addr)
            status = await asyncio.wait_for(self._transfer_status, TRANSFER_WAIT_S)
        except ValueError:  # the dialog is not (or no longer) confirmed
            status = 481
        except TimeoutError:
            status = 408
        if 200 <= status < 300:
            self.transferred.set()  # the conversation ends, and the agent's leg hangs up
            return
        logger.warning("the transfer of call %s failed: %d", self.id, status)
        with contextlib.suppress(RuntimeError):  # the session is closing anyway
            self._session.say(TRANSFER_FAILED)


async def _said(session: AgentSession) -> None:
    """Until the agent has said what it was saying, and nothing has followed for SETTLE_S."""
    changed = asyncio.Event()

    def on_state(_event: AgentStateChangedEvent) -> None:
        changed.set()

    session.on("agent_state_changed", on_state)
    try:
        while True:
            changed.clear()
            if session.agent_state not in ("listening", "idle"):
                await changed.wait()
                continue
            try:
                await asyncio.wait_for(changed.wait(), SETTLE_S)
            except TimeoutError:
                return
    finally:
        session.off("agent_state_changed", on_state)

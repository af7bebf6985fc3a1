"""Speech that is not for the assistant: a television, a colleague, a phone call.

A profile's ``[addressing]`` says how the assistant knows it is spoken to: always (every turn),
by a wake phrase said before the request ("Hey computer, what time is it?", or alone, and it
answers "Yes?"), or push-to-talk (the console's Enter key, MQTT ``cmd/listen``, the browser's
Talk button). Once addressed it listens: follow-ups need no wake phrase until ``listen_s``
have passed in silence after its reply, and then it waits again.

The recognizer hears the wake phrase, and a heard word counts when it is spelt or sounds like
the phrase's: recognizers write what they hear ("A computer" for "Hey computer"; on one CI
machine Whisper did), so each word is also compared as espeak-ng says it. A transcript that is
not for the assistant is dropped before LiveKit reads it: no turn starts, nothing is generated
or kept in the chat, and speech over a reply is a false interruption, after which the reply
goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import itertools
import logging
import re
import subprocess
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from livekit import rtc
from livekit.agents import Agent, AgentSession, ModelSettings, stt
from livekit.agents.voice.events import AgentStateChangedEvent, UserStateChangedEvent

from audio.tts import VOICE_ALIASES
from prompts import phrase

from .profile import AddressingSettings

logger = logging.getLogger("voice_agent")

AddressingState = Literal["waiting", "listening"]
Trigger = Literal["wake_phrase", "key", "mqtt", "browser", "timeout"]
WORD_LIKENESS = 0.75
"""How alike each heard word must be to the wake phrase's ("computers" for "computer" is 0.94,
"the" for "hey" 0.33): the recognizer's spelling of a name varies, a different word does not."""
LEADING_WORDS = 2
"""Words the recognizer may write before the wake phrase ("Oh, hey computer")."""
_WORD = re.compile(r"\w+")
_STRESS = str.maketrans("", "", "ˈˌ")


@dataclass(frozen=True)
class AddressingChanged:
    state: AddressingState
    by: Trigger


def after_wake_phrase(transcript: str, phrases: list[str], language: str = "en") -> str | None:
    """The request that follows a wake phrase at the start of ``transcript`` ("" when the
    phrase was said alone), or None when none of ``phrases`` begins it, spelt or sounded."""
    words = list(_WORD.finditer(transcript))
    said = [w.group().lower() for w in words]
    wanted = [_WORD.findall(wake.lower()) for wake in phrases]
    end = _phrase_end(said, wanted)
    if end is None:  # spelling missed it: compare how the words sound
        heard = said[: LEADING_WORDS + max(map(len, wanted))]
        sounds = iter(_sounds([*heard, *itertools.chain.from_iterable(wanted)], language))
        heard = [next(sounds) for _ in heard]
        end = _phrase_end(heard, [[next(sounds) for _ in wake] for wake in wanted])
    if end is None:
        return None
    return transcript[words[end - 1].end() :].lstrip(" ,.!?;:-—").strip()


def _phrase_end(said: list[str], phrases: list[list[str]]) -> int | None:
    """How many of ``said``'s words the first matching phrase takes up, leading words
    included."""
    for wanted in phrases:
        for start in range(min(LEADING_WORDS, len(said) - len(wanted)) + 1):
            heard = said[start : start + len(wanted)]
            if all(_alike(h, w) for h, w in zip(heard, wanted, strict=True)):
                return start + len(wanted)
    return None


def _alike(heard: str, wanted: str) -> bool:
    return difflib.SequenceMatcher(None, heard, wanted).ratio() >= WORD_LIKENESS


def _sounds(words: Sequence[str], language: str) -> list[str]:
    """How espeak-ng says each word on its own (IPA, without stress marks); the words
    themselves where it has no voice for ``language``."""
    base = language.split("-")[0].lower()
    voice = VOICE_ALIASES.get(base, base)
    spoken = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "-v", voice],
        input="\n".join(words),
        capture_output=True,
        text=True,
        timeout=10,
    )
    sounds = spoken.stdout.splitlines()
    if spoken.returncode != 0 or len(sounds) != len(words):
        return list(words)
    return [sound.strip().translate(_STRESS) for sound in sounds]


class Addressing(rtc.EventEmitter[Literal["changed", "ignored"]]):
    """One conversation's addressing state: waiting for the wake phrase or the button, or
    listening until ``listen_s`` of silence after a reply."""

    def __init__(self, settings: AddressingSettings) -> None:
        super().__init__()
        self.settings = settings
        self.state: AddressingState = "listening" if self.always else "waiting"
        self._agent_listening = False
        self._user_speaking = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def always(self) -> bool:
        return self.settings.mode == "always"

    def attach(self, session: AgentSession) -> None:
        if not self.always:
            session.on("agent_state_changed", self._on_agent_state)
            session.on("user_state_changed", self._on_user_state)

    def listen(self, by: Trigger) -> None:
        """The button: listen now (and, in the wake phrase's mode, as if it had been said)."""
        if self.always:
            raise ValueError("this profile listens always ([addressing] mode)")
        self._change("listening", by)

    def heard(self, transcript: str, language: str = "en") -> str | None:
        """What of a final transcript is for the assistant: the text to answer, "" for the
        wake phrase alone, None for nothing (always: it is always listening)."""
        request = None
        if self.settings.mode == "wake_phrase":
            request = after_wake_phrase(transcript, self.settings.wake_phrases, language)
        if request is not None:
            self._change("listening", "wake_phrase")
            return request
        if self.state == "listening":
            return transcript
        self.emit("ignored", transcript)
        return None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _change(self, state: AddressingState, by: Trigger) -> None:
        if state != self.state:
            self.state = state
            self.emit("changed", AddressingChanged(state, by))
        self._rearm()

    def _on_agent_state(self, event: AgentStateChangedEvent) -> None:
        self._agent_listening = event.new_state == "listening"
        self._rearm()

    def _on_user_state(self, event: UserStateChangedEvent) -> None:
        self._user_speaking = event.new_state == "speaking"
        self._rearm()

    def _rearm(self) -> None:
        """The silence that ends listening counts while neither side speaks or thinks."""
        self.close()
        if self.state == "listening" and self._agent_listening and not self._user_speaking:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.settings.listen_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._change("waiting", "timeout")


class AddressedAgent(Agent):
    """An agent that answers only what is addressed to it."""

    def __init__(self, *, addressing: Addressing, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._addressing = addressing

    async def stt_node(
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent]:
        async for event in Agent.default.stt_node(self, audio, model_settings):
            if event.type != stt.SpeechEventType.FINAL_TRANSCRIPT or not event.alternatives:
                yield event
                continue
            heard = event.alternatives[0]
            language = str(heard.language or self.session.userdata.language)
            request = self._addressing.heard(heard.text, language)
            if request is None:
                continue
            if not request:  # the wake phrase alone: it is listening
                self.session.say(phrase("listening", language), add_to_chat_ctx=False)
                continue
            alternatives = [dataclasses.replace(heard, text=request), *event.alternatives[1:]]
            yield dataclasses.replace(event, alternatives=alternatives)

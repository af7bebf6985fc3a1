"""What the tools of one session share (the session's userdata): its timers, its devices, the
language the caller was last heard in and, on a phone call, the line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .devices import DeviceGateway
from .keypad import Keypad
from .timers import TimerService


class PhoneLine(Protocol):
    """The call a conversation came by, as its transport can act on it."""

    def transfer(self) -> None:
        """Hand the caller to the profile's ``transfer_to`` once the agent has finished
        speaking; raises ValueError, for the model, when there is nowhere to transfer to."""

    def press(self, keys: str) -> None:
        """Press ``keys`` on the line (a menu at the other end); raises ValueError, for the
        model, when a key is no key of a keypad."""


@dataclass
class AgentServices:
    timers: TimerService = field(default_factory=TimerService)
    devices: DeviceGateway | None = None
    phone: PhoneLine | None = None
    """Set by the transport when the conversation is a phone call."""
    keypad: Keypad = field(default_factory=Keypad)
    """The caller's keys, which a phone call's transport presses."""
    language: str = "en"
    """What the tools that speak answer in: the caller's, as last heard."""

    def hear(self, language: str) -> None:
        self.language = language

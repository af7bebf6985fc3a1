"""What the tools of one session share: its timers and its devices (the session's userdata)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .devices import DeviceGateway
from .timers import TimerService


@dataclass
class AgentServices:
    timers: TimerService = field(default_factory=TimerService)
    devices: DeviceGateway | None = None

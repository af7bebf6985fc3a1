"""Smart-device control over MQTT, limited to the topics the profile allows."""

from __future__ import annotations

from livekit.agents import RunContext, ToolError, function_tool

from .guard import guarded
from .mqtt import MqttBridge

STATE_READ_TIMEOUT_S = 2.0


class DeviceGateway:
    """Commands go to ``<topic>/set``; a device's state is the retained ``<topic>/state``."""

    def __init__(self, bridge: MqttBridge, allowlist: dict[str, str]) -> None:
        self._bridge = bridge
        self._allowlist = {name.lower(): topic.rstrip("/") for name, topic in allowlist.items()}

    @property
    def names(self) -> list[str]:
        return sorted(self._allowlist)

    def topic(self, device: str) -> str:
        """The allowlisted topic of ``device``; anything else is refused."""
        topic = self._allowlist.get(device.strip().lower())
        if topic is None:
            raise ToolError(
                f"{device!r} is not a device this kiosk may control "
                f"(allowed: {', '.join(self.names) or 'none'})"
            )
        return topic

    async def set(self, device: str, state: str) -> None:
        await self._bridge.publish_now(f"{self.topic(device)}/set", state)

    async def get(self, device: str) -> str:
        return await self._bridge.read_retained(
            f"{self.topic(device)}/state", timeout_s=STATE_READ_TIMEOUT_S
        )


def _devices(context: RunContext) -> DeviceGateway:
    gateway = getattr(context.userdata, "devices", None)
    if not isinstance(gateway, DeviceGateway):
        raise ToolError("no device network is configured")
    return gateway


@function_tool
@guarded()
async def set_device(context: RunContext, device: str, state: str) -> str:
    """Switch or set a connected device, such as the lamp or the door.

    Args:
        device: The device's name, such as "lamp".
        state: The state wanted, such as "on", "off", "open" or "50".
    """
    await _devices(context).set(device, state)
    return f"{device} set to {state}."


@function_tool
@guarded()
async def get_device_state(context: RunContext, device: str) -> str:
    """Read the current state a connected device reports.

    Args:
        device: The device's name, such as "lamp".
    """
    return f"{device} is {await _devices(context).get(device)}."

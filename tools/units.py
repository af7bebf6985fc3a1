"""Unit conversion with pint, which knows the units and the offset temperature scales."""

from __future__ import annotations

from typing import Any

import pint
from livekit.agents import ToolError, function_tool

from .guard import guarded

_registry: Any = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


@function_tool
@guarded()
async def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity from one unit to another (length, weight, volume, temperature, speed…).

    Args:
        value: The number to convert.
        from_unit: The unit it is in, such as "mile", "degF", "kg", "cup".
        to_unit: The unit wanted, such as "km", "degC", "pound", "ml".
    """
    try:
        result = _registry.Quantity(value, from_unit).to(to_unit)
    except pint.errors.DimensionalityError:
        raise ToolError(f"{from_unit} cannot be converted to {to_unit}") from None
    except (pint.errors.UndefinedUnitError, AttributeError, ValueError) as e:
        raise ToolError(f"Unknown unit: {e}") from None
    return f"{value:g} {from_unit} is {result.magnitude:.6g} {to_unit}"

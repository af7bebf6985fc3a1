"""Unit conversion with pint, which knows the units and the offset temperature scales."""

from __future__ import annotations

import re
from typing import Any

import pint
from livekit.agents import ToolError, function_tool

from .guard import guarded

UNITS: Any = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
TEMPERATURE = re.compile(r"(?:degrees?\s+)?(celsius|centigrade|fahrenheit|kelvin)", re.IGNORECASE)
SCALES = {"celsius": "degC", "centigrade": "degC", "fahrenheit": "degF", "kelvin": "kelvin"}


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
        given = UNITS.Quantity(value, pint_unit(from_unit))
        result = given.to(pint_unit(to_unit))
    except pint.errors.DimensionalityError:
        raise ToolError(f"{from_unit} cannot be converted to {to_unit}") from None
    except (pint.errors.UndefinedUnitError, AttributeError, ValueError) as e:
        raise ToolError(f"Unknown unit: {e}") from None
    return f"{_spoken(given)} is {_spoken(result)}."


def pint_unit(spelled: str) -> str:
    """The unit as pint knows it: "degrees Celsius" and "Fahrenheit" as well as "degC" (pint
    reads "degrees Celsius" as an angle times a temperature step)."""
    if scale := TEMPERATURE.fullmatch(spelled.strip()):
        return SCALES[scale.group(1).lower()]
    for guess in (spelled, spelled.strip().replace(" ", "_"), spelled.strip().lower()):
        if guess in UNITS:
            return guess
    return spelled


def _spoken(quantity: Any) -> str:
    """As a synthesizer should read it: three significant figures and the unit's full name
    ("42.2 kilometer", "37.8 degree Celsius"), not its symbol."""
    number = float(f"{quantity.magnitude:.3g}")
    name = f"{quantity.units}".replace("_", " ")
    return f"{number:,.10g} {name}"

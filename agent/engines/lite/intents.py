"""Requests matched against sentence templates before the language model, as Home Assistant's
Assist does: the common commands (the time, the date, timers, devices, sums, units, what only
the internet knows) are carried out exactly and at once, by the same tools the model calls.

The templates are Home Assistant's own (``home-assistant-intents``, matched by ``hassil``) and
ours for what they lack (``prompts/intents_<language>.yaml``). A match becomes tool calls that the
session runs like the model's (the engine marks their ``call_id``, and the event log reports
their ``source``) and keeps in the chat, so the model's later turns see them. What no template
matches goes to the model.

In every language Home Assistant has templates for, the requests whose tools answer in the
caller's language (the time, the date, the weather, a goodbye) are matched; the rest (timers,
devices, sums, units: their tools speak English) only in English, since a German question
answered in English is worse than the model's German answer.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from zoneinfo import available_timezones

import yaml
from hassil import Intents, RecognizeResult, TextSlotList, recognize_best
from home_assistant_intents import LANGUAGES, get_intents
from livekit.agents import llm

from audio.language import base_language
from tools.calculator import evaluate
from tools.units import UNITS, pint_unit

from ...tool_calls import ParsedToolCall

SPOKEN_IN_EVERY_LANGUAGE = frozenset(
    {
        "HassGetCurrentTime",
        "HassGetCurrentDate",
        "HassGetWeather",
        "HassNevermind",
        "LookUpOnline",
        "EndConversation",
    }
)
"""The intents whose tools answer in ``prompts/phrases.toml``'s languages; others, English only."""
DEVICE_DOMAINS = ("switch", "cover")
"""A profile's device may be switched (the lamp: on, off) or opened (the door: open, close)."""
NEVER_MIND = "OK."
KEYPAD_PROMPT = "Please type it on your keypad, then press the hash key."
"""Said as the keypad is read: the caller knows to type and how to finish."""
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
logger = logging.getLogger("voice_agent")

Entities = dict[str, Any]


@dataclass(frozen=True)
class IntentMatch:
    intent: str
    calls: tuple[ParsedToolCall, ...] = ()
    answer: str = ""
    """Said instead of calling a tool (never mind)."""


def _call(name: str, **arguments: Any) -> tuple[ParsedToolCall, ...]:
    return (ParsedToolCall(name, json.dumps(arguments)),)


def _number(value: Any) -> str:
    return f"{float(value):g}"


def _calculation(slots: Entities, _: dict[str, Any]) -> tuple[ParsedToolCall, ...] | None:
    if "b" in slots:
        expression = f"{_number(slots['a'])} {slots['operator']} {_number(slots['b'])}"
    else:  # a function of one number: "the square root of 81"
        expression = f"{slots['operator']}({_number(slots['a'])})"
    try:
        evaluate(expression)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None  # the calculator would refuse it: the model may make sense of it
    return _call("calculate", expression=expression)


def _conversion(slots: Entities, _: dict[str, Any]) -> tuple[ParsedToolCall, ...] | None:
    value, given, wanted = float(slots["value"]), slots["from_unit"], slots["to_unit"]
    try:
        UNITS.Quantity(value, pint_unit(given)).to(pint_unit(wanted))
    except Exception:  # pint has many ways of saying no: not units, or not the same kind
        return None
    return _call("convert_units", value=value, from_unit=given, to_unit=wanted)


@functools.cache
def _zones() -> dict[str, str]:
    """IANA zones by their place's name, spoken: "new york" → America/New_York."""
    return {
        zone.rsplit("/", 1)[-1].replace("_", " ").lower(): zone for zone in available_timezones()
    }


def _world_time(slots: Entities, _: dict[str, Any]) -> tuple[ParsedToolCall, ...] | None:
    zone = _zones().get(str(slots["place"]).strip().lower())
    return None if zone is None else _call("get_world_time", timezone=zone)


def _timer(slots: Entities, _: dict[str, Any]) -> tuple[ParsedToolCall, ...] | None:
    if "conversation_command" in slots:
        return None  # "turn off the lamp in five minutes": a delayed command, not a timer
    minutes = float(slots.get("hours", 0)) * 60 + float(slots.get("minutes", 0))
    return _call(
        "set_timer",
        minutes=minutes,
        seconds=float(slots.get("seconds", 0)),
        label=str(slots.get("name", "")),
    )


def _switch(state: dict[str, str]) -> Callable[[Entities, dict[str, Any]], Any]:
    def calls(slots: Entities, context: dict[str, Any]) -> tuple[ParsedToolCall, ...]:
        return _call("set_device", device=slots["name"], state=state[context.get("domain", "")])

    return calls


HANDLERS: dict[str, Callable[[Entities, dict[str, Any]], tuple[ParsedToolCall, ...] | None]] = {
    "HassGetCurrentTime": lambda slots, context: _call("get_time"),
    "HassGetCurrentDate": lambda slots, context: _call("get_date"),
    "HassStartTimer": _timer,
    "HassCancelTimer": lambda slots, context: _call("cancel_timer", timer=slots.get("name", "")),
    "HassTimerStatus": lambda slots, context: _call("list_timers"),
    "HassTurnOn": _switch({"switch": "on", "cover": "open"}),
    "HassTurnOff": _switch({"switch": "off", "cover": "close"}),
    "HassGetState": lambda slots, context: _call("get_device_state", device=slots["name"]),
    "HassGetWeather": lambda slots, context: _call("look_up_online", topic="the weather"),
    "LookUpOnline": lambda slots, context: _call("look_up_online", topic=slots["topic"]),
    "EndConversation": lambda slots, context: _call("end_conversation"),
    "CollectDigits": lambda slots, context: _call("collect_digits"),
    "Calculate": _calculation,
    "ConvertUnits": _conversion,
    "GetWorldTime": _world_time,
}


SAID_FIRST = {"CollectDigits": KEYPAD_PROMPT}
"""What the agent says as it carries out an intent whose tool waits for the caller."""


def _templates(language: str) -> dict[str, Any]:
    """Home Assistant's templates for ``language`` with ours added; only the intents we carry
    out are kept (the rest would only slow matching and claim sentences the model should get)."""
    data: dict[str, Any] = get_intents(language) or {}
    own = resources.files("prompts").joinpath(f"intents_{language}.yaml")
    if own.is_file():
        extra = yaml.safe_load(own.read_text("utf-8"))
        for key in ("lists", "expansion_rules"):
            data.setdefault(key, {}).update(extra.get(key, {}))
        data["skip_words"] = [*data.get("skip_words", []), *extra.get("skip_words", [])]
        for name, intent in extra.get("intents", {}).items():  # ours add to theirs
            data.setdefault("intents", {}).setdefault(name, {"data": []})["data"] += intent["data"]
    handled = {*HANDLERS, "HassNevermind"} if language == "en" else SPOKEN_IN_EVERY_LANGUAGE
    data["intents"] = {k: v for k, v in data["intents"].items() if k in handled}
    return data


def last_result(items: Sequence[llm.ChatItem]) -> float | None:
    """The result of the sum done in answer to the turn before the latest, if one was:
    what "that" is in "And what is that plus eight?"."""
    users = 0
    for item in reversed(items):
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            users += 1
            if users == 2:
                return None
        elif users == 1 and isinstance(item, llm.FunctionCall) and item.name == "calculate":
            try:
                return evaluate(str(json.loads(item.arguments)["expression"]))
            except (ValueError, KeyError, TypeError, ZeroDivisionError, OverflowError):
                return None
    return None


class LocalIntents:
    """The templates of the profile's languages, loaded once and shared by every session."""

    def __init__(self, languages: Collection[str], devices: Collection[str]) -> None:
        self._languages = sorted({base_language(code) for code in languages} & set(LANGUAGES))
        self._devices = sorted(devices)
        self._intents: dict[str, Intents] = {}
        self._lock = threading.Lock()

    @property
    def languages(self) -> list[str]:
        return self._languages

    def load(self) -> None:
        """Read the templates and match once, so the first request does not pay for it."""
        _zones()
        with self._lock:
            for language in self._languages:
                if language not in self._intents:
                    self._intents[language] = Intents.from_dict(_templates(language))
                    self.match("what time is it", language, offered=())

    def match(
        self,
        text: str,
        language: str,
        offered: Collection[str],
        last_result: float | None = None,
    ) -> IntentMatch | None:
        """What the tools ``offered`` do for ``text``, if a template matches it; "that" in a
        sum is ``last_result``, the sum just done (without one, the model makes sense of it)."""
        language = base_language(language)
        intents = self._intents.get(language)
        if intents is None:
            return None
        result = self._recognize(THOUSANDS.sub("", text), intents, language)
        if result is None:
            return None
        name = result.intent.name
        if name == "HassNevermind":
            return IntentMatch(name, answer=NEVER_MIND)
        slots = {key: entity.value for key, entity in result.entities.items()}
        if slots.get("a") == "that":
            if last_result is None:
                return None
            slots["a"] = last_result
        try:
            calls = HANDLERS[name](slots, result.context or {})
        except KeyError as e:  # matched without what the tool needs ("is it on?": no device)
            logger.debug("intent %s without %s: left to the model", name, e)
            return None
        if not calls or any(call.name not in offered for call in calls):
            return None
        logger.debug("intent %s: %s", name, calls)
        return IntentMatch(name, calls=calls, answer=SAID_FIRST.get(name, ""))

    def _recognize(self, text: str, intents: Intents, language: str) -> RecognizeResult | None:
        names = [
            (name, name, {"domain": domain}) for name in self._devices for domain in DEVICE_DOMAINS
        ]
        return recognize_best(
            text,
            intents,
            slot_lists={
                "name": TextSlotList.from_tuples(names),
                "area": TextSlotList.from_strings([]),
                "floor": TextSlotList.from_strings([]),
            },
            language=language,
        )

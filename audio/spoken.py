"""A sentence as a voice should say it: numbers, times, dates, money, percentages and a few units
written out in words, in the sentence's language.

Both voices read digits by espeak-ng's rules (Piper phonemises with espeak-ng): "$42.50" comes
out as "dollar forty-two point five zero", "14:05" as "fourteen zero five", "26.2 mile" in the
singular. num2words (LGPL) says the numbers; what is a price, a time or a date is told by the
patterns below, tried in order, and the words around the numbers come from one row per
language. A language without a row keeps its digits, which espeak-ng reads in that language:
Chinese, and Japanese, since num2words writes its numbers in kanji, which espeak-ng's Japanese
voice spells out as "Chinese letter".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from num2words import CONVERTER_CLASSES, num2words

from .language import base_language


@dataclass(frozen=True)
class Words:
    """What a language says around its numbers."""

    hours: str
    """A time on the hour: ``{h}`` is the hour ("{h} Uhr")."""
    hours_minutes: str
    """Any other time: ``{h}``, ``{m}`` the minutes ("{h} Uhr {m}")."""
    months: str
    """Its month names, as a pattern ("January|February|…")."""
    date: str
    """``{d}`` is the day, ``{month}`` its name ("the {d} of {month}")."""
    units: dict[str, tuple[str, str]]
    """A symbol or name after a number → (said after one, said after any other)."""
    decimal_comma: bool = True
    """"3,5" is three and a half and "6.912" six thousand… (en: the other way round)."""
    ordinal_day: bool = False
    """The day of a date is said as an ordinal (en, de: "the fifth", "fünfte")."""
    one: str = ""
    """"1" before a currency, where the number alone differs ("ein" Euro, not "eins")."""
    currency_separator: str | None = None
    """Between the whole and the cents, where num2words' own is a comma (en)."""
    years_after: str = "(?!)"
    """Words after which four digits are a year ("in 1999": in nineteen ninety-nine)."""
    minutes_under_ten: str = ""
    """For "14:05", where it differs from ``hours_minutes``."""
    dative: str = "(?!)"
    """Words before a date whose ordinal takes an -n ("am fünften Dezember")."""
    ordinal_suffix: str = "(?!)"
    """The letters of a written ordinal ("2nd"); ``(?!)`` matches nothing."""
    half_days: str = "(?!)"
    """AM and PM as they may be written (en); said as "AM", "PM"."""
    half_day_under_ten: str = ""
    """For "3:05 PM", where it differs from ``minutes_under_ten``."""
    clock: str = "(?!)"
    """The word a written time may carry, said by ``hours`` already ("14:05 Uhr")."""
    exponent: str = ""
    """``{m}`` and ``{e}`` of "1.5e+20", as the calculator writes a large result."""


def _units(
    table: str, plural: Callable[[str], str] = lambda one: one
) -> dict[str, tuple[str, str]]:
    """``"km=kilometer; mile"`` → {"km": ("kilometer", plural), "mile": ("mile", plural)}."""
    units = {}
    for entry in table.split(";"):
        symbol, _, name = entry.strip().partition("=")
        units[symbol] = (name or symbol, plural(name or symbol))
    return units


def _english_plural(name: str) -> str:
    first, _, rest = name.partition(" ")  # "degree Celsius": "degrees Celsius"
    irregular = {"foot": "feet", "inch": "inches", "percent": "percent"}
    return " ".join(filter(None, [irregular.get(first, first + "s"), rest]))


LANGUAGES = {
    "en": Words(
        hours="{h} hundred",
        hours_minutes="{h} {m}",
        # whisper tiny.en hears Piper's "fourteen oh five" as "40 no 5" (10 of 10), and
        # "fourteen zero five" as 14:05 (10 of 10); "three oh five PM" it hears right
        minutes_under_ten="{h} zero {m}",
        half_day_under_ten="{h} oh {m}",
        months="January|February|March|April|May|June|July|August|September|October|November|"
        "December",
        date="the {d} of {month}",
        units=_units(
            "%=percent; °C=degree Celsius; °F=degree Fahrenheit; km/h=kilometer per hour; "
            "mph=mile per hour; km=kilometer; kg=kilogram; cm=centimeter; mm=millimeter; "
            "degree Celsius; degree Fahrenheit; degree; mile; kilometer; meter; foot; inch; "
            "yard; pound; ounce; kilogram; gram; liter; gallon; cup",
            _english_plural,
        ),
        decimal_comma=False,
        ordinal_day=True,
        currency_separator=" and",
        years_after="(?i:in|since|until|year)",
        ordinal_suffix="st|nd|rd|th",
        half_days="(?i:[ap]m|[ap]\\.m\\.)",
        exponent="{m} times ten to the power of {e}",
    ),
    "de": Words(
        hours="{h} Uhr",
        hours_minutes="{h} Uhr {m}",
        months="Januar|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember",
        date="{d} {month}",
        units=_units(
            "%=Prozent; °C=Grad Celsius; °F=Grad Fahrenheit; km/h=Kilometer pro Stunde; "
            "km=Kilometer; kg=Kilogramm; cm=Zentimeter; mm=Millimeter"
        ),
        ordinal_day=True,
        one="ein",
        years_after="Jahr|seit|bis",
        dative="am|vom|zum",
        clock="Uhr",
    ),
    "fr": Words(
        hours="{h} heures",
        hours_minutes="{h} heures {m}",
        months="janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|"
        "décembre",
        date="{d} {month}",
        units=_units("%=pour cent; °C=degrés Celsius; km=kilomètres; kg=kilogrammes"),
        one="un",
    ),
    "es": Words(
        hours="{h} en punto",
        hours_minutes="{h} y {m}",
        months="enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|"
        "noviembre|diciembre",
        date="{d} de {month}",
        units=_units("%=por ciento; °C=grados Celsius; km=kilómetros; kg=kilos"),
        one="un",
    ),
    "it": Words(
        hours="{h}",
        hours_minutes="{h} e {m}",
        months="gennaio|febbraio|marzo|aprile|maggio|giugno|luglio|agosto|settembre|ottobre|"
        "novembre|dicembre",
        date="{d} {month}",
        units=_units("%=per cento; °C=gradi Celsius; km=chilometri; kg=chili"),
        one="un",
    ),
    "pt": Words(
        hours="{h} horas",
        hours_minutes="{h} horas e {m}",
        months="janeiro|fevereiro|março|abril|maio|junho|julho|agosto|setembro|outubro|"
        "novembro|dezembro",
        date="{d} de {month}",
        units=_units("%=por cento; °C=graus Celsius; km=quilômetros; kg=quilos"),
        one="um",
    ),
}
"""The languages said in words: the call profile's eight, less zh and ja."""

CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "USD": "USD", "EUR": "EUR", "GBP": "GBP"}
YEAR = r"(?P<y>1[1-9]\d\d|20\d\d)"
"""Four digits that may be a year (num2words says 1100 to 2099 as years)."""


def _number(words: Words) -> str:
    """A written number; its minus sign only where nothing is written before it ("Phi-4")."""
    if words.decimal_comma:  # "6.912,5", and "3.5" as the model may write it anyway
        digits = r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+(?:[.,]\d+)?"
    else:
        digits = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
    return rf"(?:(?<![^\s(])-)?(?<![\w.])(?:{digits})"


def _value(written: str, words: Words) -> int | float:
    if not words.decimal_comma:
        plain = written.replace(",", "")
    elif re.fullmatch(r"-?\d{1,3}(?:\.\d{3})+(?:,\d+)?", written):
        plain = written.replace(".", "").replace(",", ".")
    else:
        plain = written.replace(",", ".")
    return float(plain) if "." in plain else int(plain)


class _Speller:
    """One language's patterns, compiled once, and what each match is said as."""

    def __init__(self, language: str, words: Words) -> None:
        self.language, self.words = language, words
        number = _number(words)
        symbols = "|".join(map(re.escape, sorted(CURRENCIES, key=len, reverse=True)))
        units = "|".join(map(re.escape, sorted(words.units, key=len, reverse=True)))
        day = rf"(?P<d>[0-3]?\d)(?:{words.ordinal_suffix}|\.)?"
        year = rf"(?:,?\s{YEAR}\b)?"
        exponent = rf"(?P<m>{number})e(?P<e>[+-]?\d+)\b" if words.exponent else "(?!)"
        rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
            (exponent, self._exponent),
            (rf"(?P<symbol>[$€£])\s?(?P<amount>{number})", self._money),
            (rf"(?P<amount>{number})\s?(?P<symbol>{symbols})(?!\w)", self._money),
            (
                r"(?<![\d:])(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?![\d:])"
                rf"(?:\s?(?P<half>{words.half_days})(?!\w))?(?:\s(?:{words.clock})\b)?",
                self._time,
            ),
            (rf"\b(?P<h>1[0-2]|[1-9])\s?(?P<half>{words.half_days})(?!\w)", self._time),
            (
                rf"(?:\b(?P<dative>{words.dative})\s)?\b{day}\s(?P<month>{words.months})\b{year}",
                self._date,
            ),
            (rf"\b(?P<month>{words.months})\s{day}\b{year}", self._date),
            (rf"\b(?P<before>{words.years_after})\s{YEAR}\b", self._year),
            (rf"\b(?P<n>\d+)(?:{words.ordinal_suffix})\b", self._ordinal),
            (rf"(?P<amount>{number})\s?(?P<unit>{units})(?!\w)", self._unit),
            (rf"{number}(?!\w)", lambda match: self._words(_value(match[0], words))),
        ]
        self._rules = [(re.compile(pattern), say) for pattern, say in rules]

    def __call__(self, text: str) -> str:
        for pattern, say in self._rules:
            text = pattern.sub(say, text)
        return text

    def _words(self, value: int | float, to: str = "cardinal") -> str:
        return str(num2words(value, lang=self.language, to=to)).replace(",", "")

    def _exponent(self, match: re.Match[str]) -> str:
        mantissa = self._words(_value(match["m"], self.words))
        return self.words.exponent.format(m=mantissa, e=self._words(int(match["e"])))

    def _money(self, match: re.Match[str]) -> str:
        code = CURRENCIES[match["symbol"]]
        amount = _value(match["amount"], self.words)
        if amount != int(amount):
            separator = self.words.currency_separator
            options = {} if separator is None else {"separator": separator}
            return str(
                num2words(amount, lang=self.language, to="currency", currency=code, **options)
            )
        converter = CONVERTER_CLASSES[self.language]
        name = converter.pluralize(int(amount), converter.CURRENCY_FORMS[code][0])
        count = self.words.one if amount == 1 and self.words.one else self._words(int(amount))
        return f"{count} {name}"

    def _time(self, match: re.Match[str]) -> str:
        hour, minutes, half = int(match["h"]), int(match.groupdict().get("m") or 0), match["half"]
        template = self.words.hours_minutes
        if minutes == 0:
            template = "{h}" if half else self.words.hours
        elif minutes < 10:
            under_ten = (half and self.words.half_day_under_ten) or self.words.minutes_under_ten
            template = under_ten or template
        said = template.format(h=self._words(hour), m=self._words(minutes))
        return f"{said} {half.replace('.', '').upper()}" if half else said

    def _date(self, match: re.Match[str]) -> str:
        day = int(match["d"])
        if not 1 <= day <= 31:
            return match[0]
        said = self._words(day, "ordinal" if self.words.ordinal_day else "cardinal")
        if match.groupdict().get("dative"):
            said = f"{match['dative']} {said}n"
        said = self.words.date.format(d=said, month=match["month"])
        return f"{said} {self._words(int(match['y']), 'year')}" if match["y"] else said

    def _year(self, match: re.Match[str]) -> str:
        return f"{match['before']} {self._words(int(match['y']), 'year')}"

    def _ordinal(self, match: re.Match[str]) -> str:
        return self._words(int(match["n"]), "ordinal")

    def _unit(self, match: re.Match[str]) -> str:
        amount = _value(match["amount"], self.words)
        one, many = self.words.units[match["unit"]]
        return f"{self._words(amount)} {one if amount == 1 else many}"


_SPELLERS = {language: _Speller(language, words) for language, words in LANGUAGES.items()}


def speakable(text: str, language: str = "en") -> str:
    """``text`` with its numbers in the words of ``language`` (a BCP-47 code); as it is in a
    language without a row here."""
    speller = _SPELLERS.get(base_language(language))
    return speller(text) if speller else text

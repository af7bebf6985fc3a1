"""What the voice says for numbers, times, dates, money and units: words, in the sentence's
language, never digits and symbols read one by one."""

from __future__ import annotations

import pytest

from audio.spoken import speakable

ENGLISH = [
    # what the tools answer
    (
        "It is 14:05 CET, on Saturday 05 December 2026.",
        "It is fourteen zero five CET, on Saturday the fifth of December twenty twenty-six.",
    ),
    (
        "26.2 mile is 42.2 kilometer.",
        "twenty-six point two miles is forty-two point two kilometers.",
    ),
    ("1 foot is 12 inch.", "one foot is twelve inches."),
    ("37.8 degree Celsius", "thirty-seven point eight degrees Celsius"),
    ("That makes 6,912.", "That makes six thousand nine hundred and twelve."),
    ("That makes -3.", "That makes minus three."),
    ("That makes 1.5e+20.", "That makes one point five times ten to the power of twenty."),
    ("Timer 1 set for 5 minutes.", "Timer one set for five minutes."),
    # money
    ("It costs $42.50.", "It costs forty-two dollars and fifty cents."),
    ("It costs $42, or €1.", "It costs forty-two dollars, or one euro."),
    ("That is £3.20.", "That is three pounds sterling and twenty pence."),
    # times
    ("At 3:15 PM or 15:15.", "At three fifteen PM or fifteen fifteen."),
    ("At 3:05 pm, 7 a.m. or 14:00.", "At three oh five PM, seven AM or fourteen hundred."),
    # dates, years, ordinals
    ("On December 5, 2026.", "On the fifth of December twenty twenty-six."),
    ("In 1999, and since 2005.", "In nineteen ninety-nine, and since two thousand and five."),
    ("The 1st, 2nd and 23rd.", "The first, second and twenty-third."),
    # decimals, percentages, units
    (
        "3.5 is 42% more, at -5 °C.",
        "three point five is forty-two percent more, at minus five degrees Celsius.",
    ),
    ("5km at 30 km/h.", "five kilometers at thirty kilometers per hour."),
    # digits inside names stay with them
    ("Phi-4 plays MP3 in 4K.", "Phi-four plays MP3 in 4K."),
    ("No numbers here.", "No numbers here."),
]

GERMAN = [
    (
        "Es ist 14:05 Uhr am 5. Dezember 2026.",
        "Es ist vierzehn Uhr fünf am fünften Dezember zweitausendsechsundzwanzig.",
    ),
    ("Samstag, 5. Dezember, 15:00", "Samstag, fünfte Dezember, fünfzehn Uhr"),
    (
        "Das kostet 42,50 € oder 1 €.",
        "Das kostet zweiundvierzig Euro und fünfzig Cent oder ein Euro.",
    ),
    ("Das macht 6.912.", "Das macht sechstausendneunhundertzwölf."),
    (
        "Es sind 3,5 km, 3.5 km oder 42 %.",
        "Es sind drei Komma fünf Kilometer, drei Komma fünf Kilometer oder zweiundvierzig Prozent.",
    ),
    (
        "Im Jahr 1999 waren es -5 °C.",
        "Im Jahr neunzehnhundertneunundneunzig waren es minus fünf Grad Celsius.",
    ),
]

OTHERS = [
    (
        "fr",
        "Il est 14:05, le 5 décembre, 3,5 %.",
        "Il est quatorze heures cinq, le cinq décembre, trois virgule cinq pour cent.",
    ),
    (
        "es",
        "Son las 14:05 y cuesta 42,50 €.",
        "Son las catorce y cinco y cuesta cuarenta y dos euros con cincuenta céntimos.",
    ),
    (
        "it",
        "Sono le 14:05, 3,5 km.",
        "Sono le quattordici e cinque, tre virgola cinque chilometri.",
    ),
    ("pt", "São 14:05, custa 1 €.", "São catorze horas e cinco, custa um euro."),
    ("de-CH", "Das macht 12.", "Das macht zwölf."),
    # no words for these: espeak-ng reads the digits in the language itself
    ("zh", "现在是14:05。", "现在是14:05。"),
    ("ja", "42円です。", "42円です。"),
]


@pytest.mark.parametrize(("written", "said"), ENGLISH)
def test_english_is_said_in_words(written, said):
    assert speakable(written, "en") == said


@pytest.mark.parametrize(("written", "said"), GERMAN)
def test_german_is_said_in_words(written, said):
    assert speakable(written, "de") == said


@pytest.mark.parametrize(("language", "written", "said"), OTHERS)
def test_each_language_says_its_own_words_or_keeps_the_digits(language, written, said):
    assert speakable(written, language) == said

"""The spoken conversations ``bench/quality.py`` scores: what each turn says and what a right
answer holds, and how a reply's facts are read.

Each conversation is one session, so follow-ups ("And what about Germany?") and requests
after small talk are asked the way a user asks them. A turn names its category, the facts its
reply must hold (regular expressions, all of them, matched against the reply with its numbers
written in digits), the tool that does it where the profile offers that tool, and the profiles
it applies to.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bench.tools import computes, converts

Args = dict[str, Any]
ALL = ("desktop", "kiosk", "call")
KIOSK = ("kiosk",)
DEVICES = {"lamp": "off", "door": "closed"}
"""Each kiosk device's state as a conversation starts (a fake device then echoes commands)."""


def number(value: str) -> str:
    """A fact: the number ``value`` as a whole (391, not 3910 or 1.391)."""
    return rf"(?<![\d.]){re.escape(value)}(?!\d|\.\d)"


def about(value: str) -> str:
    """A fact: the number ``value``, with any decimals (42 for 42.16)."""
    return rf"(?<![\d.]){re.escape(value)}(\.\d+)?(?!\d)"


NUMBER_WORDS = """zero one two three four five six seven eight nine ten eleven twelve thirteen
fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty
ninety""".split()
SMALL = {w: i for i, w in enumerate(NUMBER_WORDS[:20])}
TENS = {w: 10 * i for i, w in enumerate(NUMBER_WORDS[20:], 2)}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}


def _value(words: list[str]) -> str:
    whole, _, decimals = " ".join(words).partition(" point ")
    total = current = 0
    for word in whole.split():
        if word == "hundred":
            current = (current or 1) * 100
        elif word in SCALES:
            total, current = total + (current or 1) * SCALES[word], 0
        else:
            current += SMALL.get(word, 0) + TENS.get(word, 0)
    digits = "".join(str(SMALL[w]) for w in decimals.split())
    return f"{total + current}.{digits}" if digits else str(total + current)


def normalise(text: str) -> str:
    """Lower case, numbers in digits ("three hundred and ninety-one", "6,912" → 391, 6912):
    a fact is one pattern however the reply wrote its number."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower()).replace("-", " ")
    tokens = re.findall(r"\d+(?:\.\d+)?|(?:[^\W\d_]|')+|[^\s\w]", text)
    out: list[str] = []
    run: list[str] = []  # the number words being read

    def flush() -> None:
        if run:
            out.append(_value(run))
            run.clear()

    for i, token in enumerate(tokens):
        last, after = (run[-1] if run else ""), (tokens[i + 1] if i + 1 < len(tokens) else "")
        if "point" in run:
            if SMALL.get(token, 10) < 10:
                run.append(token)
                continue
            flush()
        if token in SMALL or token in TENS:
            if last in SMALL or (last in TENS and (token in TENS or SMALL.get(token, 0) >= 10)):
                flush()
            run.append(token)
        elif run and (token in SCALES or (token == "point" and SMALL.get(after, 10) < 10)):
            run.append(token)
        elif not (token == "and" and last in SCALES and (after in SMALL or after in TENS)):
            flush()
            out.append(token)
    flush()
    return " ".join(out)


def anything(args: Args) -> bool:
    return True


def lasts(seconds: float, label: str = "") -> Callable[[Args], bool]:
    def check(args: Args) -> bool:
        total = float(args.get("minutes") or 0) * 60 + float(args.get("seconds") or 0)
        return total == seconds and label in str(args.get("label", "")).lower()

    return check


def sets(device: str, *states: str) -> Callable[[Args], bool]:
    return lambda a: a.get("device") == device and str(a.get("state")).lower() in states


def names(key: str, pattern: str) -> Callable[[Args], bool]:
    return lambda a: re.search(pattern, str(a.get(key, "")), re.I) is not None


@dataclass(frozen=True)
class Turn:
    say: str
    """What the user says (espeak-ng), or ``@FILE``: a recording from shared/audio."""
    category: str
    facts: tuple[str, ...] = ()
    tool: str = ""
    """The tool that does this, where the profile offers it."""
    args: Callable[[Args], bool] = anything
    optional: bool = False
    """The reply alone may answer (arithmetic, units): a call, if made, must be right."""
    elsewhere: Literal["admit", "reply"] = "admit"
    """Where the profile lacks ``tool``: say it cannot, or any reply (a goodbye)."""
    admit: bool = False
    """Cannot be known offline: the reply says so and makes up no figure."""
    words: int = 0
    """A format instruction's word limit (0: none beyond brevity)."""
    profiles: tuple[str, ...] = ALL
    room_s: float = 8.0
    """Silence after the turn: room for the reply before the next turn."""
    heard: str = ""
    """What a recording says (for the recognizer's score); spoken turns say ``say``."""
    language: str = "en"
    """What the turn is said in, and its reply should be."""
    over_greeting: bool = False
    """Said as the call connects, while the greeting plays (the first turn only)."""


def turn(say: str, category: str, *facts: str, **options: Any) -> Turn:
    return Turn(say, category, facts, **options)


JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
NOT_KNOWN = "unknowable"

CONVERSATIONS: list[list[Turn]] = [
    [
        turn("What is the capital of France?", "knowledge", "paris"),
        turn("And what about Germany?", "follow-up", "berlin"),
        turn("And Italy?", "follow-up", "rome"),
    ],
    [
        turn("Hello there, can you hear me?", "small talk"),
        turn("What is the capital of Spain?", "knowledge", "madrid"),
        turn("And what about Portugal?", "follow-up", "lisbon"),
        turn("Thanks, that's all for now.", "small talk"),
    ],
    [
        turn("What is seventeen times twenty-three?", "arithmetic", number("391"),
             tool="calculate", args=computes(391), optional=True),
        turn("What's one hundred forty-four divided by twelve?", "arithmetic", number("12"),
             tool="calculate", args=computes(12), optional=True),
        turn("And what is that plus eight?", "follow-up", number("20"),
             tool="calculate", args=computes(20), optional=True),
        turn("What is two to the power of ten?", "arithmetic", number("1024"),
             tool="calculate", args=computes(1024), optional=True),
    ],
    [
        turn("What time is it right now?", "time/units", r"\d", tool="get_time"),
        turn("What's today's date?", "time/units", r"\d", tool="get_date"),
        turn("What time is it in Tokyo?", "time/units", r"\d", tool="get_world_time",
             args=names("timezone", r"^Asia/Tokyo$")),
        turn("Set a timer for five minutes.", "time/units", r"\b5 minutes", tool="set_timer",
             args=lasts(300)),
    ],
    [
        turn("What's the weather like in London today?", NOT_KNOWN, admit=True),
        turn("Who won the football match last night?", NOT_KNOWN, admit=True),
        turn("What is the price of bitcoin right now?", NOT_KNOWN, admit=True),
        turn("What are today's top news headlines?", NOT_KNOWN, admit=True),
        turn("Can you book me a table for two at an Italian restaurant tonight?", NOT_KNOWN,
             admit=True),
    ],
    [
        turn("Answer in one word: what color is the sky on a clear day?", "format", "blue",
             words=2),
        turn("Answer with just a number: how many legs does a spider have?", "format",
             number("8"), words=3),
        turn("In one short sentence, what is photosynthesis?", "format", "light", words=25),
        turn("Say yes or no: is the sun a star?", "format", r"\byes\b", words=3),
        turn("Answer in one word: what is the opposite of hot?", "format", r"\bcold\b", words=2),
    ],
    [
        turn("Who wrote Romeo and Juliet?", "knowledge", "shakespeare"),
        turn("How many days are there in a leap year?", "knowledge", number("366")),
        turn("What is the largest planet in our solar system?", "knowledge", "jupiter"),
        turn("At what temperature does water boil, in Celsius?", "knowledge", number("100")),
        turn("Which ocean is the largest?", "knowledge", "pacific"),
    ],
    [
        turn("Who painted the Mona Lisa?", "knowledge", r"leonardo|vinci"),
        turn("What country was he from?", "follow-up", r"ital"),
        turn("And who painted The Starry Night?", "follow-up", r"gogh"),
    ],
    [
        turn("Good morning! How are you today?", "small talk"),
        turn("What time is it?", "time/units", r"\d", tool="get_time"),
        turn("Thank you very much.", "small talk"),
        turn("@jfk.flac", "not a request", heard=JFK, room_s=6.0),
        turn("Sorry, that was the radio. What is the capital of Canada?", "knowledge", "ottawa"),
    ],
    [
        turn("How many kilometers is twenty-six point two miles?", "time/units", about("42"),
             tool="convert_units", args=converts(26.2, 42.16), optional=True),
        turn("Convert one hundred degrees Fahrenheit to Celsius.", "time/units",
             f"{about('37')}|{about('38')}", tool="convert_units",
             args=converts(100, 37.78), optional=True),
        turn("How many grams are in a kilogram?", "time/units", number("1000"),
             tool="convert_units", args=converts(1, 1000), optional=True),
        turn("How many minutes are in three hours?", "time/units", number("180"),
             tool="calculate", args=computes(180), optional=True),
    ],
    [
        turn("Turn on the lamp.", "device", r"\bon\b", tool="set_device", args=sets("lamp", "on"),
             profiles=KIOSK),
        turn("Is the lamp on?", "device", r"\bon\b", tool="get_device_state",
             args=names("device", "^lamp$"), profiles=KIOSK),
        turn("Open the door.", "device", r"\bopen", tool="set_device",
             args=sets("door", "open", "opened"), profiles=KIOSK),
        turn("Now switch the lamp off, please.", "device", r"\boff\b", tool="set_device",
             args=sets("lamp", "off"), profiles=KIOSK),
        turn("Is the door open or closed?", "device", r"\bopen", tool="get_device_state",
             args=names("device", "^door$"), profiles=KIOSK),
        turn("Please close the door.", "device", r"\bclose", tool="set_device",
             args=sets("door", "close", "closed"), profiles=KIOSK),
    ],
    [
        turn("If I have three apples and eat one, how many are left?", "arithmetic",
             number("2"), tool="calculate", args=computes(2), optional=True),
        turn("What comes next: two, four, six, eight?", "arithmetic", number("10")),
        turn("Which is heavier, a kilogram of feathers or a kilogram of iron?", "arithmetic",
             r"same|neither|equal|both|\bidentical"),
        turn("Tom is taller than Sam, and Sam is taller than Ben. Who is the shortest?",
             "arithmetic", r"\bben\b"),
    ],
    [
        turn("Tell me a joke.", "small talk", room_s=10.0),
        turn("What is the chemical symbol for gold?", "knowledge", r"\bau\b|\ba\W*u\b"),
        turn("Will it rain tomorrow?", NOT_KNOWN, admit=True),
        turn("How much does a flight to New York cost?", NOT_KNOWN, admit=True),
        turn("Goodbye!", "small talk", tool="end_conversation", elsewhere="reply"),
    ],
    [
        turn("Set a tea timer for three minutes.", "time/units", r"\b3 minutes",
             tool="set_timer", args=lasts(180, "tea"), profiles=KIOSK),
        turn("Which timers are running?", "time/units", r"\btea\b", tool="list_timers",
             profiles=KIOSK),
        turn("Cancel the tea timer.", "time/units", r"cancel", tool="cancel_timer",
             args=names("timer", r"tea|^1$"), profiles=KIOSK),
        turn("Remind me to call the dentist in ten minutes.", "time/units", r"\b10 minutes",
             tool="set_reminder", args=names("text", "dentist"), profiles=KIOSK),
    ],
    [
        turn("What is fifteen percent of eighty?", "arithmetic", number("12"),
             tool="calculate", args=computes(12), optional=True),
        turn("What is the square root of eighty-one?", "arithmetic", number("9"),
             tool="calculate", args=computes(9), optional=True),
        turn("And half of that?", "follow-up", rf"{number('4.5')}|\b4 and a half",
             tool="calculate", args=computes(4.5), optional=True),
        turn("What's one thousand two hundred thirty-four plus five thousand six hundred "
             "seventy-eight?", "arithmetic", number("6912"),
             tool="calculate", args=computes(6912), optional=True),
    ],
    [
        turn("@one_two_three_en.wav", "not a request", heard="one two three", room_s=6.0),
        turn("Can you hear me now?", "small talk", r"\byes\b|hear"),
        turn("Who was the first person to walk on the moon?", "knowledge", "armstrong"),
        turn("And the second one?", "follow-up", r"aldrin|\bbuzz\b"),
        turn("Please answer in French: how do you say thank you?", "format", "merci"),
    ],
]  # fmt: skip
SMOKE = CONVERSATIONS[0]


def _caller(language: str, lines: dict[str, str], recording: str) -> list[list[Turn]]:
    """One language's calls: a greeting said over the agent's, the clock, knowledge with a
    follow-up, the date, sums the call profile has no tool for, the weather it cannot know,
    a goodbye, more knowledge; and a real recording of the language, which is no request."""

    def say(key: str, category: str, *facts: str, **options: Any) -> Turn:
        return Turn(lines[key], category, facts, language=language, **options)

    return [
        [
            say("hello", "small talk", over_greeting=True),
            say("time", "time/units", r"\d", tool="get_time"),
            say("capital", "knowledge", r"par[ií]s"),
            say("follow", "follow-up", r"berl[ií]n"),
        ],
        [
            say("date", "time/units", r"\d", tool="get_date"),
            say("sum", "arithmetic", rf"{number('144')}|{lines['144']}"),
            say("weather", NOT_KNOWN, admit=True),
            say("bye", "small talk", tool="end_conversation", elsewhere="reply"),
        ],
        [
            say("writer", "knowledge", "shakespeare"),
            say("week", "knowledge", rf"{number('7')}|\b{lines['7']}\b"),
            say("planet", "knowledge", r"j[uú]piter"),
            say("hour", "knowledge", rf"{number('60')}|\b{lines['60']}\b"),
        ],
        [Turn(f"@{recording}", "not a request", language=language, room_s=6.0)],
    ]


CALLERS: dict[str, list[list[Turn]]] = {
    "en": _caller("en", {
        "hello": "Hello, good morning.", "time": "What time is it?",
        "capital": "What is the capital of France?", "follow": "And of Germany?",
        "date": "What's the date today?", "sum": "How much is twelve times twelve?",
        "144": "one hundred forty four", "weather": "What will the weather be like tomorrow?",
        "bye": "Thank you, goodbye.", "writer": "Who wrote Romeo and Juliet?",
        "week": "How many days are there in a week?", "7": "seven",
        "planet": "What is the largest planet in our solar system?",
        "hour": "How many minutes are there in an hour?", "60": "sixty",
    }, "jfk.flac"),
    "de": _caller("de", {
        "hello": "Guten Tag.", "time": "Wie spät ist es?",
        "capital": "Was ist die Hauptstadt von Frankreich?", "follow": "Und von Deutschland?",
        "date": "Welches Datum haben wir heute?", "sum": "Wie viel ist zwölf mal zwölf?",
        "144": "hundertvierundvierzig", "weather": "Wie wird das Wetter morgen?",
        "bye": "Danke, auf Wiederhören.", "writer": "Wer hat Romeo und Julia geschrieben?",
        "week": "Wie viele Tage hat eine Woche?", "7": "sieben",
        "planet": "Was ist der größte Planet in unserem Sonnensystem?",
        "hour": "Wie viele Minuten hat eine Stunde?", "60": "sechzig",
    }, "speech60_de.wav"),
    "es": _caller("es", {
        "hello": "Hola, buenos días.", "time": "¿Qué hora es?",
        "capital": "¿Cuál es la capital de Francia?", "follow": "¿Y la de Alemania?",
        "date": "¿Qué fecha es hoy?", "sum": "¿Cuánto es doce por doce?",
        "144": "ciento cuarenta y cuatro", "weather": "¿Qué tiempo hará mañana?",
        "bye": "Gracias, adiós.", "writer": "¿Quién escribió Romeo y Julieta?",
        "week": "¿Cuántos días tiene una semana?", "7": "siete",
        "planet": "¿Cuál es el planeta más grande del sistema solar?",
        "hour": "¿Cuántos minutos tiene una hora?", "60": "sesenta",
    }, "speech60_es.wav"),
    "fr": _caller("fr", {
        "hello": "Bonjour.", "time": "Quelle heure est-il ?",
        "capital": "Quelle est la capitale de la France ?", "follow": "Et celle de l'Allemagne ?",
        "date": "Quelle est la date d'aujourd'hui ?", "sum": "Combien font douze fois douze ?",
        "144": "cent quarante quatre", "weather": "Quel temps fera-t-il demain ?",
        "bye": "Merci, au revoir.", "writer": "Qui a écrit Roméo et Juliette ?",
        "week": "Combien de jours y a-t-il dans une semaine ?", "7": "sept",
        "planet": "Quelle est la plus grande planète du système solaire ?",
        "hour": "Combien de minutes y a-t-il dans une heure ?", "60": "soixante",
    }, "dictee_fr.aiff"),
}  # fmt: skip
"""The call profile's languages, each asked the same (``bench/quality.py --languages``)."""
CALLER_VOICES = {"en": "piper", "de": "de:150", "es": "es:150", "fr": "fr:150"}

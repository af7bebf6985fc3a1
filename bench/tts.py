"""Each voice on the same ten sentences: first audio, real-time factor, round-trip word error,
and DNSMOS P.808.

    .venv/bin/python bench/tts.py [--repeats 3] [--json PATH]

The voices are the TTS plugin's (``audio/tts.py``): Piper speaking English (the default),
espeak-ng speaking English (``[voice] english = "espeak"``) and espeak-ng speaking German, each
on ten sentences of the kind the agent says, numbers and tool answers among them (said in
words by ``audio/spoken.py``). Per voice:

- first audio: from handing the plugin a piece of text to its first audio frame, median of
  ``--repeats``, for a reply's first clause ("Sure,") and for each whole sentence (the median
  over sentences of their medians);
- real-time factor: synthesis time over the audio's length, all sentences together;
- round-trip WER (English voices): the audio transcribed by the bundled whisper tiny.en,
  against the sentence; both sides said in words first, so "$42.50" and "forty-two dollars
  and fifty cents" agree (a time whisper writes "1405" still counts against either voice);
- DNSMOS P.808: Microsoft's no-reference MOS predictor, whose ONNX models ship inside the
  ``speechmos`` wheel (found next to its module, nothing downloaded), mean over the sentences.
  speechmos imports librosa without declaring it (and requests, which LiveKit brings): where
  either is missing the column says "n/a" and why. Install it with
  ``pip install --no-deps speechmos`` and librosa (which brings numba, scipy, scikit-learn).

A first call per voice loads it (Piper's model, espeak-ng's voice) and is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from livekit import rtc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.stt import FasterWhisperSTT  # noqa: E402
from audio import Pyttsx3Options, Pyttsx3TTS  # noqa: E402
from audio.pcm import resample  # noqa: E402
from audio.spoken import speakable  # noqa: E402
from tests.conftest import words  # noqa: E402

ENGLISH = [
    "Sure, I can help you with that.",
    "The weather is lovely today, let us go for a walk.",
    "It is 14:05 CET on Saturday 05 December 2026.",
    "26.2 mile is 42.2 kilometer.",
    "That makes 6,912.",
    "The capital of France is Paris.",
    "Your ten minute timer is done.",
    "I have turned the kitchen light off.",
    "It costs $42.50, about 15% less than last year.",
    "Reminder: call the dentist at 3:30 PM.",
]
GERMAN = [
    "Gern, ich helfe dir dabei.",
    "Das Wetter ist heute schön, lass uns spazieren gehen.",
    "Es ist 14:05 Uhr am Samstag, dem 5. Dezember 2026.",
    "Die Hauptstadt von Frankreich ist Paris.",
    "Das macht 6.912.",
    "Dein Timer für zehn Minuten ist abgelaufen.",
    "Ich habe das Licht in der Küche ausgeschaltet.",
    "Das kostet 42,50 €, etwa 15 % weniger als letztes Jahr.",
    "Draußen sind es 3,5 °C.",
    "Erinnerung: Ruf um 15:30 Uhr den Zahnarzt an.",
]
VOICES = {
    "piper en": (Pyttsx3Options(language="en"), ENGLISH, "Sure,"),
    "espeak-ng en": (Pyttsx3Options(language="en", english="espeak"), ENGLISH, "Sure,"),
    "espeak-ng de": (Pyttsx3Options(language="de"), GERMAN, "Gern,"),
}
RATE = 16000
"""What whisper and DNSMOS hear."""
COLUMNS = "{:<14} {:>14} {:>11} {:>6} {:>6} {:>7}"


async def speak(tts: Pyttsx3TTS, text: str) -> tuple[float, float, np.ndarray]:
    """Seconds to the first frame, seconds to the last, and the audio."""
    started, first, frames = time.perf_counter(), 0.0, []
    async with tts.synthesize(text) as stream:
        async for audio in stream:
            first = first or time.perf_counter() - started
            frames.append(audio.frame)
    total = time.perf_counter() - started
    frame = rtc.combine_audio_frames(frames)
    return first, total, resample(np.frombuffer(frame.data, np.int16), frame.sample_rate, RATE)


def dnsmos_scorer() -> tuple[Any, str]:
    """speechmos's DNSMOS ``run``, or None and why it cannot be had."""
    try:
        from speechmos import dnsmos
    except ImportError as e:
        return None, f"speechmos cannot be imported: {e}"
    return dnsmos.run, ""


async def measure(name: str, repeats: int, whisper: FasterWhisperSTT, dnsmos: Any) -> dict:
    options, sentences, clause = VOICES[name]
    tts = Pyttsx3TTS(options)
    await speak(tts, clause)  # loads the voice
    clause_s = statistics.median([(await speak(tts, clause))[0] for _ in range(repeats)])
    firsts, spent, heard, scores, audio_s = [], 0.0, [], [], 0.0
    for sentence in sentences:
        runs = [await speak(tts, sentence) for _ in range(repeats)]
        firsts.append(statistics.median(first for first, _, _ in runs))
        spent += sum(total for _, total, _ in runs)
        audio_s += repeats * len(runs[0][2]) / RATE
        samples = runs[0][2]
        if options.language == "en":
            heard.append((await asyncio.to_thread(whisper.transcribe, samples)).text)
        if dnsmos is not None:
            scores.append(float(dnsmos(samples.astype(np.float32) / 32768, RATE)["p808_mos"]))
    row: dict[str, Any] = {
        "first_clause_s": round(clause_s, 3),
        "sentence_s": round(statistics.median(firsts), 3),
        "rtf": round(spent / audio_s, 3),
        "wer": None,
        "dnsmos_p808": round(statistics.mean(scores), 2) if scores else None,
    }
    if heard:
        said = [words(speakable(text, "en")) for text in (*sentences, *heard)]
        row["wer"] = round(jiwer.wer(said[: len(sentences)], said[len(sentences) :]), 3)
        row["heard"] = heard
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    whisper = FasterWhisperSTT()
    whisper.load()
    dnsmos, why = dnsmos_scorer()
    report = {name: asyncio.run(measure(name, args.repeats, whisper, dnsmos)) for name in VOICES}
    print(COLUMNS.format("voice", "first clause s", "sentence s", "RTF", "WER", "DNSMOS"))
    for name, row in report.items():
        figures = [f"{row[key]:.3f}" for key in ("first_clause_s", "sentence_s", "rtf")]
        wer = "n/a" if row["wer"] is None else f"{row['wer']:.3f}"
        mos = "n/a" if row["dnsmos_p808"] is None else f"{row['dnsmos_p808']:.2f}"
        print(COLUMNS.format(name, *figures, wer, mos))
    if why:
        print(f"DNSMOS n/a: {why}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

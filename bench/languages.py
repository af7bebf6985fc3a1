"""The lite engine's multilingual mode: which language each turn is heard in, how well, and how
fast, on real speech in five languages.

    .venv/bin/python bench/languages.py [--repeats N] [--json PATH]

The bundled multilingual Whisper base, telling each clip's language apart, against the default
tiny.en (English only), same run. Clips: dictee_fr.aiff and zh.flac whole (their reference
transcripts are known: word error rate for French, character error rate for Chinese), jfk.flac
as the English control, and the utterances of speech60_de/es/ru.wav as the VAD cuts them (no
reference: the share heard in the right language). Times are the median of ``--repeats`` runs.

Then the voice's side: which language each of 26 short replies in Phi-4-multimodal's eight
speech languages is told to be (py3langid among the call profile's languages), and what the
ones too short to tell are left to (the caller's language).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import jiwer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engines.lite.stt import FasterWhisperOptions, FasterWhisperSTT  # noqa: E402
from agent.profile import load_profile  # noqa: E402
from audio import load_audio  # noqa: E402
from audio.language import TextLanguage  # noqa: E402
from audio.segmenter import speech_bounds  # noqa: E402
from bench.stt import timed  # noqa: E402
from tests.conftest import SHARED_AUDIO  # noqa: E402

RATE = 16000
REFERENCES = {
    "dictee_fr.aiff": ("fr", "c'est la dictée numéro un"),
    "zh.flac": ("zh", "砸自己的脚"),
    "jfk.flac": (
        "en",
        "and so my fellow americans ask not what your country can do for you "
        "ask what you can do for your country",
    ),
}
UTTERANCES = {"speech60_de.wav": "de", "speech60_es.wav": "es", "speech60_ru.wav": "ru"}
DIGITS_FR = {"1": "un", "2": "deux", "3": "trois"}
REPLIES = {
    "en": ["Sure, I can help you with that.", "It is ten past three.", "OK.", "Goodbye!",
           "Hello, thanks for calling. How can I help?"],
    "de": ["Es ist zehn nach drei.", "Natürlich, dabei kann ich Ihnen helfen.",
           "Auf Wiedersehen!", "Ja."],
    "fr": ["Il est trois heures dix.", "Bien sûr, je peux vous aider.", "Au revoir !", "Oui."],
    "es": ["Son las tres y diez.", "Claro, puedo ayudarte con eso.", "¡Adiós!", "Sí."],
    "zh": ["现在是三点十分。", "当然，我可以帮你。", "再见！"],
    "it": ["Sono le tre e dieci.", "Certo, posso aiutarti."],
    "pt": ["São três e dez.", "Claro, posso ajudar você com isso."],
    "ja": ["三時十分です。", "もちろん、お手伝いできます。"],
}  # fmt: skip


def normalised(text: str, language: str) -> str:
    if language == "zh":
        return "".join(re.findall(r"[\u4e00-\u9fff]", text))
    text = re.sub(r"\b\d\b", lambda m: DIGITS_FR.get(m.group(0), m.group(0)), text.lower())
    return " ".join(re.sub(r"[^\w' ]", " ", text).split())


def error_rate(reference: str, heard: str, language: str) -> float:
    truth, said = normalised(reference, language), normalised(heard, language) or "-"
    if language == "zh":
        return float(jiwer.cer(truth, said))
    return float(jiwer.wer(truth, said))


def replies(repeats: int) -> dict[str, Any]:
    """Each reply's language as the voice tells it; None: too short to tell."""
    told = TextLanguage(tuple(load_profile("call").voice.languages))
    rows = []
    for language, sentences in REPLIES.items():
        for text in sentences:
            found, seconds = timed(told.of, text, repeats)
            rows.append({"text": text, "language": language, "told": found, "s": seconds})
            print(f"reply {language}: told {found or '(unclear)'} {text!r}", flush=True)
    summary = {
        "replies": len(rows),
        "right": sum(r["told"] == r["language"] for r in rows),
        "wrong": sum(r["told"] not in (None, r["language"]) for r in rows),
        "unclear": [r["text"] for r in rows if r["told"] is None],
        "median_ms": round(statistics.median(r["s"] for r in rows) * 1000, 3),
    }
    print(json.dumps(summary, ensure_ascii=False))
    return {"summary": summary, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    base = FasterWhisperSTT(FasterWhisperOptions(model="base", language=""))
    tiny = FasterWhisperSTT(FasterWhisperOptions(model="tiny.en"))
    base.load()
    tiny.load()
    report: dict[str, Any] = {"clips": {}, "utterances": {}}
    for name, (language, reference) in REFERENCES.items():
        samples = load_audio(SHARED_AUDIO / name, RATE)
        heard, seconds = timed(base.transcribe, samples, args.repeats)
        _, tiny_seconds = timed(tiny.transcribe, samples, args.repeats)
        row = {
            "audio_s": round(len(samples) / RATE, 2),
            "language": heard.language,
            "error_rate": round(error_rate(reference, heard.text, language), 3),
            "measure": "cer" if language == "zh" else "wer",
            "base_s": round(seconds, 3),
            "tiny_en_s": round(tiny_seconds, 3),
            "text": heard.text,
        }
        report["clips"][name] = row
        print(
            f"{name:<16} heard as {heard.language}, {row['measure']} {row['error_rate']:.2f}, "
            f"{seconds:.3f} s (tiny.en {tiny_seconds:.3f} s): {heard.text!r}",
            flush=True,
        )
    for name, language in UTTERANCES.items():
        samples = load_audio(SHARED_AUDIO / name, RATE)
        pieces = [samples[a : b + 1] for a, b in speech_bounds(samples) if b - a > RATE // 2]
        results = [timed(base.transcribe, piece, args.repeats) for piece in pieces]
        right = [heard.language == language for heard, _ in results]
        row = {
            "utterances": len(pieces),
            "right_language": sum(right),
            "median_s": round(statistics.median(s for _, s in results), 3),
            "heard_as": [heard.language for heard, _ in results],
        }
        report["utterances"][name] = row
        print(
            f"{name:<16} {sum(right)}/{len(pieces)} utterances heard as {language}, "
            f"median {row['median_s']:.3f} s",
            flush=True,
        )
    report["replies"] = replies(args.repeats)
    clips = report["clips"].values()
    report["total"] = {
        "base_vs_tiny_en_time": round(
            sum(r["base_s"] for r in clips) / sum(r["tiny_en_s"] for r in clips), 2
        ),
        "right_language_utterances": [
            sum(r["right_language"] for r in report["utterances"].values()),
            sum(r["utterances"] for r in report["utterances"].values()),
        ],
    }
    print(json.dumps(report["total"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""The benchmarks keep running: each prints its figures and writes them as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from agent.models import BUNDLED_LLMS
from tests.conftest import REPO, SHARED_AUDIO, isolated

WITHOUT_THE_AGENTS_PACKAGES = """
import runpy, sys
for name in ("livekit", "llama_cpp", "faster_whisper", "av", "aiortc"):
    sys.modules[name] = None  # importing it fails, as where it is not installed
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def bench(*args: str, tmp_path, python: tuple[str, ...] = (sys.executable,)) -> dict:
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [*python, *args, "--json", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def test_phi4mm_cpu_bench_splits_a_turn(tmp_path):
    figures = bench("bench/phi4mm.py", "cpu", "--turns", "2", tmp_path=tmp_path)
    assert figures["turns"] == 2 and figures["audio_tokens"] == 63  # 5 s at 12.5 tokens/s
    parts = figures["features_s"] + figures["encode_prefill_s"] + figures["first_token_s"]
    assert abs(figures["ttft_s"] - parts) < 1e-3 and figures["decode_tokens_per_s"] > 0


def test_the_gpu_bench_runs_on_a_miniature_config_with_none_of_the_agents_own_packages(tmp_path):
    """A GPU machine is often a stock PyTorch image: LiveKit and the lite engine's
    runtimes are not there, and the bench must not need them."""
    figures = bench(
        "bench/phi4mm.py",
        "gpu",
        "--smoke",
        "--speech",
        str(SHARED_AUDIO / "speech60_en.wav"),
        tmp_path=tmp_path,
        python=(sys.executable, "-c", WITHOUT_THE_AGENTS_PACKAGES),
    )
    assert {"context_64", "context_256"} <= set(figures)
    assert figures["context_256"]["ttft_s"] > 0
    assert figures["context_256"]["adapter_switch_s"] > 0, "the other adapter's rebuild is timed"
    assert figures["context_64"]["turn_vs_shortest"] == 1
    assert figures["context_256"]["turn_vs_shortest"] > 0, "the 1.5x target is read off here"


def test_the_context_bench_times_reuse_against_recompute_and_trims_a_long_run(tmp_path):
    figures = bench(
        "bench/context.py",
        "--lengths",
        "512,2048",
        "--minutes",
        "2",
        "--window",
        "3000",
        tmp_path=tmp_path,
    )
    short, long = figures["by_history"]
    assert 512 <= short["history_tokens"] < 2048 <= long["history_tokens"]
    assert long["turn_recomputed_s"] > long["turn_reused_s"] > 0
    stages = [long[f"reused_{stage}_s"] for stage in ("window", "to_text", "rest")]
    assert all(s > 0 for s in stages) and sum(stages) <= 1.5 * long["turn_reused_s"]
    run = figures["simulated"]
    assert run["turns"] == 20 and run["trims"], "a 3,000-token window fills within 2 minutes"
    assert run["peak_tokens"] + 24 <= 0.8 * 3000 and run["trims"][0]["images"] >= 1


def test_the_soak_bench_samples_memory_through_a_kiosk_conversation(tmp_path):
    figures = bench(
        "bench/soak.py", "--minutes", "1.5", "--speed", "4", "--warmup", "0", tmp_path=tmp_path
    )
    assert figures["counts"]["user_turn"] >= 2 and figures["mqtt_events_seen"] > 0
    assert len(figures["rss_mb"]) >= 1 and all(rss > 100 for _, rss in figures["rss_mb"])
    assert figures["counts"]["error"] >= 1, "the dashboard's junk command was refused and logged"


def test_the_webrtc_bench_times_both_transports_on_one_question(tmp_path):
    out = tmp_path / "figures.json"
    command = f"{sys.executable} bench/webrtc.py --rounds 1 --sessions 1 --json {out}"
    subprocess.run(isolated(command), cwd=REPO, check=True, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    assert figures["run-file"]["answered"] == figures["webrtc x1 played"]["answered"] == 1
    arrived, played = figures["webrtc x1 arrived"], figures["webrtc x1 played"]
    assert 0 < arrived["median_s"] <= played["median_s"] < 10, "audio plays after it arrives"


def test_the_sip_bench_times_a_phone_call_against_run_file_on_one_question(tmp_path):
    out = tmp_path / "figures.json"
    command = [sys.executable, "bench/sip.py", "--rounds", "1", "--json", str(out)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    assert figures["run-file"]["answered"] == figures["sip"]["answered"] == 1
    assert 0 < figures["sip"]["median_s"] < 10


def test_the_calls_bench_answers_simultaneous_phone_calls_on_one_server(tmp_path):
    out = tmp_path / "figures.json"
    command = [sys.executable, "bench/calls.py", "--calls", "2", "--json", str(out)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    row = figures["2"]
    assert row["answered"] == 2 and 0 < row["e2e_median_s"] < 10
    assert row["packets"] > 100 and row["server_cpu_percent"] > 0
    held = 2 if row["e2e_p90_s"] < 1.5 else 0
    assert figures["calls_per_core"] == held / figures["cores"], "what the last line says"


def test_the_stt_bench_compares_the_short_window_with_the_full_one(tmp_path):
    figures = bench("bench/stt.py", "--repeats", "1", "--pause", "0.15", tmp_path=tmp_path)
    assert figures["total"]["clips"] >= 20
    [early] = figures["early"]
    assert early["utterances"] >= 20 and early["differing"] <= early["utterances"] // 4
    assert figures["total"]["jfk.flac wer window/full"][0] <= 0.1
    assert all(clip["window_s"] > 0 and clip["full_s"] > 0 for clip in figures["clips"])


def test_the_llm_bench_times_both_runtimes_on_the_same_requests(tmp_path):
    figures = bench("bench/llm.py", "--requests", "3", tmp_path=tmp_path)
    for runtime in ("llama.cpp", "transformers"):
        assert figures[runtime]["requests"] == 2, "the warm-up request is left out"
        assert figures[runtime]["first_token_s"] > 0 and figures[runtime]["decode_tokens_per_s"] > 0


def test_the_tool_bench_scores_each_shipped_model_on_the_same_requests(tmp_path):
    figures = bench("bench/tools.py", "--requests", "2", tmp_path=tmp_path)
    shipped = {"Qwen2.5-Coder-0.5B-Instruct", "SmolLM2-135M-Instruct"}
    assert shipped <= set(figures) <= set(BUNDLED_LLMS), "the 1.5B where it is installed"
    qwen = figures["Qwen2.5-Coder-0.5B-Instruct"]
    assert qwen["requests"] == 2 and qwen["calls_correct"] == 2, "both ask the time: get_time"
    assert qwen["chat_requests"] == 2 and 0 <= qwen["chat_without_calls"] <= 2
    assert [o["called"] for o in qwen["outcomes"]][:2] == ["get_time", "get_time"]
    assert len(qwen["outcomes_after_small_talk"]) == 4, "each request also after small talk"


def test_the_language_bench_scores_the_multilingual_recognizer(tmp_path):
    figures = bench("bench/languages.py", "--repeats", "1", tmp_path=tmp_path)
    assert figures["clips"]["dictee_fr.aiff"]["language"] == "fr"
    assert all(row["base_s"] > 0 and row["tiny_en_s"] > 0 for row in figures["clips"].values())
    right, total = figures["total"]["right_language_utterances"]
    assert total >= 20 and right <= total


def test_the_quality_bench_scores_each_turn_of_a_spoken_conversation(tmp_path):
    out = tmp_path / "figures.json"
    command = f"{sys.executable} bench/quality.py --smoke --speed 2 --out {tmp_path} --json {out}"
    run = subprocess.run(command.split(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "desktop profile (Qwen2.5-Coder-" in run.stdout, run.stdout
    assert "e2e median" in run.stdout, run.stdout
    figures = json.loads(out.read_text())
    assert len(figures["turns"]) == figures["profiles"]["desktop"]["turns"] == 3
    fields = {"right", "replied", "facts", "tool", "false_call", "admitted", "repeat", "brief"}
    for turn in figures["turns"]:
        assert fields <= set(turn["scores"]), turn  # a turn the scorer could not read lacks them
        assert {"heard", "reply", "tools", "e2e_s"} <= set(turn)


def test_the_quality_bench_scores_a_callers_language_typed_and_over_the_phone(tmp_path):
    """The call profile asked in German: typed (the answer alone), then spoken at 8 kHz with
    the first words said over the greeting; each reply's language is scored."""
    for mode in ("--typed", "--phone"):
        out = tmp_path / f"figures{mode}.json"
        command = (
            f"{sys.executable} bench/quality.py --languages de --smoke {mode} --speed 2 "
            f"--out {tmp_path / mode} --json {out}"
        )
        run = subprocess.run(command.split(), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "replies in the turn's language" in run.stdout, run.stdout
        figures = json.loads(out.read_text())
        german = figures["profiles"]["call-de"]
        assert german["turns"] == 4 and german["over_greeting_lost"][1] == 1, german
        assert all(turn["language"] == "de" for turn in figures["turns"])
        assert all("language" in turn["scores"] for turn in figures["turns"]), figures["turns"]
    typed = json.loads((tmp_path / "figures--typed.json").read_text())["turns"]
    assert all(turn["heard_ratio"] == 1.0 for turn in typed), "typed turns are heard as typed"
    assert typed[1]["tools"] and typed[1]["tools"][0]["name"] == "get_time", typed[1]
    assert typed[1]["reply"].startswith("Es ist "), "the clock answers in German"


def test_vad_bench_hears_speech_through_a_dc_offset_and_white_noise(tmp_path):
    figures = bench("bench/vad.py", "--recordings", "one_two_three_en.wav", tmp_path=tmp_path)
    for condition in ("dc 0.5", "white 5 dB", "white 0 dB"):
        ours = figures[condition]["+ denoise"]
        assert ours["utterances"] == 1.0 and ours["alone"] == 0 == ours["false"], condition
    assert figures["dc 0.5"]["webrtcvad"]["utterances"] == 1.0, "the offset is removed by default"
    assert set(figures["babble 5 dB"]) == {"webrtcvad", "+ high-pass", "+ denoise", "silero"}


def test_addressing_bench_counts_false_replies_and_answered_requests(tmp_path):
    figures = bench("bench/addressing.py", "--quick", tmp_path=tmp_path)
    assert figures["nearby"]["ignored"] >= 1 and figures["nearby"]["false_replies"] == 0
    addressed = figures["addressed"]
    assert addressed["requests"] == 2 and addressed["answered_always"] == 2, addressed
    assert addressed["answered"] >= 1 and addressed["phrase_adds_s"] is not None, addressed

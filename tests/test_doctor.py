"""``voice-agent doctor`` tells a user, one line a check, what their machine lacks and how to
get it; it exits 1 when the agent cannot run as asked."""

from __future__ import annotations

import socket

from tests.conftest import free_port, voice_agent


def lines_of(stdout: str) -> dict[str, str]:
    """Each check's line, by its name."""
    found = {}
    for line in stdout.splitlines():
        status, name = line[:5].strip(), line[6:34].strip()
        found[name] = f"{status} {line[35:]}"
    return found


def test_a_machine_set_up_as_the_readme_says_passes_every_needed_check():
    result = voice_agent("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = lines_of(result.stdout)
    for name in ("python", "espeak-ng", "llama.cpp", "recognizer tiny.en", "recognizer base",
                 "Qwen2.5-Coder-0.5B-Instruct", "Smart Turn (end of turn)",
                 "Piper voice (English)", "port 8080/tcp"):  # fmt: skip
        assert name in checks and checks[name].startswith("ok "), (name, result.stdout)
    assert all(line.split()[0] in ("ok", "note") for line in result.stdout.splitlines())
    assert "Traceback" not in result.stderr


def test_what_the_profile_needs_and_lacks_fails_with_its_fix(tmp_path):
    absent_broker = free_port()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = voice_agent(
            "doctor", "--engine", "phi4mm", "--port", str(port),
            "--mqtt", f"mqtt://127.0.0.1:{absent_broker}",
            env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")},
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    checks = lines_of(result.stdout)
    assert checks["Phi-4-multimodal weights"].startswith("FAIL "), result.stdout
    assert (
        "voice-agent download-model --model microsoft/Phi-4-multimodal-instruct"
        in (checks["Phi-4-multimodal weights"])
    )
    assert checks["mqtt broker"].startswith(f"FAIL nothing answers at 127.0.0.1:{absent_broker}")
    assert "start the broker" in checks["mqtt broker"]
    assert checks[f"port {port}/tcp"].startswith("FAIL taken"), result.stdout
    assert "Traceback" not in result.stderr

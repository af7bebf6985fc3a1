"""Profiles configure a whole session from one TOML file; mistakes are reported, not guessed."""

from __future__ import annotations

import pytest

from agent.profile import ProfileError, load_profile
from agent.session import SessionFactory
from prompts import PromptError, load_prompt


def test_the_desktop_profile_sets_every_turn_taking_option():
    profile = load_profile("desktop")
    assert profile.engine == "lite" and {"get_time", "calculate", "set_timer"} <= set(profile.tools)
    assert profile.vad.min_silence_s == 0.3 and profile.endpointing.turn_detector == "smart-turn"
    assert (profile.endpointing.min_delay, profile.endpointing.max_delay) == (0.3, 1.5)
    assert profile.interruption.enabled and profile.voice.language == "en"
    assert "voice assistant" in load_prompt(profile.prompt)


def test_a_profile_file_can_override_any_part(tmp_path):
    path = tmp_path / "quick.toml"
    path.write_text('name = "quick"\nprompt = "desktop"\n[endpointing]\nmin_delay = 0.2\n')
    profile = load_profile(str(path))
    assert profile.endpointing.min_delay == 0.2 and profile.vad.aggressiveness == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "x"\nprompt = "desktop"\nspeed = 3\n', "speed: Extra inputs are not permitted"),
        ('name = "x"\nprompt = "desktop"\nengine = "cloud"\n', "engine"),
        ('name = "x"\nprompt = "desktop"\n[vad]\nframe_ms = 25\n', "vad.frame_ms"),
        ('name = "x"\nprompt = \n', "not valid TOML"),
        ('name = "x"\nprompt = "desktop"\n[endpointing]\nmin_delay = inf\n', "finite number"),
        ('name = "x"\nprompt = "desktop"\n[endpointing]\nturn_detector = "ml"\n', "turn_detector"),
        ('name = "x"\nprompt = "desktop"\n[vad]\nmin_silence_s = nan\n', "finite number"),
        ('name = "x"\nprompt = "desktop"\n[endpointing]\nmax_delay = 1e9\n', "less than or"),
        ('name = "x"\n', "either prompt"),
        ('name = "x"\nprompt = "desktop"\nprompt_file = "a.txt"\n', "either prompt"),
        (
            'name = "x"\nprompt = "desktop"\n[lite]\nstt_languages = ["en", "xx"]\n',
            "no language 'xx'",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-engine",
        "bad-value",
        "bad-toml",
        "infinite",
        "unknown-turn-detector",
        "not-a-number",
        "out-of-range",
        "no-prompt",
        "two-prompts",
        "unknown-heard-language",
    ],
)
def test_mistakes_in_a_profile_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(str(path))


def test_unknown_profiles_and_prompts_list_the_built_in_ones():
    with pytest.raises(ProfileError, match="built-in: call, desktop, interpreter, kiosk"):
        load_profile("kitchen")
    with pytest.raises(PromptError, match="built-in: call, desktop, interpreter, kiosk"):
        load_prompt("kitchen")


def test_a_prompt_string_is_the_prompt_and_a_prompt_file_a_path(tmp_path):
    text = "You are a patient guide in a museum. " * 10  # 370 characters: never a file name
    (tmp_path / "inline.toml").write_text(f'name = "inline"\nprompt = "{text}"\n')
    assert load_profile(str(tmp_path / "inline.toml")).instructions() == text.strip()
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "museum.txt").write_text("Speak softly.\n")
    (tmp_path / "file.toml").write_text('name = "file"\nprompt_file = "prompts/museum.txt"\n')
    assert load_profile(str(tmp_path / "file.toml")).instructions() == "Speak softly."
    with pytest.raises(PromptError, match="a file goes in prompt_file"):
        load_prompt("museum.txt")  # a file name in `prompt` is refused, not guessed at


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"\xff\xfe", "not UTF-8"), (b"a" * (1 << 20 + 1), "too large")],
    ids=["empty", "not-utf8", "over-1MiB"],
)
def test_unusable_prompt_files_are_named(tmp_path, content, message):
    (tmp_path / "p.txt").write_bytes(content)
    (tmp_path / "p.toml").write_text('name = "p"\nprompt_file = "p.txt"\n')
    with pytest.raises(PromptError, match=message):
        load_profile(str(tmp_path / "p.toml")).instructions()
    (tmp_path / "p.txt").unlink()
    with pytest.raises(PromptError, match="no such prompt file"):
        load_profile(str(tmp_path / "p.toml")).instructions()


async def test_a_prompt_larger_than_the_model_reads_is_refused_before_it_is_read(tmp_path):
    words = " ".join(["museum", "guide", "lamp", "door"] * 12_000)  # ~48,000 tokens
    (tmp_path / "big.txt").write_text(words)
    (tmp_path / "big.toml").write_text('name = "big"\nprompt_file = "big.txt"\n')
    with pytest.raises(ProfileError, match=r"the prompt and tools are [\d,]+ tokens.*32,768"):
        await SessionFactory.load(load_profile(str(tmp_path / "big.toml")))


def test_the_lines_a_profile_scripts_are_its_greeting_a_timed_calls_goodbye_and_a_reminder():
    call = load_profile("call")
    assert call.scripted_lines() == (call.greeting, call.call.goodbye)
    assert load_profile("desktop").scripted_lines() == ()
    kiosk = load_profile("kiosk")
    assert kiosk.scripted_lines() == (kiosk.lite.tool_reminder,), "its model is told it"

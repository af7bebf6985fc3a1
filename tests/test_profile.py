"""Profiles configure a whole session from one TOML file; mistakes are reported, not guessed."""

from __future__ import annotations

import pytest

from agent.profile import ProfileError, load_profile
from prompts import PromptNotFoundError, load_prompt


def test_the_desktop_profile_sets_every_turn_taking_option():
    profile = load_profile("desktop")
    assert profile.engine == "lite" and profile.tools == ["get_time"]
    assert profile.vad.min_silence_s == 0.3 and profile.endpointing.min_delay == 0.5
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
    ],
    ids=["unknown-key", "unknown-engine", "bad-value", "bad-toml"],
)
def test_mistakes_in_a_profile_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(str(path))


def test_unknown_profiles_and_prompts_list_the_built_in_ones():
    with pytest.raises(ProfileError, match="built-in: desktop"):
        load_profile("kitchen")
    with pytest.raises(PromptNotFoundError, match="built-in: desktop"):
        load_prompt("kitchen")

"""Every recording users may hand us decodes to the agent's PCM; bad files are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from audio import AudioDecodeError, load_audio
from tests.conftest import SHARED_AUDIO

# lengths from shared/audio/README.md
EXPECTED_SECONDS = {
    "jfk.flac": 11.0,
    "one_two_three_en.wav": 2.7,
    "dictee_fr.aiff": 2.5,
    "zh.flac": 1.0,
    "speech60_en.wav": 60.0,
    "speech60_de.wav": 60.0,
    "speech60_es.wav": 60.0,
    "speech60_ru.wav": 60.0,
    "en_num.wav": 12.0,
}


def test_the_shared_folder_holds_every_listed_recording():
    on_disk = {p.name for p in SHARED_AUDIO.iterdir() if p.name != "README.md"}
    assert on_disk == set(EXPECTED_SECONDS)


@pytest.mark.parametrize("name", sorted(EXPECTED_SECONDS))
@pytest.mark.parametrize("rate", [16000, 24000])
def test_every_format_loads_as_mono_pcm_at_the_rate_asked(name, rate):
    samples = load_audio(SHARED_AUDIO / name, rate)
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert len(samples) / rate == pytest.approx(EXPECTED_SECONDS[name], abs=0.1)
    assert np.abs(samples).max() > 1000, "speech should be audible after conversion"


def test_stereo_24_bit_input_is_mixed_down_not_dropped():
    mono = load_audio(SHARED_AUDIO / "jfk.flac", 16000).astype(np.float64)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(mono**2)) / 32768)
    assert -40 < rms_dbfs < -6


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"just some notes, not audio\n" * 20, "not a readable audio file"),
        (
            bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
            "not a readable audio file",
        ),
    ],
    ids=["missing", "empty", "text", "random-bytes"],
)
def test_unusable_files_raise_one_clear_message(tmp_path, content, message):
    path = tmp_path / "input.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=message) as error:
        load_audio(path, 16000)
    assert "\n" not in str(error.value)

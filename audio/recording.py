"""A phone call's recording: one stereo WAV, the caller left and the agent right, written as the
call goes.

The agent's side keeps time: the call's RTP clock sends one frame every 20 ms for the whole call
(silence included), and each frame it sends takes as many of the caller's samples beside it.
The caller's packets come with jitter, so a few frames of theirs may wait; what a silent or
late caller did not send is silence. libsndfile rewrites the WAV header after every block, so a
server killed mid-call leaves a file any player reads, complete to its last second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

BLOCK_S = 1.0
"""Written (and the header rewritten) this often: what a crash may lose."""
MAX_CALLER_WAIT_S = 0.2
"""The caller's audio waiting beyond this (their clock runs fast) is dropped, oldest first,
so the two sides stay in step."""
_SFC_SET_UPDATE_HEADER_AUTO = 0x1061  # libsndfile's sndfile.h; soundfile has no wrapper for it


class CallRecording:
    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = path
        self.rate = sample_rate
        self._file = sf.SoundFile(path, "w", sample_rate, 2, subtype="PCM_16", format="WAV")
        sf._snd.sf_command(self._file._file, _SFC_SET_UPDATE_HEADER_AUTO, sf._ffi.NULL, 1)
        self._caller = np.zeros(0, np.int16)
        self._block: list[np.ndarray] = []
        self._buffered = 0
        self.frames = 0
        """Written so far, per channel."""

    def heard(self, pcm: bytes) -> None:
        """The caller's audio as it arrived (16-bit mono at the call's rate)."""
        waiting = np.concatenate([self._caller, np.frombuffer(pcm, np.int16)])
        self._caller = waiting[-int(MAX_CALLER_WAIT_S * self.rate) :]

    def sent(self, agent: np.ndarray) -> None:
        """One tick of the call's clock: the agent's frame, and the caller's audio beside it."""
        caller, self._caller = self._caller[: len(agent)], self._caller[len(agent) :]
        caller = np.pad(caller, (0, len(agent) - len(caller)))
        self._block.append(np.stack([caller, agent.astype(np.int16)], axis=1))
        self._buffered += len(agent)
        if self._buffered >= BLOCK_S * self.rate:
            self._write()

    def close(self) -> None:
        """Write what is buffered, the caller's last waiting audio too, and close."""
        if len(self._caller):
            self.sent(np.zeros(len(self._caller), np.int16))
        self._write()
        self._file.close()

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate

    def _write(self) -> None:
        if self._block:
            self._file.write(np.concatenate(self._block))
            self.frames += self._buffered
            self._block, self._buffered = [], 0

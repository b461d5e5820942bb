"""Shared helpers of the recording tests: reading the stereo WAV and measuring it, and a small
tmpfs to fill up."""

from __future__ import annotations

import contextlib
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def read_stereo(path: Path | str) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return data, rate


def freq_of(x: np.ndarray, rate: int) -> float:
    """The dominant frequency of ``x`` (Hz)."""
    x = x.astype(float)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spec[0] = 0
    return float(np.argmax(spec) * rate / len(x))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(float) ** 2))) if len(x) else 0.0


def longest_silence(stereo: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run where both channels are exactly 0."""
    quiet = np.concatenate([[False], (stereo == 0).all(axis=1), [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    if not len(starts):
        return 0, 0
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i] - starts[i])


@contextlib.contextmanager
def small_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"64k"``) mounted at ``tmp_path / "small"`` for the block, then
    unmounted lazily (even with a file left open)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, timeout=10, check=False)
    assert r.returncode == 0, r.stderr  # the suite runs as root (CI and the dev container)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], timeout=10, check=False)

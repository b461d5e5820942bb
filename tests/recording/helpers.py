"""Shared helpers of the recording tests: reading the stereo WAV and measuring it."""

from __future__ import annotations

import wave
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

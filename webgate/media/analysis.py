"""Measurements on PCM (to check that audio really arrived) and WAV file I/O."""

from __future__ import annotations

import math
import os
import wave

import numpy as np
import numpy.typing as npt

from webgate.media.audio import PCM, as_pcm

__all__ = ["dominant_frequency", "read_wav", "rms_dbfs", "write_wav"]


def dominant_frequency(pcm: PCM, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, ignoring DC.

    Hann window, zero-padded FFT and parabolic interpolation of the log
    magnitude around the peak: accurate to a fraction of a Hz for a clean tone
    of a few hundred milliseconds.  Returns ``0.0`` for silence or too-short input.
    """
    x = np.asarray(pcm, dtype=np.float64).reshape(-1)
    if len(x) < 4 or not np.any(x):
        return 0.0
    x = x - x.mean()
    n_fft = 1 << max(12, math.ceil(math.log2(len(x))) + 1)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n_fft))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    if spectrum[k] <= 0.0:
        return 0.0
    offset = 0.0
    if 0 < k < len(spectrum) - 1 and spectrum[k - 1] > 0 and spectrum[k + 1] > 0:
        a, b, c = np.log(spectrum[k - 1 : k + 2])
        denom = a - 2.0 * b + c
        if denom != 0.0:
            offset = 0.5 * (a - c) / denom
    return float((k + offset) * sample_rate / n_fft)


def rms_dbfs(pcm: PCM) -> float:
    """RMS level relative to a full-scale square wave (0 dBFS); ``-inf`` for silence.

    A full-scale sine measures about -3 dBFS.
    """
    x = np.asarray(pcm, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        return float("-inf")
    rms = math.sqrt(float(np.mean(x * x)))
    if rms == 0.0:
        return float("-inf")
    return 20.0 * math.log10(rms / 32768.0)


def read_wav(path: str | os.PathLike[str]) -> tuple[PCM, int]:
    """Read a PCM WAV file (8/16/24/32-bit integer) as int16 mono (channels averaged)."""
    with wave.open(os.fspath(path), "rb") as w:
        channels = w.getnchannels()
        width = w.getsampwidth()
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    data: npt.NDArray[np.int32]
    if width == 1:
        data = np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128 << 8
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = np.where(v >= 1 << 23, v - (1 << 24), v) >> 8
    elif width == 4:
        data = (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.int32)
    else:
        raise ValueError(f"unsupported WAV sample width {width}")
    if channels > 1:
        usable = len(data) - len(data) % channels
        data = np.rint(data[:usable].reshape(-1, channels).mean(axis=1)).astype(
            np.int32
        )
    return as_pcm(data), rate


def write_wav(path: str | os.PathLike[str], pcm: PCM, rate: int) -> None:
    """Write int16 mono PCM as a 16-bit WAV file."""
    samples = as_pcm(pcm).astype("<i2")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())

"""dominant_frequency, rms_dbfs, WAV I/O."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.media.conftest import tone
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs, write_wav


@pytest.mark.parametrize(
    ("freq", "rate"), [(1000.0, 8000), (123.4, 8000), (3500.0, 8000), (7000.0, 48000)]
)
def test_dominant_frequency(freq: float, rate: int) -> None:
    assert dominant_frequency(tone(freq, rate, 0.5), rate) == pytest.approx(
        freq, rel=0.002
    )


def test_dominant_frequency_picks_strongest(rng: np.random.Generator) -> None:
    x = tone(600.0, 16000, 0.5, 0.1).astype(np.float64) + tone(2500.0, 16000, 0.5, 0.4)
    x += rng.normal(0, 500, len(x))
    assert dominant_frequency(x.astype(np.int16), 16000) == pytest.approx(
        2500.0, rel=0.002
    )
    assert dominant_frequency(np.zeros(100, np.int16), 8000) == 0.0
    assert dominant_frequency(np.zeros(0, np.int16), 8000) == 0.0


def test_rms_dbfs() -> None:
    assert rms_dbfs(np.full(100, 32767, np.int16)) == pytest.approx(0.0, abs=0.01)
    assert rms_dbfs(tone(1000.0, 8000, 1.0, 1.0)) == pytest.approx(-3.01, abs=0.05)
    assert rms_dbfs(tone(1000.0, 8000, 1.0, 0.1)) == pytest.approx(-23.01, abs=0.05)
    assert rms_dbfs(np.zeros(10, np.int16)) == -math.inf
    assert rms_dbfs(np.zeros(0, np.int16)) == -math.inf


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = tone(440.0, 16000, 0.3)
    path = tmp_path / "a.wav"
    write_wav(path, pcm, 16000)
    back, rate = read_wav(path)
    assert rate == 16000
    assert back.dtype == np.int16
    assert np.array_equal(back, pcm)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_downmixes_and_converts_widths(tmp_path: Path, width: int) -> None:
    left = np.array([1000, -2000, 30000], np.int32)
    right = np.array([3000, -4000, 30000], np.int32)
    scale = {1: 8, 2: 0, 3: -8, 4: -16}[width]
    inter = np.stack([left, right], axis=1).reshape(-1)
    if width == 1:
        raw = ((inter >> 8) + 128).astype(np.uint8).tobytes()
    elif width == 3:
        v = (inter << 16).astype("<i4").tobytes()  # top 3 bytes = 24-bit sample
        raw = b"".join(v[i + 1 : i + 4] for i in range(0, len(v), 4))
    else:
        raw = (inter << -scale if scale < 0 else inter).astype(f"<i{width}").tobytes()
    path = tmp_path / f"w{width}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(width)
        w.setframerate(8000)
        w.writeframes(raw)
    pcm, rate = read_wav(path)
    assert rate == 8000
    tol = 256 if width == 1 else 1
    assert np.abs(pcm.astype(np.int32) - np.array([2000, -3000, 30000])).max() <= tol

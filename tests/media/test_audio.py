"""Framer, resampler, mix/gain."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.media.conftest import tone
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.audio import (
    Framer,
    Resampler,
    apply_gain,
    as_pcm,
    db_to_gain,
    mix,
    silence,
)

RATE_PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
    (44100, 48000),
    (48000, 44100),
    (22050, 16000),
]


def test_framer_rechunks() -> None:
    f = Framer(160)
    assert f.push(np.arange(100, dtype=np.int16)) == []
    assert f.pending == 100
    frames = f.push(np.arange(100, 400, dtype=np.int16))
    assert [len(x) for x in frames] == [160, 160]
    assert np.array_equal(np.concatenate(frames), np.arange(320, dtype=np.int16))
    assert f.pending == 80
    tail = f.flush()
    assert len(tail) == 1 and len(tail[0]) == 160
    assert np.array_equal(tail[0][:80], np.arange(320, 400, dtype=np.int16))
    assert not tail[0][80:].any()
    assert f.pending == 0 and f.flush() == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 700), max_size=30), st.integers(1, 400))
def test_framer_preserves_samples(sizes: list[int], frame: int) -> None:
    f = Framer(frame)
    total = sum(sizes)
    data = (np.arange(total) % 30000).astype(np.int16)
    out: list[np.ndarray] = []
    pos = 0
    for s in sizes:
        out.extend(f.push(data[pos : pos + s]))
        pos += s
    assert all(len(x) == frame for x in out)
    joined = np.concatenate(out) if out else silence(0)
    assert np.array_equal(joined, data[: len(joined)])
    assert len(joined) + f.pending == total


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_resampler_keeps_frequency_and_length(src: int, dst: int) -> None:
    pcm = tone(1000.0, src, 1.0)
    r = Resampler(src, dst)
    out = np.concatenate(
        [r.resample(pcm[i : i + src // 50]) for i in range(0, len(pcm), src // 50)]
    )
    assert abs(len(out) - dst) <= 1
    steady = out[int(2 * r.delay_samples) + 2 :]
    assert dominant_frequency(steady, dst) == pytest.approx(1000.0, rel=0.002)
    assert rms_dbfs(steady) == pytest.approx(rms_dbfs(pcm), abs=0.2)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_resampler_chunking_is_seamless(src: int, dst: int) -> None:
    """Frame-by-frame output equals one-shot output: no clicks at frame boundaries."""
    pcm = tone(1000.0, src, 0.5)
    whole = Resampler(src, dst).resample(pcm)
    r = Resampler(src, dst)
    framed = np.concatenate(
        [r.resample(pcm[i : i + src // 50]) for i in range(0, len(pcm), src // 50)]
    )
    r2 = Resampler(src, dst)
    odd = np.concatenate([r2.resample(pcm[i : i + 37]) for i in range(0, len(pcm), 37)])
    assert np.array_equal(whole, framed)
    assert np.array_equal(whole, odd)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(RATE_PAIRS + [(8000, 32000), (32000, 48000), (11025, 8000)]),
    st.lists(st.integers(0, 1500), min_size=1, max_size=12),
    st.integers(0, 2**32 - 1),
)
def test_resampler_output_is_exact_whatever_the_blocks(pair: tuple[int, int], sizes: list[int], seed: int) -> None:
    """Full-scale noise in random block sizes (each BLAS/einsum call sees another shape, so
    another kernel and summation order): bit-identical to one block. The sums are exact
    integers in float64 (audio._COEF_BITS), so no tolerance is needed on any CPU."""
    src, dst = pair
    x = np.random.default_rng(seed).integers(-32768, 32768, sum(sizes), dtype=np.int16)
    whole = Resampler(src, dst).resample(x)
    r = Resampler(src, dst)
    bounds = np.cumsum([0, *sizes])
    parts = [r.resample(x[a:b]) for a, b in itertools.pairwise(bounds)]
    assert np.array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_resampler_matches_ideal_sine(src: int, dst: int) -> None:
    """After the filter delay, the output is the ideal sine to within a few LSB anywhere,
    including every frame boundary."""
    pcm = tone(1000.0, src, 0.5, amplitude=0.5)
    r = Resampler(src, dst)
    out = np.concatenate(
        [r.resample(pcm[i : i + src // 50]) for i in range(0, len(pcm), src // 50)]
    )
    n = np.arange(len(out))
    ideal = 0.5 * 32767 * np.sin(2 * np.pi * 1000.0 * (n - r.delay_samples) / dst)
    start = int(2 * r.delay_samples) + 2
    assert np.abs(out[start:] - ideal[start:]).max() < 8.0
    # Sample-to-sample steps never exceed what the sine itself can do.
    max_step = 0.5 * 32767 * 2 * np.pi * 1000.0 / dst
    assert np.abs(np.diff(out[start:].astype(np.int32))).max() <= max_step + 8


def test_resampler_passthrough_and_empty() -> None:
    r = Resampler(8000, 8000)
    x = tone(440.0, 8000, 0.1)
    assert np.array_equal(r.resample(x), x)
    assert len(Resampler(8000, 16000).resample(silence(0))) == 0
    with pytest.raises(ValueError):
        Resampler(0, 8000)


def test_resampler_rejects_out_of_band_content() -> None:
    """48 kHz -> 8 kHz must filter a 6 kHz tone instead of aliasing it to 2 kHz."""
    pcm = tone(6000.0, 48000, 0.5)
    r = Resampler(48000, 8000)
    out = r.resample(pcm)[100:]
    assert rms_dbfs(out) < rms_dbfs(pcm) - 60


def test_resampler_reset() -> None:
    x = tone(1000.0, 8000, 0.1)
    r = Resampler(8000, 16000)
    first = r.resample(x)
    r.resample(tone(300.0, 8000, 0.05))
    r.reset()
    assert np.array_equal(r.resample(x), first)


def test_mix_and_gain() -> None:
    a = np.array([1000, 30000, -30000], np.int16)
    b = np.array([1000, 10000, -10000, 5], np.int16)
    assert mix(a, b).tolist() == [2000, 32767, -32768, 5]
    assert mix().tolist() == []
    assert apply_gain(a, 0.5).tolist() == [500, 15000, -15000]
    assert apply_gain(a, 2.0).tolist() == [2000, 32767, -32768]
    assert db_to_gain(-6.0) == pytest.approx(0.501, abs=0.001)
    assert as_pcm(np.array([1.4, -40000.0])).tolist() == [1, -32768]

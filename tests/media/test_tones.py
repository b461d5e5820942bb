"""Tone generator and in-band DTMF."""

from __future__ import annotations

import numpy as np
import pytest

from webgate.media.analysis import dominant_frequency
from webgate.media.codecs import create_decoder, create_encoder
from webgate.media.tones import (
    DTMF_DIGITS,
    DtmfDetector,
    ToneGenerator,
    dtmf_sequence,
    dtmf_tone,
)


@pytest.mark.parametrize(
    ("freq", "rate"), [(1000.0, 8000), (440.0, 16000), (1234.5, 48000), (997.0, 8000)]
)
def test_tone_is_continuous_across_frames(freq: float, rate: int) -> None:
    gen = ToneGenerator(freq, rate, 0.5)
    frames = [gen.frame() for _ in range(50)]
    assert all(len(f) == rate // 50 for f in frames)
    joined = np.concatenate(frames).astype(np.float64)
    n = np.arange(len(joined))
    ideal = 0.5 * 32767 * np.sin(2 * np.pi * freq * n / rate)
    assert np.abs(joined - ideal).max() <= 1.0  # same as one long sine: no phase jumps
    assert dominant_frequency(joined.astype(np.int16), rate) == pytest.approx(
        freq, rel=0.001
    )


def test_tone_amplitude_and_odd_sizes() -> None:
    gen = ToneGenerator(1000.0, 8000, 0.25)
    parts = [gen.generate(n) for n in (1, 7, 160, 33, 0)]
    x = np.concatenate(parts)
    assert len(x) == 201
    assert abs(int(np.abs(x).max()) - round(0.25 * 32767)) <= 300
    ref = ToneGenerator(1000.0, 8000, 0.25).generate(201)
    # Chunked, the phase is carried as mod(phase + step*n, 2*pi) instead of step*i: a few ulp of
    # a radian apart, and np.sin's SIMD kernel (AVX2, AVX-512, ...) may differ by an ulp too, so a
    # sample within ~1e-11 of a rounding boundary may round the other way: at most 1 LSB. A phase
    # jump between chunks would be hundreds of LSB (a 1 kHz step at 8 kHz is ~5800 LSB here).
    assert np.abs(x.astype(np.int32) - ref.astype(np.int32)).max() <= 1


def test_dtmf_tone_contains_both_frequencies() -> None:
    x = dtmf_tone("5", 8000, 200).astype(np.float64)
    spec = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    top2 = sorted(freqs[np.argsort(spec)[-2:]])
    assert top2[0] == pytest.approx(770, abs=10)
    assert top2[1] == pytest.approx(1336, abs=10)
    with pytest.raises(ValueError):
        dtmf_tone("x", 8000)


def _detect(pcm: np.ndarray, rate: int, chunk: int) -> str:
    det = DtmfDetector(rate)
    found: list[str] = []
    for i in range(0, len(pcm), chunk):
        found.extend(det.feed(pcm[i : i + chunk]))
    return "".join(found)


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
@pytest.mark.parametrize(("tone_ms", "gap_ms"), [(100, 60), (40, 40)])
def test_detector_finds_every_digit(rate: int, tone_ms: int, gap_ms: int) -> None:
    digits = DTMF_DIGITS + "1199#"
    pcm = dtmf_sequence(digits, rate, tone_ms, gap_ms)
    assert _detect(pcm, rate, rate // 50) == digits


def test_detector_through_g711_with_noise(rng: np.random.Generator) -> None:
    digits = "0123456789*#"
    pcm = dtmf_sequence(digits, 8000, 80, 50, amplitude=0.1)
    noisy = np.clip(pcm + rng.normal(0, 200, len(pcm)), -32768, 32767).astype(np.int16)
    enc, dec = create_encoder("PCMA"), create_decoder("PCMA")
    through = np.concatenate([dec.decode(p) for p in enc.encode(noisy) + enc.flush()])
    assert _detect(through, 8000, 160) == digits


def test_detector_ignores_single_tones_noise_and_quiet(
    rng: np.random.Generator,
) -> None:
    for freq in (440.0, 697.0, 1000.0, 1209.0, 1633.0):
        assert _detect(ToneGenerator(freq, 8000, 0.5).generate(8000), 8000, 160) == ""
    assert _detect(rng.normal(0, 4000, 16000).astype(np.int16), 8000, 160) == ""
    quiet = dtmf_sequence("123", 8000, 100, 60, amplitude=0.002)  # ~ -57 dBFS per tone
    assert _detect(quiet, 8000, 160) == ""


def test_detector_rejects_short_blip() -> None:
    blip = np.concatenate([dtmf_tone("7", 8000, 15), np.zeros(800, np.int16)])
    assert _detect(blip, 8000, 160) == ""


def test_detector_twist_limit() -> None:
    # Column tone 12 dB above the row tone: beyond the +4 dB twist allowance.
    n = np.arange(8000)
    x = 0.05 * np.sin(2 * np.pi * 697 * n / 8000) + 0.2 * np.sin(
        2 * np.pi * 1209 * n / 8000
    )
    assert _detect((x * 32767).astype(np.int16), 8000, 160) == ""

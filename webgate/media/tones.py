"""Tone generation and in-band DTMF (generation and Goertzel detection)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from webgate.media.audio import PCM, silence

__all__ = [
    "DTMF_COLS",
    "DTMF_DIGITS",
    "DTMF_ROWS",
    "DtmfDetector",
    "ToneGenerator",
    "dtmf_sequence",
    "dtmf_tone",
]

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_DIGITS = "".join(_KEYPAD)
_FREQS: dict[str, tuple[float, float]] = {
    _KEYPAD[r][c]: (DTMF_ROWS[r], DTMF_COLS[c]) for r in range(4) for c in range(4)
}


def _to_int16(x: npt.NDArray[np.float64]) -> PCM:
    return np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)


class ToneGenerator:
    """Continuous-phase sine (or sum of sines) generator.

    ``amplitude`` is the peak as a fraction of full scale (0..1) for each
    component.  Consecutive :meth:`generate` calls join without a phase jump.
    """

    def __init__(
        self,
        freq_hz: float | tuple[float, ...],
        sample_rate: int,
        amplitude: float = 0.5,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        freqs = (freq_hz,) if isinstance(freq_hz, (int, float)) else tuple(freq_hz)
        self.freqs = tuple(float(f) for f in freqs)
        self.sample_rate = sample_rate
        self.amplitude = float(amplitude)
        self._phase = np.zeros(len(self.freqs), dtype=np.float64)  # radians
        self._step = np.array([2.0 * math.pi * f / sample_rate for f in self.freqs])

    def generate(self, n_samples: int) -> PCM:
        """The next ``n_samples`` of the tone."""
        if n_samples <= 0:
            return silence(0)
        n = np.arange(n_samples, dtype=np.float64)
        phases = self._phase[:, None] + self._step[:, None] * n[None, :]
        out = self.amplitude * np.sin(phases).sum(axis=0)
        self._phase = np.mod(self._phase + self._step * n_samples, 2.0 * math.pi)
        return _to_int16(out)

    def frame(self, ms: int = 20) -> PCM:
        """The next ``ms`` milliseconds (default one 20 ms frame)."""
        return self.generate(self.sample_rate * ms // 1000)


def dtmf_tone(
    digit: str, sample_rate: int, duration_ms: int = 100, amplitude: float = 0.25
) -> PCM:
    """The dual tone of one DTMF ``digit`` (0-9, *, #, A-D); ``amplitude`` per component."""
    key = digit.upper()
    if len(key) != 1 or key not in _FREQS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    gen = ToneGenerator(_FREQS[key], sample_rate, amplitude)
    return gen.generate(sample_rate * duration_ms // 1000)


def dtmf_sequence(
    digits: str,
    sample_rate: int,
    tone_ms: int = 100,
    gap_ms: int = 60,
    amplitude: float = 0.25,
) -> PCM:
    """Digits as tones separated by ``gap_ms`` of silence (a gap also ends the sequence)."""
    gap = silence(sample_rate * gap_ms // 1000)
    parts: list[PCM] = []
    for d in digits:
        parts.append(dtmf_tone(d, sample_rate, tone_ms, amplitude))
        parts.append(gap)
    return np.concatenate(parts) if parts else silence(0)


class DtmfDetector:
    """Goertzel DTMF detector for in-band digits.

    Audio is analysed in blocks of ~12.75 ms (102 samples at 8 kHz, rectangular window); a digit is
    reported once, when two consecutive blocks agree on it, and re-armed after
    two blocks without it.  Checks: minimum energy, each tone dominant in its
    group, twist within +4/-8 dB, and the two tones carrying most of the power.

    ``feed()`` takes PCM at ``sample_rate`` of any length and returns the digits
    recognised in it.
    """

    MIN_LEVEL_DBFS = -40.0

    def __init__(self, sample_rate: int) -> None:
        if sample_rate < 4000:
            raise ValueError("sample_rate too low for DTMF")
        self.sample_rate = sample_rate
        self.block = max(64, round(sample_rate * 0.01275))
        n = np.arange(self.block, dtype=np.float64)
        freqs = np.array(DTMF_ROWS + DTMF_COLS)
        # Rectangular window: its nulls fall near the neighbouring DTMF tones.
        window = np.ones(self.block)
        ang = 2.0 * math.pi * freqs[:, None] * n[None, :] / sample_rate
        self._cos = np.cos(ang) * window
        self._sin = np.sin(ang) * window
        # A unit-amplitude sine at a probe frequency gives |X| ~ sum(window)/2.
        self._norm = (window.sum() / 2.0) ** 2
        self._w2 = window**2
        self._wpow = float(self._w2.sum())
        self._buf = np.zeros(0, dtype=np.float64)
        self._candidate: str | None = None
        self._count = 0
        self._current: str | None = None
        self._misses = 0

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float64)
        self._candidate = None
        self._count = 0
        self._current = None
        self._misses = 0

    def _classify(self, x: npt.NDArray[np.float64]) -> str | None:
        re = self._cos @ x
        im = self._sin @ x
        # Squared amplitude per tone (full scale = 1).
        power = (re * re + im * im) / self._norm
        rows, cols = power[:4], power[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        pr, pc = rows[r], cols[c]
        min_amp = 10.0 ** (self.MIN_LEVEL_DBFS / 20.0)
        if pr < min_amp**2 or pc < min_amp**2:
            return None
        # Twist: column (high) tone relative to row tone.
        twist_db = 10.0 * math.log10(pc / pr)
        if twist_db > 4.0 or twist_db < -8.0:
            return None
        # Each tone must dominate the others of its group by 6 dB.
        if np.any(np.delete(rows, r) * 4.0 > pr) or np.any(
            np.delete(cols, c) * 4.0 > pc
        ):
            return None
        # The two tones must hold most of the block's power (a sine of squared
        # amplitude p has mean power p / 2).
        mean_power = float((x * x * self._w2).sum()) / self._wpow
        if (pr + pc) / 2.0 < 0.5 * mean_power:
            return None
        return _KEYPAD[r][c]

    def feed(self, pcm: PCM) -> list[str]:
        """Analyse more audio; return newly detected digits in order."""
        data = np.asarray(pcm, dtype=np.float64).reshape(-1) / 32768.0
        buf = np.concatenate((self._buf, data)) if len(self._buf) else data
        digits: list[str] = []
        nblocks = len(buf) // self.block
        for i in range(nblocks):
            found = self._classify(buf[i * self.block : (i + 1) * self.block])
            if found is not None and found == self._candidate:
                self._count += 1
            else:
                self._candidate = found
                self._count = 1
            if found is not None and found == self._current:
                self._misses = 0
            elif self._current is not None:
                self._misses += 1
                if self._misses >= 2:
                    self._current = None
                    self._misses = 0
            if self._current is None and found is not None and self._count >= 2:
                self._current = found
                self._misses = 0
                digits.append(found)
        self._buf = buf[nblocks * self.block :].copy()
        return digits

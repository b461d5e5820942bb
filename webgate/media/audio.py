"""PCM plumbing for the frame path: re-chunking, resampling, mixing.

The internal audio format is PCM signed 16-bit mono as ``numpy.int16`` arrays at
the codec's native rate.  Everything here is pure numpy (no PyAV), streaming and
stateful where it must be, so a call's bridge can feed 20 ms frames one at a time
and get output that is bit-identical to processing the whole signal at once
(the resampler's sums are exact integer arithmetic, see :class:`Resampler`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "PCM",
    "Framer",
    "Resampler",
    "apply_gain",
    "as_pcm",
    "db_to_gain",
    "mix",
    "silence",
]

PCM = npt.NDArray[np.int16]
"""One block of PCM: 1-D ``int16`` samples, mono."""

_Float64Array = npt.NDArray[np.float64]


def as_pcm(data: npt.ArrayLike) -> PCM:
    """Return ``data`` as a contiguous 1-D int16 array (no copy when it already is one).

    Floats are taken as already scaled to the int16 range and are rounded and clipped (NaN -> 0).
    """
    arr = np.asarray(data)
    out: PCM
    if arr.dtype == np.int16:
        out = np.ascontiguousarray(arr.reshape(-1))
    elif np.issubdtype(arr.dtype, np.floating):
        # a decoder fed garbage can return NaN/inf: make that silence/full scale, not undefined casts
        flat = np.nan_to_num(arr.reshape(-1), nan=0.0, posinf=32767.0, neginf=-32768.0)
        out = np.clip(np.rint(flat), -32768, 32767).astype(np.int16)
    else:
        out = np.clip(arr.reshape(-1), -32768, 32767).astype(np.int16)
    return out


def silence(n_samples: int) -> PCM:
    """``n_samples`` of digital silence."""
    return np.zeros(max(0, n_samples), dtype=np.int16)


def db_to_gain(db: float) -> float:
    """Convert a level change in dB to a linear amplitude factor."""
    return float(10.0 ** (db / 20.0))


def apply_gain(pcm: PCM, gain: float) -> PCM:
    """Scale ``pcm`` by a linear ``gain``, saturating at the int16 limits."""
    if gain == 1.0:
        return as_pcm(pcm)
    scaled = np.asarray(pcm, dtype=np.float32) * np.float32(gain)
    return as_pcm(scaled)


def mix(*blocks: PCM) -> PCM:
    """Sum PCM blocks sample by sample with saturation.

    Blocks of different lengths are allowed; the result has the length of the
    longest, shorter blocks counting as silence past their end.
    """
    if not blocks:
        return silence(0)
    length = max(len(b) for b in blocks)
    acc = np.zeros(length, dtype=np.int32)
    for block in blocks:
        acc[: len(block)] += np.asarray(block, dtype=np.int32)
    return np.clip(acc, -32768, 32767).astype(np.int16)


class Framer:
    """Re-chunk arbitrary-length PCM into fixed-size frames.

    >>> f = Framer(160)
    >>> [len(x) for x in f.push(np.zeros(400, np.int16))]
    [160, 160]
    >>> f.pending
    80
    """

    def __init__(self, frame_samples: int) -> None:
        if frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self.frame_samples = frame_samples
        self._buf: PCM = silence(0)

    @property
    def pending(self) -> int:
        """Samples held back until a whole frame is available."""
        return len(self._buf)

    def push(self, pcm: PCM) -> list[PCM]:
        """Add samples; return every whole frame now available (possibly none)."""
        data = as_pcm(pcm)
        if len(self._buf):
            data = np.concatenate((self._buf, data))
        n = self.frame_samples
        whole = len(data) // n
        frames = [data[i * n : (i + 1) * n].copy() for i in range(whole)]
        self._buf = data[whole * n :].copy()
        return frames

    def flush(self, pad: bool = True) -> list[PCM]:
        """Return the held-back tail: one frame padded with silence (``pad``) or as is."""
        if not len(self._buf):
            return []
        tail = self._buf
        self._buf = silence(0)
        if pad:
            tail = np.concatenate((tail, silence(self.frame_samples - len(tail))))
        return [tail]

    def reset(self) -> None:
        """Drop any held-back samples."""
        self._buf = silence(0)


# --- resampling --------------------------------------------------------------------

_ZERO_CROSSINGS = 16  # filter half-length, in zero crossings of the narrower band
_KAISER_BETA = 8.6  # ~ -85 dB stop band
_ROLLOFF = 0.92  # pass band edge as a fraction of the lower Nyquist frequency

# The filter's taps are stored as integers (float64 holding whole numbers) scaled by
# 2**_COEF_BITS.  An int16 sample times such a tap, and any sum of a phase's products,
# stays a whole number far below 2**53, so float64 represents every partial sum exactly:
# the dot products come out bit-identical whatever order BLAS (or einsum) adds them in,
# whatever kernel it picks for a block's shape (AVX2, AVX-512, ...), with or without FMA.
# A float32 dot product depends on that order, so output depended on how the input was
# chunked (seen with OpenBLAS on AVX-512).  30 bits: the taps' rounding error is ~2**-31
# (~ -186 dB, far below the filter's -85 dB stop band).
_COEF_BITS = 30
_EXACT_LIMIT = 2.0**53


@lru_cache(maxsize=32)
def _polyphase_bank(up: int, down: int) -> tuple[_Float64Array, int]:
    """Windowed-sinc polyphase bank: array [phase, tap] (taps reversed) of whole numbers
    (taps scaled by ``2**_COEF_BITS``) and taps per phase."""
    factor = max(up, down)
    taps = 2 * _ZERO_CROSSINGS * math.ceil(factor / up)  # taps per phase
    length = taps * up
    cutoff = _ROLLOFF * 0.5 / factor  # in cycles per sample at the up-sampled rate
    centre = (length - 1) / 2.0
    n = np.arange(length, dtype=np.float64) - centre
    proto = 2.0 * cutoff * np.sinc(2.0 * cutoff * n) * np.kaiser(length, _KAISER_BETA)
    proto *= up / proto.sum()  # unity DC gain after up-sampling
    # Output sample y[m] at up-sampled position t = m*down uses x[i - k] * h[p + k*up]
    # with i = t // up, p = t % up.  Store each phase's taps reversed so a window
    # x[i-taps+1 .. i] multiplies element-wise.
    bank = np.rint(proto.reshape(taps, up).T[:, ::-1] * 2.0**_COEF_BITS)
    # every partial sum of |sample * tap| over a phase must stay exactly representable
    if 32768.0 * float(np.abs(bank).sum(axis=1).max()) >= _EXACT_LIMIT:  # pragma: no cover
        raise ValueError(f"resampler {up}/{down}: filter too large for exact sums")
    return np.ascontiguousarray(bank), taps


class Resampler:
    """Streaming rational-ratio resampler (polyphase windowed sinc, pure numpy).

    Feed any number of samples per call; output lengths vary by at most one
    sample from ``len(input) * to_rate / from_rate`` but the concatenated output is
    identical however the input was chunked, so frame boundaries never click.
    The filter adds a fixed delay of :attr:`delay_samples` output samples.

    Each output sample is an exact integer sum (int16 samples times integer taps, in
    float64 well below 2**53; see ``_COEF_BITS``), scaled by a power of two and rounded,
    so it does not depend on block boundaries, BLAS kernels or the CPU.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.from_rate = from_rate
        self.to_rate = to_rate
        g = math.gcd(from_rate, to_rate)
        self._up = to_rate // g
        self._down = from_rate // g
        self._passthrough = self._up == self._down
        if self._passthrough:
            self._bank = np.zeros((1, 1), dtype=np.float64)
            self._taps = 1
        else:
            self._bank, self._taps = _polyphase_bank(self._up, self._down)
        self._bank_t = np.ascontiguousarray(self._bank.T)
        # History: the last taps-1 input samples (starts as silence), whole numbers.
        self._history = np.zeros(self._taps - 1, dtype=np.float64)
        # Position of the next output, in 1/up input samples, relative to the
        # first sample of the next input block.
        self._pos = 0

    @property
    def delay_samples(self) -> float:
        """Group delay of the filter, in output samples."""
        if self._passthrough:
            return 0.0
        return (self._taps * self._up - 1) / 2.0 / self._down

    def resample(self, pcm: PCM) -> PCM:
        """Resample the next block of the stream."""
        data = as_pcm(pcm)
        if self._passthrough:
            return data.copy()
        n_in = len(data)
        if n_in == 0:
            return silence(0)
        up, down = self._up, self._down
        buf = np.concatenate((self._history, data.astype(np.float64)))
        # Outputs whose newest input index (pos // up) falls inside this block.
        limit = n_in * up  # exclusive bound on pos
        n_out = max(0, -(-(limit - self._pos) // down))
        view = np.lib.stride_tricks.sliding_window_view(buf, self._taps)
        acc: _Float64Array
        if n_out == 0:
            acc = np.zeros(0, dtype=np.float64)
        elif up == 1:
            # down-sampling by an integer: one phase, every down-th window (a strided view)
            acc = view[self._pos : self._pos + down * (n_out - 1) + 1 : down] @ self._bank[0]
        elif down == 1:
            # up-sampling by an integer: every window serves every phase, in order; one
            # matrix product over the block's windows, read row by row
            i0 = self._pos // up
            i1 = (self._pos + n_out - 1) // up
            acc = (view[i0 : i1 + 1] @ self._bank_t).reshape(-1)
            first = self._pos - i0 * up
            acc = acc[first : first + n_out]
        else:
            # any other ratio: each output gathers its window and its phase
            positions = self._pos + down * np.arange(n_out, dtype=np.int64)
            acc = np.einsum("nk,nk->n", view[positions // up], self._bank[positions % up])
        self._pos = self._pos + n_out * down - limit
        self._history = buf[len(buf) - (self._taps - 1) :].copy()
        # exact sums scaled by a power of two (exact too), then rounded half to even
        return as_pcm(acc * 2.0**-_COEF_BITS)

    def reset(self) -> None:
        """Forget the stream so far (history and phase)."""
        self._history[:] = 0.0
        self._pos = 0

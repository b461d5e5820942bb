"""G.711 µ-law and A-law in pure numpy: lookup tables built once at import.

The encoder tables give the same codes as FFmpeg's ``pcm_mulaw``/``pcm_alaw`` encoders; PCM is
signed 16-bit mono ``numpy.int16``, one byte per sample each way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from webgate.media.audio import PCM, as_pcm


def _ulaw_to_linear(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    c = ~codes & 0xFF
    t = ((c & 0x0F) << 3) + 0x84
    t = t << ((c & 0x70) >> 4)
    return np.where(c & 0x80, 0x84 - t, t - 0x84)


def _alaw_to_linear(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    c = codes ^ 0x55
    t = c & 0x0F
    seg = (c & 0x70) >> 4
    t = np.where(
        seg > 0, (((t << 1) + 33) << np.maximum(seg - 1, 0)) << 3, (t << 4) + 8
    )
    return np.where(c & 0x80, t, -t)


def _encode_table(decode: npt.NDArray[np.int32], mask: int) -> npt.NDArray[np.uint8]:
    """65536-entry linear -> code table.

    Decision levels are the mid-points between adjacent reconstruction levels
    (G.711 tables 1a/2a), evaluated on 14-bit input (the 16-bit sample >> 2), so
    the result is the same as FFmpeg's ``pcm_mulaw``/``pcm_alaw`` encoders.
    """
    i = np.arange(127)
    bounds = (decode[i ^ mask] + decode[(i + 1) ^ mask] + 4) >> 3
    j = np.arange(1, 8192)
    k = np.searchsorted(bounds, j, side="right")
    tab14 = np.empty(16384, dtype=np.int32)
    tab14[8192] = mask
    tab14[8192 + j] = k ^ mask
    tab14[8192 - j] = k ^ (mask ^ 0x80)
    tab14[0] = tab14[1]
    linear = np.arange(65536, dtype=np.int32)  # index = sample + 32768
    table: npt.NDArray[np.uint8] = tab14[linear >> 2].astype(np.uint8)
    return table


_CODES = np.arange(256, dtype=np.int32)
_ULAW_DEC: npt.NDArray[np.int16] = _ulaw_to_linear(_CODES).astype(np.int16)
_ALAW_DEC: npt.NDArray[np.int16] = _alaw_to_linear(_CODES).astype(np.int16)
_ULAW_ENC = _encode_table(_ulaw_to_linear(_CODES), 0xFF)
_ALAW_ENC = _encode_table(_alaw_to_linear(_CODES), 0xD5)


def ulaw_encode(pcm: PCM) -> bytes:
    """G.711 µ-law: one byte per int16 sample."""
    idx = as_pcm(pcm).view(np.uint16) ^ 0x8000
    return bytes(_ULAW_ENC[idx])


def alaw_encode(pcm: PCM) -> bytes:
    """G.711 A-law: one byte per int16 sample."""
    idx = as_pcm(pcm).view(np.uint16) ^ 0x8000
    return bytes(_ALAW_ENC[idx])


def ulaw_decode(payload: bytes) -> PCM:
    """G.711 µ-law bytes -> int16 samples."""
    return _ULAW_DEC[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> PCM:
    """G.711 A-law bytes -> int16 samples."""
    return _ALAW_DEC[np.frombuffer(payload, dtype=np.uint8)]

"""ctypes bindings to the system GSM 06.10 and Speex encoders.

FFmpeg (as bundled with PyAV) decodes GSM and Speex but cannot encode them.
Debian ships the reference libraries as ``libgsm1`` (``libgsm.so.1``) and
``libspeex1`` (``libspeex.so.1``); when they are installed these classes encode
with them.  When they are missing, :func:`gsm_available` /
:func:`speex_available` return ``False`` and the registry marks the codecs
decode-only.  Only the encoders are bound: decoding stays with PyAV.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "FrameEncoder",
    "GsmEncoder",
    "SpeexEncoder",
    "gsm_available",
    "speex_available",
]


class FrameEncoder(Protocol):
    """Encodes exactly ``frame_samples`` int16 samples into one packet."""

    frame_samples: int

    def encode(self, frame: npt.NDArray[np.int16]) -> bytes: ...


def _load(names: tuple[str, ...]) -> ctypes.CDLL | None:
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


@lru_cache(maxsize=1)
def _libgsm() -> ctypes.CDLL | None:
    found = ctypes.util.find_library("gsm")
    lib = _load(("libgsm.so.1", *((found,) if found else ())))
    if lib is None:
        return None
    try:
        lib.gsm_create.restype = ctypes.c_void_p
        lib.gsm_create.argtypes = []
        lib.gsm_destroy.restype = None
        lib.gsm_destroy.argtypes = [ctypes.c_void_p]
        lib.gsm_encode.restype = None
        lib.gsm_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    except AttributeError:
        return None
    return lib


@lru_cache(maxsize=1)
def _libspeex() -> ctypes.CDLL | None:
    found = ctypes.util.find_library("speex")
    lib = _load(("libspeex.so.1", *((found,) if found else ())))
    if lib is None:
        return None
    try:
        lib.speex_lib_get_mode.restype = ctypes.c_void_p
        lib.speex_lib_get_mode.argtypes = [ctypes.c_int]
        lib.speex_encoder_init.restype = ctypes.c_void_p
        lib.speex_encoder_init.argtypes = [ctypes.c_void_p]
        lib.speex_encoder_destroy.restype = None
        lib.speex_encoder_destroy.argtypes = [ctypes.c_void_p]
        lib.speex_encoder_ctl.restype = ctypes.c_int
        lib.speex_encoder_ctl.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        lib.speex_encode_int.restype = ctypes.c_int
        lib.speex_encode_int.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.speex_bits_init.restype = None
        lib.speex_bits_init.argtypes = [ctypes.c_void_p]
        lib.speex_bits_reset.restype = None
        lib.speex_bits_reset.argtypes = [ctypes.c_void_p]
        lib.speex_bits_write.restype = ctypes.c_int
        lib.speex_bits_write.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.speex_bits_destroy.restype = None
        lib.speex_bits_destroy.argtypes = [ctypes.c_void_p]
    except AttributeError:
        return None
    return lib


def gsm_available() -> bool:
    """True if libgsm could be loaded."""
    return _libgsm() is not None


def speex_available() -> bool:
    """True if libspeex could be loaded."""
    return _libspeex() is not None


class GsmEncoder:
    """GSM 06.10 full rate: 160 samples at 8 kHz -> 33 bytes (RFC 3551 ``GSM``)."""

    frame_samples = 160

    def __init__(self) -> None:
        lib = _libgsm()
        if lib is None:
            raise RuntimeError("libgsm is not installed")
        self._lib = lib
        handle = lib.gsm_create()
        if not handle:
            raise MemoryError("gsm_create failed")
        self._handle: int | None = handle
        self._out = ctypes.create_string_buffer(33)

    def encode(self, frame: npt.NDArray[np.int16]) -> bytes:
        if self._handle is None:
            raise RuntimeError("encoder closed")
        data = np.ascontiguousarray(frame, dtype=np.int16)
        if data.shape != (self.frame_samples,):
            raise ValueError("GSM frames are 160 samples")
        self._lib.gsm_encode(self._handle, data.ctypes.data, self._out)
        return self._out.raw

    def close(self) -> None:
        if getattr(self, "_handle", None) is not None:
            self._lib.gsm_destroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


_SPEEX_GET_FRAME_SIZE = 3
_SPEEX_SET_QUALITY = 4
_SPEEX_MODES = {8000: 0, 16000: 1, 32000: 2}


class SpeexEncoder:
    """Speex (narrow/wide/ultra-wide band by rate): one 20 ms frame per packet (RFC 5574)."""

    def __init__(self, sample_rate: int, quality: int = 8) -> None:
        lib = _libspeex()
        if lib is None:
            raise RuntimeError("libspeex is not installed")
        if sample_rate not in _SPEEX_MODES:
            raise ValueError(f"Speex has no mode for {sample_rate} Hz")
        self._lib = lib
        mode = lib.speex_lib_get_mode(_SPEEX_MODES[sample_rate])
        state = lib.speex_encoder_init(mode)
        if not state:
            raise MemoryError("speex_encoder_init failed")
        self._state: int | None = state
        q = ctypes.c_int(max(0, min(10, quality)))
        lib.speex_encoder_ctl(state, _SPEEX_SET_QUALITY, ctypes.byref(q))
        size = ctypes.c_int(0)
        lib.speex_encoder_ctl(state, _SPEEX_GET_FRAME_SIZE, ctypes.byref(size))
        self.frame_samples = size.value
        # SpeexBits is a small struct managed by the library; give it room to spare.
        self._bits = ctypes.create_string_buffer(256)
        lib.speex_bits_init(self._bits)
        self._out = ctypes.create_string_buffer(2048)

    def encode(self, frame: npt.NDArray[np.int16]) -> bytes:
        if self._state is None:
            raise RuntimeError("encoder closed")
        data = np.ascontiguousarray(frame, dtype=np.int16)
        if data.shape != (self.frame_samples,):
            raise ValueError(f"Speex frames are {self.frame_samples} samples")
        self._lib.speex_bits_reset(self._bits)
        self._lib.speex_encode_int(self._state, data.ctypes.data, self._bits)
        n = self._lib.speex_bits_write(self._bits, self._out, len(self._out))
        return self._out.raw[:n]

    def close(self) -> None:
        if getattr(self, "_state", None) is not None:
            self._lib.speex_encoder_destroy(self._state)
            self._lib.speex_bits_destroy(self._bits)
            self._state = None

    def __del__(self) -> None:
        self.close()

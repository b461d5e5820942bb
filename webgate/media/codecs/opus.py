"""Opus decoding through the system's libopus (Debian ``libopus0``) with ctypes, for what PyAV
cannot do: real packet-loss concealment (``opus_decode`` with no data) and in-band FEC (decode
the lost frame from the LBRR data of the packet that follows it, when the far end sends it:
``useinbandfec=1``, which webgate's SDP offers). Without libopus, Opus is decoded by PyAV
and a lost packet is silence. Encoding stays with PyAV's libopus.
"""

from __future__ import annotations

import ctypes

import numpy as np

from webgate.media.audio import PCM, silence
from webgate.media.codecs import libraries
from webgate.media.codecs.base import Decoder
from webgate.media.codecs.bitstream import opus_has_lbrr
from webgate.media.codecs.registry import CodecInfo
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["OpusDecoder", "opus_library_available"]

RATE = 48000
MAX_SAMPLES = 5760  # 120 ms at 48 kHz
_STEP = 120  # PLC/FEC sizes are multiples of 2.5 ms


def opus_library_available() -> bool:
    return libraries.available("opus")


class OpusDecoder(Decoder):
    """Opus payloads -> mono PCM at 48 kHz (libopus downmixes a stereo stream)."""

    def __init__(self, info: CodecInfo) -> None:
        super().__init__(info, "silence")
        lib = libraries.load("opus")
        if lib is None:
            raise LocalProtocolError("libopus is not available")
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ]
        self._lib = lib
        err = ctypes.c_int(0)
        dec = lib.opus_decoder_create(RATE, 1, ctypes.byref(err))
        if not dec or err.value != 0:
            raise MemoryError(f"opus_decoder_create failed ({err.value})")
        self._dec: int | None = dec
        self._pcm = np.zeros(MAX_SAMPLES, dtype=np.int16)
        self.sample_rate = RATE
        #: lost packets rebuilt from the next packet's in-band FEC data (or, when it could not be
        #: told whether it had any, decoded through libopus's FEC path, which conceals otherwise)
        self.fec_recovered = 0

    def _run(self, data: bytes | None, samples: int, fec: bool) -> PCM:
        if self._dec is None:
            raise LocalProtocolError("decoder closed")
        n = self._lib.opus_decode(
            self._dec, data, len(data) if data else 0, self._pcm.ctypes.data, samples, 1 if fec else 0
        )
        if n < 0:
            raise RemoteProtocolError(f"undecodable Opus payload (libopus error {n})")
        return self._pcm[:n].copy()

    def _decode(self, payload: bytes) -> PCM:
        if not payload:
            raise RemoteProtocolError("empty Opus payload")
        return self._run(payload, MAX_SAMPLES, False)

    def _conceal(self, n: int) -> PCM:
        """libopus's own concealment (decode with no data), ``n`` samples."""
        if n <= 0:
            return silence(0)
        parts: list[PCM] = []
        left = -(-n // _STEP) * _STEP
        while left > 0:
            k = min(left, MAX_SAMPLES)
            parts.append(self._run(None, k, False))
            left -= k
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out[:n]

    def recover(self, following: bytes, samples: int | None = None) -> PCM:
        """The lost packet before ``following`` from its in-band FEC data; concealment when
        ``following`` carries none (:func:`opus_has_lbrr`)."""
        if opus_has_lbrr(following) is False:
            return self.conceal(samples)
        n = RATE // 50 if samples is None else samples
        n = max(_STEP, min(MAX_SAMPLES, -(-n // _STEP) * _STEP))
        self._lost += 1
        try:
            out = self._run(following, n, True)
        except RemoteProtocolError:
            out = self._conceal(n)
        else:
            self.fec_recovered += 1
        self._concealed += len(out)
        return out

    def close(self) -> None:
        if getattr(self, "_dec", None) is not None:
            self._lib.opus_decoder_destroy(self._dec)
            self._dec = None

    def __del__(self) -> None:
        self.close()

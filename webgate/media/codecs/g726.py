"""G.726 at 32 kbit/s (4-bit ADPCM, 8 kHz) in its two RTP packings:

- ``G726-32`` (RFC 3551 §4.5.4): the first codeword in the four *least* significant bits of
  the first octet;
- ``AAL2-G726-32`` (ITU-T I.366.2 Annex E, as RFC 3551 names it): the first codeword in the
  four *most* significant bits.

Encoding uses the system's spandsp (Debian ``libspandsp2``) through ctypes: FFmpeg's G.726
encoder only takes frames of 2048 samples (256 ms), too long for a call. Decoding uses PyAV's
``adpcm_g726le`` (RFC 3551 order) and ``adpcm_g726`` (AAL2 order). G.726 is a waveform coder
with no frames: any multiple of 10 ms makes a payload, so the packet time is the far end's.
"""

from __future__ import annotations

import ctypes

import numpy as np

from webgate.media.audio import PCM, Framer
from webgate.media.codecs import libraries
from webgate.media.codecs.base import AvDecoder, Encoder
from webgate.media.codecs.registry import CodecInfo
from webgate.proto.errors import LocalProtocolError

__all__ = ["G726Decoder", "G726Encoder", "aal2_order", "rfc3551_order"]

_ENCODING_LINEAR = 0
_PACKING_LEFT = 1  # spandsp: first codeword in the high bits (AAL2)
_PACKING_RIGHT = 2  # spandsp: first codeword in the low bits (RFC 3551)
BIT_RATE = 32000


def is_aal2(info: CodecInfo) -> bool:
    return info.name.upper().startswith("AAL2-")


def rfc3551_order(codewords: bytes) -> bytes:
    """4-bit codewords (one per byte, low nibble) packed as RFC 3551 ``G726-32``."""
    if len(codewords) % 2:
        raise LocalProtocolError("an odd number of G.726-32 codewords")
    a = np.frombuffer(codewords, dtype=np.uint8) & 0x0F
    return bytes((a[0::2] | (a[1::2] << 4)).astype(np.uint8).tobytes())


def aal2_order(codewords: bytes) -> bytes:
    """4-bit codewords packed as ``AAL2-G726-32`` (first codeword in the high nibble)."""
    if len(codewords) % 2:
        raise LocalProtocolError("an odd number of G.726-32 codewords")
    a = np.frombuffer(codewords, dtype=np.uint8) & 0x0F
    return bytes(((a[0::2] << 4) | a[1::2]).astype(np.uint8).tobytes())


class G726Encoder(Encoder):
    """PCM at 8 kHz -> G.726-32 payloads of ``frame_ms`` (half a byte per sample)."""

    joinable = True

    def __init__(self, info: CodecInfo, frame_ms: int = 20) -> None:
        self.info = info
        lib = libraries.load("spandsp")
        if lib is None:
            raise LocalProtocolError("libspandsp is not available")
        lib.g726_init.restype = ctypes.c_void_p
        lib.g726_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.g726_free.restype = ctypes.c_int
        lib.g726_free.argtypes = [ctypes.c_void_p]
        lib.g726_encode.restype = ctypes.c_int
        lib.g726_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self._lib = lib
        packing = _PACKING_LEFT if is_aal2(info) else _PACKING_RIGHT
        state = lib.g726_init(None, BIT_RATE, _ENCODING_LINEAR, packing)
        if not state:
            raise MemoryError("g726_init failed")
        self._state: int | None = state
        self._samples = max(2, info.sample_rate * frame_ms // 1000)
        self._framer = Framer(self._samples)
        self._out = ctypes.create_string_buffer(self._samples // 2 + 8)

    @property
    def frame_samples(self) -> int:
        return self._samples

    def _one(self, frame: PCM) -> bytes:
        if self._state is None:
            raise LocalProtocolError("encoder closed")
        data = np.ascontiguousarray(frame, dtype=np.int16)
        n = self._lib.g726_encode(self._state, self._out, data.ctypes.data, len(data))
        return self._out.raw[: max(0, n)]

    def encode(self, pcm: PCM) -> list[bytes]:
        return [self._one(f) for f in self._framer.push(pcm)]

    def flush(self) -> list[bytes]:
        out = [self._one(f) for f in self._framer.flush()]
        self.close()
        return out

    def close(self) -> None:
        if getattr(self, "_state", None) is not None:
            self._lib.g726_free(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


class G726Decoder(AvDecoder):
    """G.726-32 payloads (either packing, by the codec's name) -> PCM at 8 kHz, through PyAV;
    a lost packet repeats the last one, fading."""

    def __init__(self, info: CodecInfo) -> None:
        codec = "adpcm_g726" if is_aal2(info) else "adpcm_g726le"
        super().__init__(info, codec, "repeat", options={"bits_per_coded_sample": "4"})

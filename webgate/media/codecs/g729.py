"""G.729 / G.729 Annex A (RTP ``G729``, PT 18, RFC 3551 §4.5.6) through the system's libbcg729
(Debian ``libbcg729-0``), loaded at run time with ctypes from the ``[codecs] bcg729_library``
path: 80-sample (10 ms) frames of 10 bytes, several per RTP payload, and Annex B SID frames of
2 bytes (decoded to comfort noise; our encoder sends none: ``annexb=no``, VAD off).

A lost packet is concealed by bcg729's own frame-erasure concealment (ITU-T G.729 §4.4).
"""

from __future__ import annotations

import ctypes

import numpy as np

from webgate.media.audio import PCM, Framer, silence
from webgate.media.codecs import libraries
from webgate.media.codecs.base import Decoder, Encoder
from webgate.media.codecs.registry import CodecInfo
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["FRAME_BYTES", "FRAME_SAMPLES", "SID_BYTES", "G729Decoder", "G729Encoder", "split_frames"]

FRAME_SAMPLES = 80
FRAME_BYTES = 10
SID_BYTES = 2
MAX_FRAMES = 24  # 240 ms in one payload is already far past any packet time


def _bcg729() -> ctypes.CDLL:
    lib = libraries.load("bcg729")
    if lib is None:
        raise LocalProtocolError("libbcg729 is not available")
    lib.initBcg729EncoderChannel.restype = ctypes.c_void_p
    lib.initBcg729EncoderChannel.argtypes = [ctypes.c_uint8]
    lib.closeBcg729EncoderChannel.restype = None
    lib.closeBcg729EncoderChannel.argtypes = [ctypes.c_void_p]
    lib.bcg729Encoder.restype = None
    lib.bcg729Encoder.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.initBcg729DecoderChannel.restype = ctypes.c_void_p
    lib.initBcg729DecoderChannel.argtypes = []
    lib.closeBcg729DecoderChannel.restype = None
    lib.closeBcg729DecoderChannel.argtypes = [ctypes.c_void_p]
    lib.bcg729Decoder.restype = None
    lib.bcg729Decoder.argtypes = [
        ctypes.c_void_p,  # context
        ctypes.c_void_p,  # bitStream
        ctypes.c_uint8,  # bitStreamLength
        ctypes.c_uint8,  # frameErasureFlag
        ctypes.c_uint8,  # SIDFrameFlag
        ctypes.c_uint8,  # rfc3389PayloadFlag
        ctypes.c_void_p,  # signal (80 x int16)
    ]
    return lib


def split_frames(payload: bytes) -> list[bytes]:
    """A G.729 RTP payload as its frames: whole 10-byte frames, then at most one 2-byte SID
    frame (RFC 3551 §4.5.6). Anything else raises :class:`RemoteProtocolError`."""
    n, rest = divmod(len(payload), FRAME_BYTES)
    if not payload or rest not in (0, SID_BYTES) or n > MAX_FRAMES:
        raise RemoteProtocolError(f"G.729 payload of {len(payload)} bytes is not 10-byte frames (+ a 2-byte SID)")
    frames = [payload[i * FRAME_BYTES : (i + 1) * FRAME_BYTES] for i in range(n)]
    if rest:
        frames.append(payload[n * FRAME_BYTES :])
    return frames


class G729Encoder(Encoder):
    """PCM at 8 kHz -> 10-byte G.729A frames (one payload per 10 ms frame; joinable)."""

    joinable = True

    def __init__(self, info: CodecInfo, vad: bool = False) -> None:
        self.info = info
        self._lib = _bcg729()
        ctx = self._lib.initBcg729EncoderChannel(1 if vad else 0)
        if not ctx:
            raise MemoryError("initBcg729EncoderChannel failed")
        self._ctx: int | None = ctx
        self._framer = Framer(FRAME_SAMPLES)
        self._out = ctypes.create_string_buffer(FRAME_BYTES)
        self._len = ctypes.c_uint8(0)

    @property
    def frame_samples(self) -> int:
        return FRAME_SAMPLES

    def _one(self, frame: PCM) -> bytes:
        if self._ctx is None:
            raise LocalProtocolError("encoder closed")
        data = np.ascontiguousarray(frame, dtype=np.int16)
        self._lib.bcg729Encoder(self._ctx, data.ctypes.data, self._out, ctypes.byref(self._len))
        n = self._len.value
        return self._out.raw[:n] if n else b""  # 0 bytes: an untransmitted frame (VAD)

    def encode(self, pcm: PCM) -> list[bytes]:
        return [p for p in (self._one(f) for f in self._framer.push(pcm)) if p]

    def flush(self) -> list[bytes]:
        out = [p for p in (self._one(f) for f in self._framer.flush()) if p]
        self.close()
        return out

    def close(self) -> None:
        if getattr(self, "_ctx", None) is not None:
            self._lib.closeBcg729EncoderChannel(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()


class G729Decoder(Decoder):
    """G.729 payloads (any number of frames, Annex B SID frames too) -> PCM at 8 kHz; losses
    concealed by bcg729's frame-erasure concealment."""

    def __init__(self, info: CodecInfo) -> None:
        super().__init__(info, "silence")
        self._lib = _bcg729()
        ctx = self._lib.initBcg729DecoderChannel()
        if not ctx:
            raise MemoryError("initBcg729DecoderChannel failed")
        self._ctx: int | None = ctx
        self._pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._zero = ctypes.create_string_buffer(FRAME_BYTES)

    def _frame(self, bits: bytes, erasure: bool) -> PCM:
        if self._ctx is None:
            raise LocalProtocolError("decoder closed")
        sid = len(bits) == SID_BYTES
        data = bits if bits else self._zero.raw
        self._lib.bcg729Decoder(
            self._ctx, data, len(data), 1 if erasure else 0, 1 if sid else 0, 0, self._pcm.ctypes.data
        )
        return self._pcm.copy()

    def _decode(self, payload: bytes) -> PCM:
        frames = split_frames(payload)
        return np.concatenate([self._frame(f, False) for f in frames])

    def _conceal(self, n: int) -> PCM:
        if n <= 0:
            return silence(0)
        count = -(-n // FRAME_SAMPLES)
        out = np.concatenate([self._frame(b"", True) for _ in range(count)])
        return out[:n]

    def close(self) -> None:
        if getattr(self, "_ctx", None) is not None:
            self._lib.closeBcg729DecoderChannel(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()

"""One video keyframe to a JPEG, on demand (``GET /api/calls/{id}/snapshot.jpg``, for CTI screen
pops): the only place the gateway ever decodes video.

:func:`keyframe_to_jpeg` takes what ``MediaHub.last_keyframe()`` keeps, an H.264 access unit in
Annex B (SPS and PPS before the IDR) or one VP8 keyframe, decodes it with PyAV, scales the
picture down to fit ``max_width`` x ``max_height`` (never up) and encodes one baseline JPEG.
Everything it is given comes from a caller, so every failure (too big, not decodable, no
picture) is one :class:`SnapshotError`. It holds no state and may run in a worker thread
(PyAV releases the GIL while it decodes); :func:`snapshots_decoded` counts the decodes (the
forward path must never add to it).
"""

from __future__ import annotations

import threading
from fractions import Fraction

import av

__all__ = ["MAX_KEYFRAME_BYTES", "SnapshotError", "keyframe_to_jpeg", "snapshots_decoded"]

#: a larger keyframe is refused before it reaches a decoder
MAX_KEYFRAME_BYTES = 8 * 1024 * 1024
#: a decoded picture larger than this (either side) is refused instead of being scaled
MAX_SIDE = 8192
_DECODERS = {"H264": "h264", "VP8": "vp8"}

_decodes = 0
_lock = threading.Lock()


class SnapshotError(Exception):
    """The keyframe could not be turned into a JPEG (the message says why, without its bytes)."""


def snapshots_decoded() -> int:
    """Keyframes decoded by :func:`keyframe_to_jpeg` in this process so far."""
    with _lock:
        return _decodes


def _count() -> None:
    global _decodes
    with _lock:
        _decodes += 1


def _fit(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down (aspect kept, even sides) to fit the bounds."""
    scale = min(1.0, max_width / width, max_height / height)
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


def _decode(codec: str, bitstream: bytes) -> av.VideoFrame:
    name = _DECODERS.get(codec.upper())
    if name is None:
        raise SnapshotError(f"cannot decode {codec[:16]!r} video (H264 and VP8 only)")
    if not bitstream:
        raise SnapshotError("the keyframe is empty")
    if len(bitstream) > MAX_KEYFRAME_BYTES:
        raise SnapshotError(f"the keyframe is larger than {MAX_KEYFRAME_BYTES} bytes")
    ctx = av.CodecContext.create(name, "r")
    assert isinstance(ctx, av.VideoCodecContext)
    _count()
    frames = list(ctx.decode(av.Packet(bitstream)))
    frames += ctx.decode(None)
    for frame in frames:
        if isinstance(frame, av.VideoFrame) and frame.width > 0 and frame.height > 0:
            return frame
    raise SnapshotError("the keyframe holds no picture")


def keyframe_to_jpeg(codec: str, bitstream: bytes, *, max_width: int = 1920, max_height: int = 1080) -> bytes:
    """The JPEG of one keyframe (``codec`` ``"H264"``: Annex B; ``"VP8"``: one frame), at most
    ``max_width`` x ``max_height``. Raises :class:`SnapshotError`."""
    try:
        frame = _decode(codec, bitstream)
        if frame.width > MAX_SIDE or frame.height > MAX_SIDE:
            raise SnapshotError(f"the picture is larger than {MAX_SIDE} pixels on a side")
        width, height = _fit(frame.width, frame.height, max_width, max_height)
        # full-range 4:2:0, what baseline JPEG (and the mjpeg encoder) takes
        picture = frame.reformat(width=width, height=height, format="yuvj420p")
        enc = av.CodecContext.create("mjpeg", "w")
        assert isinstance(enc, av.VideoCodecContext)
        enc.width, enc.height = width, height
        enc.pix_fmt = "yuvj420p"
        enc.time_base = Fraction(1, 25)
        packets = list(enc.encode(picture))
        packets += enc.encode(None)
    except SnapshotError:
        raise
    except (av.FFmpegError, ValueError, RuntimeError, MemoryError) as e:
        raise SnapshotError(f"the keyframe could not be decoded ({type(e).__name__})") from None
    if not packets:
        raise SnapshotError("the JPEG encoder gave no picture")
    return bytes(packets[0])

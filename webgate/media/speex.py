"""Speex frames inside a packet, found without decoding (sans-IO).

An RTP Speex payload (RFC 5574) and an FLV Speex tag may both hold several 20 ms frames, packed
bit after bit with no length fields. Every frame starts with its mode, and every mode has a fixed
size (libspeex ``modes.c``/``modes_wb.c``, ``bits_per_frame``), so the frames can be cut apart by
reading only those headers: narrowband layer ``0`` + 4-bit mode, then for wideband ``1`` + 3-bit
sub-mode per wideband layer. A packet ends at its last frame, at a terminator (mode 15), or when
fewer than 5 bits remain (libspeex pads the last byte with ``0`` then ``1``s: a terminator).

:func:`split_frames` returns each frame as its own byte string, padded the same way, so an FLV
tag of two frames becomes two RTP payloads of one frame each (20 ms apiece) and back.
"""

from __future__ import annotations

from webgate.proto.errors import RemoteProtocolError

__all__ = ["FRAME_SAMPLES", "split_frames"]

#: narrowband modes 0-8: bits of one frame of the narrowband layer, the 5 header bits included
_NB_BITS = (5, 43, 119, 160, 220, 300, 364, 492, 79)
#: wideband (and ultra-wideband) sub-modes 0-4: bits of one layer, the 4 header bits included
_WB_BITS = (4, 36, 112, 192, 352)
#: samples of one 20 ms frame by RTP clock rate
FRAME_SAMPLES = {8000: 160, 16000: 320, 32000: 640}
_MAX_FRAMES = 64


class _Bits:
    """A packet read as one big-endian integer, so reading and copying bits are shifts rather
    than a Python loop per bit (this runs for every RTP packet and FLV tag of a Speex call)."""

    def __init__(self, data: bytes) -> None:
        self.pos = 0
        self.total = len(data) * 8
        self._value = int.from_bytes(data, "big")

    @property
    def remaining(self) -> int:
        return self.total - self.pos

    def peek(self, n: int) -> int:
        return (self._value >> (self.total - self.pos - n)) & ((1 << n) - 1)

    def copy(self, start: int, end: int) -> bytes:
        """Bits ``start..end`` as bytes, padded like libspeex (``0`` then ``1``s)."""
        n = end - start
        size = (n + 7) // 8
        pad = size * 8 - n
        out = ((self._value >> (self.total - end)) & ((1 << n) - 1)) << pad
        if pad:
            # the first pad bit stays 0, the rest are 1
            out |= (1 << (pad - 1)) - 1
        return out.to_bytes(size, "big")


def split_frames(payload: bytes, clock_rate: int = 16000) -> list[bytes]:
    """The frames of one Speex packet (narrowband at 8000, wideband at 16000, ultra-wideband at
    32000), each as its own payload. Raises :class:`RemoteProtocolError` on a packet that does
    not parse (an unknown mode, a frame cut short, in-band signalling we do not relay)."""
    if clock_rate not in FRAME_SAMPLES:
        raise RemoteProtocolError(f"Speex has no mode at {clock_rate} Hz")
    layers = {8000: 0, 16000: 1, 32000: 2}[clock_rate]
    bits = _Bits(payload)
    frames: list[bytes] = []
    while bits.remaining >= 5:
        start = bits.pos
        if bits.peek(1) != 0:
            raise RemoteProtocolError("Speex frame does not start with a narrowband layer")
        mode = bits.peek(5) & 0x0F
        if mode == 15:
            break  # terminator
        if mode >= len(_NB_BITS):
            raise RemoteProtocolError(f"unsupported Speex narrowband mode {mode}")
        bits.pos += _NB_BITS[mode]
        for _ in range(layers):
            if bits.remaining < 4 or bits.peek(1) != 1:
                raise RemoteProtocolError("Speex wideband layer missing")
            sub = bits.peek(4) & 0x07
            if sub >= len(_WB_BITS):
                raise RemoteProtocolError(f"unsupported Speex wideband sub-mode {sub}")
            bits.pos += _WB_BITS[sub]
        if bits.pos > bits.total:
            raise RemoteProtocolError("Speex frame cut short")
        frames.append(bits.copy(start, bits.pos))
        if len(frames) > _MAX_FRAMES:
            raise RemoteProtocolError("too many Speex frames in one packet")
    if not frames:
        raise RemoteProtocolError("Speex packet without a frame")
    return frames

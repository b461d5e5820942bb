"""G.723.1 (RTP ``G723``, PT 4, RFC 3551 §4.5.3) through PyAV's ``g723_1``: 30 ms frames of 240
samples, encoded at 6.3 kbit/s (24-byte frames); decoded at either rate and with SID frames.

The frame's type is in the two low bits of its first octet: 0 = 6.3 kbit/s (24 bytes),
1 = 5.3 kbit/s (20 bytes), 2 = SID (4 bytes); several frames may share one payload.
"""

from __future__ import annotations

import numpy as np

from webgate.media.audio import PCM
from webgate.media.codecs.base import AvDecoder, AvEncoder
from webgate.media.codecs.registry import CodecInfo
from webgate.proto.errors import RemoteProtocolError

__all__ = ["FRAME_SAMPLES", "G723Decoder", "G723Encoder", "split_frames"]

FRAME_SAMPLES = 240
_FRAME_BYTES = {0: 24, 1: 20, 2: 4}
MAX_FRAMES = 8


def split_frames(payload: bytes) -> list[bytes]:
    """The frames of a G.723.1 payload; anything that is not whole frames raises
    :class:`RemoteProtocolError`."""
    frames: list[bytes] = []
    pos = 0
    while pos < len(payload):
        kind = payload[pos] & 0x03
        size = _FRAME_BYTES.get(kind)
        if size is None or pos + size > len(payload) or len(frames) >= MAX_FRAMES:
            raise RemoteProtocolError(f"G.723.1 payload of {len(payload)} bytes is not whole frames")
        frames.append(payload[pos : pos + size])
        pos += size
    if not frames:
        raise RemoteProtocolError("empty G.723.1 payload")
    return frames


class G723Encoder(AvEncoder):
    """PCM at 8 kHz -> 24-byte 6.3 kbit/s frames, one payload per 30 ms frame (joinable)."""

    def __init__(self, info: CodecInfo) -> None:
        super().__init__(info, "g723_1", "s16", 6300, joinable=True)

    @property
    def frame_samples(self) -> int:
        return FRAME_SAMPLES


class G723Decoder(AvDecoder):
    """G.723.1 payloads -> PCM at 8 kHz, one frame at a time."""

    def __init__(self, info: CodecInfo) -> None:
        super().__init__(info, "g723_1", "repeat")

    def _decode(self, payload: bytes) -> PCM:
        parts = [super(G723Decoder, self)._decode(f) for f in split_frames(payload)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

"""The media hub's VP8 feed for WebRTC watchers of an RTMP caller's Sorenson/VP6 video
(``[video] transcode = true``): FLV tags re-encoded by :class:`~webgate.media.transcode.FlvToVp8`
and cut into RTP VP8 packets (RFC 7741) on the hub's own sequence numbers and a 90 kHz clock
from the tags' milliseconds. The hub makes one while such a watcher exists (see ``hub.py``)."""

from __future__ import annotations

from webgate.legs.hub_bits import vp8_payloads
from webgate.legs.hub_types import FLV_VIDEO_CODECS
from webgate.media.transcode import TRANSCODABLE, FlvToVp8

__all__ = ["TRANSCODABLE_CODECS", "Vp8Feed"]

#: the hub's names of the FLV codecs re-encoded ("H263", "VP6", "VP6A")
TRANSCODABLE_CODECS = frozenset(FLV_VIDEO_CODECS[c] for c in TRANSCODABLE)


class Vp8Feed:
    """FLV tag bodies in, ``(seq, timestamp, marker, payload, keyframe)`` RTP fields out."""

    def __init__(self, bitrate_bps: int, mtu_payload: int = 1200) -> None:
        self.coder = FlvToVp8(bitrate_bps)
        self.mtu_payload = mtu_payload
        self.seq = 0

    def force_keyframe(self) -> None:
        self.coder.force_keyframe()

    def packets(self, body: bytes, timestamp_ms: int) -> list[tuple[int, int, bool, bytes, bool]]:
        out = []
        for frame in self.coder.feed(body, timestamp_ms):
            payloads = vp8_payloads(frame.data, self.mtu_payload)
            ts = (frame.timestamp_ms * 90) & 0xFFFFFFFF
            for i, p in enumerate(payloads):
                out.append((self.seq, ts, i == len(payloads) - 1, p, frame.keyframe and i == 0))
                self.seq = (self.seq + 1) & 0xFFFF
        return out

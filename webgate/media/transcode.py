"""FLV video a WebRTC watcher cannot take (Sorenson H.263, VP6) re-encoded to VP8 with PyAV.

Only with ``[video] transcode = true``, and only while the call has a WebRTC watcher: the media
hub (``webgate/legs/hub.py``) makes one :class:`FlvToVp8` per call when the first such watcher
joins and drops it when the last leaves. Everything else in the gateway forwards video as it came;
this and the snapshot (``media/snapshot.py``) are the only places video is decoded.

:meth:`FlvToVp8.feed` takes one FLV video tag body (frame-type/codec byte first) and returns the
VP8 frames it produced. The encoder runs in libvpx's real-time mode without lag (one frame in, one
out), at ``bitrate_bps``; :meth:`FlvToVp8.force_keyframe` makes the next frame a keyframe (a new
watcher, a watcher's PLI). Bad input is counted and dropped, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av

__all__ = ["TRANSCODABLE", "FlvToVp8", "Vp8Frame"]

#: FLV VideoTagHeader CodecID -> PyAV decoder
TRANSCODABLE = {2: "flv", 4: "vp6f", 5: "vp6a"}
_MS = Fraction(1, 1000)
MAX_SIDE = 4096  # a larger picture is not re-encoded (a bad or hostile stream)


@dataclass(frozen=True, slots=True)
class Vp8Frame:
    data: bytes
    keyframe: bool
    timestamp_ms: int
    width: int
    height: int


class FlvToVp8:
    """Decode FLV Sorenson/VP6 tag bodies, encode VP8 (see the module doc)."""

    def __init__(self, bitrate_bps: int = 800_000) -> None:
        self.bitrate_bps = bitrate_bps
        self._dec: av.VideoCodecContext | None = None
        self._dec_id = -1
        self._enc: av.VideoCodecContext | None = None
        self._size: tuple[int, int] | None = None
        self._force = True
        self._last_pts = -1
        self.frames_in = 0
        self.frames_out = 0
        self.errors = 0

    def force_keyframe(self) -> None:
        self._force = True

    def feed(self, body: bytes, timestamp_ms: int) -> list[Vp8Frame]:
        if len(body) < 2:
            return []
        codec_id = body[0] & 0x0F
        name = TRANSCODABLE.get(codec_id)
        if name is None or body[0] >> 4 == 5:  # not ours, or a video info/command frame
            return []
        payload = body[1:]
        if codec_id in (4, 5):
            # VP6: one adjustment byte ahead of the frame (VP6A's alpha offset after it is the
            # decoder's, as ffmpeg's flv demuxer leaves it)
            payload = payload[1:]
        try:
            return self._transcode(codec_id, name, payload, timestamp_ms)
        except (av.error.FFmpegError, ValueError):
            self.errors += 1
            self._dec = None  # start again at the next keyframe
            return []

    def _transcode(self, codec_id: int, name: str, payload: bytes, timestamp_ms: int) -> list[Vp8Frame]:
        if self._dec is None or self._dec_id != codec_id:
            dec = av.CodecContext.create(name, "r")
            assert isinstance(dec, av.VideoCodecContext)
            self._dec, self._dec_id = dec, codec_id
        out: list[Vp8Frame] = []
        for frame in self._dec.decode(av.Packet(payload)):
            self.frames_in += 1
            if not 0 < frame.width <= MAX_SIDE or not 0 < frame.height <= MAX_SIDE:
                self.errors += 1
                continue
            out += self._encode(frame, timestamp_ms)
        return out

    def _encode(self, frame: av.VideoFrame, timestamp_ms: int) -> list[Vp8Frame]:
        size = (frame.width - frame.width % 2, frame.height - frame.height % 2)
        if self._enc is None or self._size != size:
            enc = av.CodecContext.create("libvpx", "w")
            assert isinstance(enc, av.VideoCodecContext)
            enc.width, enc.height = size
            enc.pix_fmt = "yuv420p"
            enc.time_base = _MS
            enc.bit_rate = self.bitrate_bps
            enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1"}
            self._enc, self._size, self._force = enc, size, True
        pic = frame.reformat(width=size[0], height=size[1], format="yuv420p")
        pts = max(timestamp_ms, self._last_pts + 1)  # libvpx wants increasing pts
        self._last_pts = pts
        pic.pts, pic.time_base = pts, _MS
        if self._force:
            pic.pict_type = av.video.frame.PictureType.I
            self._force = False
        out = []
        for packet in self._enc.encode(pic):
            self.frames_out += 1
            out.append(Vp8Frame(bytes(packet), bool(packet.is_keyframe), timestamp_ms, size[0], size[1]))
        return out

"""H.264 test bitstreams made by ffmpeg + libx264 (yuv420p, Annex B), cut into access units, and
the helpers that feed them to a media hub as a WebRTC caller (RTP, RFC 6184 through
``proto/h264.py``) or as an RTMP publisher (FLV AVC tags through ``proto/h264.py``/``proto/flv.py``)."""

from __future__ import annotations

import subprocess
from functools import lru_cache

from webgate.legs.hub_types import FlvVideo, RtpVideo
from webgate.proto import h264

FPS = 25
TICKS = h264.CLOCK_RATE // FPS  # 90 kHz per frame


@lru_cache(maxsize=16)
def x264(ffmpeg: str, colour: str = "red", size: str = "320x240", frames: int = 1, gop: int = 250) -> bytes:
    """``frames`` frames of a solid ``colour`` (or ``testsrc`` when colour is "testsrc") at ``size``,
    a keyframe every ``gop`` frames, no B-frames: an Annex B byte stream."""
    source = f"testsrc=size={size}:rate={FPS}" if colour == "testsrc" else f"color=c={colour}:size={size}:rate={FPS}"
    return subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source, "-frames:v", str(frames),
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "baseline", "-g", str(gop), "-bf", "0",
         "-x264-params", "scenecut=0", "-f", "h264", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout


def access_units(stream: bytes) -> list[list[bytes]]:
    """The NAL units of ``stream`` grouped into access units (a new one at each slice whose
    first_mb_in_slice is 0, with the SPS/PPS/SEI before it)."""
    aus: list[list[bytes]] = []
    pending: list[bytes] = []
    current: list[bytes] | None = None
    for nal in h264.split_annexb(stream):
        t = h264.nal_type(nal)
        if t in (h264.NAL_SLICE, h264.NAL_IDR):
            if nal[1] & 0x80 or current is None:  # first_mb_in_slice == 0: a new picture
                current = pending
                aus.append(current)
                pending = []
            current.append(nal)
            continue
        if t == h264.NAL_AUD:
            continue
        pending.append(nal)
    return aus


def rtp_packets(aus: list[list[bytes]], codec: str = "H264", seq: int = 1000, ts: int = 90000, mtu: int = 1200) -> list[RtpVideo]:
    """The access units as a WebRTC caller sends them: RTP H.264 packetization-mode 1."""
    p = h264.Packetizer(mtu)
    out = []
    for i, au in enumerate(aus):
        for j, pl in enumerate(p.packetize(au)):
            out.append(RtpVideo(codec, seq & 0xFFFF, (ts + i * TICKS) & 0xFFFFFFFF, pl.marker, pl.payload, keyframe=j == 0 and h264.is_keyframe(au)))
            seq += 1
    return out


def flv_tags(aus: list[list[bytes]], t0_ms: int = 0) -> list[FlvVideo]:
    """The access units as an RTMP publisher sends them: the AVC sequence header, then one AVC
    NALU tag per access unit (SPS/PPS left in the keyframes, as ffmpeg's flv muxer does not)."""
    w = h264.AvcTagWriter()
    out = []
    for i, au in enumerate(aus):
        for body in w.write(au):
            out.append(FlvVideo(t0_ms + i * 1000 // FPS, body))
    return out

"""Video as bytes for the recording's video tests (issue 17): VP8 RTP packets of a solid colour,
H.264 FLV tags from ffmpeg, and what ffprobe/PyAV read back from a recorded file."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from webgate.proto import flv, h264


def vp8_frames(rgb: tuple[int, int, int], n: int, *, gop: int = 10, size: tuple[int, int] = (320, 240)) -> list[bytes]:
    """``n`` VP8 frames of one colour, a keyframe every ``gop`` frames (libvpx via PyAV)."""
    w, h = size
    enc = av.CodecContext.create("libvpx", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.gop_size = gop
    enc.options = {"keyint_min": str(gop), "deadline": "realtime", "cpu-used": "8"}
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :] = rgb
    out: list[bytes] = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in enc.encode(frame)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


def vp8_noise_keyframe(size: tuple[int, int] = (320, 240)) -> bytes:
    """One VP8 keyframe of random noise (large: for filling a disk)."""
    w, h = size
    enc = av.CodecContext.create("libvpx", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.bit_rate = 20_000_000
    img = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    frame.pts = 0
    packets = [bytes(p) for p in enc.encode(frame)] + [bytes(p) for p in enc.encode(None)]
    return packets[0]


def vp8_rtp(frames: list[bytes], *, mtu: int = 900, seq0: int = 1000, ts0: int = 12345, fps: int = 30) -> list[tuple[int, int, bool, bytes, int]]:
    """RFC 7741 payloads (a one-byte descriptor: S on the first) as (seq, ts, marker, payload,
    frame index)."""
    out = []
    seq = seq0
    for i, frame in enumerate(frames):
        ts = (ts0 + i * 90000 // fps) & 0xFFFFFFFF
        chunks = [frame[j : j + mtu] for j in range(0, len(frame), mtu)]
        for k, chunk in enumerate(chunks):
            desc = b"\x10" if k == 0 else b"\x00"
            out.append((seq & 0xFFFF, ts, k == len(chunks) - 1, desc + chunk, i))
            seq += 1
    return out


def h264_flv(path: Path, *, seconds: float = 2.0, gop: int = 25, profile: str = "main") -> Path:
    """An FLV of H.264 test pattern (libx264, with B-frames) made by ffmpeg."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", str(seconds),
         "-c:v", "libx264", "-profile:v", profile, "-g", str(gop), "-pix_fmt", "yuv420p", "-an", str(path)],
        check=True, timeout=60)
    return path


def flv_video_tags(path: Path) -> list[tuple[int, bytes]]:
    """(timestamp ms, body) of each video tag of an FLV file."""
    _, tags = flv.read_flv(path.read_bytes())
    return [(t.timestamp, t.data) for t in tags if t.tag_type == 9]


def h264_rtp_from_flv(tags: list[tuple[int, bytes]]) -> list[tuple[int, int, bool, bytes]]:
    """The FLV's access units packetized as RFC 6184 RTP (seq, ts, marker, payload)."""
    reader = h264.AvcTagReader()
    pk = h264.Packetizer(1000)
    out = []
    seq = 7
    for ts_ms, body in tags:
        au = reader.feed(body, ts_ms)
        if reader.config is not None:
            pk.set_parameter_sets(reader.config.sps, reader.config.pps)
        if au is None:
            continue
        for p in pk.packetize(list(au.nals)):
            out.append((seq & 0xFFFF, (ts_ms * 90) & 0xFFFFFFFF, p.marker, p.payload))
            seq += 1
    return out


def ffprobe(path: Path) -> dict[str, Any]:
    """ffprobe's streams (with extradata) and video packets of ``path``."""
    r = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_data", "-show_packets", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True)
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def video_stream(probe: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in probe["streams"] if s["codec_type"] == "video")


def audio_stream(probe: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in probe["streams"] if s["codec_type"] == "audio")


def decoded_rgb(path: Path, limit: int = 1000) -> list[tuple[float, float, float]]:
    """Mean RGB of the middle of each decoded frame (PyAV)."""
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            a = frame.to_ndarray(format="rgb24")
            h, w = a.shape[:2]
            mid = a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)
            out.append((float(mid[0]), float(mid[1]), float(mid[2])))
            if len(out) >= limit:
                break
    return out


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """The audio track decoded to float (n, channels) and its rate."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.codec_context.sample_rate
        parts = []
        for frame in c.decode(audio=0):
            a = frame.to_ndarray()
            parts.append(a.T if frame.format.is_planar else a.reshape(-1, frame.layout.nb_channels))
    return np.concatenate(parts).astype(np.float64), rate


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def stereo_tone(n: int, rate: int, left_hz: float, right_hz: float, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / rate
    left = (np.sin(2 * np.pi * left_hz * t) * 8000).astype(np.int16)
    right = (np.sin(2 * np.pi * right_hz * t) * 8000).astype(np.int16)
    return np.stack([left, right], axis=1)

"""webgate.proto.h264 against FFmpeg: libx264 writes an FLV file, our code carries its video over RTP.

ffmpeg encodes a test pattern (and a solid red picture) with libx264 into FLV; the FLV tags go through
AvcTagReader → Packetizer (1200-byte payloads) → RTP packets (proto/rtp.py) → Depacketizer → Annex B.
ffprobe must see the right H.264 stream, ffmpeg must decode every frame without a complaint, and the red
one must still be red. A run with one FU-A fragment lost checks that what the depacketizer lets through
after loss (nothing until the next IDR) decodes cleanly.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import require
from webgate.proto.flv import TAG_VIDEO, read_flv
from webgate.proto.h264 import (
    FU_A,
    AccessUnit,
    AvcDecoderConfig,
    AvcTagReader,
    Depacketizer,
    DepacketizerStats,
    Packetizer,
    join_annexb,
    parse_sps,
)
from webgate.proto.rtp import RtpSender, parse_payload

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1

SECONDS = 3
FPS = 25
TESTSRC = f"testsrc=size=320x240:rate={FPS}"
RED = f"color=c=red:size=320x240:rate={FPS}"
MAX_PAYLOAD = 1200


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), capture_output=True, timeout=timeout, check=False)


def _encode_flv(tmp_path: Path, source: str, pix_fmt: str | None = None) -> bytes:
    out = tmp_path / "in.flv"
    fmt = ["-pix_fmt", pix_fmt] if pix_fmt else []
    r = _run(require.require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-y",
             "-f", "lavfi", "-i", source, "-t", str(SECONDS),
             "-c:v", "libx264", "-bf", "0", "-g", "25", *fmt, "-f", "flv", str(out))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return out.read_bytes()


@dataclass
class Carried:
    config: AvcDecoderConfig
    sent: list[AccessUnit]
    received: list[AccessUnit]
    stats: DepacketizerStats
    packets: int
    keyframe_requests: int


def _carry(flv: bytes, lose: tuple[int, int] | None = None) -> Carried:
    """FLV tags → access units → RTP packets → access units. ``lose=(au, k)``: drop the k-th
    packet of access unit number ``au``."""
    reader = AvcTagReader()
    packetizer = Packetizer(MAX_PAYLOAD)
    sender = RtpSender(96, 90000, ssrc=0x1234, sequence=65500)  # wraps the sequence number
    depacketizer = Depacketizer()
    sent: list[AccessUnit] = []
    received: list[AccessUnit] = []
    packets = requests = 0
    _flags, tags = read_flv(flv)
    for tag in tags:
        if tag.tag_type != TAG_VIDEO:
            continue
        au = reader.feed(tag.data, tag.timestamp)
        if au is None:
            continue
        sent.append(au)
        for k, (payload, marker) in enumerate(packetizer.packetize(au.nals)):
            wire = sender.packet_at(payload, au.timestamp, marker).serialize()
            assert len(wire) <= 12 + MAX_PAYLOAD
            if lose == (len(sent) - 1, k):
                continue
            parsed = parse_payload(wire)
            assert parsed is not None
            _pt, seq, ts, mark, body = parsed
            packets += 1
            received.extend(depacketizer.push(seq, ts, mark, body))
            requests += depacketizer.take_keyframe_request()
    received.extend(depacketizer.flush())
    assert reader.config is not None
    return Carried(reader.config, sent, received, depacketizer.stats, packets, requests)


def _probe(path: Path) -> dict[str, object]:
    r = _run(require.require_program("ffprobe", "ffmpeg"), "-v", "error", "-f", "h264",
             "-show_streams", "-select_streams", "v:0", "-of", "json", str(path))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    streams = json.loads(r.stdout)["streams"]
    assert len(streams) == 1
    stream: dict[str, object] = streams[0]
    return stream


def _decoded_frames(path: Path) -> int:
    """Frames ffmpeg decodes from the Annex B file; any decoder message fails the test."""
    r = _run(require.require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error",
             "-f", "h264", "-i", str(path), "-f", "framemd5", "-")
    assert r.returncode == 0 and not r.stderr, r.stderr.decode(errors="replace")
    return sum(1 for line in r.stdout.decode().splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("pix_fmt", ["yuv420p", None], ids=["high-420", "x264-default-444"])
def test_testsrc_over_rtp_decodes(tmp_path: Path, pix_fmt: str | None) -> None:
    carried = _carry(_encode_flv(tmp_path, TESTSRC, pix_fmt))
    frames = SECONDS * FPS
    assert len(carried.sent) == frames
    assert [au.nals for au in carried.received] == [au.nals for au in carried.sent]
    assert [au.timestamp for au in carried.received] == [k * 3600 for k in range(frames)]
    assert carried.received[0].is_keyframe and sum(au.is_keyframe for au in carried.received) == 3
    assert carried.packets > frames  # the keyframes needed FU-A
    assert carried.stats.lost == carried.stats.broken == carried.stats.malformed == 0
    assert carried.keyframe_requests == 0
    sps = parse_sps(carried.config.sps[0])
    assert (sps.width, sps.height) == (320, 240)
    out = tmp_path / "out.h264"
    out.write_bytes(join_annexb(n for au in carried.received for n in au.nals))
    stream = _probe(out)
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)
    assert stream["profile"] == ("High" if pix_fmt == "yuv420p" else "High 4:4:4 Predictive")
    assert sps.profile_level_id == f"{carried.config.profile:02x}{carried.config.compatibility:02x}" \
                                   f"{carried.config.level:02x}"
    assert _decoded_frames(out) == frames >= 70


@pytest.mark.parametrize(("victim", "packet"), [(25, 2), (30, 0)], ids=["idr-fu-a-middle", "whole-p-frame"])
def test_loss_drops_until_the_next_idr_and_what_is_left_decodes(tmp_path: Path, victim: int, packet: int) -> None:
    """Lose the middle FU-A fragment of the second IDR (frame 25), or the one packet of P frame 30:
    nothing is delivered until the IDR at frame 50 (-g 25), and what is delivered decodes cleanly."""
    flv = _encode_flv(tmp_path, TESTSRC, "yuv420p")
    clean = _carry(flv)
    payloads = Packetizer(MAX_PAYLOAD).packetize(clean.sent[victim].nals)
    if victim == 25:
        assert clean.sent[victim].is_keyframe and len(payloads) >= 3
        assert payloads[packet].payload[0] & 0x1F == FU_A and not payloads[packet].payload[1] & 0xC0
    else:
        assert not clean.sent[victim].is_keyframe and len(payloads) == 1
    carried = _carry(flv, lose=(victim, packet))
    assert carried.stats.lost == 1 and carried.keyframe_requests == 1
    assert carried.stats.broken == (1 if victim == 25 else 0)
    kept = [au.timestamp for au in carried.received]
    expected = [au.timestamp for i, au in enumerate(clean.sent) if i < victim or i >= 50]
    assert kept == expected
    assert carried.stats.skipped == 50 - victim - 1
    out = tmp_path / "lossy.h264"
    out.write_bytes(join_annexb(n for au in carried.received for n in au.nals))
    assert _decoded_frames(out) == len(expected) >= 50


def test_red_stays_red(tmp_path: Path) -> None:
    carried = _carry(_encode_flv(tmp_path, RED, "yuv420p"))
    assert len(carried.received) == SECONDS * FPS
    out = tmp_path / "red.h264"
    out.write_bytes(join_annexb(n for au in carried.received for n in au.nals))
    r = _run(require.require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-f", "h264",
             "-i", str(out), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    rgb = r.stdout
    assert len(rgb) == 320 * 240 * 3
    pixels = len(rgb) // 3
    red, green, blue = (sum(rgb[c::3]) / pixels for c in range(3))
    assert red > 180 and green < 60 and blue < 60, (red, green, blue)

"""The recording's video remuxer with bytes (issue 17): VP8 RTP → WebM and H.264 (FLV and RTP) →
Matroska without transcoding, keyframe first, timestamps monotonic, the stereo audio in the file."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.recording.helpers import small_tmpfs
from tests.recording.video_bytes import (
    audio_stream,
    decoded_audio,
    decoded_rgb,
    dominant_hz,
    ffprobe,
    flv_video_tags,
    h264_flv,
    h264_rtp_from_flv,
    stereo_tone,
    video_stream,
    vp8_frames,
    vp8_noise_keyframe,
    vp8_rtp,
)
from webgate.media.recording.video import (
    RemuxThread,
    VideoRemuxer,
    Vp8Assembler,
    vp8_frame_size,
)

pytestmark = pytest.mark.usefixtures("ffmpeg_program")

RED = (220, 30, 30)


def _video_pts(probe: dict) -> list[float]:
    return [float(p["pts_time"]) for p in probe["packets"] if p["codec_type"] == "video"]


def _first_video_packet(probe: dict) -> dict:
    return next(p for p in probe["packets"] if p["codec_type"] == "video")


def test_vp8_rtp_to_webm_starts_at_a_keyframe_with_the_colour_and_both_channels(tmp_path: Path) -> None:
    rate = 16000
    frames = vp8_frames(RED, 40, gop=10)
    assert vp8_frame_size(frames[0]) == (320, 240) and vp8_frame_size(frames[3]) is None
    packets = [p for p in vp8_rtp(frames) if p[4] >= 3]  # joins mid-GOP: frames 3..9 are not keyframes
    rec = VideoRemuxer(tmp_path / "call", rate=rate)
    assert rec.take_keyframe_request() and not rec.take_keyframe_request()  # asked at the start
    fed = 0
    for seq, ts, marker, payload, i in packets:
        t = 0.5 + i / 30
        want = int(t * rate)
        if want > fed:  # the recording's audio, contiguous from timeline 0
            rec.audio(stereo_tone(want - fed, rate, 660, 440, start=fed))
            fed = want
        rec.rtp("VP8", seq, ts, marker, payload, t)
    rec.close()
    assert rec.error is None and rec.path == tmp_path / "call.webm" and rec.container == "webm"
    assert rec.frames == 30  # 40 frames, 3..9 dropped before the first keyframe (frame 10)
    probe = ffprobe(rec.path)
    v, a = video_stream(probe), audio_stream(probe)
    assert (v["codec_name"], v["width"], v["height"]) == ("vp8", 320, 240)
    assert (a["codec_name"], a["channels"]) == ("opus", 2)
    first = _first_video_packet(probe)
    assert first["flags"].startswith("K")
    pts = _video_pts(probe)
    assert all(b > a for a, b in itertools.pairwise(pts))
    # frame 10 arrived at timeline 0.5 + 10/30 s: the video starts there, the audio at 0
    assert pts[0] == pytest.approx(0.5 + 10 / 30, abs=0.002)
    assert pts[-1] - pts[0] == pytest.approx(29 / 30, abs=0.005)
    rgb = decoded_rgb(rec.path)
    assert len(rgb) == 30
    assert all(abs(c - w) < 20 for px in rgb for c, w in zip(px, RED)), rgb[:3]
    pcm, arate = decoded_audio(rec.path)
    assert pcm.shape[1] == 2 and len(pcm) / arate == pytest.approx(fed / rate, abs=0.05)
    mid = pcm[arate // 4 : arate]
    assert dominant_hz(mid[:, 0], arate) == pytest.approx(660, abs=5)
    assert dominant_hz(mid[:, 1], arate) == pytest.approx(440, abs=5)


def test_vp8_loss_waits_for_the_next_keyframe_and_asks_for_it(tmp_path: Path) -> None:
    frames = vp8_frames(RED, 30, gop=10)
    packets = vp8_rtp(frames, mtu=300)
    lost = next(p[0] for p in packets if p[4] == 13)  # one packet of frame 13 is lost
    rec = VideoRemuxer(tmp_path / "c", rate=8000)
    rec.take_keyframe_request()
    asked = []
    for seq, ts, marker, payload, i in packets:
        if seq == lost:
            continue
        rec.rtp("VP8", seq, ts, marker, payload, i / 30)
        if rec.take_keyframe_request():
            asked.append(i)
    rec.close()
    assert asked == [13] or asked == [14]  # noticed at the packet after the lost one
    assert rec.frames == 13 + 10  # 0..12, then 20..29
    probe = ffprobe(tmp_path / "c.webm")
    keys = [p for p in probe["packets"] if p["codec_type"] == "video" and p["flags"].startswith("K")]
    assert len(keys) == 3 and float(keys[-1]["pts_time"]) == pytest.approx(20 / 30, abs=0.002)


def test_vp8_assembler_drops_broken_frames() -> None:
    a = Vp8Assembler()
    assert a.push(1, 100, False, b"\x10abc") is None
    assert a.push(2, 100, True, b"\x00def") == b"abcdef"
    assert a.push(2, 100, True, b"\x00def") is None  # duplicate
    assert a.push(4, 200, True, b"\x00ghi") is None and a.lost  # its start was lost
    assert a.push(5, 300, True, b"") is None  # malformed
    assert a.push(6, 400, True, b"\x90\x80\x81\x05xyz") == b"xyz"  # X, I with a 15-bit picture ID


def test_h264_flv_to_mkv_keeps_the_publishers_parameters(tmp_path: Path) -> None:
    src = h264_flv(tmp_path / "src.flv", seconds=2.0, gop=25)
    tags = flv_video_tags(src)
    rec = VideoRemuxer(tmp_path / "rtmp", rate=8000)
    fed = 0
    for ts, body in tags:
        t = 1.0 + ts / 1000
        want = int(t * 8000)
        rec.audio(stereo_tone(want - fed, 8000, 660, 440, start=fed))
        fed = want
        rec.flv(ts, body, t)
    rec.close()
    assert rec.error is None and rec.path == tmp_path / "rtmp.mkv" and rec.codec == "H264"
    a, b = video_stream(ffprobe(src)), video_stream(probe := ffprobe(rec.path))
    for key in ("codec_name", "profile", "level", "width", "height", "pix_fmt", "has_b_frames", "extradata"):
        assert a[key] == b[key], key
    assert audio_stream(probe)["channels"] == 2
    src_packets = [p for p in ffprobe(src)["packets"] if p["codec_type"] == "video"]
    packets = [p for p in probe["packets"] if p["codec_type"] == "video"]
    assert len(packets) == len(src_packets) == 50
    assert [p["size"] for p in packets] == [p["size"] for p in src_packets]  # the bytes as they came
    assert packets[0]["flags"].startswith("K")
    # presentation times: the publisher's (B-frames' order kept), moved onto the timeline (+1 s)
    pts = [float(p["pts_time"]) for p in packets]
    src_pts = [float(p["pts_time"]) for p in src_packets]
    assert pts == pytest.approx([x + 1.0 for x in src_pts], abs=0.002)
    assert len(set(pts)) == len(pts) and min(pts) == pytest.approx(1.0 + min(src_pts), abs=0.002)
    assert len(decoded_rgb(rec.path)) == 50


def test_h264_rtp_to_mkv_from_the_first_idr(tmp_path: Path) -> None:
    src = h264_flv(tmp_path / "src.flv", seconds=2.0, gop=25, profile="baseline")
    packets = h264_rtp_from_flv(flv_video_tags(src))
    start = len(packets) // 4  # joins mid-GOP
    rec = VideoRemuxer(tmp_path / "webrtc", rate=48000)
    rec.audio(np.zeros((48000, 2), np.int16))
    for seq, ts, marker, payload in packets[start:]:
        rec.rtp("H264", seq, ts, marker, payload, ts / 90000)
    rec.close()
    assert rec.error is None and rec.path == tmp_path / "webrtc.mkv"
    probe = ffprobe(rec.path)
    v = video_stream(probe)
    assert (v["codec_name"], v["profile"], v["width"], v["height"]) == ("h264", "Constrained Baseline", 320, 240)
    vp = [p for p in probe["packets"] if p["codec_type"] == "video"]
    assert vp[0]["flags"].startswith("K") and float(vp[0]["pts_time"]) == pytest.approx(1.0, abs=0.002)
    assert len(vp) == 25 and len(decoded_rgb(rec.path)) == 25  # the second GOP, from its IDR


def test_pause_drops_video_and_resumes_at_a_keyframe(tmp_path: Path) -> None:
    frames = vp8_frames(RED, 40, gop=10)
    rec = VideoRemuxer(tmp_path / "p", rate=8000)
    for seq, ts, marker, payload, i in vp8_rtp(frames):
        if i == 5:
            rec.pause(True)
        if i == 13:
            rec.pause(False)
            assert rec.take_keyframe_request() or True
        rec.rtp("VP8", seq, ts, marker, payload, i / 30)
    rec.close()
    assert rec.frames == 5 + 20  # 0..4, then 20..39 (13..19 wait for frame 20's keyframe)


def test_no_video_no_file_and_other_codecs_are_ignored(tmp_path: Path) -> None:
    rec = VideoRemuxer(tmp_path / "n", rate=8000)
    rec.audio(np.zeros((80000, 2), np.int16))
    rec.rtp("VP9", 1, 0, True, b"\x00" * 20, 0.0)
    rec.flv(0, b"\x22" + b"\x00" * 10, 0.0)  # Sorenson H.263
    rec.close()
    rec.close()
    assert rec.path is None and rec.error is None and not list(tmp_path.iterdir())


def test_a_write_failure_sets_error_and_stops_only_the_file(tmp_path: Path) -> None:
    rec = VideoRemuxer(tmp_path / "missing" / "dir" / "x", rate=8000)  # the directory is not there
    for seq, ts, marker, payload, i in vp8_rtp(vp8_frames(RED, 3)):
        rec.rtp("VP8", seq, ts, marker, payload, i / 30)
    rec.audio(np.zeros((800, 2), np.int16))
    rec.close()
    assert rec.error is not None and "video write failed" in rec.error and rec.frames == 0


def test_the_thread_writes_the_same_file_and_drops_video_only_when_full(tmp_path: Path) -> None:
    frames = vp8_frames(RED, 40, gop=10)
    packets = vp8_rtp(frames)
    worker = RemuxThread(VideoRemuxer(tmp_path / "t", rate=8000))
    for seq, ts, marker, payload, i in packets:
        worker.rtp("VP8", seq, ts, marker, payload, i / 30)
        worker.audio(np.zeros((266, 2), np.int16))
    worker.close()
    worker.close()
    assert worker.error is None and worker.frames == 40 and worker.dropped == 0
    assert not worker.take_keyframe_request()  # closed: nothing to ask for
    assert len(decoded_rgb(tmp_path / "t.webm")) == 40

    # a queue that is full drops video; the file resumes at the next keyframe
    slow = VideoRemuxer(tmp_path / "s", rate=8000)
    worker = RemuxThread(slow, max_queue=5)
    hold = threading.Event()
    original = slow.audio

    def blocking_audio(stereo: np.ndarray) -> None:
        hold.wait(10)
        original(stereo)

    slow.audio = blocking_audio  # type: ignore[method-assign]
    worker.audio(np.zeros((8, 2), np.int16))  # the worker blocks here until `hold`
    early = [p for p in packets if p[4] < 15]
    for seq, ts, marker, payload, i in early:
        worker.rtp("VP8", seq, ts, marker, payload, i / 30)
    assert worker.dropped == 15 - 4 or worker.dropped == 15 - 5  # 5 queued (4 if the audio still was)
    hold.set()
    for seq, ts, marker, payload, i in packets:
        if i >= 15:
            time.sleep(0.003)  # packets come paced (here faster than 30 a second), not all at once
            worker.rtp("VP8", seq, ts, marker, payload, i / 30)
    worker.close()
    assert worker.error is None
    probe = ffprobe(tmp_path / "s.webm")
    keys = [p for p in probe["packets"] if p["codec_type"] == "video" and p["flags"].startswith("K")]
    assert _first_video_packet(probe)["flags"].startswith("K") and len(keys) >= 2
    assert worker.frames in (4 + 20, 5 + 20) and len(decoded_rgb(tmp_path / "s.webm")) == worker.frames  # 20..39


def test_a_full_disk_is_disk_full_and_stops_the_video_only(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path, "128k") as mnt:
        frames = [vp8_noise_keyframe()] * 100  # ~75 KB each: the 128 KiB fill at once
        rec = VideoRemuxer(mnt / "full", rate=48000)
        for seq, ts, marker, payload, i in vp8_rtp(frames):
            rec.rtp("VP8", seq, ts, marker, payload, i / 30)
            rec.audio(stereo_tone(1600, 48000, 660, 440, start=i * 1600))
            if rec.error:
                break
        assert rec.error == "disk full", rec.error
        written = rec.frames
        rec.rtp("VP8", 1, 0, True, b"\x10" + frames[0], 99.0)  # stopped: no exception, nothing more
        rec.audio(np.zeros((4800, 2), np.int16))
        rec.close()
        assert rec.frames == written and rec.error == "disk full"


CRASH = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.recording.video_bytes import stereo_tone, vp8_frames, vp8_rtp
from webgate.media.recording.video import VideoRemuxer
rec = VideoRemuxer(Path({base!r}), rate=8000)
for seq, ts, marker, payload, i in vp8_rtp(vp8_frames((220, 30, 30), 90, gop=15)):
    rec.rtp("VP8", seq, ts, marker, payload, i / 30)
    rec.audio(stereo_tone(266, 8000, 660, 440, start=i * 266))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_file_cut_by_sigkill_plays_up_to_its_last_second(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    r = subprocess.run([sys.executable, "-c", CRASH.format(root=root, base=str(tmp_path / "k"))],
                       capture_output=True, timeout=60, check=False)
    assert r.returncode == -9, r.stderr
    rgb = decoded_rgb(tmp_path / "k.webm")  # no cues, no duration: still a file PyAV reads
    print(f"\nafter SIGKILL: {len(rgb)} of 90 frames decode")
    assert 60 <= len(rgb) <= 90, len(rgb)  # 3 s of video, at most the last second lost
    assert all(abs(c - w) < 20 for px in rgb for c, w in zip(px, RED, strict=True))


def test_garbage_from_the_caller_never_raises(tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    for codec in ("VP8", "H264"):
        rec = VideoRemuxer(tmp_path / codec, rate=8000)
        for i in range(3000):
            payload = rng.integers(0, 256, int(rng.integers(0, 60)), dtype=np.uint8).tobytes()
            if i % 7 == 0:
                payload = bytes([0x10]) + b"\x00\x00\x00\x9d\x01\x2a" + payload  # keyframe-looking VP8
            rec.rtp(codec, int(rng.integers(0, 65536)), int(rng.integers(0, 1 << 32)), bool(i % 2), payload, i / 100)
        rec.close()
    rec = VideoRemuxer(tmp_path / "flv", rate=8000)
    for i in range(3000):
        body = bytes([0x17 if i % 3 else 0x27, i % 3]) + rng.integers(0, 256, int(rng.integers(0, 60)), dtype=np.uint8).tobytes()
        rec.flv(int(rng.integers(0, 1 << 32)), body, i / 100)
    rec.close()  # whatever came of it (most likely no file at all), nothing raised

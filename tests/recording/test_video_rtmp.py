"""An H.264 RTMP publisher recorded without re-encoding (issue 17), through a route with
``record = "audio+video"``.

ffmpeg encodes a test pattern with libx264 (Main profile, B-frames), a 660 Hz tone (G.711) and two
subtitles (which FLV carries as ``onTextData`` data messages) into an FLV file, then publishes
that file as it is (``-c copy``, in real time) to ``call/rec``. ffprobe reads the published file
and the recording: the codec and every parameter (profile, level, size, pixel format, B-frames,
the extradata byte for byte) are identical, the frames are the published ones (sizes), the
first is a keyframe, and the file's audio has both channels. The subtitles are in the JSON
lines, inside the call's time (the other direction, a watcher's message: test_video_webrtc).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, ffmpeg
from tests.calls.gw import sleep, wait_for
from tests.interop.peers import free_port
from tests.recording.video_bytes import (
    audio_stream,
    decoded_audio,
    dominant_hz,
    ffprobe,
    video_stream,
)

pytestmark = pytest.mark.usefixtures("ffmpeg_program")

KEY = "webgate-test-token-key-0123456789abcdef"
SRT = "1\n00:00:01,500 --> 00:00:02,000\nhello from the publisher\n\n2\n00:00:02,500 --> 00:00:03,000\nsecond line\n"


def _source(tmp_path: Path, seconds: int = 5) -> Path:
    srt = tmp_path / "subs.srt"
    srt.write_text(SRT)
    out = tmp_path / "published.flv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=8000", "-i", str(srt), "-t", str(seconds),
         "-map", "0:v", "-map", "1:a", "-map", "2:s",
         "-c:v", "libx264", "-profile:v", "main", "-level", "3.0", "-g", "25", "-pix_fmt", "yuv420p",
         "-c:a", "pcm_mulaw", "-ar", "8000", "-c:s", "text", "-f", "flv", str(out)],
        check=True, timeout=60)
    return out


def _gateway(tmp_path: Path) -> Gateway:
    port = free_port("udp")
    return Gateway({
        "tokens": {"key": KEY},
        "sip": {"udp": f"127.0.0.1:{port}"},
        "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{port}"}],
        "route": [{"pattern": "rec", "trunk": "self", "rewrite": "echo", "public": True, "record": "audio+video"}],
        "recording": {"dir": str(tmp_path / "rec")},
    })


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_an_h264_publisher_is_recorded_with_the_published_parameters(tmp_path: Path) -> None:
    src = _source(tmp_path)
    gw = _gateway(tmp_path)
    pub = ffmpeg("-re", "-i", str(src), "-map", "0", "-c", "copy", "-f", "flv", gw.url("call/rec"), timeout=40)
    try:
        assert await wait_for(lambda: any(gw.svc.recordings.active), 10)
        (sid,) = list(gw.svc.recordings.active)
        rec = gw.svc.recordings.active[sid]
        assert rec.sink is not None
        await sleep(0.5)
        code, _out, err = await pub.wait()
        assert code == 0, err.decode(errors="replace")
        t_end = rec.timeline()
        assert await wait_for(lambda: sid not in gw.svc.recordings.active, 10)
    finally:
        pub.kill()
        await pub.wait()
        await gw.stop()

    (side_path,) = list((tmp_path / "rec").rglob("*.json"))
    side = json.loads(side_path.read_text())
    files = side["files"]
    print(f"\nsidecar files {files} codecs {side['codecs']}")
    assert files["video"].endswith(".mkv") and side["codecs"]["video"] == "H264" and side["codecs"]["container"] == "matroska"
    published, recorded = ffprobe(src), ffprobe(Path(files["video"]))
    a, b = video_stream(published), video_stream(recorded)
    for key in ("codec_name", "profile", "level", "width", "height", "pix_fmt", "has_b_frames", "extradata_size", "extradata"):
        assert a[key] == b[key], (key, a[key], b[key])
    print(f"published and recorded: {a['codec_name']} {a['profile']} level {a['level']} {a['width']}x{a['height']}")
    src_sizes = [p["size"] for p in published["packets"] if p["codec_type"] == "video"]
    sizes = [p["size"] for p in recorded["packets"] if p["codec_type"] == "video"]
    vp = [p for p in recorded["packets"] if p["codec_type"] == "video"]
    assert vp[0]["flags"].startswith("K")
    pts = sorted(float(p["pts_time"]) for p in vp)
    print(f"video pts: first {pts[:4]}, last {pts[-1]:.3f}; publisher ended at {t_end:.3f} s on the timeline")
    assert abs(pts[-1] - t_end) < 0.5  # on the recording's timeline (B-frames: + their composition time)
    start = src_sizes.index(sizes[0])  # a GOP replayed, or the stream from the first keyframe
    assert sizes == src_sizes[start : start + len(sizes)] and len(sizes) >= 75, (len(sizes), len(src_sizes))
    assert audio_stream(recorded)["channels"] == 2
    pcm, rate = decoded_audio(Path(files["video"]))
    assert dominant_hz(pcm[int(rate * 1.5) : int(rate * 2.5), 0], rate) == pytest.approx(660, abs=10)
    lines = [json.loads(x) for x in Path(files["data"]).read_text().splitlines()]
    print(f"data: {lines}")
    texts = [(m["from"], m["label"], json.loads(m["text"])) for m in lines]
    assert [t[:2] for t in texts] == [("caller", "onTextData")] * 2
    assert "hello from the publisher" in json.dumps(texts[0][2]) and "second line" in json.dumps(texts[1][2])
    ts = [m["t"] for m in lines]
    assert 0 < ts[0] < ts[1] < t_end and ts[1] - ts[0] == pytest.approx(1.0, abs=0.3)

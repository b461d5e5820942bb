"""A WebRTC call recorded with its video and data through a route with ``record = "audio+video"``
(issue 17): an aiortc caller with a solid-colour camera (VP8, then H.264) and a tone, an aiortc watcher, the
call going through a trunk to the gateway's own ``echo``. Measured in the files:

- the file's video (WebM for VP8, Matroska for H.264) decodes to the caller's colour, starts at a keyframe, with monotonic
  timestamps, and its audio has two channels, the left one the caller's tone;
- the JSON lines hold the caller's and the watcher's messages, in order, with their senders and
  timestamps inside the call;
- a pause leaves out the video (the file resumes at a keyframe after it) and the data sent
  meanwhile;
- the sidecar (R-audio's) names the video and data files and their codecs; the recorder was no
  watcher (the caller's count went 0 -> 1 -> 0).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from aiortc import RTCRtpSender

from tests.adapters.test_webrtc_watch import Caller, Watcher, agent_token, close_to
from tests.adapters.webrtc_client import Gateway, close_all, complete_call, connect
from tests.calls.gw import sleep, wait_for
from tests.interop.peers import free_port
from tests.recording.video_bytes import (
    audio_stream,
    decoded_audio,
    decoded_rgb,
    dominant_hz,
    ffprobe,
    video_stream,
)

KEY = "webgate-test-token-key-0123456789abcdef"
TONE_HZ = 660.0
COLOUR = (255, 0, 0)

pytestmark = pytest.mark.usefixtures("ffmpeg_program")


def recording_gateway(tmp_path: Path, mode: str = "audio+video") -> Gateway:
    """A gateway whose destination ``rec`` goes through a trunk (to its own built-in ``echo``)
    on a route that records ``mode`` under ``tmp_path/rec``."""
    port = free_port("udp")
    return Gateway({
        "tokens": {"key": KEY},
        "sip": {"udp": f"127.0.0.1:{port}"},
        "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{port}"}],
        "route": [{"pattern": "rec", "trunk": "self", "rewrite": "echo", "public": True, "record": mode}],
        "recording": {"dir": str(tmp_path / "rec")},
    })


def sidecar(tmp_path: Path) -> dict[str, Any]:
    (path,) = list((tmp_path / "rec").rglob("*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def prefer(caller: Caller, codec: str) -> None:
    """Offer only ``codec`` for the caller's video (aiortc encodes VP8 or, via libx264, H.264)."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    transceiver = next(t for t in caller.pc.getTransceivers() if t.kind == "video")
    transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in ("video/" + codec.lower(), "video/rtx")])


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("codec", "container", "suffix"), [("VP8", "webm", ".webm"), ("H264", "matroska", ".mkv")])
@pytest_twisted.ensureDeferred
async def test_a_webrtc_call_is_recorded_with_its_video_and_data(tmp_path: Path, codec: str, container: str, suffix: str) -> None:
    gw = recording_gateway(tmp_path)
    caller = Caller(COLOUR, tone_hz=TONE_HZ)
    prefer(caller, codec)
    watcher = Watcher()
    ws = None
    try:
        ws = await connect(gw.url)
        await complete_call(ws, caller, {"type": "call", "destination": "rec"}, timeout=10)
        (call,) = list(gw.svc.registry)
        sid = call.session_id
        assert await wait_for(lambda: sid in gw.svc.recordings.active, 5)
        rec = gw.svc.recordings.active[sid]
        assert rec.sink is not None and rec.sink.video is not None
        w = await watcher.watch(gw.url, sid, agent_token())
        assert w["type"] == "watching", w
        assert await wait_for(lambda: close_to(watcher.rgb, COLOUR), 10), watcher.rgb
        assert call.hub.snapshot()["video"]["watchers"] == 1  # the watcher; the recorder is none
        assert await wait_for(lambda: caller.channel.readyState == "open" and watcher.channel.readyState == "open", 5)
        for i in range(3):
            caller.channel.send(f"c{i}")
        # two connections (two SCTP associations): the order between them is the arrival order,
        # so the watcher sends once the caller's three are in the log
        assert await wait_for(lambda: len(rec.sink.data_log.path.read_text().splitlines()) >= 3, 5)
        watcher.channel.send(b"\x00\x01\x02")
        watcher.channel.send("from the agent")
        assert await wait_for(lambda: len(rec.sink.data_log.path.read_text().splitlines()) >= 5, 5)
        await sleep(1.0)
        # a pause (card numbers): no video, no data, until resumed; then a keyframe first
        assert rec.pause()
        paused_at = rec.timeline()
        caller.channel.send("4111 1111 1111 1111")
        await sleep(1.0)
        assert rec.resume()
        resumed_at = rec.timeline()
        caller.channel.send("after")
        await sleep(1.5)
        t_end = rec.timeline()
        await watcher.close()
        ws.send({"type": "hangup"})
        assert await wait_for(lambda: sid not in gw.svc.recordings.active, 10)
    finally:
        await close_all(gw, caller, ws)

    side = sidecar(tmp_path)
    print(f"\nsidecar: {json.dumps(side)[:600]}")
    files = side["files"]
    assert files["video"].endswith(suffix) and files["data"].endswith(".data.jsonl"), files
    assert side["codecs"]["video"] == codec and side["codecs"]["container"] == container, side["codecs"]
    assert "video_error" not in side
    video = Path(files["video"])
    probe = ffprobe(video)
    v, a = video_stream(probe), audio_stream(probe)
    assert (v["codec_name"], v["width"], v["height"], a["channels"]) == (codec.lower(), 320, 240, 2)
    vp = [p for p in probe["packets"] if p["codec_type"] == "video"]
    assert vp[0]["flags"].startswith("K") and len(vp) > 30
    pts = [float(p["pts_time"]) for p in vp]
    assert all(x < y for x, y in itertools.pairwise(pts)) and 0 <= pts[0] < 2.0
    gap = max(range(1, len(pts)), key=lambda i: pts[i] - pts[i - 1])  # the pause
    print(f"video stops at {pts[gap - 1]:.3f} s, paused at {paused_at:.3f} s; resumed at {resumed_at:.3f} s, video at {pts[gap]:.3f} s")
    # a frame's time is never after its arrival; its excess delay (load) may put it a little before
    assert paused_at - 0.5 < pts[gap - 1] <= paused_at + 0.01 and resumed_at - 0.5 < pts[gap] < resumed_at + 1.0
    assert vp[gap]["flags"].startswith("K") and pts[gap] - pts[gap - 1] > 0.8
    rgb = decoded_rgb(video)
    assert all(close_to(list(px), COLOUR) for px in rgb), rgb[:3]
    pcm, rate = decoded_audio(video)
    left = pcm[int(rate * 0.5) : int(rate * 1.5), 0]
    assert dominant_hz(left, rate) == pytest.approx(TONE_HZ, abs=10)
    # the right channel is the SIP party: echo plays the caller's tone back
    right = pcm[int(rate * 1.0) : int(rate * 2.0), 1]
    assert dominant_hz(right, rate) == pytest.approx(TONE_HZ, abs=10) and (right**2).mean() > 1e-4
    lines = [json.loads(x) for x in Path(files["data"]).read_text().splitlines()]
    print(f"data: {lines}")
    assert [(m["from"], m.get("text", m.get("base64"))) for m in lines] == [
        ("caller", "c0"), ("caller", "c1"), ("caller", "c2"), ("watcher", "AAEC"), ("watcher", "from the agent"),
        ("caller", "after")]  # not the card number sent while paused
    assert {m["sender"] for m in lines if m["from"] == "watcher"} == {"agent"}
    ts = [m["t"] for m in lines]
    assert ts == sorted(ts) and 0 < ts[0] and ts[-1] < t_end

"""``media/transcode.py`` (``[video] transcode``): FLV Sorenson tags made by ffmpeg re-encoded to
VP8, decoded back with PyAV and measured (size, colour); a forced keyframe; garbage, an unknown
codec and a truncated tag are counted, never raised; and the hub's RTP VP8 cut (RFC 7741)."""

from __future__ import annotations

import subprocess
from typing import Any

import av
import numpy as np
import pytest

from webgate.legs.hub_bits import vp8_keyframe_size, vp8_payloads, vp8_strip
from webgate.media.transcode import FlvToVp8
from webgate.proto.flv import TAG_VIDEO, read_flv


@pytest.fixture(scope="module")
def sorenson_tags() -> list[tuple[int, bytes]]:
    from tests.require import require_program

    data = subprocess.run(
        [require_program("ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=green:size=176x144:rate=25",
         "-frames:v", "30", "-c:v", "flv1", "-g", "25", "-f", "flv", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    _, tags = read_flv(data)
    return [(t.timestamp, t.data) for t in tags if t.tag_type == TAG_VIDEO]


def test_sorenson_to_vp8_decodes_to_the_same_picture(sorenson_tags: list[tuple[int, bytes]]) -> None:
    coder = FlvToVp8(300_000)
    frames = [f for ts, body in sorenson_tags for f in coder.feed(body, ts)]
    assert len(frames) == 30 and frames[0].keyframe and (frames[0].width, frames[0].height) == (176, 144)
    assert [f.timestamp_ms for f in frames] == [ts for ts, _ in sorenson_tags]
    dec = av.CodecContext.create("vp8", "r")
    pics = [p for f in frames for p in dec.decode(av.Packet(f.data))]
    assert len(pics) == 30
    rgb = pics[-1].to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
    assert abs(rgb[1] - 128) < 30 and rgb[0] < 30 and rgb[2] < 30, rgb  # lavfi's green is (0, 128, 0)
    coder.force_keyframe()
    _ts, body = sorenson_tags[5]
    (again,) = coder.feed(body, 2000)
    assert again.keyframe
    assert coder.errors == 0


def test_bad_input_is_counted_not_raised(sorenson_tags: list[tuple[int, bytes]]) -> None:
    coder = FlvToVp8()
    assert coder.feed(b"", 0) == [] and coder.feed(b"\x12", 0) == []
    assert coder.feed(b"\x17\x01" + b"\x00" * 50, 0) == []  # H.264: not for this coder
    for n in range(8):
        coder.feed(b"\x12" + bytes(range(n * 7, n * 7 + 40)), n * 40)  # garbage Sorenson
    # and it still works afterwards, from a keyframe
    out = [f for ts, body in sorenson_tags for f in coder.feed(body, 1000 + ts)]
    assert out and out[0].keyframe and coder.errors >= 1


def test_vp8_payloads_round_trip() -> None:
    frame = b"\x00\x00\x00\x9d\x01\x2a" + (640).to_bytes(2, "little") + (480).to_bytes(2, "little") + bytes(3000)
    payloads = vp8_payloads(frame, 1200)
    assert [len(p) for p in payloads] == [1200, 1200, 613] and payloads[0][0] == 0x10 and payloads[1][0] == 0x00
    assert vp8_keyframe_size(payloads[0]) == (640, 480) and vp8_keyframe_size(payloads[1]) is None
    assert b"".join(vp8_strip(p) for p in payloads) == frame
    assert np.all([len(p) <= 1200 for p in payloads])


def _vp8_frames(packets: list[Any]) -> list[bytes]:
    frames, cur = [], b""
    for p in packets:
        cur += vp8_strip(p.payload)
        if p.marker:
            frames.append(cur)
            cur = b""
    return frames


def test_the_hub_transcodes_only_while_a_webrtc_watcher_exists(sorenson_tags: list[tuple[int, bytes]]) -> None:
    from tests.legs.test_hub import Watcher, make_hub
    from webgate.legs.hub_types import FlvVideo

    tags = [FlvVideo(ts, body) for ts, body in sorenson_tags]  # a keyframe at 0 and at 25
    hub, _caller, _ = make_hub(transcode=True)
    early = Watcher()
    hub.add_watcher(early)  # before any video: the feed is made at the first keyframe
    for tag in tags[:10]:
        hub.flv_from_caller(tag)
    assert hub.video_codec_for("rtp") == "VP8" and hub.video_codec_for("flv") == "H263"
    assert [s[0] for s in early.started] == ["VP8"]
    assert early.rtp and early.rtp[0].keyframe and {p.codec for p in early.rtp} == {"VP8"}
    dec = av.CodecContext.create("vp8", "r")
    pics = [pic for f in _vp8_frames(early.rtp) for pic in dec.decode(av.Packet(f))]
    assert len(pics) == 10 and (pics[0].width, pics[0].height) == (176, 144)
    # a second watcher: a keyframe is forced for it (the encoder is ours), no second encoder
    feed = hub._vp8_feed
    late = Watcher()
    hub.add_watcher(late)
    hub.flv_from_caller(tags[10])
    assert hub._vp8_feed is feed and late.rtp and late.rtp[0].keyframe
    # RTMP watchers keep the tags as they came; nobody over WebRTC: no more decoding
    flv = Watcher("flv")
    hub.add_watcher(flv)
    hub.remove_watcher(early)
    hub.remove_watcher(late)
    assert hub._vp8_feed is None
    n = feed.coder.frames_in if feed is not None else 0
    for tag in tags[11:20]:
        hub.flv_from_caller(tag)
    assert feed is not None and feed.coder.frames_in == n and len(flv.flv) > 5
    # the next WebRTC watcher starts at once from the cached GOP
    again = Watcher()
    hub.add_watcher(again)
    assert again.rtp and again.rtp[0].keyframe and hub._vp8_feed is not None
    hub.close("client_hangup")
    assert hub._vp8_feed is None


def test_without_transcode_sorenson_is_not_for_webrtc_watchers(sorenson_tags: list[tuple[int, bytes]]) -> None:
    from tests.legs.test_hub import Watcher, make_hub
    from webgate.legs.hub_types import FlvVideo

    hub, _caller, _ = make_hub()
    w = Watcher()
    hub.add_watcher(w)
    for ts, body in sorenson_tags[:5]:
        hub.flv_from_caller(FlvVideo(ts, body))
    assert hub.video_codec_for("rtp") is None and w.rtp == [] and hub._vp8_feed is None

"""The API's view of a call's video and data (``video``/``data`` in ``GET /api/calls/{id}``) and
``GET /api/calls/{id}/snapshot.jpg``: a red H.264 keyframe (ffmpeg + libx264) fed into a live
call's media hub comes back as a JPEG of the right size and colour, decoded here with PyAV."""

from __future__ import annotations

from typing import Any

import av
import pytest
import pytest_twisted

from tests.legs.h264_streams import access_units, rtp_packets, x264
from tests.ops.helpers import ADMIN_KEY, api, http, local_call, start_gateway
from webgate.legs.hub import attach_hub
from webgate.legs.hub_types import RtpVideo
from webgate.media.snapshot import snapshots_decoded
from webgate.ops.openapi import openapi_document
from webgate.ops.snapshot_api import MAX_SNAPSHOTS_AT_ONCE


class FakeCaller:
    """A HubCaller recording what the hub asks of the caller's leg."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.keyframe_requests = 0

    def watchers_changed(self, count: int) -> None:
        self.counts.append(count)

    def data_to_caller(self, label: str, data: str | bytes, sender: str | None) -> None: ...

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def limit_bitrate(self, bps: int) -> None: ...


class Watcher:
    identity = "agent"
    wants = "rtp"

    def video_started(self, codec: str | None, width: int | None, height: int | None) -> None: ...

    def rtp_video(self, packet: RtpVideo) -> None: ...

    def flv_video(self, tag: Any) -> None: ...

    def data(self, label: str, data: str | bytes) -> None: ...

    def ended(self, cause: str) -> None: ...


@pytest.fixture
def red_keyframe(ffmpeg_program: str) -> bytes:
    return x264(ffmpeg_program, "red", "352x288", 1)


def _schema_keys(name: str) -> list[str]:
    props = openapi_document()["components"]["schemas"]["Call"]["properties"][name]
    assert props["additionalProperties"] is False
    return sorted(props["required"])


@pytest_twisted.ensureDeferred
async def test_video_and_data_objects_and_the_snapshot(red_keyframe: bytes) -> None:
    gw = start_gateway()
    try:
        call, _leg = await local_call(gw, "echo")
        sid = call.session_id
        url = gw.url(f"/api/calls/{sid}/snapshot.jpg")
        # a call without a hub (LocalLeg): no video/data objects, no snapshot
        status, body = await api("GET", gw.url(f"/api/calls/{sid}"))
        assert status == 200 and "video" not in body and "data" not in body
        status, body = await api("GET", url)
        assert (status, body["error"]) == (404, "no_keyframe")

        caller = FakeCaller()
        hub = attach_hub(call, caller=caller, video=gw.config.video)
        status, body = await api("GET", gw.url(f"/api/calls/{sid}"))
        assert status == 200
        assert sorted(body["video"]) == _schema_keys("video") and sorted(body["data"]) == _schema_keys("data")
        assert body["video"] == {"codec": None, "width": None, "height": None, "watchers": 0, "packets_in": 0, "bytes_in": 0,
                                 "packets_forwarded": 0, "bytes_forwarded": 0, "keyframe_requests": 0}
        assert body["data"] == {"from_caller": 0, "to_caller": 0, "dropped_too_big": 0, "dropped_rate": 0}
        # no keyframe yet: 404 with a JSON error
        status, hdrs, raw = await http("GET", url, key=ADMIN_KEY)
        assert status == 404 and hdrs["content-type"].startswith("application/json") and b'"no_keyframe"' in raw

        # a watcher, the red keyframe as RTP H.264 from the caller, data both ways
        w = Watcher()
        hub.add_watcher(w)
        packets = rtp_packets(access_units(red_keyframe))
        for p in packets:
            hub.rtp_from_caller(p)
        hub.data_from_caller("webgate", "hello")
        hub.data_from_watcher(w, "webgate", b"hi")
        hub.data_from_caller("webgate", "x" * (gw.config.video.max_data_bytes + 1))
        status, body = await api("GET", gw.url(f"/api/calls/{sid}"))
        v = body["video"]
        assert (v["codec"], v["width"], v["height"], v["watchers"]) == ("H264", 352, 288, 1)
        assert v["packets_in"] == v["packets_forwarded"] == len(packets)
        assert v["bytes_in"] == v["bytes_forwarded"] == sum(len(p.payload) for p in packets)
        assert v["keyframe_requests"] == caller.keyframe_requests >= 1
        assert body["data"] == {"from_caller": 1, "to_caller": 1, "dropped_too_big": 1, "dropped_rate": 0}
        status, listed = await api("GET", gw.url("/api/calls"))
        assert listed["calls"][0]["video"] == v

        # the snapshot: needs the key, decodes the keyframe on demand
        status, hdrs, raw = await http("GET", url)
        assert status == 401 and hdrs.get("www-authenticate") == 'Bearer realm="webgate"'
        status, hdrs, raw = await http("GET", url, key="wrong-" + ADMIN_KEY)
        assert status == 401
        before = snapshots_decoded()
        status, hdrs, raw = await http("GET", url, key=ADMIN_KEY)
        assert status == 200, raw
        assert hdrs["content-type"] == "image/jpeg" and hdrs["cache-control"] == "no-store"
        assert raw[:2] == b"\xff\xd8" and raw[-2:] == b"\xff\xd9"
        assert snapshots_decoded() == before + 1
        frames = av.CodecContext.create("mjpeg", "r").decode(av.Packet(raw))
        assert len(frames) == 1
        assert (frames[0].width, frames[0].height) == (352, 288)
        rgb = frames[0].to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
        assert rgb[0] > 230 and rgb[1] < 25 and rgb[2] < 25, rgb

        # other paths and methods
        status, body = await api("GET", gw.url("/api/calls/1234567/snapshot.jpg"))
        assert (status, body["error"]) == (404, "no_such_call")
        status, body = await api("GET", gw.url("/api/calls/9999999999/snapshot.jpg"))
        assert (status, body["error"]) == (404, "no_such_call")
        status, hdrs, _raw = await http("DELETE", url, key=ADMIN_KEY)
        assert status == 405 and hdrs["allow"] == "GET"
        status, body = await api("GET", gw.url(f"/api/calls/{sid}/snapshot.png"))
        assert status == 404
        assert hub.watchers == [w]

        # the call ends: 404 like any unknown call
        gw.manager.hangup(call)
        status, body = await api("GET", url)
        assert (status, body["error"]) == (404, "no_such_call")
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_an_undecodable_keyframe_is_a_json_error() -> None:
    gw = start_gateway()
    try:
        call, _leg = await local_call(gw, "echo")
        hub = attach_hub(call, caller=FakeCaller(), video=gw.config.video)
        # a VP8 "keyframe" whose header parses (640x480) but whose data is garbage
        frame = bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01]) + b"\xff" * 200
        hub.rtp_from_caller(RtpVideo("VP8", 1, 3000, True, frame))
        assert hub.last_keyframe() is not None
        status, body = await api("GET", gw.url(f"/api/calls/{call.session_id}"))
        assert (body["video"]["codec"], body["video"]["width"], body["video"]["height"]) == ("VP8", 640, 480)
        status, body = await api("GET", gw.url(f"/api/calls/{call.session_id}/snapshot.jpg"))
        assert status == 502 and body["error"] == "undecodable", body
        # the gateway keeps serving
        status, body = await api("GET", gw.url("/api/stats"))
        assert status == 200
        # at most MAX_SNAPSHOTS_AT_ONCE decodes at once: one more is told to retry
        resource = gw.gw.site.resource.children[b"api"]
        assert resource._snapshots_running == 0  # released after the failure
        resource._snapshots_running = MAX_SNAPSHOTS_AT_ONCE
        status, hdrs, raw = await http("GET", gw.url(f"/api/calls/{call.session_id}/snapshot.jpg"), key=ADMIN_KEY)
        assert status == 503 and hdrs["retry-after"] == "1" and b'"busy"' in raw
        resource._snapshots_running = 0
    finally:
        await gw.stop()


def test_the_snapshot_is_in_the_openapi_document() -> None:
    doc = openapi_document()
    op = doc["paths"]["/api/calls/{session_id}/snapshot.jpg"]["get"]
    assert "image/jpeg" in op["responses"]["200"]["content"]
    assert {"401", "404", "502", "503"} <= set(op["responses"])
    call = doc["components"]["schemas"]["Call"]
    assert "video" in call["properties"] and "video" not in call["required"]

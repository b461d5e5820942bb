"""The RTMP side of video and data by session ID (issue 14), in process.

Units: :class:`~webgate.legs.rtmp_watch.RtmpWatcher` against a fake sink (held until the play is
answered, onMetaData, sequence header first, rebased timestamps, keyframe gating, back-pressure,
``onData``), and :class:`~webgate.legs.rtmp.RtmpLeg` as the hub's caller (video tags and AMF data
messages in, ``watchers``/``data`` callbacks out).

Over real sockets (a scripted RTMP client, tests/adapters/rtmp_helpers.py): an encoder-style
publisher to ``call/echo`` with H.264 video and ``onTextData``; players of ``watch/ID?token=``
that get the video from its last keyframe and the data; every refusal the same; the 2nd watcher
of a call with ``max_watchers_per_call = 1`` refused; the publisher's end ends the watch; a Flash
RPC caller's ``sendData`` reaches a watcher and a watcher's message reaches the Flash client's
``data`` callback; a watcher that reads nothing is bounded and dropped.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, LogFailures, RtmpClient, flash_client, open_client
from tests.adapters.test_rtmp_backpressure import slow_player, twisted_buffered
from tests.calls.gw import sleep, wait_for
from webgate.calls.call import CallState
from webgate.legs.hub import MediaHub
from webgate.legs.hub_types import FlvVideo, RtpVideo
from webgate.legs.rtmp import RtmpLeg, amf_data_json, data_from_flash, is_watcher_data
from webgate.legs.rtmp_watch import RtmpWatcher, watch_metadata
from webgate.proto.h264 import (
    AVC_NALU,
    AVC_SEQUENCE_HEADER,
    AvcDecoderConfig,
    Packetizer,
    build_avc_tag,
    join_length_prefixed,
)
from webgate.proto.rtmp import amf

KEY = "rtmp-watch-test-key-0123456789abcdef"
SPS_320x240 = bytes.fromhex("6742c00dd90141fb011000000300100000030320f142a480")  # libx264 baseline 320x240
PPS = bytes.fromhex("68cb83cb20")
SEQ_HEADER = build_avc_tag(AVC_SEQUENCE_HEADER, AvcDecoderConfig.from_parameter_sets([SPS_320x240], [PPS]).serialize())


def keyframe(n: int = 0, size: int = 300) -> bytes:
    return build_avc_tag(AVC_NALU, join_length_prefixed([b"\x65\x88" + bytes([n & 0xFF]) * size]), keyframe=True)


def inter(n: int = 0, size: int = 60) -> bytes:
    return build_avc_tag(AVC_NALU, join_length_prefixed([b"\x41\x9a" + bytes([n & 0xFF]) * size]), keyframe=False)


def watch_token(watch: str | list[str] | None = None, *, sub: str | None = None, ttl_s: int = 600, now: float | None = None) -> str:
    """A call token with the ``watch`` claim, as any HS256 issuer (a CTI, an agent portal) makes it."""
    t = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iat": t, "exp": t + ttl_s}
    if watch is not None:
        claims["watch"] = watch
    if sub is not None:
        claims["sub"] = sub
    return jwt.encode(claims, KEY, algorithm="HS256")


# ---- RtmpWatcher against a fake sink -------------------------------------------------------------


class FakeSink:
    def __init__(self) -> None:
        self.open = True
        self.ok = True
        self.out: list[tuple[Any, ...]] = []

    def writable(self) -> bool:
        return self.ok

    def accept(self, metadata: dict[str, Any] | None) -> None:
        self.out.append(("accept", metadata))

    def send_video(self, timestamp_ms: int, body: bytes) -> None:
        self.out.append(("video", timestamp_ms, body))

    def send_data(self, timestamp_ms: int, name: str, value: Any) -> None:
        self.out.append(("data", timestamp_ms, name, value))

    def end(self, cause: str) -> None:
        self.out.append(("end", cause))


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeCaller:
    def __init__(self) -> None:
        self.counts: list[int] = []
        self.data: list[tuple[str, str | bytes, str | None]] = []

    def watchers_changed(self, count: int) -> None:
        self.counts.append(count)

    def data_to_caller(self, label: str, data: str | bytes, sender: str | None) -> None:
        self.data.append((label, data, sender))

    def request_keyframe(self) -> None:
        pass

    def limit_bitrate(self, bps: int) -> None:
        pass


def test_watcher_holds_until_begin_then_metadata_header_and_gop_rebased() -> None:
    hub = MediaHub("12345678", FakeCaller())
    hub.flv_from_caller(FlvVideo(5000, SEQ_HEADER))
    hub.flv_from_caller(FlvVideo(10000, inter(1)))  # before any keyframe: never replayed
    hub.flv_from_caller(FlvVideo(10040, keyframe(2)))
    hub.flv_from_caller(FlvVideo(10080, inter(3)))
    sink = FakeSink()
    clock = Clock()
    w = RtmpWatcher(sink, identity="agent", session_id="12345678", clock=clock)
    hub.add_watcher(w)
    assert sink.out == []  # nothing before the play is answered
    w.begin()
    assert sink.out[0] == ("accept", {"hasAudio": False, "hasVideo": True, "videocodecid": 7, "width": 320, "height": 240})
    assert sink.out[1] == ("video", 0, SEQ_HEADER)
    assert sink.out[2] == ("video", 0, keyframe(2))  # the GOP's keyframe is the player's 0
    assert sink.out[3] == ("video", 40, inter(3))
    clock.t += 0.08
    hub.flv_from_caller(FlvVideo(10120, inter(4)))
    assert sink.out[-1] == ("video", 80, inter(4))  # the caller's spacing
    clock.t += 0.5
    hub.data_from_caller("webgate", "hello")
    hub.data_from_caller("bin", b"\x00\xff")
    # data at the watch's time of arrival
    assert sink.out[-2] == ("data", 580, "onData", {"label": "webgate", "data": "hello"})
    assert sink.out[-1] == ("data", 580, "onData", {"label": "bin", "data": "AP8=", "encoding": "base64"})
    hub.close("remote_hangup")
    assert sink.out[-1] == ("end", "remote_hangup") and not w.live
    assert w.tags_sent == 4 and w.data_sent == 2


def test_watcher_before_the_callers_video_starts_at_its_first_keyframe() -> None:
    hub = MediaHub("12345678", FakeCaller())
    sink = FakeSink()
    clock = Clock()
    w = RtmpWatcher(sink, clock=clock)
    hub.add_watcher(w)
    w.begin()
    assert sink.out == [("accept", None)]  # no video yet: onMetaData follows when it starts
    clock.t += 2.0  # the caller's camera starts two seconds into the watch
    hub.flv_from_caller(FlvVideo(300, SEQ_HEADER))
    hub.flv_from_caller(FlvVideo(340, inter(0)))  # not after a keyframe: useless to a decoder
    hub.flv_from_caller(FlvVideo(380, keyframe(1)))
    hub.flv_from_caller(FlvVideo(420, inter(2)))
    kinds = [(o[0], o[2] if o[0] == "data" else o[1]) for o in sink.out[1:]]
    assert kinds == [("data", "onMetaData"), ("video", 0), ("video", 2000), ("video", 2040)]
    assert sink.out[1][1] == 2000
    assert sink.out[1][3]["width"] == 320 and sink.out[2][2] == SEQ_HEADER
    assert w.tags_dropped == 1


def test_a_slow_watcher_drops_video_until_the_next_keyframe_and_never_queues() -> None:
    hub = MediaHub("12345678", FakeCaller())
    sink = FakeSink()
    w = RtmpWatcher(sink)
    hub.add_watcher(w)
    w.begin()
    hub.flv_from_caller(FlvVideo(0, SEQ_HEADER))
    hub.flv_from_caller(FlvVideo(0, keyframe(0)))
    hub.flv_from_caller(FlvVideo(40, inter(1)))
    sink.ok = False  # the connection is behind
    hub.flv_from_caller(FlvVideo(80, inter(2)))
    hub.data_from_caller("webgate", "lost")
    sink.ok = True
    hub.flv_from_caller(FlvVideo(120, inter(3)))  # caught up, but no keyframe yet
    hub.flv_from_caller(FlvVideo(160, SEQ_HEADER))  # a sequence header always goes
    hub.flv_from_caller(FlvVideo(200, keyframe(4)))
    hub.flv_from_caller(FlvVideo(240, inter(5)))
    sent = [(o[1], o[2]) for o in sink.out if o[0] == "video"]
    assert sent == [(0, SEQ_HEADER), (0, keyframe(0)), (40, inter(1)), (40, SEQ_HEADER), (200, keyframe(4)), (240, inter(5))]
    assert w.tags_dropped == 2 and w.data_dropped == 1


def test_watcher_timestamps_never_go_back_and_other_codecs_pass() -> None:
    sink = FakeSink()
    w = RtmpWatcher(sink)
    w.video_started("VP6", 176, 144)
    w.begin()
    assert sink.out[0] == ("accept", {"hasAudio": False, "hasVideo": True, "videocodecid": 4, "width": 176, "height": 144})
    w.flv_video(FlvVideo(1000, b"\x14vp6-key"))
    w.flv_video(FlvVideo(900, b"\x24vp6-inter"))  # a publisher's clock stepping back
    assert [o[1] for o in sink.out if o[0] == "video"] == [0, 0]
    assert watch_metadata(None, 640, 480) == {"hasAudio": False, "hasVideo": False}
    w2 = RtmpWatcher(FakeSink())
    w2.video_started(None, 640, 480)  # VP8 caller: data only
    w2.begin()
    w2.flv_video(FlvVideo(0, b"\x17\x01"))
    assert w2.tags_sent == 0


def test_a_webrtc_h264_callers_video_reaches_an_rtmp_watcher_as_flv_avc() -> None:
    """A WebRTC caller preferring H.264: the hub depacketizes its RTP into FLV AVC tags with a
    sequence header built from the SPS/PPS; the watcher starts at the first keyframe."""
    hub = MediaHub("12345678", FakeCaller())
    sink = FakeSink()
    clock = Clock()
    w = RtmpWatcher(sink, clock=clock)
    hub.add_watcher(w)
    w.begin()
    packetizer = Packetizer(1200)
    seq, ts = 100, 9000
    frames = [[SPS_320x240, PPS, b"\x65\x88" + bytes(3000)], [b"\x41\x9a" + bytes(500)], [b"\x41\x9a" + bytes(400)]]
    for nals in frames:
        for pkt in packetizer.packetize(nals):
            hub.rtp_from_caller(RtpVideo("H264", seq, ts, pkt.marker, pkt.payload))
            seq += 1
        ts += 3000  # 30 fps
    assert sink.out[1] == ("data", 0, "onMetaData", {"hasAudio": False, "hasVideo": True, "videocodecid": 7, "width": 320, "height": 240})
    video = [(o[1], o[2]) for o in sink.out if o[0] == "video"]
    assert video[0][1][:2] == b"\x17\x00"  # the AVC sequence header first
    config = AvcDecoderConfig.parse(video[0][1][5:])
    assert config.sps == (SPS_320x240,) and config.pps == (PPS,)
    assert video[1][1][:2] == b"\x17\x01" and [t for t, _ in video[1:]] == [0, 33, 66]  # 90 kHz -> ms
    assert w.tags_sent == 4 and w.tags_dropped == 0


# ---- RtmpLeg as the hub's caller --------------------------------------------------------------------


class FakeFlash:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def rpc_callback(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))


def _leg_with_hub(flash: Any = None) -> tuple[RtmpLeg, MediaHub, Any]:
    leg = RtmpLeg("127.0.0.1:1", flash=flash, label="echo")
    call = SimpleNamespace(session_id="87654321", grant=None, ended=False, hub=None)
    hub = MediaHub(call.session_id, leg)
    call.hub = hub
    leg.call, leg.hub = call, hub  # type: ignore[assignment]
    return leg, hub, call


def test_leg_feeds_video_and_data_messages_to_its_hub() -> None:
    leg, hub, _call = _leg_with_hub()
    sink = FakeSink()
    w = RtmpWatcher(sink)
    hub.add_watcher(w)
    w.begin()
    leg.video_tag(0, SEQ_HEADER)
    leg.video_tag(0, keyframe(0))
    assert hub.stats.codec == "H264" and (hub.stats.width, hub.stats.height) == (320, 240)
    leg.data_message("onMetaData", [{"width": 320.0}])  # stream metadata: not data
    leg.data_message("onTextData", [{"text": "hi", "n": 2.0, "x": 0.5, "u": amf.Undefined}])
    leg.data_message("onCuePoint", [{"name": "cue", "time": 1.5, "parameters": {"k": "v"}}, "tail", float("nan")])
    data = [o[3] for o in sink.out if o[0] == "data" and o[2] == "onData"]
    assert data == [
        {"label": "onTextData", "data": '[{"text":"hi","n":2,"x":0.5,"u":null}]'},
        {"label": "onCuePoint", "data": '[{"name":"cue","time":1.5,"parameters":{"k":"v"}},"tail",null]'},
    ]
    assert leg.video_tags == 2 and leg.data_messages == 2


def test_amf_values_become_json() -> None:
    import datetime

    from pyamf.amf3 import ByteArray

    ba = ByteArray()
    ba.write(b"\x01\x02")
    when = datetime.datetime(2024, 5, 1, 12, 0, 0)
    assert amf_data_json([ba, when, [1.0, True, None], b"\xff"]) == '["AQI=","2024-05-01T12:00:00",[1,true,null],"/w=="]'
    assert data_from_flash("text") == "text"
    assert data_from_flash(ba) == b"\x01\x02"
    assert data_from_flash({"a": 1.0}) == '{"a":1}'
    assert not is_watcher_data("onMetaData") and not is_watcher_data("|RtmpSampleAccess")
    assert is_watcher_data("onTextData") and is_watcher_data("onCuePoint") and is_watcher_data("anything")


def test_leg_is_the_hub_caller_for_a_flash_client() -> None:
    flash = FakeFlash()
    leg, hub, _call = _leg_with_hub(flash)
    w = RtmpWatcher(FakeSink(), identity="agent-7")
    hub.add_watcher(w)
    hub.data_from_watcher(w, "webgate", "hello caller")
    hub.data_from_watcher(w, "files", b"\x00\x01")
    hub.remove_watcher(w)
    assert flash.calls == [
        ("watchers", 1),
        ("data", "hello caller", "webgate", "agent-7"),
        ("data", "AAE=", "files", "agent-7", "base64"),
        ("watchers", 0),
    ]
    assert leg.send_data("to watchers") is True
    leg.request_keyframe()  # an encoder cannot be asked: nothing happens
    leg.limit_bitrate(100_000)
    # an encoder-style leg has nobody to tell
    enc, hub2, _ = _leg_with_hub(None)
    hub2.add_watcher(RtmpWatcher(FakeSink()))
    enc.data_to_caller("webgate", "x", None)


def test_sendData_over_the_limits_is_reported_dropped() -> None:
    leg, hub, _call = _leg_with_hub()
    hub.max_data_bytes = 10
    assert leg.send_data("0123456789") is True
    assert leg.send_data("0123456789a") is False
    assert hub.stats.data_dropped_too_big == 1


def test_rtp_video_to_a_flv_watcher_is_ignored() -> None:
    w = RtmpWatcher(FakeSink())
    w.rtp_video(RtpVideo("VP8", 1, 0, True, b""))  # the hub never sends it; harmless if it did


# ---- over real sockets ---------------------------------------------------------------------------

def _gateway(**rtmp: Any) -> Gateway:
    """A gateway whose calls take 2 watchers each (``[video] max_watchers_per_call``)."""
    return Gateway({"tokens": {"key": KEY}, "video": {"max_watchers_per_call": 2}, **({"rtmp": rtmp} if rtmp else {})})


class Publisher:
    """A scripted encoder publishing H.264 video (25 fps, a keyframe every ``gop`` frames) and data."""

    def __init__(self, client: RtmpClient, stream_id: int) -> None:
        self.c = client
        self.sid = stream_id
        self.frame = 0

    def video(self, body: bytes, ts: int) -> None:
        self.c.message(6, 9, self.sid, ts, body)

    def data(self, name: str, *values: Any, ts: int = 0) -> None:
        type_id, payload = amf.encode_data(name, *values)
        self.c.message(5, type_id, self.sid, ts, payload)

    def frames(self, n: int, gop: int = 10, key_size: int = 300, inter_size: int = 60) -> None:
        for _ in range(n):
            ts = 1000 + self.frame * 40
            if self.frame == 0:
                self.video(SEQ_HEADER, ts)
            f = self.frame
            self.video(keyframe(f, key_size) if f % gop == 0 else inter(f, inter_size), ts)
            self.frame += 1


async def publish(gw: Gateway, dest: str = "echo") -> tuple[Publisher, str]:
    c = await open_client(gw.rtmp_port)
    res = await c.connect("call", port=gw.rtmp_port)
    assert res.name == "_result", res
    sid = await c.create_stream()
    c.command("publish", dest, "live", stream_id=sid)
    st = await c.status(sid, "NetStream.Publish.Start")
    pub = Publisher(c, sid)
    pub.data("@setDataFrame", "onMetaData", {"width": 320.0, "height": 240.0, "videocodecid": 7.0})
    return pub, st["sessionId"]


async def watch(gw: Gateway, name: str, *, connect: str = "watch") -> tuple[RtmpClient, int, dict[str, Any]]:
    """Play ``name`` on a new ``watch`` connection: the client, its stream and the final status."""
    c = await open_client(gw.rtmp_port)
    res = await c.connect(connect, port=gw.rtmp_port)
    assert res.name == "_result", res
    sid = await c.create_stream()
    c.command("play", name, stream_id=sid)
    final = ("NetStream.Play.Start", "NetStream.Play.StreamNotFound", "NetStream.Play.Failed")
    assert await wait_for(lambda: any(s.get("code") in final for s in c.statuses(sid)), 5), c.statuses(sid)
    return c, sid, next(s for s in c.statuses(sid) if s.get("code") in final)


def videos(c: RtmpClient, sid: int) -> list[tuple[int, bytes]]:
    return [(m.timestamp, m.payload) for m in c.messages if m.type_id == 9 and m.stream_id == sid]


def datas(c: RtmpClient, sid: int) -> list[list[Any]]:
    return [amf.decode_message_values(m.type_id, m.payload) for m in c.messages if m.type_id in (15, 18) and m.stream_id == sid]


@pytest_twisted.ensureDeferred
async def test_watch_an_rtmp_publisher_video_and_data_then_the_call_ends() -> None:
    gw = _gateway()
    try:
        with LogFailures() as failures:
            pub, session_id = await publish(gw)
            pub.frames(13)  # a keyframe at 0 and at 10: the cached GOP is frames 10-12
            pub.data("onTextData", {"text": "before the watcher"})
            assert await wait_for(lambda: gw.manager.registry.by_session_id(session_id) is not None, 5)
            call = gw.manager.registry.by_session_id(session_id)
            assert await wait_for(lambda: call.hub is not None and call.hub.stats.packets_in == 14, 5)

            c, sid, status = await watch(gw, f"{session_id}?token={watch_token(session_id)}")
            assert status["code"] == "NetStream.Play.Start" and status["sessionId"] == session_id
            assert await wait_for(lambda: len(videos(c, sid)) == 4, 5), videos(c, sid)
            meta = [d for d in datas(c, sid) if d[0] == "onMetaData"]
            assert meta == [["onMetaData", {"hasAudio": False, "hasVideo": True, "videocodecid": 7, "width": 320, "height": 240}]]
            got = videos(c, sid)
            assert got[0] == (0, SEQ_HEADER)  # the AVC sequence header first
            t0, first = got[1]
            assert first == keyframe(10) and t0 < 100  # then the last GOP from its keyframe, at the watch's start
            assert [t - t0 for t, _ in got[2:]] == [40, 80]
            pub.frames(3)
            pub.data("onTextData", {"text": "hello agent"})
            pub.data("onCuePoint", {"name": "chapter", "time": 2.5})
            assert await wait_for(lambda: len([d for d in datas(c, sid) if d[0] == "onData"]) == 2, 5), datas(c, sid)
            on_data = [d[1] for d in datas(c, sid) if d[0] == "onData"]
            assert on_data == [
                {"label": "onTextData", "data": '[{"text":"hello agent"}]'},
                {"label": "onCuePoint", "data": '[{"name":"chapter","time":2.5}]'},
            ]  # nothing from before the watcher joined
            assert [t - t0 for t, _ in videos(c, sid)[4:]] == [120, 160, 200]
            assert call.hub.snapshot()["video"]["watchers"] == 1

            # the publisher stops: the call ends, the watch gets Stream EOF + Play.Stop
            pub.c.transport.loseConnection()
            await c.status(sid, "NetStream.Play.Stop")
            assert await wait_for(lambda: call.state is CallState.ENDED, 5)
            assert call.hub.closed and call.hub.end_cause == "client_hangup"
            conn = next(p for p in gw.factory.connections if p.mode == "watch")
            assert conn.watches == {}
            c.transport.loseConnection()
        assert failures.events == []
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_every_refusal_is_the_same_and_the_third_watcher_is_too_many() -> None:
    gw = _gateway()
    try:
        pub, session_id = await publish(gw)
        other, other_id = await publish(gw, "tone")
        pub.frames(2)
        assert await wait_for(lambda: gw.manager.registry.by_session_id(session_id) is not None, 5)
        unknown = "99999999" if session_id != "99999999" else "99999998"
        name = f"{session_id}?token="
        cases = {
            "no token": f"{session_id}",
            "token for another session": name + watch_token(other_id),
            "expired token": name + watch_token(session_id, ttl_s=60, now=time.time() - 3600),
            "bad signature": name + watch_token(session_id)[:-3] + "abc",
            "not a token": name + "letmein",
            "token without watch claim": name + watch_token(None, sub="someone"),
        }
        refusals = {}
        for what, path in cases.items():
            c, _sid, status = await watch(gw, path)
            refusals[what] = (status["code"], status["description"], status.get("level"))
            c.transport.loseConnection()
        # an unknown ID, with a token that would watch anything: the same answer, for the same name
        c, _sid, status = await watch(gw, f"{unknown}?token={watch_token('*')}")
        assert (status["code"], status["level"]) == ("NetStream.Play.StreamNotFound", "error")
        assert status["description"] == f"no live call {unknown!r}"
        c.transport.loseConnection()
        assert set(refusals.values()) == {("NetStream.Play.StreamNotFound", f"no live call {session_id!r}", "error")}, refusals
        # a token on the connect URL is taken too, and '*' watches any call
        first, s1, st1 = await watch(gw, session_id, connect=f"watch?token={watch_token('*')}")
        second, s2, st2 = await watch(gw, f"{session_id}?token={watch_token([other_id, session_id])}")
        assert st1["code"] == st2["code"] == "NetStream.Play.Start"
        third, s3, st3 = await watch(gw, f"{session_id}?token={watch_token('*')}")
        assert (st3["code"], st3["description"]) == ("NetStream.Play.Failed", "too_many_watchers")
        # options are checked first, whatever the session
        for opt, why in (("loud", "audio must be none or both, not 'loud'"), ("both&codec=mp3", "unknown codec 'mp3'")):
            c, _sid, status = await watch(gw, f"{session_id}?token={watch_token('*')}&audio={opt}")
            assert (status["code"], status["description"]) == ("NetStream.Play.Failed", why)
            c.transport.loseConnection()
        for c in (first, second, third, pub.c, other.c):
            c.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_failed_watches_close_the_connection_after_the_configured_count() -> None:
    gw = _gateway(play_failures_before_close=2)
    try:
        c = await open_client(gw.rtmp_port)
        await c.connect("watch", port=gw.rtmp_port)
        for n in range(2):
            sid = await c.create_stream()
            c.command("play", f"1234567{n}?token={watch_token('*')}", stream_id=sid)
            await c.status(sid, "NetStream.Play.StreamNotFound")
        assert await wait_for(lambda: c.lost, 5)
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_flash_rpc_caller_sendData_watchers_and_data_callbacks() -> None:
    gw = _gateway()
    try:
        f = await flash_client(gw.rtmp_port, "alice")
        res = await f.reply(f.command("sendData", "nobody yet"))
        assert res.name == "_error" and res.args[0]["reason"] == "no_call"
        res = await f.reply(f.command("invite", "echo"))
        session_id = res.args[0]
        call = gw.manager.registry.by_session_id(session_id)
        assert call is not None and isinstance(call.hub, MediaHub) and call.hub.caller is call.leg
        c, sid, status = await watch(gw, f"{session_id}?token={watch_token(session_id, sub='agent')}")
        assert status["code"] == "NetStream.Play.Start"
        assert (await f.callback("watchers")).args == [1]
        res = await f.reply(f.command("sendData", "hello from flash"))
        assert res.name == "_result" and res.args == [True]
        assert await wait_for(lambda: any(d[0] == "onData" for d in datas(c, sid)), 5)
        assert [d[1] for d in datas(c, sid) if d[0] == "onData"] == [{"label": "webgate", "data": "hello from flash"}]

        # a watcher's message (a WebRTC watcher in real life) -> the Flash client's data callback
        class Watcher:
            identity = "supervisor"
            wants = "rtp"

            def video_started(self, *a: Any) -> None: ...
            def rtp_video(self, p: Any) -> None: ...
            def flv_video(self, t: Any) -> None: ...
            def data(self, label: str, data: Any) -> None: ...
            def ended(self, cause: str) -> None: ...

        sup = Watcher()
        call.hub.add_watcher(sup)
        call.hub.data_from_watcher(sup, "webgate", "can you hear me?")
        cb = await f.callback("data")
        assert cb.args == ["can you hear me?", "webgate", "supervisor"]
        assert [x.args for x in f.commands if x.name == "watchers"] == [[1], [2]]
        c.transport.loseConnection()
        assert await wait_for(lambda: [x.args for x in f.commands if x.name == "watchers"] == [[1], [2], [1]], 5)
        res = await f.reply(f.command("bye"))
        assert call.hub.closed and call.hub.end_cause == "client_hangup"
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_watcher_that_reads_nothing_is_bounded_and_dropped() -> None:
    gw = _gateway(player_max_queue_ms=300, player_max_behind_s=2)
    try:
        pub, session_id = await publish(gw)
        pub.frames(1)
        assert await wait_for(lambda: gw.manager.registry.by_session_id(session_id) is not None, 5)
        _slow, _port = await slow_player(gw.rtmp_port, "watch", f"{session_id}?token={watch_token('*')}")
        conn = next(p for p in gw.factory.connections if p.mode == "watch")
        peak = 0
        for _ in range(120):  # up to 4.8 s of 50 fps video (~100 kB/s), a keyframe every 0.5 s
            if conn.lost:
                break
            pub.frames(2, gop=25, key_size=20_000, inter_size=2_000)
            peak = max(peak, twisted_buffered(conn.transport))
            await sleep(0.04)
        assert conn.lost, "the slow watcher was not dropped"
        assert gw.factory.watcher_video_dropped > 0 and gw.factory.slow_players_closed == 1
        # what Twisted held never grew past the queue window: ~300 ms of this video and a keyframe
        assert peak < 64 * 1024, peak
        assert call_alive(gw, session_id)
    finally:
        await gw.stop()


def call_alive(gw: Gateway, session_id: str) -> bool:
    call = gw.manager.registry.by_session_id(session_id)
    return call is not None and not call.ended


@pytest.mark.parametrize("path", ["watch/12345678", "watch/x/y"])
@pytest_twisted.ensureDeferred
async def test_watch_app_takes_no_path_in_the_connect_url(path: str) -> None:
    gw = _gateway()
    try:
        c = await open_client(gw.rtmp_port)
        res = await c.connect(path, port=gw.rtmp_port)
        assert res.name == "_error" and res.args[0]["code"] == "NetConnection.Connect.InvalidApp"
    finally:
        await gw.stop()

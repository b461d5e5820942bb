"""Video and data by session ID over WebRTC (issue 14): aiortc clients in-process as the caller
and the watchers, every figure measured in what the other side decoded.

- A caller sends real VP8 video (aiortc's encoder, solid-colour frames) and a 1 kHz tone to
  ``echo``; a watcher with a ``watch: "*"`` token decodes what the gateway forwards and it has the
  caller's colour (two colours: the colour comes from the caller). The gateway never decodes:
  its video receiver is never started and the leg's decode counter stays 0; the packets came
  off the socket, a keyframe was asked for (PLI) and a bitrate bound (REMB) sent.
- Data both ways, in order, strings and binary, the caller's messages arriving on the
  watcher's own channel and the watcher's on a channel the gateway opened toward the caller
  with the watcher's identity as its protocol. The caller's ``watchers`` count goes 0->1->0.
- Refusals: no token, another call's token, an expired token, an unknown ID: the same
  ``not_found`` every time; the 5th watcher ``too_many_watchers``; the caller hanging up gives
  the watcher ``ended``.
- A caller without video: the watcher gets ``video`` null, its video section inactive, data.
- The pieces without a network: the per-watcher sender (numbering, keyframe start, NACK
  history, PLI/REMB to the hub), the caller's RTCP (RR, REMB, PLI, upstream NACK), the data
  relay.
"""

from __future__ import annotations

import struct
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from av import VideoFrame

from tests.adapters.webrtc_client import Browser, Gateway, WsClient, close_all, complete_call, connect
from tests.calls.gw import sleep, wait_for
from webgate.adapters import aio
from webgate.adapters.webrtc_data import DataChannels
from webgate.adapters.webrtc_video import CallerVideo, WatcherVideo, forwardable, starts_keyframe
from webgate.legs.hub_types import RtpVideo
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"
TONE_HZ = 1000.0
WIDTH, HEIGHT = 320, 240
COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255)}
RGB_TOLERANCE = 40
BINARY = bytes(range(256)) * 4


def agent_token(**kw: Any) -> str:
    return mint_token(KEY, sub=kw.pop("sub", "agent"), watch=kw.pop("watch", "*"), **kw)


class ColourTrack(VideoStreamTrack):
    """A camera that films one solid colour (aiortc encodes it to VP8: the test peer's job)."""

    def __init__(self, rgb: tuple[int, int, int]) -> None:
        super().__init__()
        img = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        img[:, :] = rgb
        self.img = img

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self.img, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class Caller(Browser):
    """The browser stand-in with a colour camera and the ``webgate`` data channel; it records
    what arrives on the channels the gateway opens toward it."""

    def __init__(self, rgb: tuple[int, int, int] | None, tone_hz: float = TONE_HZ) -> None:
        super().__init__(tone_hz=tone_hz, datachannel="webgate")
        if rgb is not None:
            self.pc.addTrack(ColourTrack(rgb))
        self.got: list[tuple[str, str, Any]] = []  # (label, protocol, data) on gateway-opened channels
        self.pc.on("datachannel", self._remote_channel)

    def _remote_channel(self, channel: Any) -> None:
        channel.on("message", lambda m: self.got.append((channel.label, channel.protocol, m)))


class Watcher:
    """An aiortc watcher: a recvonly video offer and a ``webgate`` channel; decodes the video."""

    def __init__(self, video: bool = True) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if video:
            self.pc.addTransceiver("video", direction="recvonly")
        self.channel = self.pc.createDataChannel("webgate")
        self.got: list[tuple[str, Any]] = []
        self.channel.on("message", lambda m: self.got.append((self.channel.label, m)))
        self.pc.on("datachannel", lambda ch: ch.on("message", lambda m: self.got.append((ch.label, m))))
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.rgb: list[float] | None = None
        self.task: Any = None
        self.pc.on("track", self._on_track)
        self.ws: WsClient | None = None

    def _on_track(self, track: Any) -> None:
        if track.kind != "video":
            return

        async def consume() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                self.frames += 1
                self.size = (frame.width, frame.height)
                if self.frames % 5 == 1:
                    self.rgb = [float(v) for v in frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)]

        self.task = aio.spawn(consume(), "test watcher video")

    async def offer(self) -> str:
        async def make() -> str:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            return str(self.pc.localDescription.sdp)

        return await aio.as_deferred(make())

    async def watch(self, url: str, session_id: Any, token: str | None, **extra: Any) -> dict[str, Any]:
        """Send ``watch`` (with ``extra`` fields); returns the first ``watching`` or ``error``
        (the answer is applied)."""
        self.ws = ws = await connect(url)
        msg: dict[str, Any] = {"type": "watch", "session_id": session_id, "sdp": await self.offer(), **extra}
        if token is not None:
            msg["token"] = token
        ws.send(msg)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for m in ws.messages:
                if m["type"] == "error":
                    return m
                if m["type"] == "answer":
                    await aio.as_deferred(self.pc.setRemoteDescription(RTCSessionDescription(sdp=m["sdp"], type="answer")))
                    return next(w for w in ws.messages if w["type"] == "watching")
            await sleep(0.02)
        raise AssertionError(f"no answer to the watch: {ws.messages}")

    async def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        aio.cancel(self.task)
        await aio.as_deferred(self.pc.close())


def close_to(rgb: list[float] | None, want: tuple[int, int, int]) -> bool:
    return rgb is not None and all(abs(a - b) <= RGB_TOLERANCE for a, b in zip(rgb, want, strict=True))


async def start_call(gw: Gateway, caller: Caller) -> tuple[WsClient, Any]:
    ws = await connect(gw.url)
    await complete_call(ws, caller, {"type": "call", "destination": "echo"})
    (call,) = list(gw.svc.registry)
    return ws, call


@pytest.mark.timeout(90)
@pytest.mark.parametrize("colour", ["red", "blue"])
@pytest_twisted.ensureDeferred
async def test_caller_video_and_data_reach_a_watcher(colour: str) -> None:
    gw = Gateway({"tokens": {"key": KEY}})
    caller = Caller(COLOURS[colour])
    watcher = Watcher()
    ws = None
    try:
        ws, call = await start_call(gw, caller)
        leg = call.leg
        answer = caller.pc.remoteDescription.sdp
        video_answer = answer[answer.index("m=video"):].split("m=application")[0]
        # recvonly, only codecs a watcher takes as they are, no RTX, no header extension but mid
        assert "a=recvonly" in video_answer and "rtx" not in video_answer.lower(), video_answer
        assert {line.split()[1].split("/")[0] for line in video_answer.splitlines() if line.startswith("a=rtpmap:")} <= {"VP8", "H264"}
        assert "abs-send-time" not in video_answer
        assert leg.video_format is not None and leg.video_format.codec == "VP8"
        assert await wait_for(lambda: caller.pc.connectionState == "connected", 5)
        assert await wait_for(lambda: leg._video is not None and leg._video.packets_received > 20, 5)
        assert leg.stats.video_packets > 20 and call.hub.stats.codec == "VP8"
        assert await wait_for(lambda: call.hub.stats.width == WIDTH, 5), call.hub.stats

        # the agent watches by session ID
        watching = await watcher.watch(gw.url, call.session_id, agent_token())
        assert watching == {"type": "watching", "session_id": call.session_id,
                            "video": {"codec": "VP8", "width": WIDTH, "height": HEIGHT}}, watching
        wanswer = watcher.pc.remoteDescription.sdp
        wvideo = wanswer[wanswer.index("m=video"):].split("m=application")[0]
        assert "a=sendonly" in wvideo and len(wvideo.splitlines()[0].split()) == 4, wvideo  # one payload type
        assert "VP8/90000" in wvideo and "rtx" not in wvideo.lower()
        assert await ws.next("watchers", count=1)
        assert await wait_for(lambda: watcher.frames > 10, 10), (watcher.frames, call.hub.stats)
        assert await wait_for(lambda: close_to(watcher.rgb, COLOURS[colour]), 5), watcher.rgb
        other = next(c for c in COLOURS if c != colour)
        assert not close_to(watcher.rgb, COLOURS[other])
        assert watcher.size == (WIDTH, HEIGHT)
        print(f"\n[{colour}] watcher decoded {watcher.frames} frames {watcher.size}, mean RGB {[round(v) for v in watcher.rgb or []]}")

        # no decoding at the gateway: its video receiver never started, the decode counter is 0
        video_tr = next(t for t in leg.pc.getTransceivers() if t.kind == "video")
        assert getattr(video_tr.receiver, "_RTCRtpReceiver__decoder_thread") is None
        assert getattr(video_tr.receiver, "_RTCRtpReceiver__started") is False
        assert leg.stats.video_frames_decoded == 0
        # a keyframe was asked for (the new watcher) and the caller bounded (REMB)
        cv = leg._video
        assert cv.plis_sent >= 1 and cv.rembs_sent >= 1 and cv.srtp_errors == 0 and cv.bitrate_bps == 1_500_000
        (wv,) = [w.video for w in call.hub.watchers]
        assert wv.packets_sent >= watcher.frames and wv.send_errors == 0

        # data both ways, in order (the watcher's channel must be open first)
        assert await wait_for(lambda: watcher.channel.readyState == "open" and caller.channel.readyState == "open", 5)
        for i in range(100):
            watcher.channel.send(f"w{i}")
        watcher.channel.send(BINARY)
        assert await wait_for(lambda: len(caller.got) >= 101, 8), caller.got[-3:]
        assert [d for _, _, d in caller.got[:100]] == [f"w{i}" for i in range(100)]
        assert caller.got[100][2] == BINARY
        assert {(label, proto) for label, proto, _ in caller.got} == {("webgate", "agent")}
        for i in range(100):
            caller.channel.send(f"c{i}")
        caller.channel.send(BINARY)
        assert await wait_for(lambda: len(watcher.got) >= 101, 8), watcher.got[-3:]
        assert [d for _, d in watcher.got[:100]] == [f"c{i}" for i in range(100)]
        assert watcher.got[100] == ("webgate", BINARY)
        await sleep(0.3)
        assert len(caller.got) == 101 and len(watcher.got) == 101  # nothing twice
        assert call.hub.stats.data_from_caller == 101 and call.hub.stats.data_to_caller == 101

        # the call itself: echo still plays the tone back
        hz, level = await caller.heard(seconds=1.5, timeout=8)
        assert abs(hz - TONE_HZ) < 15 and level > -30, (hz, level)

        # the watcher leaves: 0 -> 1 -> 0
        assert watcher.ws is not None
        watcher.ws.send({"type": "hangup"})
        assert (await watcher.ws.next("ended"))["cause"] == "client_hangup"
        await ws.next("watchers", count=0)
        assert [m["count"] for m in ws.of_type("watchers")] == [1, 0]
        assert call.hub.watchers == [] and not call.ended
        assert leg.stats.video_frames_decoded == 0
        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert call.hub.closed
    finally:
        await watcher.close()
        await close_all(gw, caller, ws)


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_refusals_are_identical_and_the_fifth_watcher_is_refused() -> None:
    gw = Gateway({"tokens": {"key": KEY}})
    caller = Caller(COLOURS["red"])
    watchers: list[Watcher] = []
    ws = None
    try:
        ws, call = await start_call(gw, caller)
        sid = call.session_id
        other = "9" * 10 if sid != "9" * 10 else "8" * 10
        cases = {
            "no token": (sid, None),
            "another call's token": (sid, agent_token(watch=other)),
            "an expired token": (sid, agent_token(ttl_s=60, now=time.time() - 3600)),
            "an unknown session ID": (other, agent_token()),
            "not a session ID": ("abc", agent_token()),
        }
        refusals = {}
        for what, (session_id, token) in cases.items():
            w = Watcher()
            watchers.append(w)
            refusals[what] = await w.watch(gw.url, session_id, token)
        print(f"\nrefusals: {refusals}")
        expected = {"type": "error", "code": "not_found", "message": "no such call", "ref": "watch"}
        assert all(r == expected for r in refusals.values()), refusals
        assert call.hub.watchers == [] and ws.of_type("watchers") == []

        # four watchers (the same user on another device needs no watch claim: same sub)
        for i in range(4):
            w = Watcher()
            watchers.append(w)
            token = agent_token(sub=f"agent{i}")
            got = await w.watch(gw.url, sid, token)
            assert got["type"] == "watching", got
        assert len(call.hub.watchers) == 4
        fifth = Watcher()
        watchers.append(fifth)
        refused = await fifth.watch(gw.url, sid, agent_token())
        assert refused["code"] == "too_many_watchers" and refused["ref"] == "watch", refused
        assert [m["count"] for m in ws.of_type("watchers")] == [1, 2, 3, 4]

        # the caller hangs up: every watcher gets ended, with the call's cause and session ID
        ws.send({"type": "hangup"})
        for w in watchers[5:9]:
            assert w.ws is not None
            ended = await w.ws.next("ended")
            assert ended == {"type": "ended", "cause": "client_hangup", "session_id": sid}, ended
        assert await wait_for(lambda: all(w.pc.connectionState == "closed" for w in watchers[5:9]), 10)
        # and the ended call cannot be watched: the same not_found
        late = Watcher()
        watchers.append(late)
        assert await late.watch(gw.url, sid, agent_token()) == expected
    finally:
        for w in watchers:
            await w.close()
        await close_all(gw, caller, ws)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_caller_without_video_gives_data_only() -> None:
    gw = Gateway({"tokens": {"key": KEY}})
    caller = Caller(None)
    watcher = Watcher()
    ws = None
    try:
        ws, call = await start_call(gw, caller)
        assert "m=video" not in caller.pc.remoteDescription.sdp and call.leg.video_format is None
        watching = await watcher.watch(gw.url, int(call.session_id), agent_token(sub=None))  # a number works too
        assert watching["video"] is None
        video = next(t for t in watcher.pc.getTransceivers() if t.kind == "video")
        assert video.currentDirection == "inactive"
        assert await wait_for(lambda: watcher.channel.readyState == "open" and caller.channel.readyState == "open", 5)
        watcher.channel.send("hello")
        caller.channel.send("hi")
        assert await wait_for(lambda: caller.got and watcher.got, 5)
        assert caller.got == [("webgate", "", "hello")] and watcher.got == [("webgate", "hi")]  # no sub: protocol ""
        await sleep(0.5)
        assert watcher.frames == 0
    finally:
        await watcher.close()
        await close_all(gw, caller, ws)


# -- the pieces, without a network ----------------------------------------------------------

class _Proto:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.passed: list[bytes] = []
        self.transport = SimpleNamespace(sendto=lambda data, addr: self.sent.append(data))

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.passed.append(data)


def _dtls(proto: _Proto) -> SimpleNamespace:
    pair = SimpleNamespace(protocol=proto, remote_addr=("127.0.0.1", 9))
    return SimpleNamespace(
        transport=SimpleNamespace(_connection=SimpleNamespace(_nominated={1: pair})),
        _tx_srtp=SimpleNamespace(protect=lambda b: b + b"T", protect_rtcp=lambda b: b + b"R"),
        _rx_srtp=SimpleNamespace(unprotect=lambda b: b[:-1] if b[-1:] == b"T" else (_ for _ in ()).throw(ValueError("tag"))),
    )


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _vp8_key() -> bytes:
    # descriptor (S=1, partition 0), then a keyframe header: P=0, start code, 320x240
    return bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", WIDTH, HEIGHT) + b"\x00" * 20


def test_watcher_video_numbers_starts_at_a_keyframe_and_serves_nacks() -> None:
    proto, now = _Proto(), _Clock()
    sender = SimpleNamespace(transport=_dtls(proto), _ssrc=0xCAFE)
    setattr(sender, "_RTCRtpSender__packet_count", 0)
    handled: list[Any] = []

    async def original(packet: Any) -> None:
        handled.append(packet)

    sender._handle_rtcp_packet = original
    asked: list[int] = []
    bitrates: list[int] = []
    v = WatcherVideo(sender, 101, "VP8", keyframe_wanted=lambda: asked.append(1), bitrate=bitrates.append,
                     mid="0", mid_id=1, abs_send_time_id=3, now=now)
    v.send(RtpVideo("VP8", 10, 1000, True, b"\x10delta"))  # not started: nothing
    assert proto.sent == [] and asked == []
    assert v.start() and asked == [1]  # started: a keyframe asked for at once
    v.send(RtpVideo("VP8", 11, 1000, True, b"\x10delta"))  # a delta frame first: skipped
    now.t += 0.6
    v.send(RtpVideo("VP8", 12, 4000, True, b"\x10delta"))  # still none: asked again
    assert proto.sent == [] and v.skipped_before_keyframe == 2 and len(asked) == 2
    v.send(RtpVideo("VP8", 13, 7000, False, _vp8_key()))
    v.send(RtpVideo("VP8", 15, 7000, True, b"\x00end"))  # 14 lost upstream: stays a gap
    assert len(proto.sent) == 2 and all(p.endswith(b"T") for p in proto.sent)
    hdr = [struct.unpack("!BBHII", p[:12]) for p in proto.sent]
    assert [h[0] for h in hdr] == [0x90, 0x90]  # header extensions (abs-send-time, mid)
    assert [h[1] for h in hdr] == [101, 101 | 0x80] and [h[4] for h in hdr] == [0xCAFE, 0xCAFE]
    assert (hdr[1][2] - hdr[0][2]) % 65536 == 2 and hdr[0][2] < 0x8000 and hdr[0][3] == hdr[1][3]
    assert proto.sent[0][12:16] == b"\xbe\xde\x00\x02" and proto.sent[0][16] == 0x32 and proto.sent[0][20] == 0x10
    assert getattr(sender, "_RTCRtpSender__packet_count") == 2
    # the watcher's NACK: served from the history (the gap never existed here), PLI and REMB to the hub
    seq0 = hdr[0][2]
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xCAFE)
    nack.lost = [seq0, (seq0 + 1) & 0xFFFF]
    rr = RtcpPacket.parse(b"\x81\xc9\x00\x07" + b"\x00" * 28)[0]
    for packet in (nack, RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=0xCAFE),
                   RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(300_000, [0xCAFE])), rr):
        aio_run(sender._handle_rtcp_packet(packet))
    assert proto.sent[2] == proto.sent[0] and v.retransmitted == 1 and v.nacks_unserved == 1
    assert len(asked) == 3 and len(bitrates) == 1 and abs(bitrates[0] - 300_000) < 1000
    assert handled == [rr]  # receiver reports go on to aiortc
    v.stop()
    assert "_handle_rtcp_packet" not in vars(sender) or vars(sender)["_handle_rtcp_packet"] is original


def aio_run(coro: Any) -> None:
    """Drive a coroutine that never awaits anything pending (the RTCP hook)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise AssertionError("the coroutine awaited")


def test_caller_video_reads_the_socket_and_writes_rtcp() -> None:
    proto, now = _Proto(), _Clock()
    sender = SimpleNamespace(transport=_dtls(proto), _ssrc=0xBEEF)
    got: list[tuple[str, int, int, bool, bytes]] = []
    v = CallerVideo(sender, {96: "VP8", 102: "H264"}, lambda *a: got.append(a), now=now)
    assert v.start()

    def rtp(pt: int, seq: int, payload: bytes, marker: bool = False) -> bytes:
        return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, 5000, 0x1234) + payload + b"T"

    proto.datagram_received(rtp(96, 100, b"\x10abc"), None)
    proto.datagram_received(rtp(96, 103, b"\x10def", True), None)  # 101, 102 lost: NACKed upstream
    proto.datagram_received(rtp(102, 104, b"\x65idr"), None)
    proto.datagram_received(rtp(96, 105, b""), None)  # padding only: not forwarded
    proto.datagram_received(rtp(96, 106, b"forged")[:-1], None)  # fails "authentication"
    proto.datagram_received(rtp(111, 107, b"audio"), None)  # not video: on to aiortc
    proto.datagram_received(b"\x80\xc8" + b"\x00" * 26, None)  # RTCP: on to aiortc
    assert got == [("VP8", 100, 5000, False, b"\x10abc"), ("VP8", 103, 5000, True, b"\x10def"), ("H264", 104, 5000, False, b"\x65idr")]
    assert v.srtp_errors == 1 and v.padding_dropped == 1 and len(proto.passed) == 2 and v.media_ssrc == 0x1234
    rtcp = [RtcpPacket.parse(p[:-1]) for p in proto.sent]
    assert all(p.endswith(b"R") for p in proto.sent)
    assert rtcp[0][0].reports[0].ssrc == 0x1234  # the first packet: a receiver report
    nacks = [p for c in rtcp for p in c if isinstance(p, RtcpRtpfbPacket)]
    assert len(nacks) == 1 and nacks[0].lost == [101, 102] and nacks[0].media_ssrc == 0x1234 and nacks[0].ssrc == 0xBEEF
    v.limit_bitrate(800_000)
    v.request_keyframe()
    remb = [p for p in RtcpPacket.parse(proto.sent[-2][:-1]) if isinstance(p, RtcpPsfbPacket)][0]
    assert remb.fmt == RTCP_PSFB_APP and unpack_remb_fci(remb.fci)[1] == [0x1234] and abs(unpack_remb_fci(remb.fci)[0] - 800_000) < 1000
    pli = [p for p in RtcpPacket.parse(proto.sent[-1][:-1]) if isinstance(p, RtcpPsfbPacket)][0]
    assert pli.fmt == RTCP_PSFB_PLI and pli.media_ssrc == 0x1234 and v.plis_sent == 1
    report = RtcpPacket.parse(proto.sent[-1][:-1])[0].reports[0]
    assert report.highest_sequence == 105 and report.packets_lost == 2  # 106 failed SRTP: not received
    v.stop()
    assert "datagram_received" not in vars(proto)


def test_codec_rules() -> None:
    assert forwardable("VP8", {}) == "VP8" and forwardable("H264", {"packetization-mode": 1}) == "H264"
    assert forwardable("H264", {"packetization-mode": "0"}) is None and forwardable("VP9", {}) is None
    assert starts_keyframe("VP8", _vp8_key()) and not starts_keyframe("VP8", b"\x10\x01\x00")
    assert starts_keyframe("H264", bytes([24, 0, 4, 0x67, 1, 2, 3]))  # STAP-A with the SPS first
    assert starts_keyframe("H264", bytes([28, 0x85]))  # FU-A start of an IDR
    assert not starts_keyframe("H264", bytes([28, 0x05])) and not starts_keyframe("H264", bytes([0x41]))


class _Channel:
    def __init__(self, label: str, protocol: str = "", state: str = "open") -> None:
        self.label, self.protocol, self.readyState = label, protocol, state
        self.sent: list[Any] = []
        self.handlers: dict[str, Any] = {}

    def on(self, event: str, fn: Any) -> None:
        self.handlers[event] = fn

    def send(self, data: Any) -> None:
        self.sent.append(data)


class _Pc:
    def __init__(self) -> None:
        self.sctp = object()
        self.opened: list[_Channel] = []

    def createDataChannel(self, label: str, ordered: bool = True, protocol: str = "") -> _Channel:
        ch = _Channel(label, protocol, "connecting")
        self.opened.append(ch)
        return ch


def test_data_relay_keeps_order_and_opens_channels() -> None:
    pc = _Pc()
    heard: list[tuple[str, Any]] = []
    relay = DataChannels(pc, lambda label, data: heard.append((label, data)))
    theirs = _Channel("webgate")
    relay.adopt(theirs)
    theirs.handlers["message"]("from the peer")
    assert heard == [("webgate", "from the peer")]
    assert relay.send("webgate", "a") and theirs.sent == ["a"]  # the peer's own channel of that label
    assert relay.send("chat", "1") and relay.send("chat", b"2")  # none: the gateway opens one, queues
    (chat,) = pc.opened
    assert chat.label == "chat" and chat.protocol == "" and chat.sent == []
    chat.readyState = "open"
    chat.handlers["open"]()
    relay.send("chat", "3")
    assert chat.sent == ["1", b"2", "3"]
    # toward the caller: one channel per (label, identity), never the peer's own
    assert relay.send("webgate", "x", protocol="agent") and relay.send("webgate", "y", protocol="")
    assert [(c.label, c.protocol) for c in pc.opened[1:]] == [("webgate", "agent"), ("webgate", "")]
    pc.sctp = None  # no data channels negotiated: dropped, counted
    assert not relay.send("other", "z") and relay.dropped == 1
    relay.close()
    assert not relay.send("webgate", "late")

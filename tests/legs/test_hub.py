"""The per-call media hub (webgate/legs/hub.py), driven with bytes: fake callers and watchers,
a fake clock, and H.264 made by ffmpeg + libx264 fed through ``proto/h264.py``/``proto/flv.py``.
What a watcher gets is depacketized and decoded here with PyAV."""

from __future__ import annotations

import struct
import subprocess
from typing import Any

import av
import pytest

from tests.legs.h264_streams import TICKS, access_units, flv_tags, rtp_packets, x264
from webgate.config import VideoConfig
from webgate.legs.hub import MediaHub, attach_hub
from webgate.legs.hub_bits import vp8_keyframe_size
from webgate.legs.hub_types import FlvVideo, RtpVideo, WatchRefused
from webgate.proto import h264

# ------------------------------------------------------------------------------ fakes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Caller:
    """A HubCaller that records what the hub asks of the caller's leg."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.data: list[tuple[str, str | bytes, str | None]] = []
        self.keyframe_requests = 0
        self.limits: list[int] = []

    def watchers_changed(self, count: int) -> None:
        self.counts.append(count)

    def data_to_caller(self, label: str, data: str | bytes, sender: str | None) -> None:
        self.data.append((label, data, sender))

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def limit_bitrate(self, bps: int) -> None:
        self.limits.append(bps)


class Watcher:
    """A HubWatcher that records everything, in order."""

    def __init__(self, wants: str = "rtp", identity: str | None = "agent") -> None:
        self.wants = wants
        self.identity = identity
        self.started: list[tuple[str | None, int | None, int | None]] = []
        self.rtp: list[RtpVideo] = []
        self.flv: list[FlvVideo] = []
        self.messages: list[tuple[str, str | bytes]] = []
        self.ends: list[str] = []
        self.events: list[str] = []

    def video_started(self, codec: str | None, width: int | None, height: int | None) -> None:
        self.started.append((codec, width, height))
        self.events.append("video_started")

    def rtp_video(self, packet: RtpVideo) -> None:
        self.rtp.append(packet)
        self.events.append("rtp")

    def flv_video(self, tag: FlvVideo) -> None:
        self.flv.append(tag)
        self.events.append("flv")

    def data(self, label: str, data: str | bytes) -> None:
        self.messages.append((label, data))

    def ended(self, cause: str) -> None:
        self.ends.append(cause)


def make_hub(**kw: Any) -> tuple[MediaHub, Caller, Clock]:
    caller, clock = Caller(), Clock()
    return MediaHub("4821736095", caller, clock=clock, **kw), caller, clock


# ------------------------------------------------------------------------------ decoding helpers


def decode_annexb(aus: list[tuple[bytes, ...] | list[bytes]]) -> list[av.VideoFrame]:
    """Decode access units (NAL unit lists) with PyAV's H.264 decoder, one packet each."""
    ctx = av.CodecContext.create("h264", "r")
    frames: list[Any] = []
    for au in aus:
        frames += ctx.decode(av.Packet(h264.join_annexb(au)))
    frames += ctx.decode(None)
    return frames


def mean_rgb(frame: Any) -> list[float]:
    return [float(x) for x in frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)]


def depacketize(packets: list[RtpVideo]) -> tuple[list[h264.AccessUnit], h264.Depacketizer]:
    d = h264.Depacketizer()
    aus: list[h264.AccessUnit] = []
    for p in packets:
        aus += d.push(p.seq, p.timestamp, p.marker, p.payload)
    return aus, d


def read_flv(tags: list[FlvVideo]) -> list[h264.AccessUnit]:
    r = h264.AvcTagReader()
    out = []
    for t in tags:
        au = r.feed(t.body, t.timestamp_ms)
        if au is not None:
            out.append(au)
    return out


# ------------------------------------------------------------------------------ watchers


def test_watcher_cap_and_counts() -> None:
    hub, caller, _ = make_hub(max_watchers=2)
    a, b, c = Watcher(), Watcher("flv"), Watcher()
    hub.add_watcher(a)
    hub.add_watcher(b)
    with pytest.raises(WatchRefused) as ei:
        hub.add_watcher(c)
    assert ei.value.code == "too_many_watchers" and "2" in ei.value.message
    assert hub.watchers == [a, b] and caller.counts == [1, 2]
    hub.remove_watcher(a)
    hub.remove_watcher(a)  # twice: nothing more
    hub.add_watcher(c)
    hub.remove_watcher(b)
    hub.remove_watcher(c)
    assert caller.counts == [1, 2, 1, 2, 1, 0]
    assert hub.snapshot()["video"]["watchers"] == 0


def test_close_ends_every_watcher_and_refuses_new_ones() -> None:
    hub, caller, _ = make_hub()
    a, b = Watcher(), Watcher("flv")
    hub.add_watcher(a)
    hub.add_watcher(b)
    hub.close("remote_hangup")
    hub.close("again")  # once only
    assert a.ends == ["remote_hangup"] and b.ends == ["remote_hangup"]
    assert hub.closed and hub.end_cause == "remote_hangup" and hub.watchers == []
    with pytest.raises(WatchRefused) as ei:
        hub.add_watcher(Watcher())
    assert (ei.value.code, ei.value.message) == ("not_found", "no such call")
    hub.remove_watcher(a)  # the leg letting go after the end: no count to the caller
    assert caller.counts == [1, 2]
    # nothing flows after the end
    hub.rtp_from_caller(RtpVideo("VP8", 1, 0, True, b"\x10" + b"\x00" * 20))
    hub.data_from_caller("webgate", "late")
    assert hub.stats.packets_in == 0 and a.messages == [] and a.rtp == []


def test_a_failing_peer_does_not_stop_the_fan_out() -> None:
    hub, _caller, _ = make_hub()

    class Broken(Watcher):
        def data(self, label: str, data: str | bytes) -> None:
            raise RuntimeError("boom")

    a, broken, b = Watcher(), Broken(), Watcher()
    for w in (a, broken, b):
        hub.add_watcher(w)
    hub.data_from_caller("webgate", "x")
    assert a.messages == b.messages == [("webgate", "x")]


def test_attach_hub_uses_the_video_config() -> None:
    class Grant:
        sub = "alice"

    class Call:
        session_id = "12345678"
        grant = Grant()
        hub: Any = None

    call = Call()
    cfg = VideoConfig(max_watchers_per_call=2, max_bitrate_kbps=700, max_data_bytes=100, data_rate_per_s=5)
    hub = attach_hub(call, caller=Caller(), video=cfg)
    assert call.hub is hub and hub.session_id == "12345678" and hub.caller_identity == "alice"
    assert (hub.max_watchers, hub.max_bitrate_bps, hub.max_data_bytes, hub.data_rate_per_s) == (2, 700_000, 100, 5.0)
    hub2 = attach_hub(Call(), caller=Caller())
    assert (hub2.max_watchers, hub2.max_bitrate_bps, hub2.max_data_bytes) == (4, 1_500_000, 65536)
    d = VideoConfig()
    assert (d.max_watchers_per_call, d.max_bitrate_kbps * 1000, d.max_data_bytes) == (4, 1_500_000, 65536)


# ------------------------------------------------------------------------------ data


def test_data_relay_in_order_both_ways_by_label() -> None:
    hub, caller, _ = make_hub(data_rate_per_s=1000)
    a, b = Watcher(identity="agent-7"), Watcher(identity=None)
    hub.add_watcher(a)
    hub.add_watcher(b)
    sent: list[tuple[str, str | bytes]] = []
    for i in range(100):
        msg: str | bytes = f"m{i}" if i % 2 else bytes([i]) * 3
        label = "webgate" if i % 3 else "chat"
        sent.append((label, msg))
        hub.data_from_caller(label, msg)
    assert a.messages == sent and b.messages == sent
    assert all(type(x[1]) is type(y[1]) for x, y in zip(a.messages, sent))  # strings stay strings
    for i in range(100):
        hub.data_from_watcher(a, "webgate", f"a{i}")
        hub.data_from_watcher(b, "x", b"b%d" % i)
    assert [d for d in caller.data if d[2] == "agent-7"] == [("webgate", f"a{i}", "agent-7") for i in range(100)]
    assert [d for d in caller.data if d[2] is None] == [("x", b"b%d" % i, None) for i in range(100)]
    st = hub.snapshot()["data"]
    assert st == {"from_caller": 100, "to_caller": 200, "dropped_too_big": 0, "dropped_rate": 0}


def test_a_late_joiner_gets_nothing_from_before() -> None:
    hub, _caller, _ = make_hub()
    a = Watcher()
    hub.add_watcher(a)
    hub.data_from_caller("webgate", "before")
    b = Watcher()
    hub.add_watcher(b)
    hub.data_from_caller("webgate", "after")
    assert a.messages == [("webgate", "before"), ("webgate", "after")]
    assert b.messages == [("webgate", "after")]
    # a watcher that left (or never joined) cannot send to the caller
    hub.remove_watcher(a)
    stranger = Watcher()
    hub.data_from_watcher(a, "webgate", "gone")
    hub.data_from_watcher(stranger, "webgate", "who")
    assert hub.stats.data_to_caller == 0


def test_data_size_cap() -> None:
    hub, caller, _ = make_hub(max_data_bytes=10)
    w = Watcher()
    hub.add_watcher(w)
    hub.data_from_caller("webgate", "x" * 10)
    hub.data_from_caller("webgate", "x" * 11)
    hub.data_from_caller("webgate", "é" * 5)  # 10 bytes of UTF-8
    hub.data_from_caller("webgate", "é" * 6)  # 6 characters, 12 bytes: too big
    hub.data_from_caller("webgate", b"\x00" * 11)
    hub.data_from_watcher(w, "webgate", "y" * 11)
    assert w.messages == [("webgate", "x" * 10), ("webgate", "é" * 5)]
    assert caller.data == []
    assert hub.stats.data_dropped_too_big == 4 and hub.stats.data_from_caller == 2


def test_data_rate_cap_per_sender() -> None:
    hub, caller, clock = make_hub(data_rate_per_s=10)
    a, b = Watcher(), Watcher()
    hub.add_watcher(a)
    hub.add_watcher(b)
    for i in range(25):  # a burst of 2 x rate passes, the rest is dropped
        hub.data_from_caller("webgate", str(i))
    assert [m for _, m in a.messages] == [str(i) for i in range(20)]
    assert hub.stats.data_dropped_rate == 5
    # each watcher has its own bucket, apart from the caller's
    for i in range(21):
        hub.data_from_watcher(a, "webgate", f"a{i}")
    hub.data_from_watcher(b, "webgate", "b")
    assert len([d for d in caller.data if d[1] != "b"]) == 20 and caller.data[-1][1] == "b"
    assert hub.stats.data_dropped_rate == 6
    clock.now += 0.15  # one more message's worth
    hub.data_from_caller("webgate", "later")
    hub.data_from_caller("webgate", "too soon")
    assert a.messages[-1] == ("webgate", "later") and hub.stats.data_dropped_rate == 7
    clock.now += 10
    for i in range(20):
        hub.data_from_caller("webgate", f"again{i}")
    assert a.messages[-1] == ("webgate", "again19")


# ------------------------------------------------------------------------------ keyframes, bitrate


def vp8_payload(keyframe: bool, width: int = 640, height: int = 480, start: bool = True) -> bytes:
    """An RTP VP8 payload (RFC 7741 descriptor without extensions) of a frame's first packet."""
    descriptor = bytes([0x10 if start else 0x00])
    if keyframe:
        tag = bytes([0x00, 0x00, 0x00])  # P bit 0: a keyframe
        return descriptor + tag + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 30
    return descriptor + bytes([0x01, 0x00, 0x00]) + b"\x00" * 30


def test_keyframe_requests_are_rate_limited() -> None:
    hub, caller, clock = make_hub()
    a = Watcher()
    hub.add_watcher(a)
    assert caller.keyframe_requests == 0  # no video yet: nothing to ask
    hub.rtp_from_caller(RtpVideo("VP8", 1, 0, True, vp8_payload(False)))
    assert caller.keyframe_requests == 1  # the first video with a watcher present: one PLI
    b = Watcher()
    hub.add_watcher(b)  # a new watcher within 0.5 s: no second PLI at its join
    assert caller.keyframe_requests == 1
    hub.keyframe_wanted(a)  # a watcher's first own request (its transport is up): not throttled
    assert caller.keyframe_requests == 2
    hub.keyframe_wanted(a)  # its next ones are
    assert caller.keyframe_requests == 2
    hub.keyframe_wanted(b)  # b's first own request
    assert caller.keyframe_requests == 3
    hub.keyframe_wanted(b)
    assert caller.keyframe_requests == 3
    clock.now += 0.5
    hub.keyframe_wanted(b)
    hub.keyframe_wanted(a)
    assert caller.keyframe_requests == 4
    clock.now += 0.6
    hub.add_watcher(Watcher())  # a new watcher triggers one
    assert caller.keyframe_requests == 5 == hub.snapshot()["video"]["keyframe_requests"]


def test_bitrate_bound_is_the_lowest_estimate_under_the_maximum() -> None:
    hub, caller, _ = make_hub(max_bitrate_bps=1_500_000)
    a, b = Watcher(), Watcher()
    hub.add_watcher(a)
    hub.add_watcher(b)
    hub.rtp_from_caller(RtpVideo("VP8", 1, 0, True, vp8_payload(True)))
    assert caller.limits == [1_500_000]  # the maximum, once the caller's video starts
    hub.report_bitrate(a, 900_000)
    hub.report_bitrate(b, 2_000_000)
    hub.report_bitrate(b, 600_000)
    hub.report_bitrate(b, 600_000)  # unchanged: not sent again
    assert caller.limits == [1_500_000, 900_000, 600_000]
    hub.remove_watcher(b)
    assert caller.limits[-1] == 900_000
    hub.report_bitrate(a, 5_000_000)
    assert caller.limits[-1] == 1_500_000 and hub.bitrate_limit == 1_500_000
    # an estimate from a watcher that already left is ignored
    hub.report_bitrate(b, 100_000)
    assert hub.bitrate_limit == 1_500_000


# ------------------------------------------------------------------------------ VP8


@pytest.mark.parametrize(
    "descriptor",
    [
        b"\x10",  # S, partition 0
        b"\x90\x00",  # X, no extension fields
        b"\x90\x80\x05",  # I: 7-bit picture ID
        b"\x90\x80\x85\x12",  # I: 15-bit picture ID
        b"\x90\xc0\x85\x12\x07",  # I + L (TL0PICIDX)
        b"\x90\xe0\x05\x07\x40",  # I + L + T
        b"\x90\x10\x40",  # K only
    ],
)
def test_vp8_keyframe_size(descriptor: bytes) -> None:
    frame = b"\x50\x42\x00\x9d\x01\x2a" + struct.pack("<HH", 1280 | 0x4000, 720) + b"\x00" * 8  # scale bits ignored
    assert vp8_keyframe_size(descriptor + frame) == (1280, 720)
    inter = bytes([frame[0] | 0x01]) + frame[1:]
    assert vp8_keyframe_size(descriptor + inter) is None


def test_vp8_not_a_keyframe_start() -> None:
    frame = b"\x50\x42\x00\x9d\x01\x2a" + struct.pack("<HH", 640, 480) + b"\x00" * 8
    assert vp8_keyframe_size(b"\x10" + frame) == (640, 480)
    assert vp8_keyframe_size(b"\x00" + frame) is None  # not the start of a partition
    assert vp8_keyframe_size(b"\x11" + frame) is None  # partition 1
    assert vp8_keyframe_size(b"\x10" + frame[:3] + b"\x00\x00\x00" + frame[6:]) is None  # no start code
    for cut in range(0, 11):
        assert vp8_keyframe_size((b"\x10" + frame)[:cut]) is None
    assert vp8_keyframe_size(b"\x90\x80") is None  # X and I, then nothing
    assert vp8_keyframe_size(b"") is None


def test_vp8_caller_real_keyframe(ffmpeg: str) -> None:
    """A libvpx keyframe in RTP VP8 packets: the hub learns its size and keeps it for the snapshot."""
    ivf = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=blue:size=176x144:rate=25",
         "-frames:v", "1", "-c:v", "libvpx", "-f", "ivf", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    header = struct.unpack("<H", ivf[6:8])[0]
    size = struct.unpack("<I", ivf[header:header + 4])[0]
    frame = ivf[header + 12:header + 12 + size]
    hub, _caller, _ = make_hub()
    w = Watcher()
    hub.add_watcher(w)
    chunks = [frame[i:i + 100] for i in range(0, len(frame), 100)]
    for i, chunk in enumerate(chunks):
        descriptor = b"\x90\x80\x81\x01" if i == 0 else b"\x80\x80\x81\x01"  # X, I (15-bit ID), S on the first
        hub.rtp_from_caller(RtpVideo("VP8", 10 + i, 3000, i == len(chunks) - 1, descriptor + chunk))
    assert w.started == [("VP8", 176, 144)]
    assert [p.seq for p in w.rtp] == list(range(10, 10 + len(chunks)))
    assert hub.last_keyframe() == ("VP8", frame)
    frames = av.CodecContext.create("vp8", "r").decode(av.Packet(frame))
    assert frames and mean_rgb(frames[0])[2] > 200


def test_vp8_to_an_rtmp_watcher_is_data_only() -> None:
    hub, _caller, _ = make_hub()
    w = Watcher("flv")
    hub.add_watcher(w)
    hub.rtp_from_caller(RtpVideo("VP8", 1, 0, True, vp8_payload(True)))
    hub.data_from_caller("webgate", "hi")
    assert w.started == [(None, 640, 480)] and w.flv == [] and w.messages == [("webgate", "hi")]
    late = Watcher("flv")
    hub.add_watcher(late)
    assert late.started == [(None, 640, 480)]


# ------------------------------------------------------------------------------ RTMP H.264 -> RTP


def test_rtmp_h264_to_rtp_watchers_with_gop_replay(testsrc: list[list[bytes]]) -> None:
    tags = flv_tags(testsrc)  # sequence header, then 12 access units
    hub, caller, _ = make_hub()
    early = Watcher()
    hub.add_watcher(early)
    rtmp = Watcher("flv")
    hub.add_watcher(rtmp)
    for tag in tags[:9]:  # the header and 8 frames: IDR P P P P IDR P P
        hub.flv_from_caller(tag)
    assert early.started == [("H264", 320, 240)] == rtmp.started
    # a watcher joining now starts at once from the cached GOP (IDR P P), numbered to end right
    # before the live stream's next packet
    late = Watcher()
    hub.add_watcher(late)
    assert late.started == [("H264", 320, 240)] and late.rtp
    assert late.rtp[0].keyframe and h264.is_keyframe(depacketize(late.rtp[:5])[0][0].nals)
    replayed = len(late.rtp)
    flv_late = Watcher("flv")
    hub.add_watcher(flv_late)
    for tag in tags[9:]:
        hub.flv_from_caller(tag)
    assert caller.keyframe_requests == 0  # an RTMP encoder cannot be asked
    for w in (early, late):
        seqs = [p.seq for p in w.rtp]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))], "not one gap-free sequence"
        assert [p.marker for p in w.rtp].count(True) == len({p.timestamp for p in w.rtp})
        aus, d = depacketize(w.rtp)
        assert d.stats.lost == 0 and d.stats.broken == 0 and d.stats.skipped == 0
        frames = decode_annexb([au.nals for au in aus])
        assert len(frames) == len(aus) and (frames[0].width, frames[0].height) == (320, 240)
    assert len(depacketize(early.rtp)[0]) == 12
    late_aus = depacketize(late.rtp)[0]
    assert len(late_aus) == 3 + 4  # the replayed GOP (IDR P P), then the live P P IDR P
    assert late.rtp[replayed].seq == (late.rtp[replayed - 1].seq + 1) & 0xFFFF
    ts = [au.timestamp for au in late_aus]
    assert ts == sorted(ts) and ts[1] - ts[0] == TICKS
    # the RTMP watchers: the sequence header first, then from a keyframe on
    assert [t.body for t in rtmp.flv] == [t.body for t in tags]
    assert flv_late.flv[0].is_sequence_header and flv_late.flv[1].is_keyframe
    assert [t.body for t in flv_late.flv] == [t.body for t in [tags[0], *tags[6:]]]
    assert len(decode_annexb([au.nals for au in read_flv(flv_late.flv)])) == 7
    v = hub.snapshot()["video"]
    assert v["packets_in"] == len(tags) and v["codec"] == "H264"
    codec, keyframe = hub.last_keyframe() or ("", b"")
    assert codec == "H264" and h264.is_keyframe(h264.split_annexb(keyframe))


def test_rtmp_pli_does_not_replay_the_gop(testsrc: list[list[bytes]]) -> None:
    """A watcher's PLI cannot reach an RTMP encoder; it must not make the hub send the GOP again
    (numbers the watcher already had, and a way to make the gateway send megabytes per PLI)."""
    hub, caller, _ = make_hub()
    w = Watcher()
    hub.add_watcher(w)
    for tag in flv_tags(testsrc)[:4]:
        hub.flv_from_caller(tag)
    hub.keyframe_wanted(w)  # its first own request (a WebRTC watcher's DTLS is up): the GOP once more
    n = len(w.rtp)
    for _ in range(10):
        hub.keyframe_wanted(w)
    assert len(w.rtp) == n and caller.keyframe_requests == 0


def test_rtmp_other_codecs_go_to_rtmp_watchers_only() -> None:
    hub, _caller, _ = make_hub()
    rtp, flv = Watcher(), Watcher("flv")
    hub.add_watcher(rtp)
    hub.add_watcher(flv)
    vp6 = [FlvVideo(0, b"\x14\x00" + b"k" * 50), FlvVideo(40, b"\x24\x00" + b"p" * 20)]
    for t in vp6:
        hub.flv_from_caller(t)
    assert rtp.started == [(None, None, None)] and rtp.rtp == []
    assert flv.started == [("VP6", None, None)] and flv.flv == vp6
    late = Watcher("flv")
    hub.add_watcher(late)
    assert late.flv == vp6  # the GOP since the keyframe


# ------------------------------------------------------------------------------ WebRTC H.264 -> FLV


def test_webrtc_h264_to_rtmp_watchers_from_a_keyframe(testsrc: list[list[bytes]]) -> None:
    packets = rtp_packets(testsrc, seq=65530)  # the sequence numbers wrap
    hub, caller, clock = make_hub()
    early = Watcher("flv")
    hub.add_watcher(early)
    rtp = Watcher()
    hub.add_watcher(rtp)
    first_au = next(i for i, p in enumerate(packets) if p.marker) + 1
    for p in packets[:first_au]:
        hub.rtp_from_caller(p)
    assert early.started and early.started[0][0] == "H264"
    assert early.events.index("video_started") < early.events.index("flv")
    assert caller.keyframe_requests == 1  # watchers present when the video started
    # joins mid-GOP (after frame 2): its tags start at the next IDR, with a sequence header
    idr2 = next(i for i, p in enumerate(packets) if p.keyframe and i > 0)
    for p in packets[first_au:idr2 - 3]:
        hub.rtp_from_caller(p)
    clock.now += 1
    late = Watcher("flv")
    hub.add_watcher(late)
    assert caller.keyframe_requests == 2  # the new watcher asked for one
    assert late.started == [("H264", 320, 240)]
    for p in packets[idr2 - 3:]:
        hub.rtp_from_caller(p)
    assert rtp.rtp == packets  # the WebRTC watcher gets the caller's packets as they came
    assert early.flv[0].is_sequence_header and early.flv[1].is_keyframe
    assert len(read_flv(early.flv)) == 12
    frames = decode_annexb([au.nals for au in read_flv(early.flv)])
    assert len(frames) == 12 and (frames[0].width, frames[0].height) == (320, 240)
    assert late.flv[0].is_sequence_header and late.flv[1].is_keyframe
    late_aus = read_flv(late.flv)
    assert len(late_aus) == 7  # IDR P P P P IDR P
    assert len(decode_annexb([au.nals for au in late_aus])) == 7
    ms = [t.timestamp_ms for t in early.flv[1:]]
    assert ms == sorted(ms) and ms[1] - ms[0] == 40
    assert hub.snapshot()["video"]["width"] == 320


@pytest.mark.parametrize("mtu", [1200, 100])
def test_webrtc_h264_size_is_known_when_the_video_starts(ffmpeg: str, mtu: int) -> None:
    """Browsers send SPS/PPS (STAP-A) first: watchers hear the size with the codec, before any
    video (1200: the whole keyframe in one STAP-A; 100: SPS/PPS, then FU-A fragments)."""
    aus = access_units(x264(ffmpeg, "red", "352x288", 3, 250))
    hub, _caller, _ = make_hub()
    w, r = Watcher("flv"), Watcher("rtp")
    hub.add_watcher(w)
    hub.add_watcher(r)
    packets = rtp_packets(aus, mtu=mtu)
    assert (len(packets) > 3) is (mtu == 100)
    for p in packets:
        hub.rtp_from_caller(p)
    assert w.started == [("H264", 352, 288)] == r.started
    assert w.events[0] == "video_started" and r.events[0] == "video_started"
    frames = decode_annexb([au.nals for au in read_flv(w.flv)])
    assert len(frames) == 3 and mean_rgb(frames[0])[0] > 230


def test_webrtc_loss_waits_for_the_next_keyframe(testsrc: list[list[bytes]]) -> None:
    packets = rtp_packets(testsrc, mtu=300)
    lost = next(i for i, p in enumerate(packets) if p.timestamp == packets[0].timestamp + TICKS)  # frame 1
    hub, caller, clock = make_hub()
    w = Watcher("flv")
    hub.add_watcher(w)
    for i, p in enumerate(packets):
        if i == lost:
            clock.now += 1
            continue
        hub.rtp_from_caller(p)
    assert caller.keyframe_requests >= 2  # the start, and the loss
    aus = read_flv(w.flv)
    assert len(aus) == 1 + 7  # frame 0, then nothing until the IDR of frame 5
    assert len(decode_annexb([au.nals for au in aus])) == 8

"""The media hub's recorder tap (issue 17): what a recording receives of the caller's video, and
that it is not a watcher."""

from __future__ import annotations

from typing import Any

from tests.recording.test_data_log import _Caller, _Watcher
from webgate.legs.hub import MediaHub
from webgate.legs.hub_types import FlvVideo, RtpVideo
from webgate.proto import h264


class _Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.rtp: list[RtpVideo] = []
        self.flv: list[FlvVideo] = []
        self.data: list[Any] = []
        self.fail = fail

    def rtp_video(self, packet: RtpVideo) -> None:
        if self.fail:
            raise RuntimeError("a broken recorder")
        self.rtp.append(packet)

    def flv_video(self, tag: FlvVideo) -> None:
        self.flv.append(tag)

    def data(self, origin: str, sender: str | None, label: str, data: str | bytes) -> None:
        self.data.append((origin, sender, label, data))


def _avc(keyframe: bool, ts: int) -> FlvVideo:
    return FlvVideo(ts, h264.build_avc_tag(1, h264.join_length_prefixed([b"\x65" if keyframe else b"\x41", b"x"]),
                                           keyframe=keyframe))


def test_an_rtmp_callers_recorder_starts_from_the_cached_gop() -> None:
    caller = _Caller()
    hub = MediaHub("S", caller)
    sps = bytes.fromhex("6742c01e95a0501f")  # any SPS-shaped bytes: the hub only keeps the tag
    header = FlvVideo(0, h264.build_avc_tag(0, bytes([1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, len(sps)]) + sps + bytes([1, 0, 2, 0x68, 0xCE])))
    hub.flv_from_caller(header)
    tags = [_avc(True, 0), _avc(False, 40), _avc(True, 80), _avc(False, 120)]
    for t in tags:
        hub.flv_from_caller(t)
    rec = _Recorder()
    hub.add_recorder(rec)
    assert rec.flv == [header, tags[2], tags[3]]  # the sequence header and the last GOP
    assert caller.keyframes == 0  # an RTMP publisher cannot be asked
    later = _avc(False, 160)
    hub.flv_from_caller(later)
    assert rec.flv[-1] is later
    hub.remove_recorder(rec)
    hub.flv_from_caller(_avc(False, 200))
    assert rec.flv[-1] is later


def test_a_webrtc_callers_recorder_asks_for_a_keyframe_and_never_hurts_the_watchers() -> None:
    now = [10.0]
    caller = _Caller()
    hub = MediaHub("S", caller, clock=lambda: now[0])
    hub.rtp_from_caller(RtpVideo("VP8", 1, 0, True, b"\x10abc"))
    broken, rec = _Recorder(fail=True), _Recorder()
    hub.add_recorder(broken)
    hub.add_recorder(rec)
    hub.add_recorder(rec)  # twice: once
    assert caller.keyframes == 2 and hub.recorders == [broken, rec]  # each recording's start asks
    hub.request_keyframe()  # a recording's own request within 0.5 s: not repeated
    assert caller.keyframes == 2
    now[0] += 0.6
    hub.request_keyframe()
    assert caller.keyframes == 3 and hub.stats.keyframe_requests == 3
    w = _Watcher("agent")
    got: list[RtpVideo] = []
    w.rtp_video = got.append  # type: ignore[method-assign]
    hub.add_watcher(w)
    p = RtpVideo("VP8", 2, 3000, True, b"\x00def")
    hub.rtp_from_caller(p)
    assert got == [p] and rec.rtp == [p]  # the broken recorder stopped nothing
    assert caller.counts == [1] and hub.snapshot()["video"]["watchers"] == 1
    hub.close("hangup")
    assert hub.recorders == []
    hub.add_recorder(_Recorder())  # a closed hub takes no recorder
    assert hub.recorders == []

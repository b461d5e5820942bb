"""MediaHub fixes (issue 14 follow-up), each driven with packets as in tests/legs/test_hub.py:

- an RTMP caller's GOP over ``gop_max_bytes`` is cleared, not cut short: a new watcher gets no
  partial GOP, and the cache starts again at the next keyframe;
- a WebRTC caller's depacketizer loss asks for a keyframe only while someone watches;
- a watcher's REMB of 0 is floored (``MIN_BITRATE_BPS``), absurd values are ignored;
- the snapshot's H.264 keyframe carries the last SPS/PPS when the IDR came without them;
- the GOP replayed to a WebRTC watcher of an RTMP caller at its first own keyframe request (its
  transport is up) keeps that watcher's timestamps moving forward, and is not repeated.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.legs.h264_streams import TICKS, flv_tags, rtp_packets
from tests.legs.test_hub import Watcher, decode_annexb, make_hub, read_flv, vp8_payload
from webgate.legs.hub import MIN_BITRATE_BPS
from webgate.legs.hub_types import RtpVideo
from webgate.proto import h264


def _without_parameter_sets(au: list[bytes]) -> list[bytes]:
    return [n for n in au if h264.nal_type(n) not in (h264.NAL_SPS, h264.NAL_PPS)]


def test_an_rtmp_gop_over_the_limit_is_cleared_until_the_next_keyframe(testsrc: list[list[bytes]]) -> None:
    tags = flv_tags(testsrc)  # the sequence header, then IDR P P P P IDR P ...
    limit = len(tags[1].body) + len(tags[2].body) + len(tags[3].body) // 2  # IDR + 1 P fit, not a 2nd P
    hub, _caller, _ = make_hub(gop_max_bytes=limit)
    for tag in tags[:4]:  # header, IDR, P, P: the second P does not fit
        hub.flv_from_caller(tag)
    flv, rtp = Watcher("flv"), Watcher()
    hub.add_watcher(flv)
    hub.add_watcher(rtp)
    # no partial GOP (a keyframe and then a jump): the sequence header only, and no RTP at all
    assert [t.body for t in flv.flv] == [tags[0].body]
    assert rtp.rtp == []
    for tag in tags[4:6]:  # P P: still waiting for a keyframe, nothing cached
        hub.flv_from_caller(tag)
    late = Watcher("flv")
    hub.add_watcher(late)
    assert [t.body for t in late.flv] == [tags[0].body]
    hub.flv_from_caller(tags[6])  # the IDR of frame 5: cached again from here
    later = Watcher("flv")
    hub.add_watcher(later)
    assert [t.body for t in later.flv] == [tags[0].body, tags[6].body]
    assert len(decode_annexb([au.nals for au in read_flv(later.flv)])) == 1


def test_an_rtmp_keyframe_larger_than_the_limit_is_not_cached(testsrc: list[list[bytes]]) -> None:
    tags = flv_tags(testsrc)
    hub, _caller, _ = make_hub(gop_max_bytes=len(tags[1].body) - 1)
    for tag in tags[:3]:
        hub.flv_from_caller(tag)
    w = Watcher("flv")
    hub.add_watcher(w)
    assert [t.body for t in w.flv] == [tags[0].body]


def test_loss_asks_for_a_keyframe_only_while_someone_watches(testsrc: list[list[bytes]]) -> None:
    packets = rtp_packets(testsrc, mtu=300)
    lost = next(i for i, p in enumerate(packets) if p.timestamp == packets[0].timestamp + TICKS)  # frame 1
    hub, caller, clock = make_hub()
    for i, p in enumerate(packets):
        clock.now += 0.04
        if i != lost:
            hub.rtp_from_caller(p)
    assert caller.keyframe_requests == 0 and hub.stats.keyframe_requests == 0  # nobody to see it
    # the same loss with a watcher present: the caller is asked
    hub, caller, clock = make_hub()
    hub.add_watcher(Watcher("flv"))
    for i, p in enumerate(packets):
        clock.now += 0.04
        if i != lost:
            hub.rtp_from_caller(p)
    assert caller.keyframe_requests >= 2  # the start, and the loss


def test_a_remb_of_zero_is_floored_and_absurd_values_are_ignored() -> None:
    hub, caller, _ = make_hub(max_bitrate_bps=1_500_000)
    a, b = Watcher(), Watcher()
    hub.add_watcher(a)
    hub.add_watcher(b)
    hub.rtp_from_caller(RtpVideo("VP8", 1, 0, True, vp8_payload(True)))
    hub.report_bitrate(a, 0)  # one watcher's collapsed estimate: not a stop for everyone
    assert hub.bitrate_limit == MIN_BITRATE_BPS == 30_000 and caller.limits[-1] == MIN_BITRATE_BPS
    hub.report_bitrate(a, 800_000)
    for absurd in (-1, 2**70, float("nan"), float("inf"), "fast"):
        hub.report_bitrate(b, absurd)  # type: ignore[arg-type]
    assert hub.bitrate_limit == 800_000 and caller.limits == [1_500_000, MIN_BITRATE_BPS, 800_000]
    hub.report_bitrate(b, 10_000)  # below the floor: the floor
    assert hub.bitrate_limit == MIN_BITRATE_BPS


@pytest.mark.parametrize("source", ["rtp", "flv"])
def test_the_snapshot_keyframe_has_the_parameter_sets(testsrc: list[list[bytes]], source: str) -> None:
    """The IDR of frame 5 comes without SPS/PPS (they came with frame 0; a WebRTC caller may send
    them once): the snapshot keyframe gets the last ones seen, so it decodes on its own."""
    aus = [testsrc[0], *testsrc[1:5], _without_parameter_sets(testsrc[5]), testsrc[6]]
    assert {h264.nal_type(n) for n in aus[5]} == {h264.NAL_IDR}
    hub, _caller, _ = make_hub()
    if source == "rtp":
        packetizer = h264.Packetizer(1200, insert_parameter_sets=False)  # as the caller sent them
        seq = 1000
        for i, au in enumerate(aus):
            for j, pl in enumerate(packetizer.packetize(au)):
                hub.rtp_from_caller(RtpVideo("H264", seq, 90000 + i * TICKS, pl.marker, pl.payload, keyframe=j == 0 and h264.is_keyframe(au)))
                seq += 1
    else:
        for tag in flv_tags(aus):
            hub.flv_from_caller(tag)
    codec, keyframe = hub.last_keyframe() or ("", b"")
    nals = h264.split_annexb(keyframe)
    assert codec == "H264" and h264.nal_type(nals[-1]) == h264.NAL_IDR
    assert nals[-1] == aus[5][-1]  # the latest keyframe (frame 5's), not frame 0's
    types = [h264.nal_type(n) for n in nals]
    assert h264.NAL_SPS in types and h264.NAL_PPS in types
    frames = decode_annexb([nals])
    assert len(frames) == 1 and (frames[0].width, frames[0].height) == (320, 240)


def _ts_forward(packets: list[Any]) -> bool:
    ts = [p.timestamp for p in packets]
    return all(0 <= (b - a) & 0xFFFFFFFF < 0x80000000 for a, b in itertools.pairwise(ts))


def test_a_gop_replayed_to_a_running_watcher_keeps_its_timestamps_forward(testsrc: list[list[bytes]]) -> None:
    tags = flv_tags(testsrc)
    hub, caller, _ = make_hub()
    w = Watcher()
    hub.add_watcher(w)  # before any video: nothing to replay at the join
    for tag in tags[:9]:  # header + IDR P P P P IDR P P: the watcher got them live
        hub.flv_from_caller(tag)
    live = len(w.rtp)
    last = w.rtp[-1].timestamp
    hub.keyframe_wanted(w)  # its first own request: the cached GOP (IDR P P) once more
    replay = w.rtp[live:]
    assert replay and replay[0].keyframe
    assert (replay[0].timestamp - last) & 0xFFFFFFFF == 3000  # one step after its last frame, not back
    for _ in range(5):
        hub.keyframe_wanted(w)  # later PLIs: no more replays
    assert len(w.rtp) == live + len(replay) and caller.keyframe_requests == 0
    for tag in tags[9:]:
        hub.flv_from_caller(tag)
    assert len(w.rtp) > live + len(replay)
    assert _ts_forward(w.rtp), [p.timestamp for p in w.rtp]
    # the live stream after the replay keeps its own spacing
    after = w.rtp[live + len(replay):]
    steps = sorted({(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(after)} - {0})
    assert steps == [TICKS], steps
    # a watcher that joins now (after the video started) starts at the GOP, as before
    late = Watcher()
    hub.add_watcher(late)
    assert late.rtp and late.rtp[0].keyframe and _ts_forward(late.rtp)

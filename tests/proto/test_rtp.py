"""Tests for webgate.proto.rtp: RTP/RTCP codecs, statistics, sender/rewriter, RFC 4733, jitter buffer."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.rtp import (
    parse_payload,
    DtmfDigit,
    DtmfReceiver,
    DtmfSender,
    Goodbye,
    JitterBuffer,
    Loss,
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    RtpRewriter,
    RtpSender,
    RtpStats,
    SdesChunk,
    SenderReport,
    SourceDescription,
    TelephoneEvent,
    is_rtcp,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    seq_diff,
    serialize_rtcp,
    ts_diff,
)

# ------------------------------------------------------------------------------ RTP packets

# A PCMU packet as sent by SIPp/rtp_probe: V=2, PT 0, seq 0x1234, ts 0xdeadbeef, ssrc 0x01020304.
PCMU_PACKET = bytes.fromhex("80001234deadbeef01020304") + b"\xff" * 160


def test_parse_simple_packet() -> None:
    p = RtpPacket.parse(PCMU_PACKET)
    assert (p.version, p.payload_type, p.sequence, p.timestamp, p.ssrc) == (
        2, 0, 0x1234, 0xDEADBEEF, 0x01020304)
    assert not p.marker and not p.padding and not p.extension and p.csrcs == ()
    assert p.payload == b"\xff" * 160
    assert p.serialize() == PCMU_PACKET


def test_parse_csrc_extension_padding_marker() -> None:
    data = (
        bytes([0x80 | 0x20 | 0x10 | 2, 0x80 | 111])  # P, X, CC=2; M, PT 111
        + (65535).to_bytes(2, "big") + (2**32 - 1).to_bytes(4, "big") + (7).to_bytes(4, "big")
        + (10).to_bytes(4, "big") + (11).to_bytes(4, "big")  # CSRCs
        + bytes.fromhex("bede0001") + bytes.fromhex("10aa0000")  # one-byte ext header, 1 word
        + b"opus!"
        + b"\x00\x00\x03"  # 3 padding bytes
    )
    p = RtpPacket.parse(data)
    assert p.marker and p.payload_type == 111
    assert p.sequence == 65535 and p.timestamp == 2**32 - 1
    assert p.csrcs == (10, 11)
    assert p.extension_profile == 0xBEDE and p.extension_data == bytes.fromhex("10aa0000")
    assert p.padding_size == 3 and p.padding
    assert p.payload == b"opus!"
    assert p.serialize() == data
    assert RtpPacket.parse(p.serialize()) == p


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00",
        bytes.fromhex("40001234deadbeef01020304"),  # version 1
        bytes.fromhex("82001234deadbeef01020304") + b"\x00\x00\x00\x01",  # CC=2, one CSRC
        bytes.fromhex("90001234deadbeef01020304") + b"\xbe\xde",  # X, truncated ext header
        bytes.fromhex("90001234deadbeef01020304") + bytes.fromhex("bede0002") + b"\x00" * 4,
        bytes.fromhex("a0001234deadbeef01020304") + b"\x01\x00",  # padding count 0
        bytes.fromhex("a0001234deadbeef01020304") + b"\x01\x09",  # padding > payload
    ],
)
def test_bad_packets(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        RtpPacket.parse(data)


def test_serialize_rejects_bad_values() -> None:
    with pytest.raises(LocalProtocolError):
        RtpPacket(payload_type=128, sequence=0, timestamp=0, ssrc=0).serialize()
    with pytest.raises(LocalProtocolError):
        RtpPacket(payload_type=0, sequence=65536, timestamp=0, ssrc=0).serialize()
    with pytest.raises(LocalProtocolError):
        RtpPacket(payload_type=0, sequence=0, timestamp=2**32, ssrc=0).serialize()
    with pytest.raises(LocalProtocolError):
        RtpPacket(0, 0, 0, 0, extension_profile=1, extension_data=b"abc").serialize()


def test_is_rtcp_demux() -> None:
    assert not is_rtcp(PCMU_PACKET)
    assert not is_rtcp(RtpPacket(payload_type=96, sequence=1, timestamp=1, ssrc=1,
                                 marker=True).serialize())  # 224: dynamic PT with marker
    assert is_rtcp(ReceiverReport(ssrc=1).serialize())
    assert is_rtcp(SenderReport(1, 0, 0, 0, 0).serialize())
    assert not is_rtcp(b"\x80")
    assert not is_rtcp(b"\x16\xfe\xfd\x00")  # DTLS record


def test_seq_and_ts_diff_wrap() -> None:
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 100) == 0
    assert ts_diff(5, 2**32 - 5) == 10
    assert ts_diff(2**32 - 5, 5) == -10


# ------------------------------------------------------------------------------ RTCP

# A compound SR (with one report block) + SDES CNAME, assembled by hand per the RFC 3550 layout.
SR_SDES = bytes.fromhex(
    "81c8000c" "11223344"
    "e72f3a1080000000" "0000fa00" "00000064" "00003e80"
    "55667788" "19000003" "00010005" "0000000c" "3a0f8000" "00008000"
    "81ca0006" "11223344" "0110" + b"user@example.com".hex() + "00" "00"
)


def test_parse_compound_sr_sdes() -> None:
    packets = parse_rtcp(SR_SDES)
    assert len(packets) == 2
    sr, sdes = packets
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == 0x11223344
    assert sr.ntp_timestamp == 0xE72F3A1080000000
    assert sr.rtp_timestamp == 64000 and sr.packet_count == 100 and sr.octet_count == 16000
    assert sr.reports == (ReportBlock(0x55667788, 0x19, 3, 0x10005, 12, 0x3A0F8000, 0x8000),)
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks[0].ssrc == 0x11223344 and sdes.chunks[0].cname == "user@example.com"
    assert serialize_rtcp(packets) == SR_SDES


def test_rtcp_round_trips_and_unknown_skipped() -> None:
    rr = ReceiverReport(7, (ReportBlock(8, 255, -5, 70000, 99, 1, 2),))
    bye = Goodbye((7, 9), "bye now")
    sdes = SourceDescription((SdesChunk(7, ((1, b"abc"), (6, b"tool"))), SdesChunk(9, ())))
    app = bytes.fromhex("80cc0002") + b"\x00\x00\x00\x07" + b"NAME"  # APP: skipped
    data = serialize_rtcp([rr, sdes]) + app + bye.serialize()
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == [rr, sdes, bye]
    assert parse_rtcp(Goodbye((1,)).serialize()) == [Goodbye((1,), None)]


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\xc8",
        bytes.fromhex("80c8000c11223344"),  # SR length beyond data
        bytes.fromhex("00c90001" "00000001"),  # version 0
        bytes.fromhex("81c90001" "00000001"),  # RR claims a block it does not have
        bytes.fromhex("81ca0001" "00000001"),  # SDES with unterminated item list
        bytes.fromhex("81cb0000"),  # BYE without its SSRC
        bytes.fromhex("a0c90001" "00000000"),  # padding count 0
        SR_SDES + b"\x80",
    ],
)
def test_bad_rtcp(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_rtcp(data)


def test_ntp_helpers() -> None:
    ntp = ntp_from_unix(0.5)
    assert ntp >> 32 == 2208988800 and ntp & 0xFFFFFFFF == 0x80000000
    assert ntp_middle32(0x0123456789ABCDEF) == 0x456789AB


# ------------------------------------------------------------------------------ statistics


def _pkt(seq: int, ts: int, ssrc: int = 1, payload: bytes = b"x" * 160, pt: int = 0,
         marker: bool = False) -> RtpPacket:
    return RtpPacket(payload_type=pt, sequence=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF,
                     ssrc=ssrc, payload=payload, marker=marker)


def test_stats_loss_with_wrap() -> None:
    stats = RtpStats(8000)
    seqs = [65530, 65531, 65532, 65534, 65535, 0, 2, 3]  # 65533 and 1 lost
    for i, seq in enumerate(seqs):
        assert stats.update(_pkt(seq, 160 * i), now=0.02 * i)
    assert stats.extended_max_seq == 65536 + 3
    assert stats.expected == 10 and stats.received == 8 and stats.lost == 2
    block = stats.report_block(now=1.0)
    assert block.fraction_lost == (2 << 8) // 10 == 51
    assert block.cumulative_lost == 2 and block.highest_sequence == 65539
    # next interval: 10 more, none lost
    for i in range(4, 14):
        stats.update(_pkt(i, 160 * (i + 6)), now=0.02 * (i + 6))
    block = stats.report_block(now=2.0)
    assert block.fraction_lost == 0 and block.cumulative_lost == 2
    assert stats.octets == 18 * 160


def test_stats_jitter_hand_computed() -> None:
    stats = RtpStats(8000)
    # arrival in ts units: 0, 200, 320; timestamps 0, 160, 320 -> transit 0, 40, 0
    stats.update(_pkt(1, 0), now=0.0)
    stats.update(_pkt(2, 160), now=0.025)
    assert stats.jitter == 2  # 40/16 = 2.5
    stats.update(_pkt(3, 320), now=0.040)
    assert stats._jitter == pytest.approx(2.5 + (40 - 2.5) / 16)  # 4.84375
    assert stats.jitter == 4


def test_stats_jitter_across_timestamp_wrap() -> None:
    stats = RtpStats(8000)
    base = 2**32 - 160
    for i in range(5):
        stats.update(_pkt(i, base + 160 * i), now=100.0 + 0.02 * i)
    assert stats.jitter == 0


def test_stats_lsr_dlsr_and_sender_report() -> None:
    stats = RtpStats(8000)
    stats.update(_pkt(1, 0), now=10.0)
    sr = SenderReport(ssrc=1, ntp_timestamp=0x0000123456780000, rtp_timestamp=0,
                      packet_count=1, octet_count=160)
    stats.on_sender_report(sr, now=10.0)
    block = stats.report_block(now=10.5)
    assert block.lsr == 0x12345678
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s


def test_stats_restart_after_big_jump() -> None:
    stats = RtpStats(8000)
    for i in range(5):
        stats.update(_pkt(100 + i, 160 * i), now=0.02 * i)
    assert not stats.update(_pkt(40000, 0), now=1.0)  # first jump: suspicious, not counted
    assert stats.received == 5
    assert stats.update(_pkt(40001, 160), now=1.02)  # sequential: resync
    assert stats.base_seq == 40001 and stats.received == 1


def test_stats_ssrc_change_resets() -> None:
    stats = RtpStats(8000)
    for i in range(5):
        stats.update(_pkt(i, 160 * i, ssrc=1), now=0.02 * i)
    stats.update(_pkt(9000, 5, ssrc=2), now=0.2)
    assert stats.ssrc == 2 and stats.received == 1 and stats.expected == 1


def test_stats_counts_a_packet_left_out_of_the_jitter() -> None:
    # an RFC 4733 event's timestamp is its start: counted as received, kept out of the jitter
    stats = RtpStats(8000)
    for i in range(5):
        stats.update(_pkt(i, 160 * i), now=0.02 * i)
    for k in range(5, 10):  # one event, five packets, all stamped at its start, 20 ms apart
        assert stats.update(_pkt(k, 160 * 5, pt=101, payload=b"\x01\x0a\x00\xa0"), now=0.02 * k, jitter=False)
    for i in range(10, 15):
        stats.update(_pkt(i, 160 * i), now=0.02 * i)
    assert stats.received == stats.expected == 15 and stats.lost == 0
    assert stats.octets == 10 * 160 + 5 * 4
    assert stats.jitter == 0  # with the events in the estimate it would be ~130 timestamp units


# ------------------------------------------------------------------------------ sender / rewriter


def test_sender_wraps_sequence_and_timestamp() -> None:
    sender = RtpSender(0, 8000, ssrc=5, sequence=65534, timestamp=2**32 - 160)
    packets = [sender.next_packet(b"a" * 160, 160) for _ in range(4)]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [2**32 - 160, 0, 160, 320]
    assert all(p.ssrc == 5 for p in packets)
    assert sender.packet_count == 4 and sender.octet_count == 640
    sr = sender.sender_report(wallclock=0.5)
    assert sr.packet_count == 4 and sr.octet_count == 640 and sr.rtp_timestamp == 480
    assert sr.ntp_timestamp == ntp_from_unix(0.5)


def test_sender_random_start() -> None:
    a = RtpSender(0, rng=random.Random(1))
    b = RtpSender(0, rng=random.Random(2))
    assert (a.ssrc, a.sequence, a.timestamp) != (b.ssrc, b.sequence, b.timestamp)
    assert 0 <= a.sequence < 65536 and 0 <= a.timestamp < 2**32


def test_rewriter_continuous_across_ssrc_change() -> None:
    rw = RtpRewriter(8000, ssrc=99, sequence=65534, timestamp=2**32 - 320)
    out = [rw.rewrite(_pkt(100 + i, 1000 + 160 * i, ssrc=1)) for i in range(3)]
    out += [rw.rewrite(_pkt(5000 + i, 777777 + 160 * i, ssrc=2)) for i in range(3)]
    assert all(p is not None for p in out)
    packets = [p for p in out if p is not None]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1, 2, 3]
    assert [p.timestamp for p in packets] == [(2**32 - 320 + 160 * i) % 2**32 for i in range(6)]
    assert all(p.ssrc == 99 for p in packets)
    assert [p.marker for p in packets] == [True, False, False, True, False, False]
    assert rw.switches == 1
    # a straggler from the old source is dropped
    assert rw.rewrite(_pkt(103, 1000 + 480, ssrc=1)) is None


def test_rewriter_uses_elapsed_time_and_keeps_reordering() -> None:
    rw = RtpRewriter(8000, ssrc=1, sequence=10, timestamp=0)
    rw.rewrite(_pkt(1, 0, ssrc=1), now=0.0)
    rw.rewrite(_pkt(2, 160, ssrc=1), now=0.02)
    p = rw.rewrite(_pkt(50, 99999, ssrc=2), now=0.52)  # 500 ms silence during the switch
    assert p is not None and p.sequence == 12 and p.timestamp == 160 + 4000
    # reordered packets of the current source map with the same offsets
    late = rw.rewrite(_pkt(52, 99999 + 320, ssrc=2), now=0.56)
    early = rw.rewrite(_pkt(51, 99999 + 160, ssrc=2), now=0.561)
    assert late is not None and early is not None
    assert (early.sequence, late.sequence) == (13, 14)
    assert (early.timestamp, late.timestamp) == (4320, 4480)


def test_rewriter_same_ssrc_restart_and_pt_map() -> None:
    rw = RtpRewriter(8000, ssrc=1, sequence=0, timestamp=0, payload_type_map={101: 126})
    rw.rewrite(_pkt(10, 0, ssrc=7))
    p = rw.rewrite(_pkt(40000, 123456789, ssrc=7, pt=101))
    assert p is not None and p.sequence == 1 and p.timestamp == 160 and p.payload_type == 126


# ------------------------------------------------------------------------------ RFC 4733


def test_telephone_event_round_trip() -> None:
    ev = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert ev.serialize() == bytes.fromhex("0b8a0320")
    assert TelephoneEvent.parse(ev.serialize()) == ev
    assert ev.digit == "#"
    assert TelephoneEvent(16).digit is None
    with pytest.raises(RemoteProtocolError):
        TelephoneEvent.parse(b"\x01\x02")


def test_dtmf_sender_packet_train() -> None:
    rtp = RtpSender(0, 8000, ssrc=3, sequence=65535, timestamp=1000)
    packets = DtmfSender(101, 8000).packets("5", 100, rtp)
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert all(e.event == 5 for e in events)
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp for p in packets} == {1000}
    assert {p.payload_type for p in packets} == {101}
    assert [p.sequence for p in packets] == [65535, 0, 1, 2, 3, 4, 5]
    assert rtp.timestamp == 1800 and rtp.sequence == 6  # audio continues after the event
    wide = DtmfSender(110, 48000).events("*", 40)
    assert [e.duration for e in wide] == [960, 1920, 1920, 1920] and wide[0].event == 10
    with pytest.raises(LocalProtocolError):
        DtmfSender(101).events("x", 100)


def _train(digit: str, ms: int, rtp: RtpSender) -> list[RtpPacket]:
    return DtmfSender(101, 8000).packets(digit, ms, rtp)


def test_dtmf_round_trip() -> None:
    rtp = RtpSender(0, 8000, ssrc=3)
    rx = DtmfReceiver(8000)
    got: list[DtmfDigit] = []
    for digit in "15#":
        for p in _train(digit, 120, rtp):
            got.extend(rx.receive(p))
    assert got == [DtmfDigit("1", 120), DtmfDigit("5", 120), DtmfDigit("#", 120)]


def test_dtmf_lost_start_duplicates_and_repeated_digit() -> None:
    rtp = RtpSender(0, 8000, ssrc=3)
    rx = DtmfReceiver(8000)
    first = _train("7", 100, rtp)
    second = _train("7", 60, rtp)  # same digit again: a new timestamp makes it a new event
    stream = first[1:]  # start packet lost
    stream = stream[:2] + [stream[1]] + stream[2:]  # a retransmitted update
    stream += [first[-1]] + second + second[-2:]  # late duplicates of end packets
    got = [d for p in stream for d in rx.receive(p)]
    assert got == [DtmfDigit("7", 100), DtmfDigit("7", 60)]


def test_dtmf_all_end_packets_lost() -> None:
    rtp = RtpSender(0, 8000, ssrc=3)
    rx = DtmfReceiver(8000, timeout=0.5)
    first = _train("2", 100, rtp)[:-3]  # no end packets
    got = [d for i, p in enumerate(first) for d in rx.receive(p, now=0.02 * i)]
    assert got == []
    assert rx.poll(now=0.3) == []
    assert rx.poll(now=0.7) == [DtmfDigit("2", 80)]  # last duration seen: 640 units
    assert rx.poll(now=2.0) == []
    # next event flushes a pending one too
    pending = _train("3", 100, rtp)[:2]
    nxt = _train("4", 40, rtp)
    got = [d for p in pending + nxt for d in rx.receive(p)]
    assert got == [DtmfDigit("3", 40), DtmfDigit("4", 40)]


# ------------------------------------------------------------------------------ jitter buffer


def _run(jb: JitterBuffer, arrivals: list[tuple[float, RtpPacket]], ticks: int,
         start: float = 0.001) -> list[RtpPacket | Loss | None]:
    """Deliver packets at their arrival times and pull every 20 ms."""
    pending = sorted(arrivals, key=lambda a: a[0])
    out: list[RtpPacket | Loss | None] = []
    for k in range(ticks):
        now = start + 0.02 * k
        while pending and pending[0][0] <= now:
            at, pkt = pending.pop(0)
            jb.put(pkt, at)
        out.append(jb.get(now))
    return out


def _seqs(items: list[RtpPacket | Loss | None]) -> list[object]:
    res: list[object] = []
    for it in items:
        if isinstance(it, RtpPacket):
            res.append(it.sequence)
        elif isinstance(it, Loss):
            res.append(("loss", it.sequence))
    return res


def test_jitter_buffer_in_order_with_initial_delay() -> None:
    jb = JitterBuffer(8000)
    arrivals = [(0.02 * i, _pkt(i, 160 * i)) for i in range(10)]
    out = _run(jb, arrivals, 14)
    assert out[0] is None  # held for the target delay first
    assert _seqs(out) == list(range(10))
    assert jb.stats.played == 10 and jb.stats.lost == 0
    assert jb.target_delay == pytest.approx(0.02)


def test_jitter_buffer_reorders() -> None:
    jb = JitterBuffer(8000, min_delay=0.04)
    arrivals = [(0.02 * i, _pkt(i, 160 * i)) for i in range(8)]
    arrivals[1] = (0.045, arrivals[1][1])  # seq 1 arrives after seq 2
    arrivals[5] = (0.125, arrivals[5][1])  # seq 5 arrives after seq 6
    out = _run(jb, arrivals, 14)
    assert _seqs(out) == list(range(8))
    assert jb.stats.lost == 0 and jb.stats.late == 0


def test_jitter_buffer_loss_then_late_and_duplicate() -> None:
    jb = JitterBuffer(8000)
    arrivals = [(0.02 * i, _pkt(i, 160 * i)) for i in range(10) if i != 3]
    arrivals.append((0.2, _pkt(3, 480)))  # far too late
    arrivals.append((0.1101, _pkt(6, 960)))  # duplicate
    out = _run(jb, arrivals, 30)  # the late packet raises the target delay: playout slows
    assert jb.target_delay > 0.1
    assert _seqs(out) == [0, 1, 2, ("loss", 3), 4, 5, 6, 7, 8, 9]
    assert jb.stats.late == 1 and jb.stats.duplicates == 1 and jb.stats.lost == 1
    losses = [it for it in out if isinstance(it, Loss)]
    assert losses == [Loss(sequence=3, ssrc=1, count=1)]


def test_jitter_buffer_sequence_wrap() -> None:
    jb = JitterBuffer(8000)
    base_ts = 2**32 - 480
    arrivals = [(0.02 * i, _pkt(65533 + i, base_ts + 160 * i)) for i in range(8)]
    arrivals[3], arrivals[4] = (0.08, arrivals[4][1]), (0.081, arrivals[3][1])
    out = _run(jb, arrivals, 12)
    assert _seqs(out) == [65533, 65534, 65535, 0, 1, 2, 3, 4]


def test_jitter_buffer_adapts_up_and_down() -> None:
    jb = JitterBuffer(8000, min_delay=0.02, max_delay=0.2)
    rnd = random.Random(7)
    arrivals = [(0.02 * i + rnd.uniform(0, 0.08), _pkt(i, 160 * i)) for i in range(100)]
    out = _run(jb, arrivals, 110)
    assert jb.target_delay > 0.07
    played = [it for it in out if isinstance(it, RtpPacket)]
    assert len(played) >= 85  # most jittered packets survive once the delay has grown
    # then a calm network: the target comes back down to the minimum
    calm = [(0.02 * (110 + i) + 0.01, _pkt(110 + i, 160 * (110 + i))) for i in range(150)]
    _run(jb, calm, 160, start=2.201)
    assert jb.target_delay < 0.04
    # never beyond the max, however bad the network
    jb2 = JitterBuffer(8000, max_delay=0.1)
    wild = [(0.02 * i + (0.5 if i % 10 == 0 else 0), _pkt(i, 160 * i)) for i in range(40)]
    _run(jb2, wild, 60)
    assert jb2.target_delay == pytest.approx(0.1)


def test_jitter_buffer_resync_on_ssrc_change_and_jump() -> None:
    jb = JitterBuffer(8000)
    arrivals = [(0.02 * i, _pkt(i, 160 * i, ssrc=1)) for i in range(5)]
    arrivals += [(0.1 + 0.02 * i, _pkt(30000 + i, 5 + 160 * i, ssrc=2)) for i in range(5)]
    out = _run(jb, arrivals, 14)
    seqs = _seqs(out)
    assert seqs[-5:] == [30000, 30001, 30002, 30003, 30004]
    assert not any(isinstance(s, tuple) for s in seqs)
    assert jb.stats.resyncs == 1
    # same SSRC, sequence jumps far ahead: resync, no flood of losses
    jb2 = JitterBuffer(8000)
    arrivals = [(0.02 * i, _pkt(i, 160 * i)) for i in range(5)]
    arrivals += [(0.1 + 0.02 * i, _pkt(20000 + i, 160 * (5 + i))) for i in range(5)]
    out = _run(jb2, arrivals, 14)
    assert jb2.stats.resyncs == 1 and jb2.stats.lost == 0
    assert _seqs(out)[-5:] == [20000 + i for i in range(5)]


def test_jitter_buffer_bounded_and_gap_skip() -> None:
    jb = JitterBuffer(8000, max_packets=16)
    for i in range(100):
        jb.put(_pkt(i, 160 * i), now=0.0)  # a burst, nobody pulling
    assert len(jb) == 16 and jb.stats.overflow == 84
    item = jb.get(now=10.0)
    assert isinstance(item, RtpPacket)
    # a long gap whose following packet is already due is reported as one Loss
    jb2 = JitterBuffer(8000)
    jb2.put(_pkt(0, 0), 0.0)
    assert isinstance(jb2.get(0.03), RtpPacket)
    jb2.put(_pkt(6, 960), 0.12)
    loss = jb2.get(0.5)
    assert loss == Loss(sequence=1, ssrc=1, count=5)
    assert isinstance(jb2.get(0.52), RtpPacket)


def test_jitter_buffer_empty() -> None:
    jb = JitterBuffer()
    assert jb.get(0.0) is None
    with pytest.raises(LocalProtocolError):
        JitterBuffer(min_delay=0.3, max_delay=0.2)


# ------------------------------------------------------------------------------ fuzz


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_rtp(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RemoteProtocolError:
        return
    assert RtpPacket.parse(p.serialize()) == p
    if not p.padding:
        assert p.serialize() == data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_rtcp(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RemoteProtocolError:
        return
    assert parse_rtcp(serialize_rtcp(packets)) == packets if packets else True


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SR_SDES) - 1), st.integers(0, 255))
def test_fuzz_rtcp_mutated(pos: int, value: int) -> None:
    data = bytearray(SR_SDES)
    data[pos] = value
    try:
        parse_rtcp(bytes(data))
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1),
                          st.integers(1, 3), st.floats(0, 0.3)), max_size=40))
def test_fuzz_jitter_buffer_and_dtmf(items: list[tuple[int, int, int, float]]) -> None:
    jb = JitterBuffer(8000, max_packets=8)
    rx = DtmfReceiver(8000)
    stats = RtpStats(8000)
    now = 0.0
    for seq, ts, ssrc, dt in items:
        now += dt
        pkt = _pkt(seq, ts, ssrc=ssrc, payload=ts.to_bytes(4, "big"))
        jb.put(pkt, now)
        stats.update(pkt, now)
        rx.receive(pkt, now)
        item = jb.get(now)
        assert item is None or isinstance(item, (RtpPacket, Loss))
        assert len(jb) <= 8
    stats.report_block(now)
    rx.poll(now + 10)


# ---- parse_payload: the relay's lean parser agrees with RtpPacket.parse ------------------------


def _rtp_bytes(pt: int, payload: bytes, *, seq: int = 7, ts: int = 1000, marker: bool = False, csrcs: int = 0,
               ext_words: int | None = None, pad: int = 0) -> bytes:
    b0 = 0x80 | csrcs | (0x10 if ext_words is not None else 0) | (0x20 if pad else 0)
    out = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq, ts, 0x1234) + b"\x00\x00\x00\x01" * csrcs
    if ext_words is not None:
        out += struct.pack("!HH", 0xBEDE, ext_words) + b"\x11\x22\x33\x44" * ext_words
    out += payload
    if pad:
        out += b"\x00" * (pad - 1) + bytes([pad])
    return out


def test_parse_payload_header_forms() -> None:
    assert parse_payload(_rtp_bytes(0, b"abc")) == (0, 7, 1000, False, b"abc")
    assert parse_payload(_rtp_bytes(111, b"xyz", marker=True, seq=65535, ts=0xFFFFFFFF)) == (111, 65535, 0xFFFFFFFF, True, b"xyz")
    assert parse_payload(_rtp_bytes(8, b"pay", csrcs=2, ext_words=3, pad=4)) == (8, 7, 1000, False, b"pay")
    assert parse_payload(_rtp_bytes(0, b"")) == (0, 7, 1000, False, b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00",
        b"\x40" + b"\x00" * 20,  # RTP version 1
        _rtp_bytes(0, b"")[:11],  # short header
        bytes([0x90]) + _rtp_bytes(0, b"")[1:],  # X bit set, no room for the extension header
        _rtp_bytes(0, b"", ext_words=200)[:40],  # extension longer than the packet
        bytes([0xA0]) + _rtp_bytes(0, b"ab")[1:-1] + b"\xff",  # P bit: 255 octets of padding in 14
        bytes([0xA0]) + _rtp_bytes(0, b"ab")[1:-1] + b"\x00",  # P bit with a zero padding count
        bytes([0x8F]) + _rtp_bytes(0, b"")[1:],  # 15 CSRCs announced, none there
    ],
)
def test_parse_payload_rejects_garbage(data: bytes) -> None:
    assert parse_payload(data) is None
    with pytest.raises(RemoteProtocolError):
        RtpPacket.parse(data)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.builds(lambda b0, rest: bytes([0x80 | (b0 & 0x3F)]) + rest, st.integers(0, 255), st.binary(min_size=11, max_size=80)),
))
def test_parse_payload_agrees_with_rtp_packet_parse(data: bytes) -> None:
    fast = parse_payload(data)
    try:
        p = RtpPacket.parse(data)
    except RemoteProtocolError:
        assert fast is None
        return
    assert fast == (p.payload_type, p.sequence, p.timestamp, p.marker, p.payload)


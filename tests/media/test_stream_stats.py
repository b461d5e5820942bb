"""Receiver statistics and sender numbering of the RTP stream toward SIP (webgate/media/stream.py),
sans-IO: RFC 4733 events and comfort noise count as received (RFC 3550 statistics are per source,
whatever the payload type) without entering the jitter; with the native relay (webgate/native/relay.c,
the real core) carrying the audio and Python the events, nothing is lost or counted twice; on hold
the sender's timestamp goes on and its sequence number does not skip."""

from __future__ import annotations

import dataclasses
import itertools
import struct
from typing import Any

from tests.native.relay_helpers import SRC, Core
from webgate.media.stream import RtpAudioStream
from webgate.proto import rtp
from webgate.proto.sdp import Codec, NegotiatedMedia

SSRC = 0x5EED0001
TE = 101


def media(on_hold: bool = False) -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address=SRC[0], remote_port=SRC[1], remote_rtcp_address=SRC[0], remote_rtcp_port=SRC[1] + 1,
        codec=Codec("PCMU", 8000, payload_type=0), telephone_event=TE, ptime=20, direction="sendrecv",
        on_hold=on_hold,
    )


def audio(seq: int, ts: int | None = None) -> bytes:
    ts = seq * 160 if ts is None else ts
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, SSRC) + b"\xd5" * 160


def event(seq: int, start_ts: int, duration: int, end: bool = False) -> bytes:
    ev = rtp.TelephoneEvent(event=5, end=end, volume=10, duration=duration).serialize()
    return struct.pack("!BBHII", 0x80, TE, seq & 0xFFFF, start_ts & 0xFFFFFFFF, SSRC) + ev


def cn(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 13, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, SSRC) + b"\x40"


def digit_packets(seq0: int, ts: int, n: int = 6) -> list[bytes]:
    """One digit: ``n`` packets 20 ms apart, all stamped at the event's start (RFC 4733)."""
    return [event(seq0 + k, ts, 160 * (k + 1), end=k == n - 1) for k in range(n)]


class Harness:
    def __init__(self, *, packet_path: bool = True) -> None:
        self.sent: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.stream = RtpAudioStream(lambda d, a: self.sent.append(d), lambda d, a: self.rtcp.append(d), label="t")
        self.digits: list[str] = []
        self.stream.on_dtmf = lambda d, ms: self.digits.append(d)
        if packet_path:
            self.stream.on_payload = lambda payload, samples, pkt: None
        self.stream.configure(media())

    def feed(self, data: bytes, now: float) -> None:
        self.stream.datagram_received(data, SRC, now)

    def report(self, now: float) -> rtp.ReportBlock:
        """The report block of the RTCP the stream sends (its next tick is an RTCP one)."""
        self.stream._next_rtcp = 0.0
        self.stream.tick(now)
        (report, _sdes) = rtp.parse_rtcp(self.rtcp[-1])
        assert isinstance(report, (rtp.SenderReport, rtp.ReceiverReport))
        (block,) = report.reports
        return block


def _feed_call(h: Harness) -> float:
    """30 audio packets, a digit (6 event packets), comfort noise, 20 audio packets, paced in time:
    57 packets, one sequence (1..57)."""
    now, seq = 100.0, 1
    for _ in range(30):
        h.feed(audio(seq), now)
        seq, now = seq + 1, now + 0.02
    for data in digit_packets(seq, seq * 160):
        h.feed(data, now)
        seq, now = seq + 1, now + 0.02
    h.feed(cn(seq), now)
    seq, now = seq + 1, now + 0.02
    for _ in range(20):
        h.feed(audio(seq), now)
        seq, now = seq + 1, now + 0.02
    return now


def test_events_and_comfort_noise_count_as_received() -> None:
    for packet_path in (True, False):
        h = Harness(packet_path=packet_path)
        now = _feed_call(h)
        s = h.stream
        assert h.digits == ["5"] and s.stats.packets_received == 57
        assert s.rx_stats is not None and s.rx_stats.received == s.rx_stats.expected == 57
        assert s.packets_lost == 0
        block = h.report(now)
        assert block.ssrc == SSRC and block.cumulative_lost == 0 and block.fraction_lost == 0
        assert block.highest_sequence == 57
        # the events' timestamps (the event's start) stay out of the jitter: the audio was on time
        assert s.jitter_ms == 0.0 and block.jitter == 0


class _Link:
    """webgate.media.stream.NativeLink that does nothing (the test syncs by hand)."""

    def yield_out(self) -> None:
        pass

    def sync(self) -> None:
        pass

    def changed(self) -> None:
        pass


class _NativeDown:
    """The SIP -> web direction as webgate/adapters/native_relay.py runs it: the real C core takes
    the audio's payload type, hands everything else back (-1) to the stream, and its counters
    reach the stream by ``native_received`` (as ``_sync_down`` does)."""

    def __init__(self, stream: RtpAudioStream) -> None:
        self.stream = stream
        self.core = Core(in_pt=0, out_pt=0)
        self.base = stream.rx_snapshot()
        self.seen = (0, 0)

    def feed(self, data: bytes, now: float) -> None:
        res, _ = self.core.relay(data, now=now)
        if res == -1:
            self.stream.datagram_received(data, SRC, now)
        else:
            assert res > 0

    def sync(self) -> None:
        st: dict[str, Any] = self.core.stats()
        dp, do = st["packets"] - self.seen[0], st["octets"] - self.seen[1]
        self.seen = (st["packets"], st["octets"])
        self.stream.native_received(dp, do, st["first_rx"], st["last_rx"], st["last_in_seq"], st["last_in_ts"],
                                    st["last_step"], st, self.base)


def _relayed_call(before: int, lead_digit: bool, seq0: int) -> tuple[Harness, _NativeDown, int, float]:
    """``before`` audio packets through Python, then the native relay: (a digit to Python first),
    three rounds of audio to C, a digit and comfort noise to Python; the next sequence number."""
    h = Harness()
    s = h.stream
    now, seq = 100.0, seq0
    for _ in range(before):  # Python relays (and counts) these, then the native relay starts
        h.feed(audio(seq), now)
        seq, now = seq + 1, now + 0.02
    s.native = _Link()
    down = _NativeDown(s)
    if lead_digit:  # the first packets after the snapshot are Python's
        for data in digit_packets(seq, seq * 160):
            down.feed(data, now)
            seq, now = seq + 1, now + 0.02
    for _round in range(3):
        for _ in range(20):
            down.feed(audio(seq), now)
            seq, now = seq + 1, now + 0.02
        for data in digit_packets(seq, seq * 160):  # to Python: counted there
            down.feed(data, now)
            seq, now = seq + 1, now + 0.02
        down.sync()  # C's highest sequence number is behind Python's: the events came after its audio
        assert s.rx_stats is not None and s.rx_stats.received == s.rx_stats.expected, vars(s.rx_stats)
        down.feed(cn(seq), now)
        seq, now = seq + 1, now + 0.02
        for _ in range(5):
            down.feed(audio(seq), now)
            seq, now = seq + 1, now + 0.02
        down.sync()
    return h, down, seq, now


def test_native_relay_audio_and_python_events_count_once() -> None:
    # the snapshot with Python's counts or with nothing counted yet; a digit before C's first
    # packet; sequence numbers that wrap
    for before, lead_digit, seq0 in ((10, False, 1), (0, False, 1), (0, True, 65530), (10, True, 65500)):
        h, down, seq, now = _relayed_call(before, lead_digit, seq0)
        n = seq - seq0
        digits = 3 + lead_digit
        s = h.stream
        rx = s.rx_stats
        assert rx is not None and h.digits == ["5"] * digits
        assert rx.received == rx.expected == n and s.packets_lost == 0, (before, lead_digit, vars(rx))
        assert rx.base_seq == seq0 and rx.extended_max_seq == seq0 + n - 1
        assert rx.octets == (n - digits * 6 - 3) * 160 + digits * 6 * 4 + 3
        assert s.stats.packets_received == n
        assert rx.jitter == 0  # C's, from the audio alone
        # a digit after C's last packet, then a sync with new audio from C: nothing lost or doubled
        for data in digit_packets(seq, seq * 160):
            down.feed(data, now)
            now += 0.02
        down.sync()  # no new packets from C: the stream keeps Python's counts
        assert rx.received == rx.expected == n + 6 and s.packets_lost == 0
        for k in range(seq + 6, seq + 16):
            down.feed(audio(k), now)
            now += 0.02
        down.sync()
        assert rx.received == rx.expected == n + 16 and s.packets_lost == 0
        block = h.report(now)
        assert block.cumulative_lost == 0 and block.highest_sequence == seq0 + n + 15


def _sent(h: Harness) -> list[rtp.RtpPacket]:
    return [rtp.RtpPacket.parse(d) for d in h.sent]


def test_hold_keeps_the_sequence_and_advances_the_timestamp() -> None:
    h = Harness()
    s = h.stream
    for _ in range(5):
        s.send_payload(b"\xff" * 160)
    s.configure(dataclasses.replace(media(), on_hold=True))
    for _ in range(50):  # one second on hold: nothing sent
        s.send_payload(b"\xff" * 160)
    assert len(h.sent) == 5
    s.configure(media())
    for _ in range(5):
        s.send_payload(b"\xff" * 160)
    pkts = _sent(h)
    seqs = [p.sequence for p in pkts]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(10)]  # no gap for the far end to count
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(pkts)]
    assert steps == [160] * 4 + [160 * 51] + [160] * 4  # the media clock went on
    assert s.sender is not None and s.sender.packet_count == 10 and s.stats.packets_sent == 10


def test_hold_during_or_before_a_digit_takes_no_sequence_numbers() -> None:
    h = Harness()
    s = h.stream
    now = 10.0
    s.send_payload(b"\xff" * 160)
    assert s.send_dtmf("1", 200)
    for _ in range(3):  # the digit's first packets
        s.tick(now)
        now += 0.02
    s.configure(dataclasses.replace(media(), on_hold=True))  # hold in the middle of the digit
    assert s.send_dtmf("2", 200)  # and a digit while on hold
    for _ in range(30):
        s.tick(now)
        s.send_payload(b"\xff" * 160)
        now += 0.02
    s.configure(media())
    for _ in range(3):
        s.tick(now)
        s.send_payload(b"\xff" * 160)
        now += 0.02
    pkts = _sent(h)
    assert [p.payload_type for p in pkts] == [0, TE, TE, TE, 0, 0, 0]
    seqs = [p.sequence for p in pkts]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(pkts))]
    assert s.sender is not None and s.sender.packet_count == len(pkts)
    assert s.sender.octet_count == 4 * 160 + 3 * 4

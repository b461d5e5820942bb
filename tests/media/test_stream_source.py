"""Strict RTP source ("RTP bleed") in the RTP stream toward SIP (webgate/media/stream.py):
packets from chosen addresses, what reaches the call, where the stream sends, what is counted.

No import of webgate/proto/rtp_source.py here, so these tests also run against the code before
strict source (where the injector's packets reached the call: they fail there)."""

from __future__ import annotations

import struct

import pytest

from webgate.media.stream import RtpAudioStream
from webgate.proto import rtp
from webgate.proto.sdp import Codec, NegotiatedMedia

SDP = ("192.0.2.10", 4000)  # what the far end's SDP says
SDP_RTCP = ("192.0.2.10", 4001)
NAT = ("198.51.100.7", 61000)  # where a NATed far end's packets really come from
EVIL = ("203.0.113.66", 5004)  # an injector / "RTP bleed" scanner
PROBATION = 4  # webgate.proto.rtp_source.PROBATION (checked in test_probation_is_the_guards)


def test_probation_is_the_guards() -> None:
    from webgate.proto.rtp_source import PROBATION as guard_probation

    assert guard_probation == PROBATION


def media(addr: tuple[str, int] = SDP, direction: str = "sendrecv") -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address=addr[0], remote_port=addr[1], remote_rtcp_address=addr[0], remote_rtcp_port=addr[1] + 1,
        codec=Codec("PCMU", 8000, payload_type=0), telephone_event=101, ptime=20, direction=direction, on_hold=False,
    )


def packet(seq: int, ssrc: int, fill: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + bytes([fill]) * 160


class Harness:
    def __init__(self, **kw: object) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.sent_rtcp: list[tuple[bytes, tuple[str, int]]] = []
        self.stream = RtpAudioStream(lambda d, a: self.sent.append((d, a)), lambda d, a: self.sent_rtcp.append((d, a)),
                                     label="test", **kw)  # type: ignore[arg-type]
        self.payloads: list[bytes] = []
        self.stream.on_payload = lambda payload, samples, pkt: self.payloads.append(payload)

    def feed(self, source: tuple[str, int], n: int, t0: float, ssrc: int, fill: int, seq0: int = 1) -> None:
        for i in range(n):
            self.stream.datagram_received(packet(seq0 + i, ssrc, fill), source, t0 + i * 0.02)

    def send_one(self) -> tuple[str, int]:
        self.stream.send_payload(b"\xff" * 160)
        return self.sent[-1][1]


def test_stream_drops_injected_packets_and_counts_them() -> None:
    h = Harness()
    h.stream.configure(media())
    h.feed(SDP, 10, 0.0, 0x1111, 0x11)
    h.feed(EVIL, 30, 0.001, 0x2222, 0x66)  # interleaved in time, in sequence, same payload type
    h.feed(SDP, 10, 0.2, 0x1111, 0x11, seq0=11)
    assert h.payloads == [b"\x11" * 160] * 20  # nothing of the injector's reached the call
    g = h.stream.source_guard
    assert g.dropped_foreign == 30 and h.stream.stats.packets_received == 20
    assert h.send_one() == SDP


def test_stream_learns_a_nated_far_end_and_sends_there() -> None:
    h = Harness()
    h.stream.configure(media())
    assert h.send_one() == SDP  # before its first packet: where the SDP says
    h.feed(NAT, PROBATION + 6, 0.0, 0x1111, 0x11)
    assert len(h.payloads) == 7  # the first PROBATION-1 were held back while learning
    assert h.send_one() == NAT  # symmetric RTP
    h.feed(EVIL, 20, 0.5, 0x2222, 0x66)
    assert all(p == b"\x11" * 160 for p in h.payloads) and h.send_one() == NAT
    # a re-INVITE for hold/unhold keeps the same SDP address: keep sending to the NATed source
    h.stream.configure(media(direction="sendrecv"))
    assert h.send_one() == NAT and h.stream.source_guard.relearns == 0
    h.stream.tick(100.0)  # an RTCP report: to the NATed host, port + 1
    assert h.sent_rtcp[-1][1] == ("198.51.100.7", 61001)


def test_stream_relearns_when_a_reinvite_moves_the_far_end() -> None:
    h = Harness()
    h.stream.configure(media())
    h.feed(SDP, 5, 0.0, 0x1111, 0x11)
    new = ("192.0.2.10", 4002)
    h.stream.configure(media(new))
    assert h.send_one() == new
    before = len(h.payloads)
    h.feed(SDP, PROBATION - 1, 0.2, 0x1111, 0x11, seq0=6)  # the old address: learning again, held back
    assert len(h.payloads) == before
    h.feed(new, 5, 0.4, 0x3333, 0x22)
    assert h.payloads[before:] == [b"\x22" * 160] * 5
    h.feed(SDP, 10, 0.5, 0x1111, 0x11, seq0=6 + PROBATION)  # the old address, now locked out
    h.feed(EVIL, 5, 0.5, 0x2222, 0x66)
    assert h.payloads[before:] == [b"\x22" * 160] * 5
    assert h.stream.source_guard.dropped_foreign == 15 and h.stream.source_guard.relearns == 1


def test_stream_relearns_after_idle_when_configured() -> None:
    h = Harness(relearn_after_s=3.0)
    h.stream.configure(media())
    h.feed(SDP, 5, 0.0, 0x1111, 0x11)
    h.feed(NAT, 5, 1.0, 0x1111, 0x11, seq0=6)  # the far end alive: NAT is foreign
    assert h.stream.source_guard.dropped_foreign == 5
    h.feed(NAT, PROBATION, 10.0, 0x1111, 0x11, seq0=11)  # SDP silent 10 s: NAT learnt with probation
    assert h.send_one() == NAT and h.stream.source_guard.relearns == 1


def test_stream_rtcp_from_an_injector_is_ignored() -> None:
    h = Harness()
    h.stream.configure(media())
    h.feed(SDP, 3, 0.0, 0x1111, 0x11)
    h.send_one()
    sender = h.stream.sender
    assert sender is not None

    def report(lost: int) -> bytes:
        block = rtp.ReportBlock(ssrc=sender.ssrc, fraction_lost=0, cumulative_lost=lost, highest_sequence=1, jitter=0, lsr=0, dlsr=0)
        return rtp.serialize_rtcp([rtp.ReceiverReport(ssrc=0x1111, reports=(block,))])

    h.stream.rtcp_received(report(999), ("203.0.113.66", 5005), 1.0)
    h.stream.datagram_received(report(998), EVIL, 1.0)  # RTCP multiplexed on the RTP port
    assert h.stream.remote_report is None and h.stream.source_guard.rtcp_dropped == 2
    h.stream.rtcp_received(report(7), SDP_RTCP, 1.1)
    assert h.stream.remote_report is not None and h.stream.remote_report.cumulative_lost == 7


def test_stream_packets_before_negotiation_are_not_accepted() -> None:
    h = Harness()
    h.feed(EVIL, 5, 0.0, 0x2222, 0x66)
    assert h.stream.source_guard.dropped_learning == 5 and not h.payloads


def test_stream_permissive_mode_accepts_the_injector() -> None:
    """strict_source = false is the old behaviour: this is what the default now stops."""
    h = Harness(strict_source=False)
    h.stream.configure(media())
    h.feed(SDP, 5, 0.0, 0x1111, 0x11)
    h.feed(EVIL, 5, 0.001, 0x2222, 0x66)
    assert b"\x66" * 160 in h.payloads and h.send_one() == SDP


@pytest.mark.parametrize("junk", [b"", b"\x80\x00", b"\x40" + bytes(20)])
def test_stream_short_or_non_rtp_from_elsewhere_is_a_bad_packet(junk: bytes) -> None:
    h = Harness()
    h.stream.configure(media())
    h.stream.datagram_received(junk, EVIL, 0.0)
    assert h.stream.stats.bad_packets == 1 and not h.payloads

"""The native relay's sans-IO core (webgate/native/relay.c ``wg_relay_packet``) with bytes: the header
rewrite, what is handed back to Python (-1), SRTP with aiortc's pylibsrtp sessions, the receiver
statistics (the same as webgate.proto.rtp.RtpStats) and random input."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.native.relay_helpers import CAP, IN_FD, SRC, Core, rtp, srtp_session
from webgate.adapters.native_reader import available
from webgate.proto.rtp import RtpPacket, RtpStats


def _hdr(out: bytes) -> tuple[int, int, int, int, int]:
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", out)
    return b0, b1, seq, ts, ssrc


def test_the_module_is_built() -> None:
    assert available()


def test_a_packet_is_rewritten_pt_ssrc_seq_ts_marker() -> None:
    c = Core(in_pt=0, out_pt=8, out_ssrc=0xCAFEBABE, next_seq=0xFFFF, next_ts=0xFFFFFFA0)
    res, out = c.relay(rtp(1000, 5000, marker=True, payload=b"abc"))
    assert res == 15 and out[12:15] == b"abc"
    assert _hdr(out) == (0x80, 0x80 | 8, 0xFFFF, 0xFFFFFFA0, 0xCAFEBABE)
    res, out = c.relay(rtp(1001, 5160, payload=b"defg"), now=0.02)
    assert res == 16 and out[12:16] == b"defg"
    assert _hdr(out) == (0x80, 8, 0, 0x40, 0xCAFEBABE)  # seq and ts wrap
    s = c.stats()
    assert (s["packets"], s["octets"], s["last_out_seq"], s["last_out_ts"], s["last_step"]) == (2, 7, 0, 0x40, 160)
    assert s["marker_seen"] and s["last_in_seq"] == 1001 and s["last_in_ts"] == 5160


def test_extension_csrcs_and_padding_are_stripped() -> None:
    c = Core()
    data = rtp(7, 70, csrcs=(1, 2), ext=b"\x10\xff\x00\x00", payload=b"PAYLOAD!", padding=3)
    res, out = c.relay(data)
    assert res == 20 and out[0] == 0x80 and out[12:20] == b"PAYLOAD!"
    assert c.stats()["octets"] == 8 and c.stats()["received_octets"] == 8


def test_a_new_input_ssrc_continues_the_output() -> None:
    c = Core(clock_rate=48000, in_pt=111, out_pt=111, next_seq=10, next_ts=1000)
    for i in range(3):
        _, out = c.relay(rtp(500 + i, 9000 + 960 * i, ssrc=1, pt=111), now=i * 0.02)
    assert _hdr(out)[2:4] == (12, 1000 + 2 * 960)
    _, out = c.relay(rtp(40000, 123456, ssrc=2, pt=111), now=0.06)
    assert _hdr(out)[1] & 0x80 and _hdr(out)[2:4] == (13, 1000 + 3 * 960)  # marked, continuous
    _, out = c.relay(rtp(40001, 123456 + 960, ssrc=2, pt=111), now=0.08)
    assert _hdr(out)[2:4] == (14, 1000 + 4 * 960)
    assert c.stats()["switches"] == 1
    # a gap (DTX: 400 ms between consecutive numbers) is not a packet's duration: the step stays
    c.relay(rtp(40002, 123456 + 960 + 19200, ssrc=2, pt=111), now=0.5)
    assert c.stats()["last_step"] == 960
    # the step unknown (one packet of the first source): 160
    c = Core(next_seq=10, next_ts=1000)
    c.relay(rtp(1, 1, ssrc=1))
    _, out = c.relay(rtp(9, 9, ssrc=2))
    assert _hdr(out)[2:4] == (11, 1160)


def test_what_the_fast_path_does_not_take_is_handed_back_untouched() -> None:
    c = Core(in_pt=0)
    good = rtp(1, 1)
    cases = {
        "short": good[:11],
        "version 1": bytes([0x40]) + good[1:],
        "STUN": b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),
        "DTLS": b"\x16\xfe\xfd" + bytes(20),
        "pt": rtp(1, 1, pt=8),
        "csrcs do not fit": bytes([0x8F]) + good[1:20],
        "extension header does not fit": bytes([0x90]) + good[1:14],
        "extension does not fit": rtp(1, 1, ext=b"\x00" * 8, payload=b"")[:-4],
        "bad padding": rtp(1, 1, payload=b"ab", padding=1)[:-1] + b"\x00",
        "padding beyond": rtp(1, 1, payload=b"ab", padding=1)[:-1] + b"\x40",
    }
    for name, data in cases.items():
        res, out = c.relay(data)
        assert res == -1 and out == data, name
    res, out = c.relay(good, src=("127.0.0.1", 40001))
    assert res == -1 and out == good
    assert c.relay(good, src=("127.0.0.2", 40000))[0] == -1
    assert c.relay(good, src=("::1", 40000))[0] == -1
    assert c.relay(good, fd=IN_FD + 1)[0] == -1  # no rule there
    assert c.relay(good, cap=11)[0] == -1
    # RTCP (RFC 5761) even when its "payload type" is the relayed one: SR = 200 = 0x80 | 72
    c72 = Core(in_pt=72)
    sr = b"\x80\xc8\x00\x06" + bytes(24)
    assert c72.relay(sr) == (-1, sr)
    assert c.stats()["packets"] == 0 and c72.stats()["packets"] == 0
    assert c.relay(good)[0] == 172


def test_an_ipv6_source_matches_ignoring_flowinfo_and_scope() -> None:
    c = Core(src=("::1", 5004))
    assert c.relay(rtp(1, 1), src=("::1", 5004, 7, 0))[0] == 172
    assert c.relay(rtp(2, 161), src=("::2", 5004))[0] == -1
    assert c.relay(rtp(2, 161), src=("127.0.0.1", 5004))[0] == -1


def test_stats_equal_rtpstats_on_wraps_jumps_duplicates_and_jitter() -> None:
    seqs = [65530, 65531, 65533, 65532, 65535, 0, 0, 1, 2, 20000, 20001, 3, 4, 4, 60000, 100, 101]
    _compare(Core(), [(s, (s * 160 + (s % 7) * 13) & 0xFFFFFFFF, 0xAB, i * 0.0201) for i, s in enumerate(seqs)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.sampled_from([1, 2]),
                          st.floats(0, 1e6, allow_nan=False)), min_size=1, max_size=40))
def test_stats_equal_rtpstats_on_random_sequences(packets: list[tuple[int, int, int, float]]) -> None:
    _compare(Core(), packets)


def _compare(c: Core, packets: list[tuple[int, int, int, float]]) -> None:
    ref = RtpStats(8000)
    for seq, ts, ssrc, now in packets:
        data = rtp(seq, ts, ssrc=ssrc, payload=b"x" * (seq % 5))
        assert c.relay(data, now=now)[0] > 0
        ref.update(RtpPacket.parse(data), now)
        s = c.stats()
        assert (s["base_seq"], s["max_seq"], s["cycles"], s["received"], s["bad_seq"]) == (
            ref.base_seq, ref.max_seq, ref.cycles, ref.received, ref.bad_seq)
        assert s["received_octets"] == ref.octets and s["last_in_ssrc"] == ref.ssrc
        assert s["jitter"] == ref._jitter and s["duplicates_or_late"] == ref.duplicates_or_late
        assert s["last_rx"] == now


def test_srtp_in_with_aiortc_s_sessions_and_tampering() -> None:
    tx = srtp_session(outbound=True)
    c = Core(rx=srtp_session(outbound=False))
    plain = rtp(1, 1, payload=b"hello", ext=b"\x10\x01\x00\x00")
    res, out = c.relay(tx.protect(plain))
    assert res == 17 and out[12:17] == b"hello" and _hdr(out)[2:4] == (100, 5000)
    bad = bytearray(tx.protect(rtp(2, 161, payload=b"world")))
    bad[14] ^= 1
    assert c.relay(bytes(bad))[0] == -2
    assert c.relay(tx.protect(plain))[0] == -2  # a replay
    s = c.stats()
    assert s["srtp_errors"] == 2 and s["packets"] == 1
    # what the fast path hands back is left encrypted (Python's own path unprotects it)
    wrong_pt = tx.protect(rtp(3, 321, pt=8))
    assert c.relay(wrong_pt) == (-1, wrong_pt)


def test_srtp_out_is_unprotected_by_the_peer_s_session() -> None:
    rx = srtp_session(outbound=False)
    c = Core(tx=srtp_session(outbound=True), out_ssrc=0x5555)
    for i in range(3):
        res, out = c.relay(rtp(10 + i, 160 * i, payload=bytes([i]) * 160), now=i * 0.02)
        assert res == 12 + 160 + 10  # the 80-bit tag
        plain = RtpPacket.parse(rx.unprotect(out[:res]))
        assert (plain.sequence, plain.timestamp, plain.ssrc, plain.payload) == (100 + i, 5000 + 160 * i, 0x5555, bytes([i]) * 160)
    # both: SRTP in, SRTP out (another key)
    tx_in, rx_out = srtp_session(True), srtp_session(False, key=bytes(30))
    c = Core(rx=srtp_session(False), tx=srtp_session(True, key=bytes(30)))
    res, out = c.relay(tx_in.protect(rtp(5, 5, payload=b"both")))
    assert RtpPacket.parse(rx_out.unprotect(out[:res])).payload == b"both"
    # no room for the trailer: dropped, counted
    assert c.relay(tx_in.protect(rtp(6, 165, payload=b"x" * 100)), cap=200)[0] == -2
    assert c.stats()["send_errors"] == 1


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.sampled_from([0, 1, 2, 3]), st.integers(0, 127))
def test_random_bytes_never_crash_nor_overflow(data: bytes, srtp: int, pt: int) -> None:
    c = Core(in_pt=pt, rx=srtp_session(False) if srtp & 1 else None, tx=srtp_session(True) if srtp & 2 else None)
    for candidate in (data, bytes([0x80 | (data[0] & 0x3F) if data else 0x80, pt]) + data[2:]):
        res, out = c.relay(candidate, src=SRC)
        assert -2 <= res <= CAP
        if res == -1:
            assert out[: len(candidate)] == candidate[:CAP]

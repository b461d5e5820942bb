"""Strict RTP source ("RTP bleed"): the sans-IO guard (webgate/proto/rtp_source.py), driven
with packets from chosen addresses: probation, lock, drop + count, relearn after idle, relearn
when the SDP's address changes, RTCP."""

from __future__ import annotations

from webgate.proto.rtp_source import MAX_CANDIDATES, PROBATION, SourceGuard

SDP = ("192.0.2.10", 4000)  # what the far end's SDP says
SDP_RTCP = ("192.0.2.10", 4001)
NAT = ("198.51.100.7", 61000)  # where a NATed far end's packets really come from
EVIL = ("203.0.113.66", 5004)  # an injector / "RTP bleed" scanner


# --- the sans-IO guard -----------------------------------------------------------------------


def run(g: SourceGuard, source: tuple[str, int], n: int, t0: float, ssrc: int = 0x1111, seq0: int = 100, dt: float = 0.02) -> list[bool]:
    """``n`` packets in sequence from ``source``, as the stream would hand them in (the fast
    path first, like RtpAudioStream.datagram_received)."""
    out = []
    for i in range(n):
        now = t0 + i * dt
        if source == g.locked:
            g.last_rx = now
            out.append(True)
        else:
            out.append(g.admit(source, ssrc, (seq0 + i) & 0xFFFF, now))
    return out


def test_the_sdp_address_locks_at_once_and_others_are_dropped() -> None:
    g = SourceGuard()
    assert g.expect(SDP, SDP_RTCP) is True and g.state == "learning"
    assert run(g, SDP, 1, 0.0) == [True]
    assert g.locked == SDP and g.state == "locked" and not g.provisional
    # an injector: valid, in sequence, plausible, and never accepted
    assert run(g, EVIL, 50, 0.01, ssrc=0x2222) == [False] * 50
    assert g.dropped_foreign == 50 and g.dropped_learning == 0 and g.locked == SDP
    assert run(g, SDP, 5, 1.0, seq0=101) == [True] * 5


def test_nat_probation_locks_after_a_run_in_sequence() -> None:
    g = SourceGuard()
    g.expect(SDP, SDP_RTCP)
    got = run(g, NAT, PROBATION + 2, 0.0)
    assert got == [False] * (PROBATION - 1) + [True] * 3
    assert g.locked == NAT and g.provisional and g.dropped_learning == PROBATION - 1 and g.dropped_foreign == 0
    assert run(g, EVIL, 10, 1.0) == [False] * 10
    assert g.dropped_foreign == 10 and g.locked == NAT


def test_out_of_sequence_or_another_ssrc_restarts_the_run() -> None:
    g = SourceGuard()
    g.expect(SDP, None)
    assert not g.admit(NAT, 1, 10, 0.0)
    assert not g.admit(NAT, 1, 11, 0.02)
    assert not g.admit(NAT, 1, 13, 0.04)  # a gap: a new run starts at 13
    assert not g.admit(NAT, 2, 14, 0.06)  # another SSRC: a new run
    assert not g.admit(NAT, 2, 15, 0.08)
    assert not g.admit(NAT, 2, 16, 0.10)
    assert g.admit(NAT, 2, 17, 0.12)  # 14..17: four in sequence
    assert g.locked == NAT
    # sequence numbers wrap
    h = SourceGuard()
    h.expect(SDP, None)
    assert run(h, NAT, PROBATION, 0.0, seq0=0xFFFE)[-1] is True


def test_a_spray_from_other_addresses_does_not_reset_the_far_ends_run() -> None:
    g = SourceGuard()
    g.expect(SDP, None)
    results = []
    for i in range(PROBATION):
        # between two of the far end's packets, junk from many ports (as many as are tracked;
        # more than that within 20 ms is a flood, for a firewall)
        for k in range(MAX_CANDIDATES - 1):
            assert not g.admit(("203.0.113.66", 7000 + k), 0x9999 + k, (i * 7 + k) & 0xFFFF, i * 0.02)
        results.append(g.admit(NAT, 0x1111, 500 + i, i * 0.02 + 0.01))
    assert results == [False] * (PROBATION - 1) + [True]
    assert g.locked == NAT


def test_the_sdp_address_takes_a_probation_lock_back_but_not_the_reverse() -> None:
    g = SourceGuard()
    g.expect(SDP, None)
    # a scanner sprays the port before the far end's first packet: it passes probation
    assert run(g, EVIL, PROBATION, 0.0)[-1] is True
    assert g.locked == EVIL and g.provisional
    # one packet from the address the far end signalled takes it back, for good
    assert g.admit(SDP, 0x1111, 1, 0.1) and g.locked == SDP and not g.provisional
    assert run(g, EVIL, 20, 0.2, seq0=PROBATION) == [False] * 20
    assert g.locked == SDP


def test_no_relearning_after_silence_by_default() -> None:
    g = SourceGuard()
    g.expect(SDP, None)
    run(g, SDP, 3, 0.0)
    assert run(g, EVIL, 10, 3600.0) == [False] * 10  # an hour of silence: still locked
    assert g.locked == SDP and g.relearns == 0


def test_relearn_after_idle_with_probation_and_the_old_source_takes_it_back() -> None:
    g = SourceGuard(relearn_after_s=5)
    g.expect(SDP, None)
    run(g, NAT, PROBATION, 0.0)
    assert g.locked == NAT
    # while the far end speaks, nothing else gets in
    assert run(g, EVIL, 5, 1.0) == [False] * 5
    assert g.dropped_foreign == 5
    run(g, NAT, 1, 4.0, seq0=200)
    # silent for more than 5 s: the next foreign packet starts learning (not a lock)
    got = run(g, EVIL, PROBATION, 9.5)
    assert got == [False] * (PROBATION - 1) + [True]
    assert g.relearns == 1 and g.locked == EVIL and g.provisional
    # the source locked before the relearn comes back: one packet takes it back
    assert g.admit(NAT, 0x1111, 201, 12.0) and g.locked == NAT and not g.provisional
    assert run(g, EVIL, 3, 12.1, seq0=300) == [False] * 3


def test_relearn_after_idle_moves_to_a_new_nat_mapping() -> None:
    g = SourceGuard(relearn_after_s=2)
    g.expect(SDP, None)
    run(g, NAT, PROBATION, 0.0)
    moved = ("198.51.100.7", 61002)  # the far end's NAT gave it a new port, no re-INVITE
    assert run(g, moved, PROBATION, 10.0, ssrc=0x1111, seq0=900)[-1] is True
    assert g.locked == moved


def test_a_changed_sdp_address_starts_learning_and_the_same_one_does_not() -> None:
    g = SourceGuard()
    assert g.expect(SDP, SDP_RTCP)
    run(g, NAT, PROBATION, 0.0)
    assert g.locked == NAT
    assert g.expect(SDP, SDP_RTCP) is False  # hold / unhold / codec change: same address
    assert g.locked == NAT and g.relearns == 0
    new = ("192.0.2.10", 4002)
    assert g.expect(new, None) is True
    assert g.locked is None and g.state == "learning" and g.relearns == 1
    assert run(g, NAT, 3, 1.0, seq0=300) == [False] * 3  # the old source: learning again
    assert g.admit(new, 0x1111, 1, 1.1) and g.locked == new
    assert run(g, NAT, 5, 1.2, seq0=303) == [False] * 5
    # IPv6 in SDP is compared in the socket layer's form
    h = SourceGuard()
    h.expect(("2001:db8:0:0::1", 4000), None)
    assert h.admit(("2001:db8::1", 4000), 1, 1, 0.0) and h.locked == ("2001:db8::1", 4000)


def test_hold_address_and_no_address_learn_nothing() -> None:
    for addr in (("0.0.0.0", 4000), None):
        g = SourceGuard()
        g.expect(addr, None)
        assert g.state == "closed"
        assert run(g, EVIL, 10, 0.0) == [False] * 10 and g.locked is None
        assert g.dropped_foreign == 10
        assert not g.admit_rtcp(("203.0.113.66", 5005)) and g.rtcp_dropped == 1


def test_permissive_mode_accepts_everyone_and_latches_like_before() -> None:
    g = SourceGuard(strict=False)
    g.expect(SDP, None)
    assert g.state == "permissive"
    assert run(g, NAT, 1, 0.0) == [True] and g.locked == NAT
    assert run(g, EVIL, 3, 0.5) == [True] * 3 and g.locked == NAT  # accepted, not followed
    assert run(g, EVIL, 1, 3.0) == [True] and g.locked == EVIL  # NAT silent > 2 s: followed
    assert g.dropped_foreign == g.dropped_learning == g.rtcp_dropped == 0
    assert g.admit_rtcp(("192.0.2.99", 1)) and g.admit_rtcp_mux(("192.0.2.99", 1))


def test_rtcp_from_the_far_end_only() -> None:
    g = SourceGuard()
    g.expect(SDP, SDP_RTCP)
    assert not g.admit_rtcp(("198.51.100.7", 61001))  # RTP not locked yet, not the SDP's RTCP address
    assert g.admit_rtcp(SDP_RTCP)
    assert not g.admit_rtcp(("203.0.113.66", 5005))
    assert g.rtcp_dropped == 2
    # a NATed far end: once its RTP is locked, its host's first RTCP locks the RTCP source
    h = SourceGuard()
    h.expect(SDP, SDP_RTCP)
    run(h, NAT, PROBATION, 0.0)
    assert h.admit_rtcp(("198.51.100.7", 61001)) and h.rtcp_locked == ("198.51.100.7", 61001)
    assert not h.admit_rtcp(("198.51.100.7", 61009))  # same host, another port: not once locked
    assert not h.admit_rtcp(("203.0.113.66", 61001))
    assert h.rtcp_dropped == 2
    # RTCP multiplexed on the RTP port: only from the locked RTP source
    assert h.admit_rtcp_mux(NAT) and not h.admit_rtcp_mux(EVIL) and h.rtcp_dropped == 3

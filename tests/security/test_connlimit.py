"""The sans-IO connection limiter and stream deadlines (webgate/security/connlimit.py), and the
timer that follows them (webgate/adapters/guard.py) on a task.Clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from webgate.adapters.guard import DeadlineTimer
from webgate.security.connlimit import (
    IDLE,
    PARTIAL,
    PER_IP,
    PROBE,
    TOTAL,
    ConnectionLimiter,
    StreamDeadlines,
    peer_key,
)


def test_peer_key_groups_ipv6_by_64_and_unmaps_ipv4() -> None:
    assert peer_key("192.0.2.7") == "192.0.2.7"
    assert peer_key("2001:db8:1:2:aaaa::1") == peer_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert peer_key("2001:db8:1:3::1") != peer_key("2001:db8:1:2::1")
    assert peer_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert peer_key("fe80::1%eth0") == "fe80::/64"
    assert peer_key("?") == "?"


def test_per_ip_then_total_caps_and_release() -> None:
    lim = ConnectionLimiter("sip_tcp", max_total=3, max_per_ip=2)
    assert lim.admit("10.0.0.1") is None
    assert lim.admit("10.0.0.1") is None
    assert lim.admit("10.0.0.1") == PER_IP
    assert lim.admit("10.0.0.2") is None
    assert lim.admit("10.0.0.3") == TOTAL  # the total is checked first once reached
    assert lim.admit("10.0.0.1") == TOTAL
    assert (lim.open, lim.count("10.0.0.1"), lim.count("10.0.0.2")) == (3, 2, 1)
    assert lim.refused == {PER_IP: 1, TOTAL: 2}
    lim.release("10.0.0.1")
    assert lim.admit("10.0.0.3") is None  # a free slot is usable at once
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        lim.release(ip)
    assert (lim.open, lim.by_key) == (0, {})
    lim.release("10.0.0.9")  # never admitted: nothing to give back, nothing goes negative
    lim.release("10.0.0.1")
    assert (lim.open, lim.by_key) == (0, {})


def test_ipv6_per_ip_cap_counts_the_64() -> None:
    lim = ConnectionLimiter("ws", max_total=0, max_per_ip=2)
    assert lim.admit("2001:db8::1") is None
    assert lim.admit("2001:db8::2") is None
    assert lim.admit("2001:db8::ffff:3") == PER_IP  # same /64, another address
    assert lim.admit("2001:db8:0:1::1") is None  # another /64


def test_zero_means_no_cap_and_closes_are_counted() -> None:
    lim = ConnectionLimiter("rtmp", max_total=0, max_per_ip=0)
    for _ in range(1000):
        assert lim.admit("10.0.0.1") is None
    assert lim.open == 1000
    lim.note_closed(IDLE)
    lim.note_closed(IDLE)
    lim.note_closed(PARTIAL)
    assert lim.closed == {IDLE: 2, PARTIAL: 1}


def test_idle_deadline_moves_with_every_read() -> None:
    d = StreamDeadlines(0.0, idle_s=10, partial_s=3)
    assert d.deadline() == 10
    assert d.due(9.9) is None
    d.received(5.0, progress=True, pending=False)
    assert d.deadline() == 15 and d.due(14.9) is None
    assert d.due(15.0) == IDLE


def test_partial_deadline_needs_a_completed_message_not_just_bytes() -> None:
    d = StreamDeadlines(0.0, idle_s=10, partial_s=3)
    d.received(1.0, progress=False, pending=True)  # a message starts
    assert d.deadline() == 4.0
    d.received(2.0, progress=False, pending=True)  # more bytes of it (a drip): no extension
    d.received(3.5, progress=False, pending=True)
    assert d.due(3.9) is None
    assert d.due(4.0) == PARTIAL
    # a message completed with the next one begun: the clock restarts
    d.received(3.9, progress=True, pending=True)
    assert d.deadline() == 3.9 + 3 and d.due(6.8) is None
    d.received(5.0, progress=True, pending=False)  # nothing pending: no partial deadline
    assert d.partial_since is None and d.deadline() == 15.0


def test_probe_is_reported_once_per_silence() -> None:
    d = StreamDeadlines(0.0, idle_s=10, partial_s=3, probe_s=5)
    assert d.deadline() == 5
    assert d.due(5.0) == PROBE
    assert d.due(6.0) is None and d.deadline() == 10  # not again in the same silence
    assert d.due(10.0) == IDLE
    d.received(7.0, progress=True, pending=False)  # the peer answered: a new silence
    assert d.deadline() == 12 and d.due(12.0) == PROBE


def test_zero_idle_disables_idle_and_probe() -> None:
    d = StreamDeadlines(0.0, idle_s=0, partial_s=3, probe_s=0)
    assert d.deadline() is None and d.due(1e9) is None
    d.received(1.0, progress=False, pending=True)
    assert d.due(4.0) == PARTIAL


def test_deadline_timer_on_a_clock() -> None:
    clock = Clock()
    seen: list[tuple[float, str]] = []
    timer: DeadlineTimer

    def on_due(reason: str) -> None:
        seen.append((clock.seconds(), reason))
        if reason != PROBE:
            timer.cancel()

    timer = DeadlineTimer(clock, StreamDeadlines(0.0, idle_s=10, partial_s=2, probe_s=5), on_due)
    clock.advance(4)
    timer.received(progress=True, pending=False)  # reads only move numbers; the timer re-arms lazily
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(5)  # t=9: probe (4 + 5)
    assert seen == [(9, PROBE)]
    timer.received(progress=False, pending=True)  # a partial message: the timer moves earlier
    clock.advance(1.9)
    assert seen == [(9, PROBE)]
    clock.advance(0.1)  # t=11: partial (9 + 2)
    assert seen == [(9, PROBE), (11, PARTIAL)]
    assert clock.getDelayedCalls() == []  # cancelled: nothing left armed

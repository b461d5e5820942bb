"""Call limits, sans-IO: per-IP and per-identity concurrent calls, attempts per minute."""

from __future__ import annotations

import pytest

from webgate.calls.errors import CallRefused
from webgate.calls.policy import CallPolicy, client_ip


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def refused(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CallRefused) as ei:
        fn(*args)
    assert ei.value.sip_status == 429
    return ei.value.code


def test_per_ip_counting_and_release() -> None:
    p = CallPolicy(max_calls_per_ip=2)
    a, b, c = object(), object(), object()
    p.check("1.1.1.1", None)
    p.acquire(a, "1.1.1.1", None)
    p.check("1.1.1.1", None)
    p.acquire(b, "1.1.1.1", None)
    assert refused(p.check, "1.1.1.1", None) == "too_many_calls_from_ip"
    p.check("2.2.2.2", None)  # another address is not affected
    p.acquire(a, "1.1.1.1", None)  # acquiring twice counts once
    assert p.by_ip == {"1.1.1.1": 2}
    p.release(a)
    p.release(a)  # releasing twice is harmless
    p.check("1.1.1.1", None)
    p.acquire(c, "1.1.1.1", None)
    p.call_ended(b)
    p.call_ended(c)
    assert p.by_ip == {} and p.live == 0  # no entries left behind


def test_per_identity() -> None:
    p = CallPolicy(max_calls_per_identity=1, max_calls_per_ip=0)
    a = object()
    p.acquire(a, "1.1.1.1", "alice")
    assert refused(p.check, "9.9.9.9", "alice") == "too_many_calls_for_identity"
    p.check("9.9.9.9", "bob")
    p.check("9.9.9.9", None)  # calls without a token identity are not counted per identity
    p.release(a)
    p.check("9.9.9.9", "alice")
    assert p.by_identity == {}


def test_zero_means_no_limit() -> None:
    p = CallPolicy()
    calls = [object() for _ in range(1000)]
    for i, call in enumerate(calls):
        p.attempt("1.1.1.1", float(i) / 1000)
        p.check("1.1.1.1", "a")
        p.acquire(call, "1.1.1.1", "a")
    assert p.by_ip == {"1.1.1.1": 1000} and p.tracked_ips == 0


def test_attempts_sliding_window() -> None:
    clock = Clock()
    p = CallPolicy(max_attempts_per_ip_per_minute=3, clock=clock)
    for _ in range(3):
        p.attempt("1.1.1.1")
        clock.t += 10
    # t = 1030: three attempts at 1000, 1010, 1020
    assert refused(p.attempt, "1.1.1.1") == "rate_limited"
    p.attempt("2.2.2.2")  # per address
    clock.t = 1059.9
    assert refused(p.attempt, "1.1.1.1") == "rate_limited"
    clock.t = 1060.0  # the attempt at 1000 ages out: one more is allowed
    p.attempt("1.1.1.1")
    assert refused(p.attempt, "1.1.1.1") == "rate_limited"
    clock.t = 1070.0  # 1010 ages out
    p.attempt("1.1.1.1")
    clock.t = 2000.0
    for _ in range(3):
        p.attempt("1.1.1.1")


def test_check_attempts_refuses_at_the_limit_without_counting() -> None:
    clock = Clock()
    p = CallPolicy(max_attempts_per_ip_per_minute=2, clock=clock)
    for _ in range(5):
        p.check_attempts("1.1.1.1")  # counts nothing
    assert p.tracked_ips == 0
    p.attempt("1.1.1.1")
    p.check_attempts("1.1.1.1")
    p.attempt("1.1.1.1")
    assert refused(p.check_attempts, "1.1.1.1") == "rate_limited"
    p.check_attempts("2.2.2.2")
    clock.t += 60  # both attempts age out
    p.check_attempts("1.1.1.1")
    assert CallPolicy(max_attempts_per_ip_per_minute=0).check_attempts("1.1.1.1") is None  # no limit


def test_refusal_message_says_when_to_retry() -> None:
    clock = Clock()
    p = CallPolicy(max_attempts_per_ip_per_minute=1, clock=clock)
    p.attempt("1.1.1.1")
    clock.t += 15
    with pytest.raises(CallRefused) as ei:
        p.attempt("1.1.1.1")
    assert "retry in 45 s" in ei.value.message


def test_attempt_memory_is_bounded() -> None:
    clock = Clock()
    p = CallPolicy(max_attempts_per_ip_per_minute=5, clock=clock, max_tracked_ips=100)
    for i in range(1000):
        p.attempt(f"10.0.{i // 256}.{i % 256}")
    assert p.tracked_ips <= 101
    clock.t += 61
    p.attempt("1.1.1.1")
    assert p.tracked_ips == 1  # everything older than the window is gone


@pytest.mark.parametrize(
    "client, ip",
    [
        ("1.2.3.4:5678", "1.2.3.4"),
        ("[::1]:5678", "::1"),
        ("::1", "::1"),
        ("1.2.3.4", "1.2.3.4"),
        ("[::ffff:1.2.3.4]:99", "1.2.3.4"),
        ("local", "local"),
        (None, "?"),
    ],
)
def test_client_ip(client: object, ip: str) -> None:
    assert client_ip(client) == ip

"""The registry of web users (webgate/calls/users.py) ends a registration when its token expires
(issue 12), on a fake clock: the endpoint is told ``token_expired``; registering again first moves
the end; replaced and dropped registrations leave no timer. Real clients:
tests/security/test_registration_expiry.py."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from webgate.calls.users import WebUsers, registration_expires
from webgate.security.tokens import Grant


class Endpoint:
    kind = "webrtc"
    client = "test"
    grant = None

    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []

    def busy(self) -> bool:
        return False

    def invited(self, call: Any, caller: str, caller_display: str | None) -> Any:
        raise NotImplementedError

    def unregistered(self, user: str, reason: str) -> None:
        self.told.append((user, reason))


def _users() -> tuple[WebUsers, Clock]:
    clock = Clock()
    return WebUsers(clock, wall_clock=lambda: 1_000_000.0 + clock.seconds()), clock


def test_a_registration_ends_at_its_expiry_and_the_client_is_told() -> None:
    users, clock = _users()
    ep = Endpoint()
    users.register("alice", ep, expires=1_000_010.0)
    assert users.expires("alice") == 1_000_010.0
    clock.advance(9.9)
    assert users.lookup("alice") is ep and ep.told == []
    clock.advance(0.2)
    assert users.lookup("alice") is None
    assert ep.told == [("alice", "token_expired")] and users.expired == 1
    assert clock.getDelayedCalls() == []


def test_registering_again_before_the_expiry_moves_it() -> None:
    users, clock = _users()
    ep = Endpoint()
    users.register("alice", ep, expires=1_000_010.0)
    clock.advance(8)
    users.register("alice", ep, expires=1_000_100.0)  # a fresh token
    clock.advance(50)
    assert users.lookup("alice") is ep and ep.told == []
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(43)
    assert users.lookup("alice") is None and ep.told == [("alice", "token_expired")]


def test_replaced_and_unregistered_registrations_leave_no_timer_behind() -> None:
    users, clock = _users()
    first, second = Endpoint(), Endpoint()
    users.register("alice", first, expires=1_000_010.0)
    users.register("alice", second)  # the newest wins; this one has no expiry
    assert first.told == [("alice", "replaced")] and clock.getDelayedCalls() == []
    clock.advance(3600)
    assert users.lookup("alice") is second and second.told == []
    users.register("bob", first, expires=1_000_000.0 + 3600 + 5)
    assert users.unregister("bob", first)
    assert clock.getDelayedCalls() == []


def test_far_deadlines_and_wall_clock_steps() -> None:
    clock = Clock()
    wall = [2_000_000.0]
    users = WebUsers(clock, wall_clock=lambda: wall[0] + clock.seconds())
    ep = Endpoint()
    users.register("alice", ep, expires=2_000_000.0 + 86400 * 3)  # three days: re-armed on the way
    for _ in range(71):
        clock.advance(3600)
    assert users.lookup("alice") is ep
    clock.advance(3600)
    assert users.lookup("alice") is None and ep.told == [("alice", "token_expired")]
    # the wall clock steps back while a timer runs: the expiry still follows the wall clock
    users.register("bob", ep, expires=wall[0] + clock.seconds() + 10)
    wall[0] -= 5
    clock.advance(10)
    assert users.lookup("bob") is ep
    clock.advance(5)
    assert users.lookup("bob") is None


def test_registration_expires_is_exp_plus_the_leeway() -> None:
    class Tokens:
        leeway_s = 30

    assert registration_expires(Grant(expires=1000.0), Tokens()) == 1030.0
    assert registration_expires(Grant(expires=0.0), Tokens()) is None

"""Who is calling over SIP (issue 12, items 1 and 2), in-process on loopback with real sockets.

- ``[sip] inbound_from`` judges the packet's source: a top Via with a forged ``received=`` in an
  allowed network does not ring a registered web user, and the 403 comes back to the real source.
- SIP callers of the built-in ``echo``/``tone`` pass an admission: ``[builtin] sip_from``, the
  per-source attempt rate, per-IP concurrent calls, ``limits.max_calls``; a refused INVITE
  allocates nothing. Their calls end at ``max_call_duration_s``. The gateway's own calls to the
  built-ins (a web client's echo) are not SIP callers and keep working with ``sip_from = []``.

The same from a real outside address (a network namespace) is tests/interop/test_netns_edge.py.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.calls.gw import assert_tone, make_config, start_telephony, wait_for
from tests.security.sip_peer import SipPeer
from webgate.calls.call import CallState
from webgate.calls.errors import CallRefused
from webgate.legs.local import LocalLeg


class FakeWebUser:
    """A registered web client that records the calls it is offered."""

    kind = "webrtc"
    client = "127.0.0.1:9"
    grant = None

    def __init__(self) -> None:
        self.invites: list[Any] = []

    def busy(self) -> bool:
        return False

    def invited(self, call: Any, caller: str, caller_display: str | None) -> Any:
        self.invites.append(call)
        return LocalLeg(tone_hz=None)

    def unregistered(self, user: str, reason: str) -> None:
        pass


def _gw(extra: dict[str, Any]) -> Any:
    return start_telephony(make_config(extra))


async def _stop(svc: Any, *peers: SipPeer) -> None:
    for p in peers:
        p.close()
    await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_forged_received_does_not_pass_inbound_from() -> None:
    svc = _gw({"sip": {"inbound_from": ["192.0.2.0/24"]}})
    peer = SipPeer.loopback()
    try:
        user = FakeWebUser()
        svc.manager.web_users.register("alice", user)
        gw = svc.bound["udp"]
        # its own Via says received=192.0.2.7 (allowed) with a sent-by that is the packet's real
        # source (127.0.0.1): the case where the old stamping kept the sender's value
        cid = peer.invite(gw, "alice", via=f"SIP/2.0/UDP 127.0.0.1:{peer.port};received=192.0.2.7;branch={{branch}}")
        final = await peer.wait_final(cid)
        assert final.status == 403
        assert user.invites == []
        assert len(svc.registry) == 0 and not svc.rtp_pool.in_use
        assert svc.manager.counters["inbound_refused"] == 1
        # the 403 came to the real source, from the gateway, and says where we really are
        assert {a for _m, a in peer.responses(cid)} == {gw}
        assert final.top_via.params["received"] == "127.0.0.1"
    finally:
        await _stop(svc, peer)


@pytest_twisted.ensureDeferred
async def test_builtin_from_outside_sip_from_is_403_and_allocates_nothing() -> None:
    svc = _gw({"builtin": {"sip_from": ["192.0.2.0/24"]}})
    peer = SipPeer.loopback()
    try:
        gw = svc.bound["udp"]
        pool = svc.rtp_pool
        cursor = pool._cursor  # noqa: SLF001 - moves on every allocation, even a released one
        for user in ("echo", "tone"):
            cid = peer.invite(gw, user, via=f"SIP/2.0/UDP 192.0.2.7:{peer.port};received=192.0.2.7;rport;branch={{branch}}")
            assert (await peer.wait_final(cid)).status == 403
        assert pool._cursor == cursor and not pool.in_use  # noqa: SLF001
        assert not svc.manager.builtin_calls and len(svc.registry) == 0
        assert svc.manager.counters["builtin_refused"] == 2
    finally:
        await _stop(svc, peer)


@pytest_twisted.ensureDeferred
async def test_the_gateways_own_echo_call_is_not_a_sip_caller() -> None:
    """``sip_from = []`` (nobody may call the built-ins over SIP) leaves a client's echo working."""
    svc = _gw({"builtin": {"sip_from": []}})
    peer = SipPeer.loopback()
    try:
        cid = peer.invite(svc.bound["udp"], "echo")
        assert (await peer.wait_final(cid)).status == 403
        leg = LocalLeg(tone_hz=1000.0)
        call = svc.manager.place_call(leg, "echo")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        assert await wait_for(lambda: len(leg.recording()) >= 9600, 6)  # 1.2 s at 8 kHz, however loaded
        assert_tone(leg.recording(), leg.received_rate or 8000, 1000.0, "own echo call", seconds=0.8)
        assert svc.manager.counters["builtin_refused"] == 1
        call.hangup()
        assert await wait_for(lambda: not svc.manager.builtin_calls and not svc.rtp_pool.in_use, 3)
    finally:
        await _stop(svc, peer)


@pytest_twisted.ensureDeferred
async def test_sip_callers_of_builtins_pass_the_attempt_rate() -> None:
    svc = _gw({"limits": {"max_attempts_per_ip_per_minute": 2}})
    peer = SipPeer.loopback()
    try:
        gw = svc.bound["udp"]
        statuses = []
        for _ in range(3):
            cid = peer.invite(gw, "echo")
            statuses.append((await peer.wait_final(cid)).status)
        assert statuses == [200, 200, 403]
        assert len(svc.rtp_pool.in_use) == 2 and len(svc.manager.builtin_calls) == 2
    finally:
        await _stop(svc, peer)


@pytest_twisted.ensureDeferred
async def test_sip_callers_of_builtins_count_toward_max_calls() -> None:
    svc = _gw({"limits": {"max_calls": 2, "max_calls_per_ip": 0}})
    peer = SipPeer.loopback()
    try:
        gw = svc.bound["udp"]
        first = peer.invite(gw, "echo")
        assert (await peer.wait_final(first)).status == 200
        assert len(svc.manager.builtin_calls) == 1
        web = svc.manager.place_call(LocalLeg(client="10.0.0.1:1"), "echo")  # the second call of max_calls 2
        assert await wait_for(lambda: web.state is CallState.ANSWERED, 5)
        try:
            svc.manager.place_call(LocalLeg(client="10.0.0.2:1"), "echo")
        except CallRefused as e:
            assert e.code == "too_many_calls"
        else:
            raise AssertionError("a third call was placed past max_calls = 2")
        assert svc.manager.live_calls() == 2  # the web echo's own SIP leg is not counted twice
        third = peer.invite(gw, "tone")
        assert (await peer.wait_final(third)).status == 503
        assert len(svc.rtp_pool.in_use) == 3  # the SIP echo + both ends of the web echo
    finally:
        await _stop(svc, peer)


@pytest_twisted.ensureDeferred
async def test_sip_callers_of_builtins_pass_the_per_ip_call_limit() -> None:
    svc = _gw({"limits": {"max_calls_per_ip": 1}})
    peer = SipPeer.loopback()
    try:
        gw = svc.bound["udp"]
        first = peer.invite(gw, "echo")
        assert (await peer.wait_final(first)).status == 200
        cursor = svc.rtp_pool._cursor  # noqa: SLF001
        second = peer.invite(gw, "tone")
        assert (await peer.wait_final(second)).status == 403
        assert svc.rtp_pool._cursor == cursor and len(svc.rtp_pool.in_use) == 1  # noqa: SLF001
        assert svc.manager.policy.by_ip == {"127.0.0.1": 1}
    finally:
        await _stop(svc, peer)


@pytest_twisted.ensureDeferred
async def test_sip_callers_of_builtins_are_hung_up_at_max_call_duration() -> None:
    svc = _gw({"limits": {"max_call_duration_s": 1}})
    peer = SipPeer.loopback()
    try:
        gw = svc.bound["udp"]
        cid = peer.invite(gw, "echo")
        ok = await peer.wait_final(cid)
        assert ok.status == 200
        peer.ack(ok, gw)
        assert await wait_for(lambda: len(peer.requests("BYE")) > 0, 4), peer.messages
        peer.answer_requests()
        assert peer.requests("BYE")[0].call_id == cid
        assert await wait_for(lambda: not svc.manager.builtin_calls and not svc.rtp_pool.in_use, 3)
        assert svc.manager.policy.live == 0
    finally:
        await _stop(svc, peer)

"""Limits on real calls: concurrent calls per IP (Flash RPC over a real socket), per token
identity, globally, attempts per IP per minute (WebSocket + RTMP share the count), and the token's
maximum call duration. Each refusal has its documented code, and the limits recover."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.adapters.webrtc_client import connect
from tests.calls.gw import reactor, sleep, wait_for
from tests.security.secure_gw import DUMMY_SDP, ROUTED, SecureGateway, token
from tests.security.test_rtmp_auth import _flash, _invite
from webgate.calls.call import CallState
from webgate.calls.errors import CallRefused
from webgate.legs.local import LocalLeg


def _refused(gw: SecureGateway, leg: Any, dest: str, **kw: Any) -> CallRefused:
    try:
        gw.manager.place_call(leg, dest, **kw)
    except CallRefused as e:
        return e
    raise AssertionError(f"call to {dest} was not refused")


@pytest_twisted.ensureDeferred
async def test_per_ip_limit_over_rtmp_and_recovery() -> None:
    gw = SecureGateway(limits={"max_calls_per_ip": 1})
    try:
        c1 = await _flash(gw, "pw")
        c2 = await _flash(gw, "pw")
        assert (await _invite(c1, "echo")).name == "_result"
        res = await _invite(c2, "echo")
        assert res.name == "_error" and res.args[0]["reason"] == "too_many_calls_from_ip", res
        assert gw.refusals.codes == ["too_many_calls_from_ip"]
        # another address is not affected
        other = gw.manager.place_call(LocalLeg(client="10.1.1.1:5000"), "echo")
        other.hangup()
        await c1.reply(c1.command("bye"))
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        res = await _invite(c2, "echo")
        assert res.name == "_result", res  # recovered when the first call ended
        await c2.callback("accepted")
        assert gw.manager.policy.by_ip == {"127.0.0.1": 1}
        c1.transport.loseConnection()
        c2.transport.loseConnection()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert gw.manager.policy.by_ip == {} and gw.manager.policy.live == 0
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_per_identity_and_global_limits() -> None:
    gw = SecureGateway(limits={"max_calls_per_identity": 1, "max_calls": 3})
    try:
        a1 = gw.manager.place_call(LocalLeg(client="10.0.0.1:1"), ROUTED, token=token(sub="alice"))
        e = _refused(gw, LocalLeg(client="10.0.0.2:1"), ROUTED, token=token(sub="alice"))
        assert (e.code, e.sip_status) == ("too_many_calls_for_identity", 429)
        # the identity limit counts token identities only, not client-chosen names
        b = gw.manager.place_call(LocalLeg(client="10.0.0.3:1"), ROUTED, token=token(sub="bob"))
        p = gw.manager.place_call(LocalLeg(client="10.0.0.4:1"), "echo", identity="alice")
        e = _refused(gw, LocalLeg(client="10.0.0.5:1"), "echo")
        assert (e.code, e.sip_status) == ("too_many_calls", 503)
        for c in (a1, b, p):
            assert await wait_for(lambda c=c: c.state is CallState.ANSWERED, 5)
        a1.hangup()
        a2 = gw.manager.place_call(LocalLeg(client="10.0.0.2:1"), ROUTED, token=token(sub="alice"))
        assert await wait_for(lambda: a2.state is CallState.ANSWERED, 5)
        for c in (a2, b, p):
            c.hangup()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert gw.manager.policy.by_identity == {} and gw.manager.policy.by_ip == {}
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_attempts_per_minute_across_ingresses() -> None:
    gw = SecureGateway(limits={"max_attempts_per_ip_per_minute": 3})
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        ws.send({"type": "call", "destination": ROUTED, "sdp": DUMMY_SDP})  # refused: counts
        ws.send({"type": "call", "destination": "echo", "sdp": DUMMY_SDP})  # placeholder SDP: counts
        assert await wait_for(lambda: len(ws.of_type("error")) == 2, 5)
        c = await _flash(gw, "pw")
        assert (await _invite(c, "nope!")).args[0]["reason"] == "invalid_destination"  # counts too
        res = await _invite(c, "echo")
        assert res.name == "_error" and res.args[0]["reason"] == "rate_limited", res
        assert "per minute" in res.args[0]["description"]
        ws.send({"type": "call", "destination": "echo", "sdp": DUMMY_SDP})
        assert await wait_for(lambda: len(ws.of_type("error")) == 3, 5)
        assert ws.of_type("error")[-1]["code"] == "rate_limited"
        # other addresses are not affected
        call = gw.manager.place_call(LocalLeg(client="10.9.9.9:1"), "echo")
        call.hangup()
        # a minute later the address may try again
        gw.manager.policy.clock = lambda: reactor.seconds() + 61
        res = await _invite(c, "echo")
        assert res.name == "_result", res
        c.transport.loseConnection()
        ws.close()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_token_max_duration_is_the_smallest_limit() -> None:
    gw = SecureGateway(limits={"max_call_duration_s": 3600})
    try:
        leg = LocalLeg(client="10.0.0.1:1")
        call = gw.manager.place_call(leg, ROUTED, token=token(max_duration=1))
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        await sleep(0.5)
        assert not call.ended
        assert await wait_for(lambda: call.ended, 3)
        assert call.end_cause == "max_duration" and leg.ended is not None and leg.ended[0] == "max_duration"
    finally:
        await gw.stop()

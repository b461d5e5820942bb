"""Calls toward a registered Flash RPC client (webgate as SIP UAS for the web user), in-process.

The caller is the gateway itself: a LocalLeg dials ``alice`` through a route whose trunk is the
gateway's own SIP address, so the INVITE crosses real SIP on loopback and arrives at the UAS like
one from a PBX. The web side is the scripted Flash-style client over a real RTMP socket.
Real peers (baresip calling, librtmp/aiortc answering) are in tests/interop/test_inbound_*.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest_twisted

from tests.adapters.rtmp_helpers import (
    Gateway,
    RtmpClient,
    flash_client,
    play_status,
    send_nellymoser,
)
from tests.calls.gw import assert_tone, sleep, wait_for
from tests.interop.peers import free_port
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.media.analysis import dominant_frequency
from webgate.media.codecs import ulaw_decode
from webgate.proto import flv
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"
CLIENT_HZ = 800.0
CALLER_HZ = 1000.0


def _gateway(inbound_from: list[str] | None = None) -> Gateway:
    port = free_port("udp")
    sip: dict[str, Any] = {"udp": f"127.0.0.1:{port}"}
    if inbound_from is not None:
        sip["inbound_from"] = inbound_from
    return Gateway({
        "sip": sip,
        "tokens": {"key": KEY},
        "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{port}", "codecs": ["PCMU"]}],
        "route": [{"pattern": "(alice|bob|nobody)", "trunk": "self", "public": True}],
    })


def _token(sub: str, key: str = KEY) -> str:
    return mint_token(key, sub=sub)


async def _nth(c: RtmpClient, name: str, n: int, timeout: float = 8.0) -> Any:
    """The n-th (1-based) server->client invoke ``name``."""
    def got() -> bool:
        return sum(1 for x in c.commands if x.name == name) >= n

    assert await wait_for(got, timeout), f"no {name} #{n}: {[x.name for x in c.commands]}"
    return [x for x in c.commands if x.name == name][n - 1]


async def _flash(gw: Gateway, user: str, token: str | None) -> RtmpClient:
    return await flash_client(gw.rtmp_port, user, user, token or "a-password", user.title())


def _dial(gw: Gateway, user: str = "alice") -> tuple[LocalLeg, Any]:
    leg = LocalLeg(CALLER_HZ)
    call = gw.manager.place_call(leg, user)
    leg.start_source(call)
    return leg, call


@pytest_twisted.ensureDeferred
async def test_registered_flash_client_is_invited_accepts_audio_both_ways_and_bye() -> None:
    gw = _gateway()
    try:
        c = await _flash(gw, "alice", _token("alice"))
        reg = await c.callback("registered")
        assert reg.args == ["alice"]
        assert gw.manager.web_users.lookup("alice") is not None
        mic = await c.create_stream()
        spk = await c.create_stream()
        c.command("publish", "local", "live", stream_id=mic)
        await c.status(mic, "NetStream.Publish.Start")
        c.command("play", "remote", stream_id=spk)
        await c.status(spk, "NetStream.Play.Start")

        caller, out_call = _dial(gw)
        sid = await c.callback("sessionId")
        inv = await c.callback("invited")
        frm, to = inv.args
        assert "webgate" in frm and frm.startswith("<sip:") and to.startswith("<sip:alice@"), inv.args
        inbound = gw.manager.registry.by_session_id(sid.args[0])
        assert inbound is not None and inbound.direction == "inbound" and inbound is not out_call
        assert inbound.state is CallState.RINGING and inbound.identity == "alice"
        assert await wait_for(lambda: out_call.state is CallState.RINGING, 5)  # 180 Ringing at the caller
        assert "ringing" not in [x.name for x in c.commands]  # no ringing callback toward the callee

        res = await c.reply(c.command("accept"))
        assert res.name == "_result" and res.args == [inbound.session_id]
        await c.callback("accepted")
        assert await wait_for(lambda: out_call.state is CallState.ANSWERED, 5)
        assert inbound.state is CallState.ANSWERED and inbound.codec == "PCMU"
        assert inbound.media_path == "packet"
        assert inbound.info()["direction"] == "inbound" and out_call.info()["direction"] == "outbound"
        # nobody else may listen to alice's call by its session ID (no token, or another user's)
        assert await play_status(gw.rtmp_port, "session", inbound.session_id) == "NetStream.Play.StreamNotFound"
        assert await play_status(gw.rtmp_port, "session", f"{inbound.session_id}?token={_token('bob')}") == "NetStream.Play.StreamNotFound"
        assert await play_status(gw.rtmp_port, "session", f"{inbound.session_id}?token={_token('alice')}") == "NetStream.Play.Start"

        await send_nellymoser(c, mic, 2.5, CLIENT_HZ)
        tags = c.audio.get(spk, [])
        pcm = np.concatenate([ulaw_decode(t[1][1:]) for t in tags if t[1][0] >> 4 == flv.SOUND_G711_MULAW])
        heard_by_client = dominant_frequency(pcm[-8000:], 8000)
        assert_tone(caller.recording(), caller.received_rate or 8000, CLIENT_HZ, "caller heard the Flash client")
        print(f"\ninbound RTMP: Flash client heard {heard_by_client:.1f} Hz, caller heard the client's tone")
        assert abs(heard_by_client - CALLER_HZ) < 20, heard_by_client

        # DTMF both ways
        res = await c.reply(c.command("sendDTMF", "12"))
        assert res.name == "_result"
        assert await wait_for(lambda: [d for d, _m in caller.dtmf] == ["1", "2"], 5), caller.dtmf
        out_call.send_dtmf("9")
        d = await c.callback("dtmf")
        assert d.args == ["9"]

        # the caller hangs up: byed
        out_call.hangup()
        await c.callback("byed")
        assert await wait_for(lambda: inbound.ended, 5)
        assert inbound.end_cause == "remote_hangup"
        assert await wait_for(lambda: len(gw.manager.registry) == 0, 5)
        assert gw.manager.web_users.lookup("alice") is not None  # still registered for the next call

        # a second call, ended by the client (bye)
        caller2, out2 = _dial(gw)
        await _nth(c, "invited", 2)
        res = await c.reply(c.command("accept"))
        assert res.name == "_result"
        await _nth(c, "accepted", 2)
        assert await wait_for(lambda: out2.state is CallState.ANSWERED, 5)
        res = await c.reply(c.command("bye"))
        assert res.name == "_result"
        assert await wait_for(lambda: out2.ended, 5)
        assert out2.end_cause == "remote_hangup"
        caller2.stop_source()

        # the connection goes: the registration goes with it
        c.transport.loseConnection()
        assert await wait_for(lambda: gw.manager.web_users.lookup("alice") is None, 5)
        _leg3, out3 = _dial(gw)
        assert await wait_for(lambda: out3.ended, 5)
        assert out3.end_status == 404
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_reject_cancel_busy_and_unknown_user() -> None:
    gw = _gateway()
    try:
        c = await _flash(gw, "alice", _token("alice"))
        await c.callback("registered")

        # reject() -> 486 Busy Here
        _l1, out1 = _dial(gw)
        await c.callback("invited")
        res = await c.reply(c.command("reject", "busy"))
        assert res.name == "_result"
        assert await wait_for(lambda: out1.ended, 5)
        assert out1.end_status == 486 and out1.end_cause == "rejected"

        # reject("decline") -> 603
        _l2, out2 = _dial(gw)
        await _nth(c, "invited", 2)
        await c.reply(c.command("reject", "decline"))
        assert await wait_for(lambda: out2.ended, 5)
        assert out2.end_status == 603

        # the caller gives up before the answer (CANCEL) -> cancelled
        _l3, out3 = _dial(gw)
        await _nth(c, "invited", 3)
        inbound = next(x for x in gw.manager.registry if x.direction == "inbound")
        out3.hangup()
        await c.callback("cancelled")
        assert await wait_for(lambda: inbound.ended, 5)
        assert inbound.end_cause == "cancelled"
        res = await c.reply(c.command("accept"))  # too late
        assert res.name == "_error" and res.args[0]["reason"] == "no_call"

        # busy: the client is in a call -> 486 for the next caller
        _l4, out4 = _dial(gw)
        await _nth(c, "invited", 4)
        await c.reply(c.command("accept"))
        assert await wait_for(lambda: out4.state is CallState.ANSWERED, 5)
        _l5, out5 = _dial(gw)
        assert await wait_for(lambda: out5.ended, 5)
        assert out5.end_status == 486
        out4.hangup()
        assert await wait_for(lambda: len(gw.manager.registry) == 0, 5)

        # nobody registered as "nobody" -> 404
        _l6, out6 = _dial(gw, "nobody")
        assert await wait_for(lambda: out6.ended, 5)
        assert out6.end_status == 404
        assert gw.manager.counters["inbound_refused"] == 2
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_registration_needs_the_users_token_and_the_newest_wins() -> None:
    gw = _gateway()
    try:
        # no token (a siprtmp password): connected for outgoing calls, not registered, no callback
        nt = await _flash(gw, "alice", None)
        # bob's token cannot register alice; a token signed with another key is invalid
        other = await _flash(gw, "alice", _token("bob"))
        bad = await _flash(gw, "alice", _token("alice", key="not-the-gateway-key-0123456789abcdefgh"))
        r1 = await other.callback("unregistered")
        r2 = await bad.callback("unregistered")
        assert r1.args == ["user_not_allowed"] and r2.args == ["invalid_token"]
        await sleep(0.2)
        assert "registered" not in [x.name for x in nt.commands + other.commands + bad.commands]
        assert gw.manager.web_users.lookup("alice") is None
        _l0, out0 = _dial(gw)
        assert await wait_for(lambda: out0.ended, 5)
        assert out0.end_status == 404
        assert not any(x.name == "invited" for x in nt.commands + other.commands + bad.commands)

        # two clients register alice: the newer wins, the older is told
        first = await _flash(gw, "alice", _token("alice"))
        await first.callback("registered")
        second = await _flash(gw, "alice", _token("alice"))
        await second.callback("registered")
        rep = await first.callback("unregistered")
        assert rep.args == ["replaced"]
        _l1, out1 = _dial(gw)
        await second.callback("invited")
        await sleep(0.3)
        assert first.find("invited") is None
        out1.hangup()
        await second.callback("cancelled")
        # the replaced connection closing does not drop the newer registration
        first.transport.loseConnection()
        await sleep(0.3)
        assert gw.manager.web_users.lookup("alice") is not None
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_invite_from_a_source_outside_inbound_from_gets_403() -> None:
    gw = _gateway(inbound_from=["192.0.2.0/24"])
    try:
        c = await _flash(gw, "alice", _token("alice"))
        await c.callback("registered")
        _l, out = _dial(gw)
        assert await wait_for(lambda: out.ended, 5)
        assert out.end_status == 403
        assert c.find("invited") is None
        # the built-ins are not affected by the allow-list
        leg = LocalLeg(CALLER_HZ)
        echo = gw.manager.place_call(leg, "echo")
        assert await wait_for(lambda: echo.state is CallState.ANSWERED, 5)
        echo.hangup()
    finally:
        await gw.stop()

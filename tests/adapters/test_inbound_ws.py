"""Calls toward a browser registered over /ws (aiortc as the browser), in-process.

The caller is the gateway itself (a LocalLeg dialling ``alice`` through a trunk that points at the
gateway's own SIP address), so the INVITE crosses real SIP on loopback. Real peers calling (baresip)
are in tests/interop/test_inbound_baresip.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.adapters.webrtc_client import (
    Browser,
    Gateway,
    close_all,
    complete_call,
    connect,
)
from tests.calls.gw import assert_tone, sleep, wait_for
from tests.interop.peers import free_port
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"
BROWSER_HZ = 700.0
CALLER_HZ = 1000.0


def _gateway(codecs: tuple[str, ...] = ("PCMU",)) -> Gateway:
    port = free_port("udp")
    return Gateway({
        "sip": {"udp": f"127.0.0.1:{port}"},
        "tokens": {"key": KEY},
        "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{port}", "codecs": list(codecs)}],
        "route": [{"pattern": "(alice|bob)", "trunk": "self", "public": True}],
    })


def _dial(gw: Gateway, user: str = "alice") -> tuple[LocalLeg, Any]:
    leg = LocalLeg(CALLER_HZ)
    call = gw.manager.place_call(leg, user)
    leg.start_source(call)
    return leg, call


@pytest_twisted.ensureDeferred
async def test_ws_register_invited_accept_audio_both_ways_then_far_hangup() -> None:
    gw = _gateway()
    browser = Browser(tone_hz=BROWSER_HZ)
    ws = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice")})
        assert (await ws.next("registered"))["user"] == "alice"

        caller, out_call = _dial(gw)
        inv = await ws.next("invited")
        assert inv["to"] == "alice" and inv["from"] == "webgate" and inv["call"] == inv["session_id"]
        inbound = gw.manager.registry.by_session_id(inv["session_id"])
        assert inbound is not None and inbound.direction == "inbound" and inbound.ingress_kind == "webrtc"
        assert await wait_for(lambda: out_call.state is CallState.RINGING, 5)

        acc = await complete_call(ws, browser, {"type": "accept", "call": inv["call"]})
        assert acc["session_id"] == inv["session_id"] and acc["codec"] == "PCMU"
        assert await wait_for(lambda: out_call.state is CallState.ANSWERED, 5)
        assert inbound.codec == "PCMU" and inbound.media_path == "packet"

        heard, level = await browser.heard(seconds=3, timeout=9)
        print(f"\ninbound WS: browser heard {heard:.1f} Hz at {level:.1f} dBFS")
        assert abs(heard - CALLER_HZ) < 20, heard
        assert level > -30
        assert_tone(caller.recording(), caller.received_rate or 8000, BROWSER_HZ, "caller heard the browser")

        n = len(ws.messages)
        out_call.send_dtmf("5")
        assert (await ws.next("dtmf", after=n))["digit"] == "5"
        ws.send({"type": "dtmf", "digits": "7"})
        assert await wait_for(lambda: [d for d, _m in caller.dtmf] == ["7"], 5), caller.dtmf

        out_call.hangup()
        await ws.next("ended", cause="remote_hangup")
        assert await wait_for(lambda: len(gw.manager.registry) == 0, 5)

        # the registration outlives the call: a second call rings the same connection; reject it
        _c2, out2 = _dial(gw)
        n = len(ws.messages)
        inv2 = await ws.next("invited", after=n)
        ws.send({"type": "reject", "reason": "decline"})
        ended = await ws.next("ended", after=n)
        assert ended["cause"] == "rejected" and ended["status"] == 603 and ended["session_id"] == inv2["session_id"]
        assert await wait_for(lambda: out2.ended, 5)
        assert out2.end_status == 603

        # the caller cancels before the browser answers
        _c3, out3 = _dial(gw)
        n = len(ws.messages)
        await ws.next("invited", after=n)
        out3.hangup()
        await ws.next("ended", after=n, cause="cancelled")

        # closing the WebSocket drops the registration
        ws.close()
        assert await wait_for(lambda: gw.manager.web_users.lookup("alice") is None, 5)
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_ws_register_refusals_and_replacement() -> None:
    gw = _gateway()
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        ws.send({"type": "register", "user": "alice"})
        assert (await ws.next("error"))["code"] == "token_required"
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="bob")})
        assert (await ws.next("error", code="user_not_allowed"))["ref"] == "register"
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice", ttl_s=60, now=0)})
        await ws.next("error", code="token_expired")
        ws.send({"type": "register", "user": "al@ice", "token": mint_token(KEY, sub="alice")})
        await ws.next("error", code="invalid_user")
        ws.send({"type": "accept", "sdp": "v=0"})
        await ws.next("error", code="no_call")
        assert gw.manager.web_users.lookup("alice") is None
        _l, out = _dial(gw)
        assert await wait_for(lambda: out.ended, 5)
        assert out.end_status == 404

        # the auth message's token works for register too
        ws.send({"type": "auth", "token": mint_token(KEY, sub="alice")})
        await ws.next("auth_ok")
        ws.send({"type": "register", "user": "alice"})
        await ws.next("registered")
        ws2 = await connect(gw.url)
        await ws2.next("welcome")
        ws2.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice")})
        await ws2.next("registered")
        rep = await ws.next("unregistered")
        assert rep == {"type": "unregistered", "user": "alice", "reason": "replaced"}
        _l2, out2 = _dial(gw)
        await ws2.next("invited")
        await sleep(0.3)
        assert not ws.of_type("invited")
        ws2.send({"type": "hangup"})  # before accepting: declines
        await ws2.next("ended", cause="client_hangup")
        assert await wait_for(lambda: out2.ended, 5)
        assert out2.end_status == 603
        ws2.send({"type": "unregister"})
        await ws2.next("unregistered")
        assert gw.manager.web_users.lookup("alice") is None
        ws.close()
        ws2.close()
    finally:
        await gw.stop()


@pytest.mark.serial  # transcodes Opus <-> G.729 in real time and measures the tone: needs the CPU
@pytest_twisted.ensureDeferred
async def test_ws_inbound_offer_of_only_g729_is_answered_and_transcoded() -> None:
    """A PBX that offers only G.729 to a web user: answered with G.729 (bcg729, the frame path), not 488;
    the tones cross both ways through the transcoder."""
    gw = _gateway(("G729",))
    browser = Browser(tone_hz=BROWSER_HZ)
    ws = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice")})
        await ws.next("registered")
        caller, out_call = _dial(gw)
        inv = await ws.next("invited")
        acc = await complete_call(ws, browser, {"type": "accept", "call": inv["call"]})
        assert acc["session_id"] == inv["session_id"]  # acc["codec"] is the browser's side (Opus)
        assert await wait_for(lambda: out_call.state is CallState.ANSWERED, 5)
        inbound = gw.manager.registry.by_session_id(inv["session_id"])
        assert inbound is not None and inbound.codec == "G729" and inbound.media_path == "frame"
        heard, level = await browser.heard(seconds=3, timeout=9)
        assert abs(heard - CALLER_HZ) < 25, heard
        assert level > -35
        assert_tone(caller.recording(), caller.received_rate or 8000, BROWSER_HZ, "caller heard the browser")
        out_call.hangup()
        await ws.next("ended", cause="remote_hangup")
    finally:
        await close_all(gw, browser, ws)

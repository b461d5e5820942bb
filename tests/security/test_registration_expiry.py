"""A web user's registration ends when its token expires (issue 12): the client hears
``unregistered`` with reason ``token_expired`` and calls toward the user get 404 -- unless the
client registered again with a fresh token before, which moves the end to that token's expiry.
WebSocket ``register`` and the RTMP ``sip/USER`` registration (and its ``register(token)``
renewal) on a real gateway; the registry itself on a fake clock: tests/calls/test_web_users_expiry.py."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted

from tests.adapters import rtmp_helpers
from tests.adapters.rtmp_helpers import flash_client
from tests.adapters.webrtc_client import Gateway, connect
from tests.calls.gw import sleep, wait_for
from tests.interop.peers import free_port
from webgate.legs.local import LocalLeg
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"
SHORT_S = 2  # the short-lived tokens' ttl (exp is whole seconds: they expire 1-2 s after minting)


# -- WebSocket register ------------------------------------------------------------------------

def _extra() -> dict[str, Any]:
    port = free_port("udp")
    return {
        "sip": {"udp": f"127.0.0.1:{port}"},
        "tokens": {"key": KEY, "leeway_s": 0},
        "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{port}", "codecs": ["PCMU"]}],
        "route": [{"pattern": "alice", "trunk": "self", "public": True}],
    }


def _short(sub: str = "alice") -> tuple[str, int]:
    """A token that expires in 1-2 s, and its exp."""
    now = time.time()
    return mint_token(KEY, sub=sub, ttl_s=SHORT_S, now=now), int(now) + SHORT_S


async def _dial_status(manager: Any, user: str = "alice") -> int | None:
    """Dial ``user`` through the gateway's own SIP (a trunk to itself): the final status when the
    call fails (404: nobody registered), None when it rings somebody (then hung up)."""
    leg = LocalLeg(1000.0)
    call = manager.place_call(leg, user)
    await wait_for(lambda: call.ended or call.state.value in ("ringing", "early_media"), 5)
    if call.ended:
        return int(call.end_status or 0)
    call.hangup()
    await wait_for(lambda: call.ended, 5)
    return None


@pytest_twisted.ensureDeferred
async def test_ws_registration_ends_with_token_expired() -> None:
    gw = Gateway(_extra())
    ws = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        t0 = time.time()
        token, exp = _short()
        ws.send({"type": "register", "user": "alice", "token": token})
        reg = await ws.next("registered")
        assert reg["user"] == "alice"
        assert gw.manager.web_users.lookup("alice") is not None
        gone = await ws.next("unregistered", timeout=SHORT_S + 3)
        print(f"\nunregistered {time.time() - t0:.2f} s after registering (exp {exp - t0:+.2f} s)")
        assert gone == {"type": "unregistered", "user": "alice", "reason": "token_expired"}
        assert time.time() >= exp and reg["expires"] == exp
        assert gw.manager.web_users.lookup("alice") is None
        assert await _dial_status(gw.manager) == 404
        # the connection stays open and may register again with a fresh token
        n = len(ws.messages)
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice")})
        await ws.next("registered", after=n)
        assert not ws.is_closed and gw.manager.web_users.lookup("alice") is not None
    finally:
        if ws is not None:
            ws.close()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_ws_registering_again_with_a_fresh_token_keeps_the_registration() -> None:
    gw = Gateway(_extra())
    ws = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        token, exp = _short()
        ws.send({"type": "register", "user": "alice", "token": token})
        await ws.next("registered")
        await sleep(0.5)
        n = len(ws.messages)
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice", ttl_s=600)})
        await ws.next("registered", after=n)
        await sleep(max(0.0, exp - time.time()) + 1.5)  # well past the first token's exp
        assert ws.of_type("unregistered") == []
        endpoint = gw.manager.web_users.lookup("alice")
        assert endpoint is not None and endpoint.registered_user == "alice"
        assert await _dial_status(gw.manager) is None  # still rings
        assert (await ws.next("invited"))["to"] == "alice"
    finally:
        if ws is not None:
            ws.close()
        await gw.stop()


# -- RTMP sip/USER -----------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_rtmp_registration_ends_with_token_expired() -> None:
    gw = rtmp_helpers.Gateway(_extra())
    try:
        c = await flash_client(gw.rtmp_port, "alice", "alice", _short()[0], "Alice")
        await c.callback("registered")
        assert gw.manager.web_users.lookup("alice") is not None
        gone = await c.callback("unregistered", timeout=SHORT_S + 3)
        assert gone.args == ["token_expired"]
        assert gw.manager.web_users.lookup("alice") is None
        assert await _dial_status(gw.manager) == 404
        assert not c.lost  # the connection stays for outgoing calls
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_rtmp_register_with_a_fresh_token_keeps_the_registration() -> None:
    gw = rtmp_helpers.Gateway(_extra())
    try:
        token, exp = _short()
        c = await flash_client(gw.rtmp_port, "alice", "alice", token, "Alice")
        await c.callback("registered")
        # a token for somebody else is refused and changes nothing
        bad = await c.reply(c.command("register", mint_token(KEY, sub="bob")))
        assert bad.name == "_error" and bad.args[0]["reason"] == "user_not_allowed", bad
        assert gw.manager.web_users.expires("alice") == exp
        # a fresh one moves the end
        ok = await c.reply(c.command("register", mint_token(KEY, sub="alice", ttl_s=600)))
        assert ok.name == "_result" and ok.args == ["alice"], ok
        assert gw.manager.web_users.expires("alice") > exp + 500
        await sleep(max(0.0, exp - time.time()) + 1.5)  # well past the connect token's exp
        assert c.find("unregistered") is None
        assert gw.manager.web_users.lookup("alice") is not None
        assert await _dial_status(gw.manager) is None
        await c.callback("invited")
    finally:
        await gw.stop()

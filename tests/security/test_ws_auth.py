"""Authorisation on the WebSocket ingress: tokens in ``call`` and ``auth``, the Origin allow-list.
Refusals are checked with a placeholder SDP (authorisation comes before any WebRTC work); the
allowed call is a real aiortc call through the non-public route, with the echo measured."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.adapters.webrtc_client import Browser, close_all, complete_call, connect
from tests.calls.gw import wait_for
from tests.security.secure_gw import (
    DUMMY_SDP,
    OTHER_KEY,
    ROUTED,
    SecureGateway,
    alg_none_token,
    expired_token,
    token,
    ws_handshake,
)


async def _expect(ws: Any, msg: dict[str, Any], code: str) -> dict[str, Any]:
    n = len(ws.messages)
    ws.send(msg)
    err = await ws.next("error", after=n)
    assert err["code"] == code, err
    return err


@pytest_twisted.ensureDeferred
async def test_ws_tokens_refused_and_allowed() -> None:
    gw = SecureGateway()
    browser = Browser(tone_hz=650.0)
    ws = ws2 = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")

        def call(dest: str = ROUTED, **kw: Any) -> dict[str, Any]:
            return {"type": "call", "destination": dest, "sdp": DUMMY_SDP, **kw}

        await _expect(ws, call(), "token_required")
        await _expect(ws, call(token=token(key=OTHER_KEY)), "invalid_token")
        await _expect(ws, call(token=alg_none_token()), "invalid_token")
        await _expect(ws, call(token=expired_token()), "token_expired")
        await _expect(ws, call(token="not-a-token"), "invalid_token")
        await _expect(ws, call(token=token(dest="1235")), "destination_not_allowed")
        await _expect(ws, call(token=token(dest=None, dest_pattern="12[0-3]3")), "destination_not_allowed")
        await _expect(ws, call(token=token(display_name="Alice"), display_name="Mallory"), "display_name_not_allowed")
        await _expect(ws, call(token=token(session_id="87654321"), session_id="12345678"), "session_id_not_allowed")
        # a presented but invalid token is refused even for a public destination
        await _expect(ws, call("echo", token=token(dest="echo", key=OTHER_KEY)), "invalid_token")
        # public destinations pass without a token (the placeholder SDP is what fails then)
        await _expect(ws, call("echo"), "invalid_sdp")
        await _expect(ws, call("2000"), "invalid_sdp")
        # so does a valid token (pattern) for the routed destination
        await _expect(ws, call(token=token(dest=None, dest_pattern=r"1\d{3}")), "invalid_sdp")
        assert len(gw.svc.registry) == 0 and not gw.svc.rtp_pool.in_use
        assert gw.refusals.codes.count("invalid_token") == 4 and "token_required" in gw.refusals.codes

        # the connection-wide token: an ``auth`` message
        await _expect(ws, {"type": "auth", "token": token(key=OTHER_KEY)}, "invalid_token")
        n = len(ws.messages)
        ws.send({"type": "auth", "token": token(sub="carol")})
        ok = await ws.next("auth_ok", after=n)
        assert ok["identity"] == "carol" and ok["expires"] > 0
        await _expect(ws, call(), "invalid_sdp")  # authorised by the connection's token
        await _expect(ws, call(token=token(dest="1999")), "destination_not_allowed")  # the call's own token wins

        # a real call with a valid token: placed, answered, the echo measured
        ws2 = await connect(gw.url)
        await ws2.next("welcome")
        accepted = await complete_call(ws2, browser, {
            "type": "call", "destination": ROUTED,
            "token": token(sub="alice@shop", display_name="Alice", max_duration=600),
        }, timeout=10)
        (c,) = list(gw.svc.registry)
        assert c.session_id == accepted["session_id"] and c.identity == "alice@shop" and c.route.builtin is None
        assert c.route.trunk_name == "self" and c.grant is not None
        f, level = await browser.heard(timeout=10)
        print(f"\ntoken call over the non-public route: echo {f:.1f} Hz, {level:.1f} dBFS")
        assert abs(f - 650.0) < 15 and level > -30
        ws2.send({"type": "hangup"})
        await ws2.next("ended")
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await close_all(gw, browser, ws, ws2)


@pytest_twisted.ensureDeferred
async def test_origin_allow_list_on_the_real_handshake() -> None:
    same = SecureGateway()
    listed = SecureGateway(http={"listen": "", "allowed_origins": ["https://shop.example"]})
    anyone = SecureGateway(http={"listen": "", "allowed_origins": ["*"]})
    try:
        p = same.port
        assert await ws_handshake(p, None) == 101  # not a browser
        assert await ws_handshake(p, f"http://127.0.0.1:{p}") == 101  # the gateway's own page
        assert await ws_handshake(p, "https://evil.example") == 403
        assert await ws_handshake(p, f"http://127.0.0.1:{p + 1}") == 403
        assert await ws_handshake(p, "null") == 403
        assert same.ws.refused_origins == 3
        q = listed.port
        assert await ws_handshake(q, "https://shop.example") == 101
        assert await ws_handshake(q, "HTTPS://SHOP.EXAMPLE:443") == 101
        assert await ws_handshake(q, "https://evil.example") == 403
        assert await ws_handshake(q, f"http://127.0.0.1:{q}") == 403
        assert await ws_handshake(anyone.port, "https://evil.example") == 101
        # the gateway still serves a normal client afterwards
        ws = await connect(same.url)
        await ws.next("welcome")
        ws.close()
    finally:
        await same.stop()
        await listed.stop()
        await anyone.stop()


@pytest_twisted.ensureDeferred
async def test_ws_message_size_comes_from_config() -> None:
    gw = SecureGateway(webrtc={"max_message_size": 2048})
    try:
        ws = await connect(gw.url)
        assert (await ws.next("welcome"))["max_message_size"] == 2048
        ws.send({"type": "ping", "pad": "x" * 3000})
        assert (await ws.next("error"))["code"] == "message_too_large"
        ws.send({"type": "ping", "id": 1})
        assert (await ws.next("pong"))["id"] == 1  # the connection stays
        ws.close()
    finally:
        await gw.stop()

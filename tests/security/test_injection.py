"""Header and URI injection through every client-controlled string (destination, display name,
session ID, caller ID, token claims) on every ingress: refused with a clear code, nothing is
allocated, and the gateway keeps serving (a following good call is answered)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest_twisted

from tests.adapters.rtmp_helpers import open_client
from tests.adapters.webrtc_client import connect
from tests.calls.gw import assert_tone, sleep, wait_for
from tests.security.secure_gw import DUMMY_SDP, KEY, ROUTED, SecureGateway, token
from tests.security.test_rtmp_auth import _flash, _invite
from webgate.calls.call import CallState
from webgate.calls.errors import CallRefused
from webgate.legs.local import LocalLeg

EVIL = [
    "1234\r\nX-Evil: 1",
    "1234\nVia: SIP/2.0/UDP evil",
    "sip:1234@evil.example",
    "1234@evil.example",
    "<sip:1234@evil.example>",
    "1234>",
    "1234;transport=tcp",
    '1234"',
    "'1234'",
    "1234 SIP/2.0",
    "\x001234",
]
EVIL_NAMES = ["Alice\r\nX-Evil: 1", "Alice\nContact: <sip:evil>", "Alice\x00", "A" * 200]
EVIL_SESSION_IDS = ["12345678\r\nX: 1", "12345678;x", "<12345678>", "1234", "12345678901", "abcdefgh"]


def _signed(claims: dict[str, Any]) -> str:
    """A correctly signed token whose claims carry the injection (the customer's app was fooled)."""
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, KEY, algorithm="HS256")


@pytest_twisted.ensureDeferred
async def test_injection_is_refused_on_every_ingress() -> None:
    gw = SecureGateway(limits={"max_attempts_per_ip_per_minute": 0})  # ~80 attempts from 127.0.0.1
    try:
        # WebSocket
        ws = await connect(gw.url)
        await ws.next("welcome")
        cases: list[tuple[dict[str, Any], str]] = []
        cases += [({"destination": d}, "invalid_destination") for d in EVIL]
        cases += [({"destination": "echo", "display_name": n}, "invalid_display_name") for n in EVIL_NAMES[:3]]
        cases += [({"destination": "echo", "session_id": s}, "invalid_session_id") for s in EVIL_SESSION_IDS]
        cases += [({"destination": ROUTED, "token": _signed({"dest": d})}, "invalid_token") for d in EVIL[:6]]
        cases += [({"destination": ROUTED, "token": _signed({"dest": ROUTED, "display_name": n})}, "invalid_token") for n in EVIL_NAMES]
        cases += [({"destination": ROUTED, "token": _signed({"dest": ROUTED, "caller_id": c})}, "invalid_token") for c in EVIL[:6]]
        cases += [({"destination": ROUTED, "token": _signed({"dest": ROUTED, "session_id": s})}, "invalid_token") for s in EVIL_SESSION_IDS]
        cases += [({"destination": ROUTED, "token": _signed({"dest": ROUTED, "sub": "a\r\nb"})}, "invalid_token")]
        cases += [({"destination": ROUTED, "token": _signed({"dest_pattern": ".*\r\n"})}, "invalid_token")]
        # open a fresh connection every 15 cases (a connection is closed after 20 bad messages)
        for i, (fields, code) in enumerate(cases):
            if i and i % 15 == 0:
                ws.close()
                ws = await connect(gw.url)
                await ws.next("welcome")
            n = len(ws.messages)
            ws.send({"type": "call", "sdp": DUMMY_SDP, **fields})
            err = await ws.next("error", after=n)
            assert err["code"] == code, (fields, err)
            assert "\r" not in err["message"] and "\n" not in err["message"]
        ws.close()

        # RTMP Flash RPC: destination, session ID, display name (connect argument), token claims
        c = await _flash(gw, "pw")
        for d in EVIL:
            res = await _invite(c, d)
            assert res.name == "_error" and res.args[0]["reason"] == "invalid_destination", (d, res)
        for s in EVIL_SESSION_IDS:
            res = await c.reply(c.command("invite", "echo", s))
            assert res.name == "_error" and res.args[0]["reason"] == "invalid_session_id", (s, res)
        c.transport.loseConnection()
        for name in EVIL_NAMES[:3]:
            c = await open_client(gw.rtmp_port)
            await c.connect("sip/alice", "alice", "pw", name, port=gw.rtmp_port)
            res = await _invite(c, "echo")
            assert res.name == "_error" and res.args[0]["reason"] == "invalid_display_name", (name, res)
            c.transport.loseConnection()
        c = await _flash(gw, _signed({"dest": ROUTED, "caller_id": "1@evil"}))
        res = await _invite(c, ROUTED)
        assert res.name == "_error" and res.args[0]["reason"] == "invalid_token"
        c.transport.loseConnection()

        # RTMP encoder style: the stream name and its options
        for name, reason in [
            ("1234\r\nX-Evil: 1", "invalid_destination"),
            ("sip:1234@evil", "invalid_destination"),
            ("1234;user=phone", "invalid_destination"),
            ("echo?name=Alice%0D%0AX-Evil:%201", "invalid_display_name"),
            ("echo?session=12345678%0D%0AX:1", "invalid_session_id"),
            (f"{ROUTED}?token={_signed({'dest': ROUTED, 'display_name': 'A' + chr(13) + chr(10) + 'X: 1'})}", "invalid_token"),
        ]:
            c = await open_client(gw.rtmp_port)
            await c.connect("call", port=gw.rtmp_port)
            sid = await c.create_stream()
            c.command("publish", name, "live", stream_id=sid)
            assert await wait_for(lambda c=c, sid=sid: any(s.get("level") == "error" for s in c.statuses(sid)), 5), name
            st = next(s for s in c.statuses(sid) if s.get("level") == "error")
            assert st["description"].startswith(reason + ":"), (name, st)
            assert await wait_for(lambda c=c: c.lost, 5)

        # local API: caller ID
        try:
            gw.manager.place_call(LocalLeg(client="10.0.0.1:1"), "echo", caller_id="1234@evil.example")
            raise AssertionError("caller ID with '@' was accepted")
        except CallRefused as e:
            assert e.code == "invalid_destination"

        # nothing was allocated, and the gateway still places a good call through the same route
        assert len(gw.svc.registry) == 0 and not gw.svc.rtp_pool.in_use
        leg = LocalLeg(client="10.0.0.1:1", tone_hz=900.0)
        call = gw.manager.place_call(leg, ROUTED, token=token(display_name="Alice", caller_id="4930555"))
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        # what arrived over SIP (the gateway's own UAS answered the route): the token's values
        (uas,) = gw.manager.builtin_calls.values()
        assert uas.session.invite is not None
        from_header = uas.session.invite.headers.get("From") or ""
        assert from_header.startswith('"Alice" <sip:4930555@'), from_header
        assert await wait_for(lambda: len(leg.recording()) > 8000, 5)
        await sleep(0.6)
        assert_tone(leg.recording(), leg.received_rate or 8000, 900.0, "echo after the injection attempts")
        call.hangup()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await gw.stop()

"""Remote ICE candidates (issue 12): no address of the gateway's own host or link unless
``[webrtc] allow_private_candidates``, and a cap for the call's whole life
(``max_remote_candidates``), the offer's lines and trickled ones together, before and after the
answer. Real calls (aiortc browser, /ws, the echo); the sans-IO gate's own tests are in
tests/security/test_candidate_gate.py."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.adapters.webrtc_client import Browser, Gateway, WsClient, close_all, connect
from tests.calls.gw import sleep, wait_for


def cand(address: str, port: int = 9, foundation: str = "1") -> str:
    return f"candidate:{foundation} 1 udp 2122260223 {address} {port} typ host generation 0"


# -- real calls ------------------------------------------------------------------------------

def _remote_candidates(call: Any) -> list[str]:
    """The addresses of the remote candidates the gateway's ICE agent holds for the call."""
    out: list[str] = []
    for tr in call.leg.pc.getTransceivers():
        ice = tr.receiver.transport.transport
        out += [c.ip for c in ice.getRemoteCandidates()]
    return out


async def _call(gw: Gateway, browser: Browser, munge: Any = None) -> tuple[WsClient, Any]:
    """An echo call whose offer announces no end of candidates (a trickling browser), so
    candidates trickled after the answer still reach the gateway's ICE agent."""
    ws = await connect(gw.url)
    await ws.next("welcome")
    offer = (await browser.offer()).replace("a=end-of-candidates\r\n", "")
    if munge is not None:
        offer = munge(offer)
    ws.send({"type": "call", "destination": "echo", "sdp": offer})
    await browser.answer((await ws.next("answer"))["sdp"])
    await ws.next("progress", state="answered")
    (call,) = list(gw.svc.registry)
    return ws, call


async def _trickle(ws: WsClient, address: str, port: int) -> dict[str, Any] | None:
    """Send one candidate; the error it got, or None (none within 0.3 s)."""
    n = len(ws.messages)
    ws.send({"type": "candidate", "candidate": {"candidate": cand(address, port, f"t{port}"), "sdpMid": "0", "sdpMLineIndex": 0}})
    await sleep(0.3)
    errors = [m for m in ws.messages[n:] if m.get("type") == "error"]
    assert len(errors) <= 1, errors
    return errors[0] if errors else None


@pytest_twisted.ensureDeferred
async def test_private_candidates_are_refused_by_default_and_the_call_goes_on() -> None:
    # max_errors 3: refused addresses are answered but not held against the connection
    gw = Gateway({"webrtc": {"allow_private_candidates": False, "max_errors": 3}})
    browser = Browser(tone_hz=1000.0)
    ws = None
    try:
        # the offer's own lines are filtered too
        def munge(offer: str) -> str:
            extra = f"a={cand('127.0.0.1', 5060, 'x')}\r\na={cand('169.254.169.254', 80, 'y')}\r\n"
            return offer.replace("a=ice-ufrag:", extra + "a=ice-ufrag:", 1)

        ws, call = await _call(gw, browser, munge)
        assert "127.0.0.1" not in _remote_candidates(call) and "169.254.169.254" not in _remote_candidates(call)
        assert _remote_candidates(call), "the browser's own candidates were kept"
        for i, address in enumerate(["127.0.0.1", "::1", "169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "abc-123.local"]):
            err = await _trickle(ws, address, 7000 + i)
            assert err is not None and err["code"] == "candidate_refused" and err["ref"] == "candidate", (address, err)
            assert "allow_private_candidates" in err["message"]
        await sleep(0.2)
        held = _remote_candidates(call)
        assert not any(a.startswith(("127.", "169.254.", "fe80", "224.", "0.0.0.0", "::")) or a.endswith(".local") for a in held), held
        # a public address is still accepted and reaches the ICE agent
        assert await _trickle(ws, "192.0.2.77", 9) is None
        assert await wait_for(lambda: "192.0.2.77" in _remote_candidates(call), 3)
        # nothing of this disturbed the call: the echo still plays the browser's 1 kHz
        hz, level = await browser.heard()
        assert abs(hz - 1000.0) < 15 and level > -30 and not call.ended and not ws.is_closed
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_private_candidates_are_accepted_with_the_flag() -> None:
    gw = Gateway({"webrtc": {"allow_private_candidates": True}})
    browser = Browser(tone_hz=1000.0)
    ws = None
    try:
        ws, call = await _call(gw, browser)
        assert await _trickle(ws, "127.0.0.1", 9) is None
        assert await _trickle(ws, "169.254.1.1", 9) is None
        assert await wait_for(lambda: {"127.0.0.1", "169.254.1.1"} <= set(_remote_candidates(call)), 3)
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_the_candidate_cap_holds_for_the_calls_life() -> None:
    browser = Browser(tone_hz=1000.0)
    offer = (await browser.offer()).replace("a=end-of-candidates\r\n", "")
    used = offer.count("a=candidate:") + 2  # the offer's lines + two trickled before the answer
    cap = used + 6
    gw = Gateway({"webrtc": {"max_remote_candidates": cap}})
    ws = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        ws.send({"type": "call", "destination": "echo", "sdp": offer})
        for port in (20001, 20002):  # (queued until the answer is ready)
            ws.send({"type": "candidate", "candidate": {"candidate": cand("127.0.0.1", port, f"p{port}"), "sdpMid": "0"}})
        await browser.answer((await ws.next("answer"))["sdp"])
        await ws.next("progress", state="answered")
        (call,) = list(gw.svc.registry)
        # trickled after the answer: accepted up to the cap, then each refused with a clear error
        results = [await _trickle(ws, "127.0.0.1", 21000 + i) for i in range(cap - used + 5)]
        assert results[: cap - used] == [None] * (cap - used), results
        for err in results[cap - used :]:
            assert err is not None and err["code"] == "too_many_candidates" and err["ref"] == "candidate", err
            assert f"at most {cap}" in err["message"] and "max_remote_candidates" in err["message"]
        # what reached the ICE agent: the two early ones and the six that fit, none past the cap
        assert await wait_for(lambda: _remote_candidates(call).count("127.0.0.1") == cap - used + 2, 3), _remote_candidates(call)
        await sleep(0.3)
        assert len(_remote_candidates(call)) == cap
        assert not call.ended
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_an_offer_with_more_candidates_than_the_cap_is_cut() -> None:
    cap = 4
    gw = Gateway({"webrtc": {"max_remote_candidates": cap}})
    browser = Browser(tone_hz=1000.0)
    ws = None
    try:
        def munge(offer: str) -> str:
            # the browser's own candidates first, then 40 more
            extra = "".join(f"a={cand('127.0.0.1', 30000 + i, f'f{i}')}\r\n" for i in range(40))
            return offer.replace("a=ice-ufrag:", extra + "a=ice-ufrag:", 1)

        ws, call = await _call(gw, browser, munge)
        held = _remote_candidates(call)
        assert len(held) == cap, held  # the first ones in the offer (the browser's own come first)
        err = await _trickle(ws, "127.0.0.1", 31000)
        assert err is not None and err["code"] == "too_many_candidates"
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_a_flood_past_the_cap_closes_the_connection() -> None:
    cap, max_errors = 8, 5
    gw = Gateway({"webrtc": {"max_remote_candidates": cap, "max_errors": max_errors}})
    browser = Browser(tone_hz=1000.0)
    ws = None
    try:
        ws, call = await _call(gw, browser)
        for i in range(500):
            if ws.is_closed:
                break
            ws.send({"type": "candidate", "candidate": {"candidate": cand("127.0.0.1", 40000 + i, f"f{i}"), "sdpMid": "0"}})
        assert await wait_for(lambda: ws.is_closed, 5)
        codes = [m["code"] for m in ws.of_type("error")]
        assert codes[-1] == "too_many_errors" and codes.count("too_many_candidates") == max_errors + 1, codes
        assert len(_remote_candidates(call)) <= cap
        assert await wait_for(lambda: call.ended, 5) and call.end_cause == "ws_closed"
    finally:
        await close_all(gw, browser, ws)

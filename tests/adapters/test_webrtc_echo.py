"""An aiortc client calls the built-in ``echo`` through /ws, aiortc, the SIP leg and back."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.adapters.webrtc_client import (
    Browser,
    Gateway,
    close_all,
    complete_call,
    connect,
)
from tests.calls.gw import sleep, wait_for


@pytest.mark.parametrize(
    "codecs, expect_codec, tone",
    [
        (None, "PCMU", 700.0),  # a browser-like offer (opus first): the gateway prefers the trunk's G.711
        (["opus"], "opus", 900.0),  # an Opus-only offer
    ],
)
@pytest_twisted.ensureDeferred
async def test_echo_tone_and_dtmf(codecs: list[str] | None, expect_codec: str, tone: float) -> None:
    gw = Gateway()
    browser = Browser(tone_hz=tone, codecs=codecs)
    ws = None
    try:
        ws = await connect(gw.url)
        welcome = await ws.next("welcome")
        assert welcome["version"] == 1 and welcome["ice_servers"] == []
        accepted = await complete_call(ws, browser, {"type": "call", "destination": "echo"})
        sid = accepted["session_id"]
        assert sid.isdigit() and 8 <= len(sid) <= 10
        assert accepted["codec"] == expect_codec
        # the session ID comes before any progress from the phone and before the answer
        kinds = [m["type"] for m in ws.messages]
        assert kinds.index("accepted") < len(kinds) and "answer" not in kinds[: kinds.index("accepted")]
        measured, level = await browser.heard()
        print(f"\n[{expect_codec}] sent {tone:.0f} Hz, echo measured {measured:.1f} Hz, {level:.1f} dBFS")
        assert abs(measured - tone) < 15, measured
        assert level > -30

        (call,) = list(gw.svc.registry)
        assert call.session_id == sid and call.ingress_kind == "webrtc"
        leg = call.leg
        assert leg.stats.browser_codec == expect_codec and leg.stats.frames_from_browser > 50

        n = len(ws.messages)
        ws.send({"type": "dtmf", "digits": "1234#"})
        assert await wait_for(lambda: len(ws.of_type("dtmf")) >= 5, 8), ws.messages
        digits = [m["digit"] for m in ws.messages[n:] if m["type"] == "dtmf"]
        assert digits == list("1234#")

        ws.send({"type": "ping", "id": 7})
        assert (await ws.next("pong"))["id"] == 7

        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.manager.builtin_calls, 5)
        assert await wait_for(lambda: gw.svc.rtp_pool is not None and not gw.svc.rtp_pool.in_use, 5)
        assert await wait_for(lambda: leg.pc.connectionState == "closed", 5)
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_websocket_drop_hangs_up_the_sip_leg() -> None:
    gw = Gateway()
    browser = Browser()
    try:
        ws = await connect(gw.url)
        await complete_call(ws, browser, {"type": "call", "destination": "echo"})
        (call,) = list(gw.svc.registry)
        ws.close()
        assert await wait_for(lambda: call.ended, 5)
        assert call.end_cause == "ws_closed"
        assert await wait_for(lambda: not gw.manager.builtin_calls and not gw.svc.rtp_pool.in_use, 5)
    finally:
        await browser.close()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_tone_destination_reaches_the_browser() -> None:
    """SIP -> browser only: the built-in tone (1 kHz) is heard by the browser."""
    gw = Gateway()
    browser = Browser(tone_hz=300.0)
    try:
        ws = await connect(gw.url)
        await complete_call(ws, browser, {"type": "call", "destination": "tone"})
        measured, _level = await browser.heard()
        print(f"\n[tone] measured {measured:.1f} Hz")
        assert abs(measured - 1000) < 15
        ws.close()
        await sleep(0.2)
    finally:
        await browser.close()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_media_that_never_connects_ends_the_call() -> None:
    """The browser never applies the answer: ICE/DTLS never connect -> ended (ice_timeout), SIP released."""
    from webgate.legs.webrtc import WebRtcSettings

    gw = Gateway(settings=WebRtcSettings(ice_timeout_s=1.0, allow_private_candidates=True))
    browser = Browser()
    try:
        ws = await connect(gw.url)
        ws.send({"type": "call", "destination": "echo", "sdp": await browser.offer()})
        await ws.next("answer")
        ended = await ws.next("ended", timeout=5)
        assert ended["cause"] == "ice_timeout"
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.manager.builtin_calls, 5)
        assert await wait_for(lambda: not gw.svc.rtp_pool.in_use, 5)
        ws.close()
    finally:
        await browser.close()
        await gw.stop()

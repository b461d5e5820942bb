"""Issue 16's SIP features with a real browser on the web side (headless Chromium driving
``/html5_client/webgate.js``; the far ends are SIPp):

- delayed offer: SIPp sends an INVITE without SDP to a web user the page registered; the page
  accepts, the gateway offers in its 200 and takes SIPp's answer from the ACK; the page then
  hears its own 660 Hz tone echoed by SIPp (``-rtp_echo``), measured with WebAudio;
- a re-INVITE without SDP from SIPp in the middle of the page's call: the gateway re-offers in
  its 200, SIPp's ACK moves the call to PCMA, and the page still hears SIPp's echo;
- blind transfer: the page calls through a route with ``transfer = true``; SIPp (the far end)
  sends REFER to the built-in ``tone`` (the NOTIFYs checked by the scenario), or to a baresip
  phone and leaves at once; the page gets the ``transferred`` event, keeps its call (same
  session ID, same peer connection) and then hears the tone's 1000 Hz / baresip's 440 Hz, and
  baresip hears the page.

Shares the Chromium fixture and page scripts of tests/interop/test_chromium_calls.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.webrtc_client import Gateway
from tests.calls.gw import wait_for
from tests.interop import peers
from tests.interop.test_baresip import assert_wav_tone, closed
from tests.interop.test_chromium_calls import (  # noqa: F401 - chromium is a fixture
    BROWSER_HZ,
    PHONE_HZ,
    START,
    Page,
    chromium,
    measured_hz,
    released,
)
from tests.interop.test_inbound_chromium import HAS_CALL, KEY, REGISTER
from tests.interop.test_sipp_uac import until_exit
from webgate.calls.call import CallState
from webgate.security.tokens import mint_token

TONE_HZ = 1000.0  # the built-in tone (make_config's default [builtin] tone_hz)

# START, also recording the call's 'transferred' events
_EVENTS = "['ringing', 'answered', 'dtmf', 'ended', 'error']"
assert _EVENTS in START
START_T = START.replace(_EVENTS, "['ringing', 'answered', 'dtmf', 'ended', 'error', 'transferred']")

TRANSFERRED = r"""
const [timeoutMs] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const t0 = performance.now();
  const got = () => H.events.some((e) => e.type === 'transferred');
  while (!got() && H.call.state !== 'ended' && performance.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 50));
  done({ ok: got(), state: H.call.state, sessionId: H.call.sessionId, events: H.events.map((e) => e.type),
         pc: H.call.pc.connectionState });
})();
"""


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_delayed_offer_invite_to_a_chromium_web_user(
    chromium: Any,  # noqa: F811 - the imported fixture
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    port = peers.free_port("udp")
    gw = Gateway({"sip": {"udp": f"127.0.0.1:{port}"}, "tokens": {"key": KEY}, "webrtc": {"ice_timeout_s": 5}})
    page = Page(chromium, gw)
    try:
        await page.open()
        reg = await page._run(REGISTER, gw.url, "alice", mint_token(KEY, sub="alice"))
        assert reg == {"user": "alice"}, (reg, page.console())
        assert await wait_for(lambda: gw.manager.web_users.lookup("alice") is not None, 5)

        sipp = sipp_factory("uac_delayed_offer", f"127.0.0.1:{port}", service="alice", duration_ms=5000, rtp_echo=True)
        got = await page._run(HAS_CALL, 10000)
        assert got["ok"], (got, page.console(), sipp.describe())
        snap = await page.wait("answered", 10)
        assert snap["ok"], (snap, sipp.describe())
        call = gw.manager.registry.by_session_id(got["sessionId"])
        assert call is not None and call.direction == "inbound" and call.remote_offer is None
        assert await wait_for(lambda: call.state is CallState.ANSWERED and call.codec == "PCMU", 5), sipp.describe()

        invite = sipp.sent()[0]
        assert invite.method == "INVITE" and not invite.body  # the delayed offer
        ok = next(m for m in sipp.received() if m.status == 200 and m.cseq_method == "INVITE")
        assert ok.header("Content-Type") == "application/sdp" and "m=audio" in ok.body  # our offer in the 200

        m = await page.measure()
        print(f"\ndelayed offer: page measured {[round(f['hz'], 1) for f in m['freqs']]} Hz (SIPp's echo)")
        assert abs(measured_hz(m) - BROWSER_HZ) < 15, m
        assert m["packetsReceived"] > 50

        assert await until_exit(sipp, 15) == 0, sipp.describe()  # SIPp hangs up
        snap = await page.wait("ended", 5)
        assert snap["ok"] and snap["ended"]["cause"] == "remote_hangup", snap
        assert await released(gw)
    finally:
        await gw.stop()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_refer_transfers_a_chromium_caller_to_the_builtin_tone(
    chromium: Any,  # noqa: F811 - the imported fixture
    sipp_factory: Callable[..., peers.Sipp],
    tmp_path: Path,
) -> None:
    scenario = peers.render_scenario("uas_refer.xml", tmp_path / "uas_refer", TARGET="tone")
    referrer = sipp_factory(scenario, duration_ms=2500)
    gw = Gateway({
        "trunk": [{"name": "pbx", "target": f"sip:{referrer.address}", "codecs": ["PCMU"]}],
        "route": [{"pattern": r"2\d{3}", "trunk": "pbx", "public": True, "transfer": True}],
        "webrtc": {"ice_timeout_s": 5},
    })
    page = Page(chromium, gw)
    try:
        await page.open()
        start = await page._run(START_T, gw.url, "2500", {})
        assert "exception" not in start, (start, page.console())
        assert (await page.wait("answered", 10))["ok"], referrer.describe()
        (call,) = list(gw.svc.registry)
        first_call_id = call.sip_call_id
        assert "REFER" in (referrer.received()[0].header("Allow") or "")

        got = await page._run(TRANSFERRED, 10000)
        assert got["ok"], (got, referrer.describe())
        assert got["state"] == "answered" and got["sessionId"] == start["sessionId"] and got["pc"] == "connected", got
        assert call.state is CallState.ANSWERED and call.sip_call_id != first_call_id
        assert call.transfers and call.transfers[0]["to"] == "tone"
        assert gw.manager.builtin_calls

        m = await page.measure()
        print(f"\ntransfer: page measured {[round(f['hz'], 1) for f in m['freqs']]} Hz (the built-in tone)")
        assert abs(measured_hz(m) - TONE_HZ) < 15, m
        assert await until_exit(referrer, 10) == 0, referrer.describe()  # both NOTIFYs checked, our BYE came
        assert [m.status for m in referrer.received() if m.cseq_method == "REFER"] == [202]

        await page.hangup()
        assert await released(gw)
        assert await wait_for(lambda: not gw.manager.builtin_calls, 3)
    finally:
        await gw.stop()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_reinvite_without_sdp_in_a_chromium_call(
    chromium: Any,  # noqa: F811 - the imported fixture
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    sipp = sipp_factory("uas_reinvite_no_sdp", rtp_echo=True, duration_ms=1500)
    gw = Gateway({
        "trunk": [{"name": "sipp", "target": f"sip:{sipp.address}", "codecs": ["PCMU", "PCMA"]}],
        "route": [{"pattern": r"2\d{3}", "trunk": "sipp", "public": True}],
        "webrtc": {"ice_timeout_s": 5},
    })
    page = Page(chromium, gw)
    try:
        await page.open()
        await page.call("2400", audioCodecs=["opus"])
        assert (await page.wait("answered", 10))["ok"], sipp.describe()
        (call,) = list(gw.svc.registry)
        assert call.codec == "PCMU"
        assert await wait_for(lambda: call.codec == "PCMA", 6), sipp.describe()
        ok = [m for m in sipp.received() if m.status == 200 and m.cseq_method == "INVITE"]
        assert len(ok) == 1 and " 0 8" in ok[0].body  # our fresh offer: the current codec first
        m = await page.measure()
        print(f"\nre-INVITE without SDP: page measured {[round(f['hz'], 1) for f in m['freqs']]} Hz (SIPp's echo, PCMA)")
        assert abs(measured_hz(m) - BROWSER_HZ) < 15, m
        assert call.state is CallState.ANSWERED and call.codec == "PCMA"
        await page.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        assert await released(gw)
    finally:
        await gw.stop()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_refer_transfers_a_chromium_caller_to_baresip(
    chromium: Any,  # noqa: F811 - the imported fixture
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    tmp_path: Path,
) -> None:
    scenario = peers.render_scenario("uas_refer_blind.xml", tmp_path / "uas_refer_blind", TARGET="bob")
    referrer = sipp_factory(scenario, duration_ms=2500)
    # answered by hand once the referrer left: baresip's auto-answer is so quick that our final NOTIFY
    # would cross the referrer's BYE, which this SIPp scenario does not expect
    bob = baresip_factory("bob", audio_codecs="pcmu", answermode="manual")
    phone = peers.phone_route(bob, codecs=["PCMU"])  # destination "bob" (baresip answers its own user only)
    gw = Gateway({
        "trunk": [{"name": "pbx", "target": f"sip:{referrer.address}", "codecs": ["PCMU"]}, *phone["trunk"]],
        "route": [{"pattern": r"2\d{3}", "trunk": "pbx", "public": True, "transfer": True}, *phone["route"]],
        "webrtc": {"ice_timeout_s": 5},
    })
    page = Page(chromium, gw)
    try:
        await page.open()
        start = await page._run(START_T, gw.url, "2501", {})
        assert "exception" not in start, (start, page.console())
        assert (await page.wait("answered", 10))["ok"], referrer.describe()
        (call,) = list(gw.svc.registry)
        first_call_id = call.sip_call_id

        assert await until_exit(referrer) == 0, referrer.describe()  # the NOTIFY checked, it left with BYE
        await deferToThread(bob.wait_event, "CALL_INCOMING", 5)
        assert call.state is CallState.ANSWERED  # the page's call waits for the new far end
        await deferToThread(bob.cmd, "accept")
        await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 5)
        got = await page._run(TRANSFERRED, 8000)
        assert got["ok"], (got, referrer.describe(), bob.log_tail(2000))
        assert got["state"] == "answered" and got["sessionId"] == start["sessionId"] and got["pc"] == "connected", got
        assert call.state is CallState.ANSWERED and call.sip_call_id != first_call_id
        assert call.transfers and call.transfers[0]["to"] == "bob"

        m = await page.measure()
        print(f"\ntransfer to baresip: page measured {[round(f['hz'], 1) for f in m['freqs']]} Hz")
        assert abs(measured_hz(m) - PHONE_HZ) < 15, m

        await page.hangup()
        await closed(bob, 8)
        assert_wav_tone(bob.recorded_wav("dec"), BROWSER_HZ, "baresip heard the transferred page")
        assert await released(gw)
    finally:
        await gw.stop()

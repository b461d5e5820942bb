"""Session timers (RFC 4028) against SIPp: the gateway refreshes (by UPDATE, by re-INVITE), SIPp
refreshes (re-INVITE, then UPDATE) and then stops, a refresh that fails, and 422 with its retry.

RFC 4028 puts the smallest interval at 90 s; to see refreshes within seconds these gateways accept
intervals down to 2 s (``UAConfig.min_se``, not a configuration key) and SIPp answers with 6 s."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
import pytest_twisted

from tests.calls.gw import start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_sipp_uac import trunk_config, until_exit
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg


def gateway(sipp: peers.Sipp, **trunk: Any) -> Any:
    svc = start_telephony(trunk_config(sipp, **trunk))
    svc.ua.config.min_se = 2  # seconds, for the test only (RFC 4028: 90)
    return svc


def requests_of(sipp: peers.Sipp, method: str) -> list[peers.SipMessage]:
    """The requests SIPp received (UDP retransmissions collapsed by Via branch)."""
    out: list[peers.SipMessage] = []
    seen: set[str] = set()
    for m in sipp.received():
        if m.is_request and m.method == method and (m.header("Via") or "") not in seen:
            seen.add(m.header("Via") or "")
            out.append(m)
    return out


@pytest.mark.parametrize("scenario,method", [("uas_timer_update", "UPDATE"), ("uas_timer_reinvite", "INVITE")])
@pytest_twisted.ensureDeferred
async def test_the_gateway_refreshes(sipp_factory: Callable[..., peers.Sipp], scenario: str, method: str) -> None:
    sipp = sipp_factory(scenario)
    svc = gateway(sipp)
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2200")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        answered = time.monotonic()
        invite = sipp.received()[0]
        assert invite.header("Session-Expires") == "1800" and "timer" in (invite.header("Supported") or "")
        assert call.sip is not None and call.sip.timer.interval == 6 and call.sip.timer.local_refresher
        # refreshes at half the interval: ~3 s and ~6 s
        refreshes = 2 if method == "UPDATE" else 3  # the initial INVITE counts among the INVITEs
        assert await wait_for(lambda: len(requests_of(sipp, method)) >= refreshes, 9), sipp.describe()
        elapsed = time.monotonic() - answered
        assert 5.0 < elapsed < 8.0, elapsed
        refresh = requests_of(sipp, method)[-1]
        assert refresh.header("Session-Expires") == "6;refresher=uac"
        if method == "INVITE":
            assert "m=audio" in refresh.body  # our current SDP again
        else:
            assert not refresh.body
        assert call.state is CallState.ANSWERED
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        assert leg.ended is None or leg.ended[0] != "session_timer"
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_a_refresh_that_fails_ends_the_call(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_timer_refresh_fails")
    svc = gateway(sipp)
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2201")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert await wait_for(lambda: leg.ended is not None, 8), sipp.describe()
        assert leg.ended == ("session_timer", 500)
        assert call.end_cause == "session_timer"
        assert await until_exit(sipp) == 0, sipp.describe()
        assert [m for m in sipp.received_requests() if m != "ACK"][-2:] == ["UPDATE", "BYE"]
        assert not svc.rtp_pool.in_use and len(svc.registry) == 0
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_sipp_refreshes_then_stops_and_the_gateway_hangs_up(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_timer_sipp_refreshes")
    svc = gateway(sipp)
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2202")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert call.sip is not None and not call.sip.timer.local_refresher
        answered = time.monotonic()
        # SIPp's refreshes at ~2 s and ~4 s keep the call up past the first deadline (4 s)
        assert await wait_for(lambda: leg.ended is not None, 15), sipp.describe()
        elapsed = time.monotonic() - answered
        assert leg.ended == ("session_timer", None)
        # the last refresh at ~4 s, then 6 - min(32, 2) = 4 s more
        assert 7.0 < elapsed < 10.0, elapsed
        assert await until_exit(sipp) == 0, sipp.describe()
        answers = [m for m in sipp.received() if m.status == 200 and m.cseq_method in ("INVITE", "UPDATE")]
        assert [m.cseq_method for m in answers] == ["INVITE", "UPDATE"]
        assert all(m.header("Session-Expires") == "6;refresher=uac" for m in answers)
        assert "m=audio" in answers[0].body  # the re-INVITE's offer answered
        assert sipp.received_requests()[-1] == "BYE"
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_422_is_retried_with_the_higher_session_expires(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_422")
    svc = start_telephony(trunk_config(sipp))  # the RFC's own Min-SE (90 s)
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2203")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert call.sip is not None and call.sip.timer.interval == 1900
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        first, second = requests_of(sipp, "INVITE")
        assert first.header("Session-Expires") == "1800" and first.header("Min-SE") == "90"
        assert second.header("Call-ID") == first.header("Call-ID")
        assert int(second.header("CSeq").split()[0]) == int(first.header("CSeq").split()[0]) + 1
        assert second.header("Session-Expires") == "1900" and second.header("Min-SE") == "1900"
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_session_expires_0_sends_no_timer_headers(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_answer")
    svc = start_telephony(trunk_config(sipp, session_expires_s=0))
    try:
        call = svc.manager.place_call(LocalLeg(), "2204")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        invite = sipp.received()[0]
        assert invite.header("Session-Expires") is None and invite.header("Min-SE") is None
        assert "timer" not in (invite.header("Supported") or "")
    finally:
        await svc.stopService()

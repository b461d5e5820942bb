"""Delayed offer against SIPp: an INVITE without SDP toward a registered web user (our offer in the
200, SIPp's answer in the ACK, audio measured through SIPp's echo), and a re-INVITE without SDP in
the middle of a call (a fresh offer in the 200; SIPp's ACK moves the call to PCMA)."""

from __future__ import annotations

from typing import Callable

import pytest_twisted

from tests.calls.gw import assert_tone, make_config, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_sipp_prack import WebUser
from tests.interop.test_sipp_uac import trunk_config, until_exit
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg


@pytest_twisted.ensureDeferred
async def test_invite_without_sdp_to_a_web_user(sipp_factory: Callable[..., peers.Sipp]) -> None:
    svc = start_telephony(make_config())
    try:
        user = WebUser(hz=600.0)
        svc.manager.web_users.register("alice", user)
        host, port = svc.bound["udp"]
        sipp = sipp_factory("uac_delayed_offer", f"{host}:{port}", service="alice", duration_ms=3000, rtp_echo=True)
        assert await wait_for(lambda: bool(user.calls), 5), sipp.describe()
        call = user.calls[0]
        assert call.remote_offer is None and call.state is CallState.RINGING
        assert svc.manager.offered_audio_codecs(call) == []
        codec = svc.manager.accept_inbound(call, user.leg)
        assert codec == "PCMU"
        user.leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert call.codec == "PCMU" and call.stream is not None and call.stream.media is not None
        await sleep(1.5)
        assert_tone(user.leg.recording(), 8000, 600.0, "SIPp's echo of the web user", seconds=1.0)
        assert await until_exit(sipp) == 0, sipp.describe()
        ok = next(m for m in sipp.received() if m.status == 200 and m.cseq_method == "INVITE")
        assert ok.header("Content-Type") == "application/sdp" and "RTP/AVP 0" in ok.body
        assert await wait_for(lambda: call.state is CallState.ENDED, 3)
        assert call.end_cause == "remote_hangup"
        assert not svc.rtp_pool.in_use
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_reinvite_without_sdp_gets_a_fresh_offer(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_reinvite_no_sdp", rtp_echo=True, duration_ms=800)
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = svc.manager.place_call(leg, "2400")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert call.codec == "PCMU"
        assert await wait_for(lambda: call.codec == "PCMA", 5), sipp.describe()
        await sleep(1.2)
        assert_tone(leg.recording(), 8000, 1000.0, "echo after the re-offer (PCMA)", seconds=0.8)
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        ok = [m for m in sipp.received() if m.status == 200 and m.cseq_method == "INVITE"]
        assert len(ok) >= 1
        offer = ok[-1].body
        assert "m=audio" in offer and " 0 8" in offer  # the current codec first, then the route's others
        origin = next(line for line in offer.splitlines() if line.startswith("o="))
        first = next(line for line in sipp.received()[0].body.splitlines() if line.startswith("o="))
        assert int(origin.split()[2]) == int(first.split()[2]) + 1  # same session, version + 1
    finally:
        await svc.stopService()

"""UPDATE mid-dialog (RFC 3311) against SIPp, both directions: SIPp's UPDATEs change the codec
and hold/resume the call (the echoed tone comes back in the new codec), and the gateway holds and
resumes the far end with UPDATE instead of a re-INVITE."""

from __future__ import annotations

from typing import Callable

import pytest_twisted

from tests.calls.gw import assert_tone, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_sipp_uac import trunk_config, until_exit
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg


@pytest_twisted.ensureDeferred
async def test_sipps_update_changes_codec_and_holds_then_resumes(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_update_from_sipp", rtp_echo=True, duration_ms=1500)
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = svc.manager.place_call(leg, "2300")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert call.codec == "PCMU"
        assert await wait_for(lambda: call.codec == "PCMA", 5), sipp.describe()
        assert call.stream is not None and call.stream.media is not None
        assert call.stream.media.direction == "recvonly"  # SIPp holds us: we send nothing
        assert await wait_for(lambda: call.stream.media.direction == "sendrecv", 5), sipp.describe()
        assert call.codec == "PCMA"
        await sleep(1.2)
        assert_tone(leg.recording(), 8000, 1000.0, "echo after the UPDATEs (PCMA)", seconds=0.8)
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        answers = [m for m in sipp.received() if m.status == 200 and m.cseq_method == "UPDATE"]
        assert len(answers) == 2 and all("RTP/AVP 8" in m.body for m in answers)
        assert "a=recvonly" in answers[0].body
        assert not any(d in answers[1].body for d in ("a=sendonly", "a=recvonly", "a=inactive"))
        assert sipp.received_requests() == ["INVITE", "ACK", "BYE"]  # no ACK for an UPDATE's 200
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_the_gateway_holds_and_resumes_with_update(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_update_hold_by_gateway")
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2301")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        results: list[tuple[bool, int | None]] = []
        svc.manager.hold(call, True, lambda ok, status: results.append((ok, status)), method="UPDATE")
        assert await wait_for(lambda: len(results) == 1, 5), sipp.describe()
        assert results == [(True, None)] and call.held
        svc.manager.hold(call, False, lambda ok, status: results.append((ok, status)), method="UPDATE")
        assert await wait_for(lambda: len(results) == 2, 5), sipp.describe()
        assert results[1] == (True, None) and not call.held
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        assert sipp.received_requests() == ["INVITE", "ACK", "UPDATE", "UPDATE", "BYE"], sipp.describe()
        updates = [m for m in sipp.received() if m.method == "UPDATE"]
        assert "a=sendonly" in updates[0].body and "a=sendrecv" in updates[1].body
    finally:
        await svc.stopService()

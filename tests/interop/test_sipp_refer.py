"""Blind transfer (RFC 3515 REFER) by a SIPp far end: to the built-in ``tone`` (the caller then
hears it, the NOTIFYs are checked), to a second SIPp through a trunk with the referrer gone at
once (Referred-By and the session ID carried, the caller hears the new far end's echo), a target
that answers busy after the referrer left, and the refusals (403) of a target the dial plan
refuses and of a route without ``transfer = true``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest_twisted

from tests.calls.gw import assert_tone, make_config, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_sipp_uac import until_exit
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg


def config(referrer: peers.Sipp, target: peers.Sipp | None = None, transfer: bool = True) -> Any:
    trunks = [{"name": "pbx", "target": f"sip:{referrer.address}"}]
    routes = [{"pattern": r"2\d{3}", "trunk": "pbx", "public": True, "transfer": transfer}]
    if target is not None:
        trunks.append({"name": "phones", "target": f"sip:{target.address}"})
        routes.append({"pattern": r"3\d{3}", "trunk": "phones", "public": True})
    return make_config({"trunk": trunks, "route": routes})


def scenario(name: str, tmp_path: Path, target: str) -> Path:
    return peers.render_scenario(f"{name}.xml", tmp_path / name, TARGET=target)


@pytest_twisted.ensureDeferred
async def test_transfer_to_the_builtin_tone(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path) -> None:
    referrer = sipp_factory(scenario("uas_refer", tmp_path, "tone"), duration_ms=800)
    svc = start_telephony(config(referrer))
    try:
        leg = LocalLeg(tone_hz=600.0)
        call = svc.manager.place_call(leg, "2500")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), referrer.describe()
        first_call_id = call.sip_call_id
        invite = referrer.received()[0]
        assert "REFER" in (invite.header("Allow") or "")
        assert await wait_for(lambda: "transferred" in leg.states, 6), referrer.describe()
        assert call.state is CallState.ANSWERED and call.sip_call_id != first_call_id
        assert call.transfers and call.transfers[0]["to"] == "tone"
        assert call.transfers[0]["referred_by"].startswith("<sip:referrer@")
        await sleep(1.0)
        assert_tone(leg.recording(), 8000, 1000.0, "the built-in tone after the transfer", seconds=0.6)
        assert await until_exit(referrer) == 0, referrer.describe()  # both NOTIFYs checked, our BYE came
        assert [m.status for m in referrer.received() if m.cseq_method == "REFER"] == [202]
        assert svc.manager.builtin_calls  # the tone answers the same call now
        call.hangup()
        assert await wait_for(lambda: not svc.manager.builtin_calls, 3)
        assert call.end_cause == "client_hangup" and len(svc.registry) == 0 and not svc.rtp_pool.in_use
        assert call.info()["transfers"][0]["sip_call_id"] == call.sip_call_id
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_blind_transfer_to_another_phone_after_the_referrer_left(sipp_factory: Callable[..., peers.Sipp],
                                                                       tmp_path: Path) -> None:
    referrer = sipp_factory(scenario("uas_refer_blind", tmp_path, "3000"), duration_ms=800)
    phone = sipp_factory("uas_ring_then_answer", rtp_echo=True, duration_ms=1000)
    svc = start_telephony(config(referrer, phone))
    try:
        leg = LocalLeg(tone_hz=600.0)
        call = svc.manager.place_call(leg, "2501")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), referrer.describe()
        assert await wait_for(lambda: "transferred" in leg.states, 8), phone.describe()
        assert await until_exit(referrer) == 0, referrer.describe()
        await sleep(1.2)
        assert_tone(leg.recording(), 8000, 600.0, "the new phone's echo", seconds=0.8)
        assert call.state is CallState.ANSWERED
        invite = phone.received()[0]
        refer = next(m for m in referrer.sent() if m.method == "REFER")
        assert invite.header("Referred-By") == refer.header("Referred-By")
        assert (invite.header("Referred-By") or "").startswith("<sip:referrer@")
        assert invite.header("X-Session-ID") == call.session_id
        call.hangup()
        assert await until_exit(phone) == 0, phone.describe()
        assert phone.received_requests() == ["INVITE", "ACK", "BYE"]
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_blind_transfer_to_a_busy_phone_ends_the_call(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path) -> None:
    referrer = sipp_factory(scenario("uas_refer_blind", tmp_path, "3001"), duration_ms=500)
    phone = sipp_factory("uas_ring_then_busy", duration_ms=1500)
    svc = start_telephony(config(referrer, phone))
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2502")
        assert await wait_for(lambda: leg.ended is not None, 8), phone.describe()
        assert leg.ended == ("transfer_failed", 486)
        assert "transferred" not in leg.states
        assert await until_exit(referrer) == 0, referrer.describe()
        assert await until_exit(phone) == 0, phone.describe()
        assert call.end_cause == "transfer_failed" and len(svc.registry) == 0 and not svc.rtp_pool.in_use
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_refer_to_a_target_the_dial_plan_refuses_gets_403(sipp_factory: Callable[..., peers.Sipp],
                                                                tmp_path: Path) -> None:
    referrer = sipp_factory(scenario("uas_refer_refused", tmp_path, "5555"), duration_ms=500)
    svc = start_telephony(config(referrer))
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2503")
        assert await wait_for(lambda: any(m.status == 403 for m in referrer.received()), 5), referrer.describe()
        await sleep(0.3)
        assert call.state is CallState.ANSWERED and not call.transfers  # the call goes on
        call.hangup()
        assert await until_exit(referrer) == 0, referrer.describe()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_refer_on_a_route_without_transfer_gets_403(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path) -> None:
    referrer = sipp_factory(scenario("uas_refer_refused", tmp_path, "tone"), duration_ms=500)
    svc = start_telephony(config(referrer, transfer=False))
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2504")
        assert await wait_for(lambda: any(m.status == 403 for m in referrer.received()), 5), referrer.describe()
        assert "REFER" not in (referrer.received()[0].header("Allow") or "")
        await sleep(0.3)
        assert call.state is CallState.ANSWERED and not svc.manager.builtin_calls
        call.hangup()
        assert await until_exit(referrer) == 0, referrer.describe()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_transfer_to_a_baresip_phone(sipp_factory: Callable[..., peers.Sipp],
                                           baresip_factory: Callable[..., peers.Baresip], tmp_path: Path) -> None:
    referrer = sipp_factory(scenario("uas_refer", tmp_path, "bob"), duration_ms=800)
    bob = baresip_factory("bob", audio_codecs="pcmu")  # auto-answer, a 440 Hz tone as its microphone
    tables = peers.phone_route(bob)
    tables["trunk"].append({"name": "pbx", "target": f"sip:{referrer.address}"})
    tables["route"].append({"pattern": r"2\d{3}", "trunk": "pbx", "public": True, "transfer": True})
    svc = start_telephony(make_config(tables))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = svc.manager.place_call(leg, "2505")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), referrer.describe()
        assert await wait_for(lambda: "transferred" in leg.states, 10), bob.log_tail(2000)
        assert await until_exit(referrer) == 0, referrer.describe()  # NOTIFY 100 and 200 checked
        await sleep(1.5)
        assert_tone(leg.recording(), leg.received_rate or 8000, 440.0, "baresip's tone after the transfer", seconds=1.0)
        call.hangup()
        assert await wait_for(lambda: len(svc.registry) == 0 and not svc.rtp_pool.in_use, 5)
    finally:
        await svc.stopService()

"""The gateway's SIP UAC against SIPp: exact message flows, digest auth, retransmissions, early media.

The gateway runs in-process (pytest-twisted, asyncio reactor); a LocalLeg places each call through
the call registry and dial plan toward a SIPp UAS on loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest_twisted

from tests.calls.gw import assert_tone, make_config, process_exit, sleep, start_telephony, wait_for
from tests.interop import peers
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.media.analysis import dominant_frequency


def trunk_config(sipp: peers.Sipp, **trunk: Any) -> Any:
    return make_config(
        {
            "trunk": [{"name": "sipp", "target": f"sip:{sipp.address}", **trunk}],
            "route": [{"pattern": r"\d{3,15}", "trunk": "sipp", "public": True}],
        }
    )


def flow(sipp: peers.Sipp) -> list[str]:
    """Received requests with UDP retransmissions (consecutive repeats) collapsed."""
    out: list[str] = []
    for m in sipp.received_requests():
        if not out or out[-1] != m:
            out.append(m)
    return out


async def until_exit(sipp: peers.Sipp, timeout: float = 20.0) -> int | None:
    return await process_exit(sipp.proc, timeout)


@pytest_twisted.ensureDeferred
async def test_answer_audio_echo_and_bye(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_answer", rtp_echo=True)
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = svc.manager.place_call(leg, "2000")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert leg.states[:2] == ["ringing", "answered"]
        await sleep(1.5)
        assert_tone(leg.recording(), 8000, 1000.0, "echo from SIPp", seconds=1.0)
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        assert flow(sipp) == ["INVITE", "ACK", "BYE"]
        invite = sipp.received()[0]
        assert invite.header("X-Session-ID") == call.session_id
        assert "m=audio" in invite.body and "telephone-event" in invite.body
        assert not svc.rtp_pool.in_use and len(svc.registry) == 0
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_401_digest_auth(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_auth_401", keys={"auth_user": "gw", "auth_pass": "s3cret"})
    svc = start_telephony(trunk_config(sipp, username="gw", password="s3cret"))
    try:
        call = svc.manager.place_call(LocalLeg(), "2001")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        assert flow(sipp) == ["INVITE", "ACK", "INVITE", "ACK", "BYE"]
        first, _, second = sipp.received()[:3]
        assert first.header("Call-ID") == second.header("Call-ID")
        assert second.header("Authorization") and "s3cret" not in second.header("Authorization")
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_407_proxy_auth(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_auth_407")
    svc = start_telephony(trunk_config(sipp, username="gw", password="pw407"))
    try:
        call = svc.manager.place_call(LocalLeg(), "2002")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        checks = [c for c in sipp.digest_checks("Proxy-Authorization", "pw407") if c[0] == "INVITE"]
        assert checks and all(ok for _, _, ok in checks), checks
        # RFC 3261 13.2.2.4: the ACK for the 2xx carries the INVITE's credentials too
        assert [m.method for m in sipp.received() if m.header("Proxy-Authorization")] == ["INVITE", "ACK"]
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_bye_challenged_with_401(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_auth_bye", keys={"auth_user": "gw", "auth_pass": "byepw"})
    svc = start_telephony(trunk_config(sipp, username="gw", password="byepw"))
    try:
        call = svc.manager.place_call(LocalLeg(), "2003")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        byes = [m for m in sipp.received() if m.method == "BYE"]
        assert len({m.header("CSeq") for m in byes}) == 2, [m.header("CSeq") for m in byes]
        assert byes[-1].header("Authorization") and not byes[0].header("Authorization")
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_early_media_183_reaches_caller(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path) -> None:
    wav = peers.make_ulaw_wav(tmp_path / "tone.wav", 1000.0, seconds=3.0)
    scen = peers.render_scenario("uas_183_early.xml", tmp_path, TONE_WAV=wav, EARLY_MS=2000)
    sipp = sipp_factory(scen)
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg(tone_hz=None)
        call = svc.manager.place_call(leg, "2004")
        assert await wait_for(lambda: call.state is CallState.EARLY_MEDIA, 5), sipp.describe()
        await sleep(1.2)
        assert call.state is CallState.EARLY_MEDIA
        early = leg.recording()
        assert len(early) > 4000, "no early media reached the caller"
        assert abs(dominant_frequency(early[-4000:], 8000) - 1000) < 20
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_busy_and_404_end_cleanly(sipp_factory: Callable[..., peers.Sipp]) -> None:
    for scenario, status in (("uas_busy", 486), ("uas_404", 404)):
        sipp = sipp_factory(scenario)
        svc = start_telephony(trunk_config(sipp))
        try:
            leg = LocalLeg()
            svc.manager.place_call(leg, "2005")
            assert await wait_for(lambda: leg.ended is not None, 5), sipp.describe()
            assert leg.ended == ("rejected", status)
            assert await until_exit(sipp) == 0, sipp.describe()
            assert flow(sipp) == ["INVITE", "ACK"]
            assert not svc.rtp_pool.in_use and len(svc.registry) == 0
        finally:
            await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_cancel_while_ringing(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_ring_cancel")
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2006")
        assert await wait_for(lambda: call.state is CallState.RINGING, 5), sipp.describe()
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        assert flow(sipp) == ["INVITE", "CANCEL", "ACK"]
        inv, cancel = sipp.received()[:2]
        assert cancel.header("Call-ID") == inv.header("Call-ID")
        assert not svc.rtp_pool.in_use
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_bye_from_far_end(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_bye_from_far", duration_ms=800)
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg()
        svc.manager.place_call(leg, "2007")
        assert await wait_for(lambda: leg.ended is not None, 8), sipp.describe()
        assert leg.ended == ("remote_hangup", None)
        assert await until_exit(sipp) == 0, sipp.describe()
        assert 200 in sipp.received_responses()
        assert not svc.rtp_pool.in_use and len(svc.registry) == 0
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_hold_and_unhold_reinvite(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_hold_reinvite", duration_ms=500)
    svc = start_telephony(trunk_config(sipp))
    try:
        call = svc.manager.place_call(LocalLeg(), "2008")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert await wait_for(lambda: sipp.sent_requests().count("INVITE") >= 2 and len(sipp.received_responses()) >= 2, 6), sipp.describe()
        await sleep(0.3)
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        answers = [m.body for m in sipp.received() if m.status == 200]
        assert "a=recvonly" in answers[0]
        assert not any(d in answers[1] for d in ("a=sendonly", "a=recvonly", "a=inactive"))
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_invite_retransmitted_over_udp(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_invite_retrans")
    svc = start_telephony(trunk_config(sipp))
    try:
        call = svc.manager.place_call(LocalLeg(), "2009")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 6), sipp.describe()
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        flow = sipp.received_requests()
        assert flow.count("INVITE") >= 2, flow
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_retransmitted_200_is_acked_again(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_retrans_200")
    svc = start_telephony(trunk_config(sipp))
    try:
        call = svc.manager.place_call(LocalLeg(), "2010")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert await wait_for(lambda: sipp.received_requests().count("ACK") >= 2, 6), sipp.describe()
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_never_answered_invite_times_out(sipp_factory: Callable[..., peers.Sipp]) -> None:
    # T1 = 100 ms in tests: Timer B fires after 6.4 s
    sipp = sipp_factory("uas_no_answer", duration_ms=9000)
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg()
        svc.manager.place_call(leg, "2011")
        assert await wait_for(lambda: leg.ended is not None, 10), sipp.describe()
        assert leg.ended == ("timeout", 408)
        assert sipp.received_requests().count("INVITE") >= 5
        assert not svc.rtp_pool.in_use and len(svc.registry) == 0
    finally:
        await svc.stopService()

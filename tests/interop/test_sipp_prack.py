"""100rel/PRACK (RFC 3262) against SIPp: a reliable 183 with early media toward a caller of the
gateway, and a SIPp caller that requires 100rel calling a registered web user.

The gateway runs in-process (pytest-twisted, asyncio reactor); SIPp is a child process."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest_twisted

from tests.calls.gw import make_config, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_sipp_uac import trunk_config, until_exit
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.media.analysis import dominant_frequency, rms_dbfs


@pytest_twisted.ensureDeferred
async def test_reliable_183_is_pracked_and_its_early_media_heard(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path) -> None:
    wav = peers.make_ulaw_wav(tmp_path / "tone.wav", 1000.0, seconds=3.0)
    scen = peers.render_scenario("uas_183_100rel.xml", tmp_path, TONE_WAV=wav, EARLY_MS=2000)
    sipp = sipp_factory(scen)
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg(tone_hz=None)
        call = svc.manager.place_call(leg, "2100")
        assert await wait_for(lambda: call.state is CallState.EARLY_MEDIA, 5), sipp.describe()
        await sleep(1.2)
        assert call.state is CallState.EARLY_MEDIA
        early = leg.recording()
        assert len(early) > 4000, "no early media reached the caller"
        tail = early[-4000:]
        assert abs(dominant_frequency(tail, 8000) - 1000) < 20 and rms_dbfs(tail) > -30
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert call.codec == "PCMU"  # the answer of the 183 stands: the 200 had no SDP
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        requests = [m for m in sipp.received() if m.is_request]
        methods = [m.method for m in requests]
        assert methods.count("PRACK") == 1, methods
        invite = requests[0]
        assert "100rel" in (invite.header("Supported") or "")
        prack = next(m for m in requests if m.method == "PRACK")
        assert prack.header("RAck") == f"1 {invite.header('CSeq').split()[0]} INVITE"
        # the dialog's CSeq goes on from the PRACK: ACK keeps the INVITE's, BYE is higher than the PRACK's
        bye = next(m for m in requests if m.method == "BYE")
        assert int(bye.header("CSeq").split()[0]) > int(prack.header("CSeq").split()[0])
        assert not svc.rtp_pool.in_use and len(svc.registry) == 0
    finally:
        await svc.stopService()


class WebUser:
    """A registered web user whose client takes calls with a LocalLeg (tone toward SIP)."""

    kind = "local"
    client = "local-user"
    grant = None

    def __init__(self, hz: float | None = 600.0) -> None:
        self.leg = LocalLeg(tone_hz=hz)
        self.calls: list[Any] = []

    def busy(self) -> bool:
        return False

    def invited(self, call: Any, caller: str, caller_display: str | None) -> LocalLeg:
        self.calls.append(call)
        return self.leg

    def unregistered(self, user: str, reason: str) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_sipp_requiring_100rel_gets_a_reliable_180_and_pracks_it(sipp_factory: Callable[..., peers.Sipp]) -> None:
    svc = start_telephony(make_config())
    try:
        user = WebUser()
        svc.manager.web_users.register("alice", user)
        host, port = svc.bound["udp"]
        sipp = sipp_factory("uac_100rel", f"{host}:{port}", service="alice", duration_ms=1500)
        assert await wait_for(lambda: bool(user.calls), 5), sipp.describe()
        call = user.calls[0]
        # SIPp answers the reliable 180 with PRACK before the client accepts
        assert await wait_for(lambda: "PRACK" in sipp.sent_requests(), 5), sipp.describe()
        svc.manager.accept_inbound(call, user.leg)
        user.leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        assert await until_exit(sipp) == 0, sipp.describe()
        assert sipp.sent_requests() == ["INVITE", "PRACK", "ACK", "BYE"], sipp.describe()
        ringing = [m for m in sipp.received() if m.status == 180]
        assert ringing and "100rel" in (ringing[0].header("Require") or "") and ringing[0].header("RSeq")
        assert [m.status for m in sipp.received() if m.cseq_method == "PRACK"] == [200]
        assert await wait_for(lambda: call.state is CallState.ENDED, 3)
        assert call.end_cause == "remote_hangup"
    finally:
        await svc.stopService()

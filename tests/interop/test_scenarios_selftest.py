"""Every scenario in tests/interop/scenarios/ run against SIPp itself as the other side.

These prove the scenarios (not webgate): if one fails here, the scenario is wrong, not the gateway.
Each test is a few seconds, no skips beyond "sipp is not installed" (a failure when WEBGATE_REQUIRE_PEERS is set).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from . import peers

pytestmark = pytest.mark.timeout(60)

WAIT = 30.0


def run_pair(uas: peers.Sipp, uac: peers.Sipp, expect_uas: int = 0, expect_uac: int = 0) -> None:
    rc_uac = uac.wait(WAIT)
    rc_uas = uas.wait(WAIT)
    assert (rc_uas, rc_uac) == (expect_uas, expect_uac), f"\nUAS: {uas.describe()}\n\nUAC: {uac.describe()}"


def test_uas_answer(sipp_factory):
    uas = sipp_factory("uas_answer", rtp_echo=True)
    uac = sipp_factory("uac_echo", uas.address, service="echo", duration_ms=300)
    run_pair(uas, uac)
    assert uas.flow() == ["<INVITE", ">180", ">200", "<ACK", "<BYE", ">200"]
    assert uac.flow() == [">INVITE", "<180", "<200", ">ACK", ">BYE", "<200"]
    answer = uas.sent()[1]
    assert f"m=audio {uas.media_port} RTP/AVP 0 101" in answer.body
    assert "a=rtpmap:101 telephone-event/8000" in answer.body


def test_uac_echo_against_builtin_uas(sipp_factory):
    uas = sipp_factory("builtin:uas")
    uac = sipp_factory("uac_echo", uas.address, service="echo", duration_ms=100)
    run_pair(uas, uac)
    invite = uac.sent()[0]
    assert invite.first_line == f"INVITE sip:echo@{uas.address} SIP/2.0"
    assert f"m=audio {uac.media_port} RTP/AVP 0 8 101" in invite.body


def test_uac_options(sipp_factory):
    uas = sipp_factory("selftest/uas_options")
    uac = sipp_factory("uac_options", uas.address, service="echo")
    run_pair(uas, uac)
    assert uac.flow() == [">OPTIONS", "<200"]


@pytest.mark.parametrize("name,code", [("uas_busy", 486), ("uas_404", 404)])
def test_uas_reject(sipp_factory, name, code):
    uas = sipp_factory(name)
    uac = sipp_factory("selftest/uac_reject", uas.address)
    run_pair(uas, uac)
    assert uas.flow() == ["<INVITE", f">{code}", "<ACK"]
    ack = uas.received()[1]
    assert ack.header("Via") == uas.received()[0].header("Via")  # non-2xx ACK: same branch


@pytest.mark.parametrize("code", [401, 407])
@pytest.mark.parametrize("password,ok", [("gwpw", True), ("wrong", False)])
def test_uas_auth(sipp_factory, code, password, ok):
    keys = {"auth_user": "gateway", "auth_pass": "gwpw"} if code == 401 else {}
    uas = sipp_factory(f"uas_auth_{code}", keys=keys)
    uac = sipp_factory("selftest/uac_auth", uas.address, auth=("gateway", password), duration_ms=100,
                       extra=["-recv_timeout", "5000"])
    uac.wait(WAIT)
    rc_uas = uas.wait(WAIT)
    header = "Authorization" if code == 401 else "Proxy-Authorization"
    checks = uas.digest_checks(header, "gwpw")
    assert [c[:2] for c in checks] == [("INVITE", "gateway")], uas.describe()
    assert checks[0][2] is ok
    assert uas.flow()[:4] == ["<INVITE", f">{code}", "<ACK", "<INVITE"]
    if code == 401:
        # SIPp's <verifyauth> decides: a wrong password gets 403 and fails the UAS call.
        assert rc_uas == (0 if ok else 1), uas.describe()
        assert any(m.status == 200 and m.cseq_method == "INVITE" for m in uas.sent()) is ok
        assert (">403" in uas.flow()) is not ok
    else:
        # Proxy-Authorization can't be verified by SIPp 3.6.1: the digest check above is the test's job.
        assert rc_uas == 0, uas.describe()


def test_uas_auth_401_rejects_missing_credentials(sipp_factory):
    """The re-sent INVITE without credentials must fail the UAS call."""
    uas = sipp_factory("uas_auth_401", keys={"auth_user": "gateway", "auth_pass": "gwpw"})
    # selftest/uac_reject sends one INVITE and ACKs a 4xx: answer its 401... then we send a 2nd plain INVITE
    uac = sipp_factory("selftest/uac_auth", uas.address, auth=("nobody", "gwpw"), duration_ms=100,
                       extra=["-recv_timeout", "5000"])
    uac.wait(WAIT)
    assert uas.wait(WAIT) == 1, uas.describe()
    assert ">403" in uas.flow()


@pytest.mark.parametrize("password,ok", [("gwpw", True), ("wrong", False)])
def test_uas_auth_bye(sipp_factory, password, ok):
    uas = sipp_factory("uas_auth_bye", keys={"auth_user": "gateway", "auth_pass": "gwpw"})
    uac = sipp_factory("selftest/uac_bye_auth", uas.address, auth=("gateway", password), duration_ms=100,
                       extra=["-recv_timeout", "5000"])
    uac.wait(WAIT)
    rc_uas = uas.wait(WAIT)
    assert uas.flow()[:7] == ["<INVITE", ">180", ">200", "<ACK", "<BYE", ">401", "<BYE"], uas.describe()
    assert [c[2] for c in uas.digest_checks("Authorization", "gwpw")] == [ok]
    assert rc_uas == (0 if ok else 1), uas.describe()
    assert (">403" in uas.flow()) is not ok
    if ok:
        assert uas.flow()[-1] == ">200"


def test_uas_183_early_media(sipp_factory, tmp_path):
    wav = peers.make_ulaw_wav(tmp_path / "tone1k_ulaw.wav", 1000.0, seconds=1.5)
    scen = peers.render_scenario("uas_183_early.xml", tmp_path / "scen", TONE_WAV=wav, EARLY_MS=1500)
    sink = peers.RtpSink()
    try:
        uas = sipp_factory(scen)
        uac = sipp_factory("selftest/uac_early", uas.address, keys={"rtpport": sink.port}, duration_ms=200)
        sink.collect(2.5)
        run_pair(uas, uac)
    finally:
        sink.close()
    assert uas.flow()[:4] == ["<INVITE", ">183", ">200", "<ACK"]
    assert "m=audio" in uas.sent()[0].body
    pts = sink.payload_types()
    assert pts.get(0, 0) >= 40, pts  # >= 0.8 s of 20 ms PCMU packets
    audio = sink.audio(0)
    assert abs(peers.dominant_frequency(audio, 8000) - 1000) < 15
    assert peers.rms_dbfs(audio) > -15


def test_uas_ring_cancel(sipp_factory):
    uas = sipp_factory("uas_ring_cancel")
    uac = sipp_factory("selftest/uac_cancel", uas.address)
    run_pair(uas, uac)
    assert uas.flow() == ["<INVITE", ">180", "<CANCEL", ">200", ">487", "<ACK"]
    r487 = uas.sent()[2]
    assert r487.header("CSeq") == "1 INVITE"
    assert ";tag=" in (r487.header("To") or "")


def test_uas_bye_from_far(sipp_factory):
    uas = sipp_factory("uas_bye_from_far", duration_ms=200)
    uac = sipp_factory("selftest/uac_wait_bye", uas.address)
    run_pair(uas, uac)
    assert uas.flow() == ["<INVITE", ">180", ">200", "<ACK", ">BYE", "<200"]
    invite, bye = uas.received()[0], uas.sent()[2]
    assert bye.first_line == f"BYE sip:selftest@127.0.0.1:{uac.port} SIP/2.0"  # the caller's Contact
    assert bye.header("To") == invite.header("From")  # caller's tag
    assert (bye.header("From") or "").startswith(invite.header("To") + ";tag=")  # type: ignore[operator]
    assert bye.header("Call-ID") == invite.header("Call-ID")


@pytest.mark.parametrize("hold_answer,ok", [("recvonly", True), ("sendrecv", False)])
def test_uas_hold_reinvite(sipp_factory, hold_answer, ok):
    uas = sipp_factory("uas_hold_reinvite", duration_ms=100)
    uac = sipp_factory("selftest/uac_hold", uas.address, duration_ms=100,
                       keys={"hold_answer": hold_answer, "resume_answer": "sendrecv"},
                       extra=["-recv_timeout", "5000"])
    uac.wait(WAIT)
    rc_uas = uas.wait(WAIT)
    assert rc_uas == (0 if ok else 1), uas.describe()
    if ok:
        assert uas.flow() == ["<INVITE", ">180", ">200", "<ACK", ">INVITE", "<200", ">ACK", ">INVITE", "<200",
                              ">ACK", "<BYE", ">200"]
        reinvites = [m for m in uas.sent() if m.method == "INVITE"]
        assert "a=sendonly" in reinvites[0].body and "a=sendrecv" in reinvites[1].body
        assert [m.header("CSeq") for m in reinvites] == ["1 INVITE", "2 INVITE"]


def test_uas_update_reinvite_new_addr(sipp_factory):
    uas = sipp_factory("uas_update_reinvite_new_addr", duration_ms=100, rtp_echo=True)
    uac = sipp_factory("selftest/uac_reinvite_answer", uas.address, duration_ms=100)
    run_pair(uas, uac)
    assert uas.flow() == ["<INVITE", ">180", ">200", "<ACK", ">INVITE", "<200", ">ACK", "<BYE", ">200"]
    reinvite = next(m for m in uas.sent() if m.method == "INVITE")
    assert f"m=audio {uas.media_port + 2} RTP/AVP" in reinvite.body


def test_uas_no_answer(sipp_factory):
    uas = sipp_factory("uas_no_answer", duration_ms=2500)
    uac = sipp_factory("selftest/uac_no_answer", uas.address)
    run_pair(uas, uac)
    assert uas.sent() == []
    n = uas.received_requests().count("INVITE")
    assert n >= 3, uas.flow()  # original + retransmissions at 0.5 s and 1.5 s
    times = [m.time for m in uas.received()]
    assert 0.35 < times[1] - times[0] < 0.75  # Timer A = T1 = 500 ms in SIPp's UAC


def test_uas_invite_retrans(sipp_factory):
    uas = sipp_factory("uas_invite_retrans")
    uac = sipp_factory("uac_echo", uas.address, service="echo", duration_ms=100)
    run_pair(uas, uac)
    flow = uas.flow()
    assert flow[: flow.index(">180")].count("<INVITE") >= 2, flow
    assert flow[-4:] == [">200", "<ACK", "<BYE", ">200"]


def test_uas_retrans_200(sipp_factory):
    uas = sipp_factory("uas_retrans_200")
    uac = sipp_factory("uac_echo", uas.address, service="echo", duration_ms=500)
    run_pair(uas, uac)
    flow = uas.flow()
    assert flow[:6] == ["<INVITE", ">180", ">200", "<ACK", ">200", "<ACK"], flow
    assert uas.received()[2].time - uas.received()[1].time > 0.15  # the 200 really was re-sent after the ACK
    assert flow[-2:] == ["<BYE", ">200"]
    first, second = [m for m in uas.sent() if m.status == 200 and m.cseq_method == "INVITE"]
    for h in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert first.header(h) == second.header(h), h
    assert uac.received_responses().count(200) >= 3  # 200, retransmitted 200, 200 for BYE


def test_peers_audio_helpers(tmp_path: Path):
    wav = peers.make_tone_wav(tmp_path / "t.wav", 440.0, 48000, 1.0)
    assert abs(peers.dominant_frequency(wav) - 440) < 2
    assert -10 < peers.rms_dbfs(wav) < -8  # 0.5 amplitude sine: -9.03 dBFS
    u = peers.make_ulaw_wav(tmp_path / "u.wav", 1000.0, 1.0)
    assert abs(peers.dominant_frequency(u) - 1000) < 2
    x = (np.sin(np.arange(800) / 8000 * 2 * np.pi * 1000) * 12000).astype(np.int16)
    assert np.max(np.abs(peers.ulaw_decode(peers.ulaw_encode(x)).astype(int) - x)) < 400


def test_digest_ok():
    # RFC 2617 section 3.5 example (HTTP, qop=auth)
    h = ('Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
         'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
         'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    assert peers.digest_ok(h, "GET", "Circle Of Life")
    assert not peers.digest_ok(h, "GET", "circle of life")


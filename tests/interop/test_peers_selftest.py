"""The peer helpers themselves (baresip, Kamailio, SIPp media) work on this machine: no webgate involved.

If these fail, fix the environment or peers.py before blaming the gateway.
"""

from __future__ import annotations

import time

import pytest

from . import peers

pytestmark = pytest.mark.timeout(90)


def test_baresip_call_audio_and_rfc4733_dtmf(baresip_factory, tmp_path):
    bob = baresip_factory("bob")  # sends 440 Hz
    alice = baresip_factory("alice", wav=peers.make_tone_wav(tmp_path / "t1k.wav", 1000, 48000, 10))
    alice.dial(bob.uri)
    alice.wait_event("CALL_ESTABLISHED", 10)
    bob.wait_event("CALL_ESTABLISHED", 10)
    time.sleep(1.0)
    alice.send_dtmf("12#")
    time.sleep(1.0)
    alice.hangup()
    bob.wait_event("CALL_CLOSED", 10)
    assert bob.dtmf_received() == "12#"
    time.sleep(0.3)
    heard = bob.recorded_wav("dec")
    assert heard is not None
    assert abs(peers.dominant_frequency(heard) - 1000) < 15
    assert peers.rms_dbfs(heard) > -20
    sent = alice.recorded_wav("enc")
    assert sent is not None and abs(peers.dominant_frequency(sent) - 1000) < 15


def test_baresip_receives_sip_info_dtmf(baresip_factory, sipp_factory):
    """baresip 1.0.0 accepts INFO application/dtmf-relay (it cannot send INFO DTMF: no dtmfmode in 1.0.0)."""
    bob = baresip_factory("bob")
    uac = sipp_factory("selftest/uac_info_dtmf", f"127.0.0.1:{bob.sip_port}", service="bob",
                       keys={"digit": "7"}, duration_ms=300)
    assert uac.wait(20) == 0, uac.describe()
    assert uac.received_responses()[-2:] == [200, 200]
    assert "7" in bob.dtmf_received()


def test_sipp_calls_baresip_with_echo_scenario(baresip_factory, sipp_factory):
    bob = baresip_factory("bob")
    uac = sipp_factory("uac_echo", f"127.0.0.1:{bob.sip_port}", service="bob", duration_ms=1000, rtp_echo=False)
    assert uac.wait(20) == 0, uac.describe()
    assert bob.wait_event("CALL_CLOSED", 5)


def test_kamailio_registrar_and_proxy(kamailio_factory, baresip_factory, sipp_factory, tmp_path):
    # Kamailio's pv_auth_check(..., checks=1) wants the auth user to be the From user: selftest/uac_auth's From
    # user is "selftest".
    kamailio = kamailio_factory({"alice": "alicepw", "bob": "bobpw", "selftest": "stpw"})
    assert kamailio.registered_contacts("bob") == []
    bob = baresip_factory("bob", registrar=kamailio.domain, password="bobpw")
    bob.wait_registered(10)
    contacts = kamailio.registered_contacts("bob")
    assert len(contacts) == 1 and f"127.0.0.1:{bob.sip_port}" in contacts[0]
    # an authenticated call through the proxy (407 then Proxy-Authorization, Record-Route followed) reaches bob
    uac = sipp_factory("selftest/uac_auth", kamailio.domain, service="bob", auth=("selftest", "stpw"),
                       duration_ms=500, extra=["-recv_timeout", "10000"])
    assert uac.wait(30) == 0, uac.describe()
    assert uac.received_responses()[0] == 407
    bob.wait_event("CALL_ESTABLISHED", 5)
    # a wrong password is refused
    bad = baresip_factory("carol", registrar=kamailio.domain, password="nope", auth_user="alice")
    time.sleep(1.0)
    assert not bad.registered()
    assert kamailio.registered_contacts("alice") == []

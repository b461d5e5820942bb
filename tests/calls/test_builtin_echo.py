"""A local leg calls the built-in destinations through the whole SIP path on loopback."""

from __future__ import annotations

import pytest_twisted

from tests.calls.gw import assert_tone, make_config, sleep, start_telephony, wait_for
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.media.analysis import dominant_frequency


@pytest_twisted.ensureDeferred
async def test_echo_returns_the_callers_tone() -> None:
    svc = start_telephony(make_config())
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=1000.0, rate=8000)
        call = svc.manager.place_call(leg, "echo")
        assert 8 <= len(call.session_id) <= 10 and call.session_id.isdigit()
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        await sleep(1.5)
        assert leg.received_rate is not None
        assert_tone(leg.recording(), leg.received_rate, 1000.0, "echo", seconds=1.0)
        assert svc.rtp_pool is not None and len(svc.rtp_pool.in_use) == 2
        call.hangup()
        assert await wait_for(lambda: not svc.manager.builtin_calls, 3)
        assert len(svc.registry) == 0
        assert len(svc.rtp_pool.in_use) == 0
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_tone_plays_1000hz() -> None:
    svc = start_telephony(make_config())
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=None)
        call = svc.manager.place_call(leg, "tone")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        await sleep(1.0)
        pcm = leg.recording()
        assert leg.received_rate is not None and len(pcm) > leg.received_rate // 2
        assert abs(dominant_frequency(pcm[-4000:], leg.received_rate) - 1000.0) < 20
        call.hangup()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_echo_returns_dtmf_by_rfc4733_and_info() -> None:
    svc = start_telephony(make_config())
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=None)
        call = svc.manager.place_call(leg, "echo")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        call.send_dtmf("12#")
        assert await wait_for(lambda: len(leg.dtmf) >= 3, 5)
        assert leg.dtmf == [("1", "rfc4733"), ("2", "rfc4733"), ("#", "rfc4733")]
        # INFO: force it on this call
        from dataclasses import replace

        call.route = replace(call.route, dtmf_mode="info")
        call.send_dtmf("9")
        assert await wait_for(lambda: len(leg.dtmf) >= 4, 5)
        assert leg.dtmf[3] == ("9", "info")
        call.hangup()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_unknown_destination_refused_without_dialplan() -> None:
    from webgate.calls.errors import CallRefused

    svc = start_telephony(make_config())
    try:
        assert svc.manager is not None
        for dest, code in (("+4930123456", "destination_not_allowed"), ("echo\r\nX: y", "invalid_destination"), ("", "invalid_destination")):
            try:
                svc.manager.place_call(LocalLeg(), dest)
            except CallRefused as e:
                assert e.code == code
            else:
                raise AssertionError(f"{dest!r} was not refused")
        assert len(svc.registry) == 0 and svc.rtp_pool is not None and not svc.rtp_pool.in_use
    finally:
        await svc.stopService()


def test_offer_keeps_the_trunk_codec_list() -> None:
    """A leg's preferred codec goes first only if the trunk allows it; others are never offered."""
    from webgate.calls.offers import sdp_codecs

    names = [c.name for c in sdp_codecs(("PCMU", "PCMA"), ["opus", "PCMA"])]
    assert names == ["PCMA", "PCMU"]
    names = [c.name.lower() for c in sdp_codecs(("PCMU", "opus"), ["OPUS"])]
    assert names == ["opus", "pcmu"]

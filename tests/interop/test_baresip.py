"""baresip as the answering phone behind a trunk: audio both ways, DTMF both ways, hang-up from the phone.

The gateway runs in-process (pytest-twisted, asyncio reactor). A LocalLeg with a 1000 Hz tone calls ``bob``
through a trunk + route pointing at a baresip (auto-answer, 440 Hz WAV as its microphone, recording what it
decodes into ``rec/dump-*-dec.wav``). Blocking baresip calls (ctrl_tcp, DTMF key presses) run in a thread
(``deferToThread``) whenever the gateway has to keep serving meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.calls.gw import assert_tone, make_config, sleep, start_telephony, wait_for
from tests.interop import peers
from webgate.calls.call import Call, CallState
from webgate.legs.local import LocalLeg


def trunk_config(bob: peers.Baresip, **trunk: Any) -> Any:
    return make_config(peers.phone_route(bob, **trunk))


async def answered_call(svc: Any, bob: peers.Baresip, leg: LocalLeg) -> Call:
    call = svc.manager.place_call(leg, "bob")
    leg.start_source(call)
    assert await wait_for(lambda: call.state is CallState.ANSWERED, 8), bob.log_tail(2000)
    return call


async def closed(bob: peers.Baresip, timeout: float = 5.0) -> None:
    await deferToThread(bob.wait_event, "CALL_CLOSED", timeout)


async def dtmf_at_bob(bob: peers.Baresip, digits: str, timeout: float = 5.0) -> str:
    """Poll baresip's events/log (0.05 s blocking reads) until ``digits`` arrived or time runs out."""
    got = ""

    def check() -> bool:
        nonlocal got
        got = bob.dtmf_received()
        return got == digits

    await wait_for(check, timeout, 0.1)
    return got


def rtp_events(bob: peers.Baresip) -> str:
    """Digits baresip logged as RFC 4733 telephone-events (one per event end)."""
    return "".join(re.findall(r"received event: '(.)' \(end=1\)", bob.log_text()))


def info_digits(bob: peers.Baresip) -> str:
    """Digits baresip logged from SIP INFO application/dtmf-relay ("call: received DTMF")."""
    return "".join(re.findall(r"received DTMF: '(.)'", bob.log_text()))


def assert_wav_tone(path: Any, hz: float, what: str) -> None:
    assert path is not None, f"{what}: baresip wrote no recording"
    x, rate = peers.read_wav(path)
    assert len(x) > rate, f"{what}: recording shorter than 1 s"
    f = peers.dominant_frequency(x[len(x) // 4 :], rate)  # skip the start (jitter buffer fill)
    assert abs(f - hz) < 20, f"{what}: dominant {f:.1f} Hz, expected {hz} Hz"
    assert peers.rms_dbfs(x[len(x) // 4 :]) > -30, f"{what}: too quiet"


@pytest_twisted.ensureDeferred
async def test_pcmu_audio_both_ways_and_rfc4733_dtmf_both_ways(baresip_factory: Callable[..., peers.Baresip]) -> None:
    bob = baresip_factory("bob", audio_codecs="pcmu")
    svc = start_telephony(trunk_config(bob, dtmf="rfc4733", codecs=["PCMU"]))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = await answered_call(svc, bob, leg)
        assert call.codec is not None and call.codec.upper() == "PCMU"
        await sleep(1.5)
        # gateway -> baresip, RFC 4733
        call.send_dtmf("123")
        assert await dtmf_at_bob(bob, "123") == "123", bob.log_tail(2000)
        assert await wait_for(lambda: rtp_events(bob) == "123", 2), bob.log_tail(2000)
        assert info_digits(bob) == ""  # not as SIP INFO
        # baresip -> gateway (baresip 1.0.0 sends RFC 4733 only); key presses block: run them in a thread
        await deferToThread(bob.send_dtmf, "45#")
        assert await wait_for(lambda: len(leg.dtmf) >= 3, 3), leg.dtmf
        assert leg.dtmf == [("4", "rfc4733"), ("5", "rfc4733"), ("#", "rfc4733")]
        await sleep(0.5)
        assert_tone(leg.recording(), leg.received_rate or 8000, 440.0, "gateway heard from baresip", seconds=1.0)
        call.hangup()
        await closed(bob)
        assert_wav_tone(bob.recorded_wav("dec"), 1000.0, "baresip heard from the gateway")
        assert await wait_for(lambda: len(svc.registry) == 0 and not svc.rtp_pool.in_use, 3)
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_g722_audio_both_ways(baresip_factory: Callable[..., peers.Baresip]) -> None:
    bob = baresip_factory("bob", audio_codecs="g722")
    svc = start_telephony(trunk_config(bob, codecs=["G722"]))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = await answered_call(svc, bob, leg)
        assert call.codec is not None and call.codec.upper() == "G722", call.codec
        await sleep(3.0)
        assert_tone(leg.recording(), leg.received_rate or 8000, 440.0, "gateway heard from baresip (G.722)", seconds=1.0)
        call.hangup()
        await closed(bob)
        wav = bob.recorded_wav("dec")
        assert wav is not None and peers.read_wav(wav)[1] == 16000
        assert_wav_tone(wav, 1000.0, "baresip heard from the gateway (G.722)")
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_info_dtmf_reaches_baresip_and_its_hangup_ends_the_call(baresip_factory: Callable[..., peers.Baresip]) -> None:
    bob = baresip_factory("bob", audio_codecs="pcmu")
    svc = start_telephony(trunk_config(bob, dtmf="info"))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = await answered_call(svc, bob, leg)
        await sleep(0.5)
        call.send_dtmf("79*")
        assert await dtmf_at_bob(bob, "79*") == "79*", bob.log_tail(2000)
        assert await wait_for(lambda: info_digits(bob) == "79*", 2), bob.log_tail(2000)
        assert rtp_events(bob) == ""  # not as RFC 4733
        # baresip hangs up: the gateway sees a BYE and ends the call with remote_hangup
        await deferToThread(bob.hangup)
        assert await wait_for(lambda: leg.ended is not None, 5), bob.log_tail(2000)
        assert leg.ended == ("remote_hangup", None)
        assert call.state is CallState.ENDED
        assert await wait_for(lambda: len(svc.registry) == 0 and not svc.rtp_pool.in_use, 3)
    finally:
        await svc.stopService()

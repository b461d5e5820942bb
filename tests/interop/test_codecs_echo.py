"""SIP codecs beyond G.711 against the built-in echo and tone (the gateway's own UAS, over real
SIP and RTP on loopback): GSM and Speex narrowband/wideband, encoded by libgsm/libspeex and
decoded by FFmpeg on our side, both ways through the whole SIP path.

The third-party checks are elsewhere: GSM with baresip (test_codecs_baresip.py), Speex with
linphonec (test_codecs_linphone.py; baresip 1.0.0 on Debian 12 has no Speex codec module).
"""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.calls.gw import assert_tone, make_config, sleep, start_telephony, wait_for
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.proto import sdp


@pytest.mark.parametrize(
    "name, codec, clock, rate",
    [
        ("GSM", "GSM", 8000, 8000),
        ("speex", "speex", 8000, 8000),
        ("speex/16000", "speex", 16000, 16000),
    ],
)
@pytest_twisted.ensureDeferred
async def test_echo_in_codec(name: str, codec: str, clock: int, rate: int) -> None:
    """A trunk offering only ``name`` toward the echo: the echo answers it, the tone comes back."""
    svc = start_telephony(make_config())
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=700.0, rate=rate)
        call = svc.manager.place_call(leg, "echo", prefer_codecs=[name])
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        # the offer leads with the codec, the echo took the caller's first choice
        offered = call.offer_sdp.media[0].codecs()
        assert offered[0].name == codec and offered[0].clock_rate == clock
        assert call.codec == codec and call.stream is not None and call.stream.media is not None
        assert call.stream.media.codec.clock_rate == clock
        assert call.media_path == "frame"  # a LocalLeg relays nothing undecoded
        await sleep(2.0)
        assert leg.received_rate == rate
        assert_tone(leg.recording(), rate, 700.0, f"echo in {name}", seconds=1.0)
        stats = call.stream.stats
        print(f"\n[{name}] {stats.packets_sent} sent, {stats.packets_received} received, "
              f"payload {len(leg.recording())} samples at {rate} Hz")
        assert stats.packets_received > 50 and stats.bad_packets == 0
        call.hangup()
        assert await wait_for(lambda: not svc.manager.builtin_calls and len(svc.registry) == 0, 3)
    finally:
        await svc.stopService()


@pytest.mark.parametrize("name, rate", [("GSM", 8000), ("speex/16000", 16000)])
@pytest_twisted.ensureDeferred
async def test_tone_in_codec(name: str, rate: int) -> None:
    """The built-in tone encodes its 1000 Hz in GSM / Speex (our encoders, FFmpeg's decoders)."""
    svc = start_telephony(make_config())
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=None)
        call = svc.manager.place_call(leg, "tone", prefer_codecs=[name])
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        await sleep(1.5)
        assert leg.received_rate == rate
        assert_tone(leg.recording(), rate, 1000.0, f"tone in {name}", seconds=0.8)
        call.hangup()
    finally:
        await svc.stopService()


def test_builtin_answer_follows_the_offer_order() -> None:
    """The echo's answer takes the offerer's first codec it supports, not a fixed preference."""
    from webgate.calls.offers import BUILTIN_CODECS, in_offer_order as _in_offer_order

    offer = sdp.build_offer([sdp.GSM, sdp.OPUS, sdp.PCMU, sdp.TELEPHONE_EVENT], "127.0.0.1", 4000, 1)
    order = _in_offer_order(offer, list(BUILTIN_CODECS))
    assert [c.name for c in order[:3]] == ["GSM", "opus", "PCMU"]
    _, nm = sdp.negotiate_answer(offer, order, "127.0.0.1", 5000)
    assert nm.codec.name == "GSM" and nm.codec.payload_type == 3
    # a codec the offer lacks is never chosen; an offer with nothing we know is refused (488)
    only = sdp.build_offer([sdp.Codec("G728", 8000, payload_type=15)], "127.0.0.1", 4000, 1)
    with pytest.raises(Exception) as e:
        sdp.negotiate_answer(only, _in_offer_order(only, list(BUILTIN_CODECS)), "127.0.0.1", 5000)
    assert getattr(e.value, "status_hint", None) == 488

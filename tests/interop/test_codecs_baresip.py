"""Codecs against baresip as the phone behind a trunk, audio measured on both sides:

- Opus pass-through: an aiortc client offering only Opus calls baresip (Opus) through a trunk
  that offers Opus; payloads are relayed untouched both ways (packet path). baresip's recording
  must hold the browser's tone and the browser must hear baresip's 440 Hz.
- GSM: a LocalLeg calls baresip (gsm.so) through a trunk offering only GSM; libgsm encodes on our
  side, baresip's libgsm decodes, and back.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytest_twisted

from tests.adapters.webrtc_client import (
    Browser,
    Gateway,
    close_all,
    complete_call,
    connect,
)
from tests.calls.gw import assert_tone, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_baresip import answered_call, closed, trunk_config
from webgate.legs.local import LocalLeg
from webgate.media.analysis import dominant_frequency

PHONE_HZ = 440.0  # baresip's microphone: peers.Baresip's default WAV


def baresip_with(factory: Callable[..., peers.Baresip], audio_codecs: str, *modules: str) -> peers.Baresip:
    """A baresip whose config also loads ``modules`` (e.g. gsm.so, not in the default config)."""
    bob = factory("bob", audio_codecs=audio_codecs, start=False)
    config = bob.dir / "config"
    text = config.read_text()
    extra = "".join(f"module\t\t\t{m}\n" for m in modules)
    config.write_text(text.replace("module\t\t\tg711.so\n", "module\t\t\tg711.so\n" + extra, 1))
    bob.start()
    return bob


def wav_tone(bob: peers.Baresip, kind: str = "dec") -> tuple[float, float, int]:
    path = bob.recorded_wav(kind)
    assert path is not None, f"baresip wrote no {kind} recording:\n{bob.log_tail(2000)}"
    x, rate = peers.read_wav(path)
    assert len(x) > rate, f"baresip's {kind} recording is shorter than 1 s"
    tail = x[len(x) // 4 :]  # skip the jitter buffer's start
    return peers.dominant_frequency(tail, rate), peers.rms_dbfs(tail), rate


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_opus_browser_to_baresip_passes_through(baresip_factory: Callable[..., peers.Baresip]) -> None:
    bob = baresip_factory("bob", audio_codecs="opus")
    gw = Gateway(peers.phone_route(bob, codecs=["opus", "PCMU"]))
    browser = Browser(tone_hz=900.0)  # aiortc's default offer (Opus first, then G.722, G.711)
    ws = None
    try:
        ws = await connect(gw.url)
        assert (await complete_call(ws, browser, {"type": "call", "destination": "bob"}, timeout=10))["codec"] == "opus"
        (call,) = list(gw.svc.registry)
        leg = call.leg
        assert call.codec == "opus" and call.media_path == "packet" and leg.stats.transcoded is False
        assert gw.manager.counters["packet_path"] == 1 and gw.manager.counters["frame_path"] == 0
        heard, level = await browser.heard(seconds=4, timeout=12, tail_s=2)
        assert leg.out_track is not None
        relayed_in, relayed_out = leg.stats.packets_relayed, leg.out_track.payloads_sent
        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        await closed(bob)
        got, got_level, rate = wav_tone(bob)
        print(f"\n[opus pass-through to baresip] browser heard {heard:.1f} Hz {level:.1f} dBFS; "
              f"baresip heard {got:.1f} Hz {got_level:.1f} dBFS at {rate} Hz; "
              f"relayed {relayed_in} browser->SIP, {relayed_out} SIP->browser")
        assert abs(heard - PHONE_HZ) < 15 and level > -30, (heard, level)
        assert abs(got - 900.0) < 15 and got_level > -30, (got, got_level)
        assert relayed_in > 150 and relayed_out > 150
        # aiortc decoded nothing from the browser: every packet taken was relayed (both counters read
        # at the same moment: packets may still arrive between the hangup and this line)
        assert leg.stats.frames_from_browser == leg.stats.packets_relayed
        assert leg.stats.bad_packets == 0
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.svc.rtp_pool.in_use, 5)
    finally:
        await close_all(gw, browser, ws)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_gsm_audio_both_ways(baresip_factory: Callable[..., peers.Baresip]) -> None:
    bob = baresip_with(baresip_factory, "gsm", "gsm.so")
    svc = start_telephony(trunk_config(bob, codecs=["GSM"]))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = await answered_call(svc, bob, leg)
        offered = [c.name for c in call.offer_sdp.media[0].codecs() if not c.is_telephone_event]
        assert offered == ["GSM"]
        assert call.codec == "GSM" and call.stream is not None and call.stream.media is not None
        assert call.stream.media.codec.payload_type == 3 and call.media_path == "frame"
        await sleep(3.0)
        stats = call.stream.stats
        assert stats.packets_received > 100 and stats.bad_packets == 0
        assert_tone(leg.recording(), leg.received_rate or 8000, PHONE_HZ, "gateway heard from baresip (GSM)", seconds=1.0)
        heard = dominant_frequency(leg.recording()[-8000:], leg.received_rate or 8000)
        call.hangup()
        await closed(bob)
        got, got_level, rate = wav_tone(bob)
        print(f"\n[GSM] gateway heard {heard:.1f} Hz; baresip heard {got:.1f} Hz {got_level:.1f} dBFS at {rate} Hz; "
              f"{stats.packets_sent} packets sent, {stats.packets_received} received")
        assert abs(got - 1000.0) < 20 and got_level > -30, (got, got_level)
        assert "gsm" in bob.log_text().lower()
    finally:
        await svc.stopService()

"""Opus pass-through WebRTC <-> SIP: an aiortc client offering only Opus calls the built-in echo,
which answers Opus; the browser's Opus payloads go to SIP untouched and come back untouched.
The tone is measured where the browser decodes it (the only decoder on the path)."""

from __future__ import annotations

import av
import pytest
import pytest_twisted

from tests.adapters.webrtc_client import (
    Browser,
    Gateway,
    close_all,
    complete_call,
    connect,
)
from tests.calls.gw import wait_for
from webgate.adapters import aio
from webgate.adapters.webrtc import SipAudioTrack
from webgate.legs.webrtc_media import packet_samples
from webgate.media.codecs import OPUS_SILENCE, create_decoder, opus_packet_samples
from webgate.media.tones import ToneGenerator
from webgate.ops.metrics import GatewayMetrics
from webgate.proto.errors import RemoteProtocolError


@pytest_twisted.ensureDeferred
async def test_opus_browser_to_echo_is_relayed_untouched() -> None:
    gw = Gateway()
    browser = Browser(tone_hz=900.0, codecs=["opus"])
    ws = None
    metrics = GatewayMetrics(gw.svc)  # /metrics' figures, fed as the gateway feeds them
    gw.manager.observers.append(metrics)
    try:
        ws = await connect(gw.url)
        assert (await complete_call(ws, browser, {"type": "call", "destination": "echo"}))["codec"] == "opus"
        (call,) = list(gw.svc.registry)
        leg = call.leg
        # the SIP offer led with Opus (with in-band FEC), the echo answered it: nothing to transcode
        first = call.offer_sdp.media[0].codecs()[0]
        assert first.name == "opus" and first.clock_rate == 48000 and "useinbandfec=1" in (first.fmtp or "")
        assert call.codec == "opus" and call.media_path == "packet" and leg.stats.transcoded is False
        assert gw.manager.counters["packet_path"] == 1 and gw.manager.counters["frame_path"] == 0
        answered = {t: metrics.registry.get_sample_value("webgate_calls_answered_total", {"transcoded": t}) for t in ("true", "false")}
        assert answered == {"true": None, "false": 1.0}, answered  # counted as passed through
        assert metrics.registry.get_sample_value("webgate_active_calls_transcoded", {"transcoded": "false"}) == 1.0
        measured, level = await browser.heard(seconds=3, timeout=10)
        assert browser.rate == 48000
        stream = call.stream
        assert stream is not None and stream.sender is not None
        print(f"\n[opus pass-through] sent 900 Hz, echo measured {measured:.1f} Hz, {level:.1f} dBFS; "
              f"relayed {leg.stats.packets_relayed} browser->SIP, {leg.out_track.payloads_sent} SIP->browser, "
              f"SIP RTP clock {stream.sender.clock_rate}")
        assert abs(measured - 900.0) < 15 and level > -30
        # every browser packet went to SIP undecoded (aiortc's decoder got none of them) and the
        # browser got the echoed payloads, not frames re-encoded by aiortc
        assert leg.stats.packets_relayed > 100 and leg.stats.frames_from_browser == leg.stats.packets_relayed
        assert leg.out_track is not None and leg.out_track.packet_codec == "OPUS" and leg.out_track.payloads_sent > 100
        assert leg.stats.bad_packets == 0
        # the SIP side runs at Opus's 48 kHz RTP clock, 960 ticks per 20 ms packet
        assert stream.sender.clock_rate == 48000 and stream.stats.bad_packets == 0
        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.svc.rtp_pool.in_use, 5)
    finally:
        await close_all(gw, browser, ws)


def test_opus_packet_durations_from_the_toc_byte() -> None:
    # real packets from libopus at 10, 20, 40 and 60 ms
    for ms in (10, 20, 40, 60):
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate, ctx.layout, ctx.format = 48000, "mono", "s16"
        ctx.options = {"application": "voip", "frame_duration": str(ms)}
        ctx.open()
        gen = ToneGenerator(440.0, 48000, 0.3)
        packets: list[bytes] = []
        pts = 0
        while len(packets) < 3:
            frame = av.AudioFrame.from_ndarray(gen.generate(ctx.frame_size).reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, pts
            pts += ctx.frame_size
            packets += [bytes(p) for p in ctx.encode(frame)]
        assert {opus_packet_samples(p) for p in packets} == {48 * ms}, ms
    assert opus_packet_samples(OPUS_SILENCE) == 960
    dec = create_decoder("opus", 48000, 2)
    assert not dec.decode(OPUS_SILENCE).any()  # the filler frame really is silence
    # hand-made TOCs: code 1/2 = two frames, code 3 = count in byte 2
    assert opus_packet_samples(bytes([(1 << 3) | 1, 0])) == 2 * 960  # SILK NB 20 ms x2
    assert opus_packet_samples(bytes([(31 << 3) | 3, 3])) == 3 * 960  # CELT FB 20 ms x3
    for bad in (b"", bytes([3]), bytes([(31 << 3) | 3, 0]), bytes([(3 << 3) | 3, 3])):  # 3 x 60 ms > 120 ms
        with pytest.raises(RemoteProtocolError):
            opus_packet_samples(bad)
    assert packet_samples("PCMU", b"\xff" * 160) == 160


@pytest_twisted.ensureDeferred
async def test_sip_audio_track_paces_opus_payloads_by_their_duration() -> None:
    track = SipAudioTrack(48000)
    track.packet_codec = "OPUS"
    track.push_payload(b"\x08" + b"\x00" * 20, 1920)  # a 40 ms packet (SILK NB 40 ms)
    first = await aio.as_deferred(track.recv())
    second = await aio.as_deferred(track.recv())  # nothing queued: the silent filler
    third = await aio.as_deferred(track.recv())
    assert bytes(first) == b"\x08" + b"\x00" * 20 and first.pts == 0
    assert bytes(second) == OPUS_SILENCE and second.pts == 1920
    assert third.pts == 1920 + 960
    assert track.payloads_sent == 1 and track.frames_silent == 2
    track.stop()

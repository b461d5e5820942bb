"""An aiortc client offering audio + video + a data channel: the call works, audio still arrives
both ways, the data channel opens and stays open, its messages reach no watcher and are dropped
cleanly, and the video section is answered recvonly (received for watchers, nothing decoded)."""

from __future__ import annotations

import pytest_twisted

from tests.adapters.webrtc_client import (
    Browser,
    Gateway,
    close_all,
    complete_call,
    connect,
)
from tests.calls.gw import sleep, wait_for
from webgate.legs.webrtc import WebRtcSettings


@pytest_twisted.ensureDeferred
async def test_audio_video_and_data_channel_offer() -> None:
    gw = Gateway()
    browser = Browser(tone_hz=800.0, video=True, datachannel="chat")
    ws = None
    try:
        ws = await connect(gw.url)
        await complete_call(ws, browser, {"type": "call", "destination": "echo"})
        offer = browser.pc.localDescription.sdp
        assert "m=video" in offer and "m=application" in offer
        (call,) = list(gw.svc.registry)
        leg = call.leg
        # the channel reaches "open" on both sides and stays open while messages are dropped
        assert browser.channel is not None
        assert await wait_for(lambda: browser.channel.readyState == "open", 8)
        for i in range(5):
            browser.channel.send(f"hello {i}")
        browser.channel.send(b"\x00" * 1000)
        assert await wait_for(lambda: leg.stats.data_messages_dropped == 6, 5), leg.stats
        assert leg.stats.data_channels == 1
        # the video section is answered recvonly (for watchers, issue 14): read off the socket,
        # none decoded (tests/security/test_webrtc_video.py, tests/adapters/test_webrtc_watch.py)
        assert leg.stats.video_tracks == 1
        video = browser.pc.getTransceivers()[1]
        assert video.kind == "video" and video.currentDirection == "sendonly"
        # audio still works both ways through the echo (G.711 packet path)
        measured, level = await browser.heard()
        print(f"\necho with video + data channel: {measured:.1f} Hz, {level:.1f} dBFS, path {call.media_path}")
        assert abs(measured - 800.0) < 15 and level > -30
        assert call.media_path == "packet" and leg.stats.packets_relayed > 50
        await sleep(0.5)
        assert browser.channel.readyState == "open" and not call.ended
        assert leg.stats.video_frames_decoded == 0
        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.svc.rtp_pool.in_use, 5)
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_g722_offer_takes_the_frame_path() -> None:
    # (an Opus-only offer is relayed untouched since the echo answers Opus: test_webrtc_opus_passthrough.py)
    gw = Gateway()
    browser = Browser(tone_hz=600.0, codecs=["G722"])
    ws = None
    try:
        ws = await connect(gw.url)
        assert (await complete_call(ws, browser, {"type": "call", "destination": "echo"}))["codec"] == "G722"
        (call,) = list(gw.svc.registry)
        assert call.codec == "G722" and call.media_path == "frame" and call.leg.stats.transcoded is True
        measured, _level = await browser.heard()
        assert abs(measured - 600.0) < 15
        assert call.leg.stats.packets_relayed == 0
        assert gw.manager.counters["frame_path"] == 1 and gw.manager.counters["packet_path"] == 0
    finally:
        await close_all(gw, browser, ws)


def test_settings_from_config_carry_ice_servers() -> None:
    from tests.calls.gw import make_config

    cfg = make_config({"webrtc": {"ice_servers": [{"urls": "stun:127.0.0.1:3478"}, {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "c"}], "ice_timeout_s": 4}})
    st = WebRtcSettings.from_config(cfg)
    assert st.ice_timeout_s == 4
    assert st.ice_servers == ({"urls": ["stun:127.0.0.1:3478"]}, {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "c"})

"""``[video] transcode = true`` with real peers (issue 14): ffmpeg publishes Sorenson H.263
(``-c:v flv1``) of one colour with audio to ``call/echo``; an aiortc watcher of that call over
the WebSocket is answered VP8, and decodes frames of the published colour (a second run with
another colour proves it is the caller's). The gateway decodes nothing before the watcher joins
and stops when it leaves; without ``transcode`` the same watcher gets ``codec: null``.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import Process, ffmpeg
from tests.adapters.test_webrtc_watch import (
    COLOURS,
    KEY,
    Watcher,
    agent_token,
    close_to,
)
from tests.adapters.webrtc_client import Gateway
from tests.calls.gw import reactor, wait_for
from webgate.adapters.rtmp import RtmpFactory
from webgate.legs.hub import MediaHub

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1


class WsAndRtmp(Gateway):
    """The WebSocket gateway of tests/adapters/webrtc_client.py plus an RTMP listener."""

    def __init__(self, extra: dict[str, Any]) -> None:
        super().__init__(extra)
        self.factory = RtmpFactory(self.svc.manager, self.svc.config.rtmp, reactor, video_config=self.svc.config.video)
        self.rtmp = reactor.listenTCP(0, self.factory, interface="127.0.0.1")

    def rtmp_url(self, path: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp.getHost().port}/{path}"

    async def stop(self) -> None:
        self.factory.close_all()
        await self.rtmp.stopListening()
        await super().stop()


def _publish(gw: WsAndRtmp, colour: str, seconds: float = 20.0) -> Process:
    return ffmpeg(
        "-re",
        "-f", "lavfi", "-i", f"color=c={colour}:size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=800:sample_rate=8000",
        "-t", f"{seconds:g}",
        "-c:v", "flv1", "-g", "25", "-b:v", "500k",
        "-c:a", "pcm_mulaw", "-ar", "8000",
        "-f", "flv", gw.rtmp_url("call/echo"),
        timeout=seconds + 30,
    )


async def _sorenson_call(gw: WsAndRtmp) -> Any:
    def ready() -> bool:
        return any(isinstance(c.hub, MediaHub) and c.hub.stats.codec == "H263" and c.hub.stats.packets_in > 25 for c in gw.svc.registry)

    assert await wait_for(ready, 15), [getattr(c.hub, "stats", None) for c in gw.svc.registry]
    return next(iter(gw.svc.registry))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("colour", ["red", "blue"])
@pytest_twisted.ensureDeferred
async def test_a_webrtc_watcher_gets_sorenson_as_vp8(colour: str) -> None:
    gw = WsAndRtmp({"tokens": {"key": KEY}, "video": {"transcode": True}})
    pub = _publish(gw, colour)
    watcher = Watcher()
    try:
        call = await _sorenson_call(gw)
        assert call.hub._vp8_feed is None  # nobody watches over WebRTC: nothing decoded
        got = await watcher.watch(gw.url, call.session_id, agent_token())
        assert got["type"] == "watching" and got["video"]["codec"] == "VP8", got
        answer = watcher.pc.remoteDescription.sdp
        assert "VP8/90000" in answer and "a=sendonly" in answer[answer.index("m=video"):]
        assert await wait_for(lambda: watcher.frames > 20, 15), (watcher.frames, call.hub.snapshot())
        assert await wait_for(lambda: close_to(watcher.rgb, COLOURS[colour]), 5), watcher.rgb
        other = next(c for c in COLOURS if c != colour)
        assert not close_to(watcher.rgb, COLOURS[other])
        assert watcher.size == (320, 240)
        feed = call.hub._vp8_feed
        assert feed is not None and feed.coder.frames_out >= watcher.frames and feed.coder.errors == 0
        print(f"\n[{colour}] watcher decoded {watcher.frames} VP8 frames re-encoded from Sorenson, mean RGB "
              f"{[round(v) for v in watcher.rgb or []]}")
        assert watcher.ws is not None
        watcher.ws.send({"type": "hangup"})
        await watcher.ws.next("ended")
        assert await wait_for(lambda: call.hub._vp8_feed is None, 5)  # no WebRTC watcher: no decoding
    finally:
        await watcher.close()
        pub.kill()
        await pub.wait()
        await gw.stop()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_without_transcode_sorenson_is_data_only_for_a_webrtc_watcher() -> None:
    gw = WsAndRtmp({"tokens": {"key": KEY}})
    pub = _publish(gw, "red", seconds=10)
    watcher = Watcher()
    try:
        call = await _sorenson_call(gw)
        got = await watcher.watch(gw.url, call.session_id, agent_token())
        assert got["type"] == "watching" and got["video"]["codec"] is None, got
        assert call.hub._vp8_feed is None
    finally:
        await watcher.close()
        pub.kill()
        await pub.wait()
        await gw.stop()

"""Browser video is not decoded (issue 12): the gateway receives it for watchers (issue 14: the
section is answered ``recvonly``), reads it off the socket and never starts aiortc's video
receiver, so video received costs no decoding. Measured three ways: aiortc's own decoder factory (spied on for the whole process),
the leg's ``video_frames_decoded`` and ``webgate_webrtc_video_frames_decoded_total`` in /metrics.
Audio still echoes."""

from __future__ import annotations

from typing import Any

import aiortc.rtcrtpreceiver as aiortc_receiver
import pytest
import pytest_twisted

from tests.adapters.webrtc_client import Browser, Gateway, close_all, connect
from tests.calls.gw import sleep, wait_for
from webgate.ops.metrics import GatewayMetrics

TONE_HZ = 1000.0


@pytest.fixture
def video_decoding(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts, across the process, every video decoder aiortc creates and every frame it decodes."""
    seen = {"decoders": 0, "frames": 0}
    real = aiortc_receiver.get_decoder

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def decode(self, encoded: Any) -> Any:
            frames = self.inner.decode(encoded)
            seen["frames"] += len(frames)
            return frames

    def get_decoder(codec: Any) -> Any:
        decoder = real(codec)
        if codec.mimeType.lower().startswith("video/"):
            seen["decoders"] += 1
            return Counting(decoder)
        return decoder

    monkeypatch.setattr(aiortc_receiver, "get_decoder", get_decoder)
    return seen


def _metric(metrics: GatewayMetrics, name: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest_twisted.ensureDeferred
async def test_video_from_a_peer_that_sends_it_anyway_is_never_decoded(video_decoding: dict[str, int]) -> None:
    gw = Gateway()
    metrics = GatewayMetrics(gw.svc)
    gw.manager.observers.append(metrics)
    browser = Browser(tone_hz=TONE_HZ, video=True)  # aiortc's test pattern, VP8
    ws = None
    try:
        ws = await connect(gw.url)
        offer = await browser.offer()
        assert "m=video" in offer
        ws.send({"type": "call", "destination": "echo", "sdp": offer})
        answer = (await ws.next("answer"))["sdp"]
        video_answer = answer[answer.index("m=video") :]
        # a hostile or broken peer: it ignores the answer and sends its video all the same
        await browser.answer(answer.replace("a=inactive", "a=recvonly"))
        await ws.next("progress", state="answered")
        (call,) = list(gw.svc.registry)
        sender = next(t.sender for t in browser.pc.getTransceivers() if t.kind == "video")

        # audio still echoes
        hz, level = await browser.heard(seconds=2, timeout=8)
        print(f"\necho with video sent: {hz:.1f} Hz, {level:.1f} dBFS")
        assert abs(hz - TONE_HZ) < 15 and level > -30

        # ... while the video went out: tens of RTP packets reached the gateway, none was decoded
        async def video_packets() -> int:
            stats = await _as_deferred(sender.getStats())
            return sum(int(getattr(s, "packetsSent", 0)) for s in stats.values() if getattr(s, "type", "") == "outbound-rtp")

        assert await wait_for(lambda: browser.pc.connectionState == "connected", 5)
        await sleep(1.0)
        sent = await video_packets()
        print(f"video RTP packets sent to the gateway: {sent}")
        assert sent > 30
        assert video_decoding == {"decoders": 0, "frames": 0}
        # received for watchers (answered recvonly) and read off the socket: no receiver started
        assert "a=recvonly" in video_answer, video_answer
        assert call.leg.stats.video_packets > 30
        assert call.leg.stats.video_tracks == 1 and call.leg.stats.video_frames_decoded == 0
        assert _metric(metrics, "webgate_webrtc_video_frames_decoded_total") == 0

        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert _metric(metrics, "webgate_webrtc_video_frames_decoded_total") == 0
        assert video_decoding == {"decoders": 0, "frames": 0}
    finally:
        await close_all(gw, browser, ws)


async def _as_deferred(coro: Any) -> Any:
    from webgate.adapters import aio

    return await aio.as_deferred(coro)

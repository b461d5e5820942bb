"""Supervisor audio over WebRTC (issue 14, silent monitoring), aiortc in-process on every side.

A caller sends red video and a 660 Hz tone to the built-in ``tone`` destination, which answers
with its own tone (``[builtin] tone_hz``, 1000 Hz). An agent watches (video and data only), then a
two supervisors watch at the same time with ``audio: true``: each answer has one audio codec
(Opus for one, PCMU for the other, as their offers prefer), and what each decodes holds both
parties' tones, each a large share of the energy. The agent's watch costs no audio work (no mixer
before a supervisor), one mixer serves both, it stops when the last supervisor leaves, and the
call's own audio is unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytest_twisted
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError

from tests.adapters.test_webrtc_watch import (
    COLOURS,
    KEY,
    Caller,
    Watcher,
    agent_token,
    close_to,
)
from tests.adapters.webrtc_client import Gateway, close_all, complete_call, connect
from tests.calls.gw import wait_for
from tests.legs.test_monitor import band_share
from webgate.adapters import aio
from webgate.legs.monitor import CallMonitor

CALLER_HZ = 660.0
FAR_END_HZ = 1000.0  # [builtin] tone_hz's default


class Supervisor(Watcher):
    """A watcher that also receives audio (a recvonly audio section, ``audio: true``)."""

    def __init__(self, codec: str) -> None:
        super().__init__()
        tr = self.pc.addTransceiver("audio", direction="recvonly")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        tr.setCodecPreferences([c for c in caps if c.mimeType.lower() == "audio/" + codec.lower()])
        self.audio: list[np.ndarray] = []
        self.rate: int | None = None
        self.audio_task: Any = None

    def _on_track(self, track: Any) -> None:
        if track.kind != "audio":
            super()._on_track(track)
            return

        async def consume() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                arr = frame.to_ndarray().reshape(-1)
                ch = len(frame.layout.channels)
                if ch > 1:
                    arr = arr.reshape(-1, ch)[:, 0]
                self.rate = frame.sample_rate
                self.audio.append(arr.astype(np.int16))

        self.audio_task = aio.spawn(consume(), "test supervisor audio")

    def recording(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)

    async def close(self) -> None:
        aio.cancel(self.audio_task)
        await super().close()


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_supervisors_hear_both_parties_while_an_agent_watches() -> None:
    gw = Gateway({"tokens": {"key": KEY}})
    caller = Caller(COLOURS["red"], tone_hz=CALLER_HZ)
    agent = Watcher()
    sups = {codec: Supervisor(codec) for codec in ("opus", "PCMU")}
    ws = None
    try:
        ws = await connect(gw.url)
        await complete_call(ws, caller, {"type": "call", "destination": "tone"})
        (call,) = list(gw.svc.registry)
        assert await wait_for(lambda: call.hub.stats.codec == "VP8", 8), call.hub.stats

        got = await agent.watch(gw.url, call.session_id, agent_token(sub="agent"))
        assert got["type"] == "watching", got
        assert call.hub.monitor is None and call.monitor is None  # a video/data watcher: no audio work

        for codec, sup in sups.items():  # two supervisors at once (Opus and PCMU), with the agent
            got = await sup.watch(gw.url, call.session_id, agent_token(sub=f"supervisor-{codec}"), audio=True)
            assert got["type"] == "watching", got
            answer = sup.pc.remoteDescription.sdp
            audio_answer = answer[answer.index("m=audio"):].split("\nm=")[0]
            rtpmaps = [line for line in audio_answer.splitlines() if line.startswith("a=rtpmap:")]
            assert "a=sendonly" in audio_answer and len(rtpmaps) == 1 and codec.lower() in rtpmaps[0].lower(), audio_answer
        monitor = call.hub.monitor
        assert isinstance(monitor, CallMonitor) and call.monitor is monitor  # one mixer for both

        for codec, sup in sups.items():
            assert await wait_for(lambda sup=sup: sup.rate is not None and len(sup.recording()) > 3.0 * sup.rate, 12), len(sup.recording())
            assert sup.rate == (48000 if codec == "opus" else 8000)
            tail = sup.recording()[-int(1.5 * sup.rate):]
            caller_share = band_share(tail, sup.rate, CALLER_HZ)
            far_share = band_share(tail, sup.rate, FAR_END_HZ)
            print(f"\n[{codec}] supervisor at {sup.rate} Hz: {CALLER_HZ:g} Hz {caller_share:.2f}, {FAR_END_HZ:g} Hz {far_share:.2f} of the energy")
            assert caller_share > 0.15 and far_share > 0.15 and caller_share + far_share > 0.6, (caller_share, far_share)
            # a supervisor watches the video too
            assert await wait_for(lambda sup=sup: sup.frames > 5 and close_to(sup.rgb, COLOURS["red"]), 10), (sup.frames, sup.rgb)
        assert await wait_for(lambda: agent.frames > 5, 5)
        assert len(call.hub.watchers) == 3 and call.hub.snapshot()["video"]["audio_watchers"] == 2

        # the call's own audio is what it was: the caller hears the far end's tone
        hz, level = await caller.heard(seconds=1.5, timeout=8)
        assert abs(hz - FAR_END_HZ) < 15 and level > -30, (hz, level)

        # one supervisor leaves: the mixer goes on for the other; the last one leaves: it stops
        for n, sup in enumerate(sups.values()):
            assert sup.ws is not None
            sup.ws.send({"type": "hangup"})
            assert (await sup.ws.next("ended"))["cause"] == "client_hangup"
            if n == 0:
                assert await wait_for(lambda: len(call.hub.watchers) == 2, 5)
                assert call.hub.monitor is monitor and call.monitor is monitor
        assert await wait_for(lambda: call.hub.monitor is None and call.monitor is None, 5)
        assert len(call.hub.watchers) == 1 and not call.ended
    finally:
        for sup in sups.values():
            await sup.close()
        await agent.close()
        await close_all(gw, caller, ws)

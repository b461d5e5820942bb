"""Test helpers: a gateway with ``/ws`` on 127.0.0.1:0, a WebSocket signalling client, and an
aiortc browser stand-in that sends a tone and records what comes back."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from typing import Any

import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from av import AudioFrame
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.websocket import WebSocketClientEndpoint

from tests.calls.gw import make_config, reactor, sleep, start_telephony, wait_for
from webgate.adapters import aio
from webgate.legs.webrtc import WebRtcSettings
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.tones import ToneGenerator
from webgate.web.static import add_static
from webgate.web.ws import make_ws_resource


class Gateway:
    """TelephonyService + a Site with /ws, / and /html5_client/ on 127.0.0.1:0."""

    def __init__(self, extra: dict[str, Any] | None = None, settings: WebRtcSettings | None = None) -> None:
        self.config = make_config(extra)
        self.svc = start_telephony(self.config)
        root = Resource()
        self.ws = make_ws_resource(self.svc, self.config, reactor, settings=settings or WebRtcSettings.from_config(self.config))
        root.putChild(b"ws", self.ws)
        add_static(root)
        self.site = Site(root)
        self.site.noisy = False
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.http = f"http://127.0.0.1:{self.port.getHost().port}"
        self.url = f"ws://127.0.0.1:{self.port.getHost().port}/ws"

    @property
    def manager(self) -> Any:
        return self.svc.manager

    async def stop(self) -> None:
        for conn in list(self.ws.signalling.connections):  # type: ignore[attr-defined]
            conn.close()
        await self.port.stopListening()
        await self.svc.stopService()
        await sleep(0.1)


class WsClient:
    """A WebSocket signalling client (Twisted's own websocket client)."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.messages: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.closed: Deferred[None] = Deferred()
        self.is_closed = False

    # WebSocketProtocol
    def negotiationStarted(self, transport: Any) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.raw.append(message)
        self.messages.append(json.loads(message))

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        self.is_closed = True
        self.closed.callback(None)

    # API
    def send(self, msg: dict[str, Any] | str) -> None:
        self.transport.sendTextMessage(msg if isinstance(msg, str) else json.dumps(msg))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def next(self, kind: str, timeout: float = 5.0, after: int = 0, **match: Any) -> dict[str, Any]:
        """The first message of ``kind`` at index >= ``after`` matching ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages[after:]:
                if m.get("type") == kind and all(m.get(k) == v for k, v in match.items()):
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind!r} {match or ''} within {timeout} s; got {self.messages}")
            await sleep(0.02)

    def close(self) -> None:
        if not self.is_closed:
            self.transport.loseConnection()


async def connect(url: str, tls_policy: Any = None) -> WsClient:
    """Open ``url`` (``ws://`` or, with ``tls_policy`` e.g. a BrowserLikePolicyForHTTPS, ``wss://``)."""

    class Factory:
        def buildProtocol(self, url: str) -> WsClient:
            return WsClient()

    endpoint = WebSocketClientEndpoint.new(reactor, url) if tls_policy is None else WebSocketClientEndpoint.new(reactor, url, tlsPolicy=tls_policy)
    client: WsClient = await endpoint.connect(Factory())
    return client


class ToneTrack(AudioStreamTrack):
    """A 48 kHz mono tone, paced in real time (the browser's microphone)."""

    def __init__(self, hz: float, rate: int = 48000) -> None:
        super().__init__()
        self.gen = ToneGenerator(hz, rate, 0.4)
        self.rate = rate
        self.n = rate // 50
        self.ts = 0
        self.t0: float | None = None

    async def recv(self) -> AudioFrame:
        if self.t0 is None:
            self.t0 = time.monotonic()
        else:
            self.ts += self.n
            wait = self.t0 + self.ts / self.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        f = AudioFrame(format="s16", layout="mono", samples=self.n)
        f.planes[0].update(self.gen.generate(self.n).tobytes())
        f.pts, f.sample_rate, f.time_base = self.ts, self.rate, fractions.Fraction(1, self.rate)
        return f


class Browser:
    """aiortc standing in for a browser: sends a tone, records the far end (mono int16).

    ``video=True`` also sends a video track (aiortc's test pattern); ``datachannel="label"``
    opens a data channel (``self.channel``) before the offer."""

    def __init__(self, tone_hz: float = 700.0, codecs: list[str] | None = None, video: bool = False, datachannel: str | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(ToneTrack(tone_hz))
        if video:
            self.pc.addTrack(VideoStreamTrack())
        self.channel = self.pc.createDataChannel(datachannel) if datachannel else None
        if codecs:
            caps = RTCRtpSender.getCapabilities("audio").codecs
            prefs = [c for n in codecs for c in caps if c.mimeType.lower() == "audio/" + n.lower()]
            self.pc.getTransceivers()[0].setCodecPreferences(prefs)
        self.received: list[np.ndarray] = []
        self.video_frames = 0
        self.rate: int | None = None
        self.task: Any = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        if track.kind != "audio":
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
                self.received.append(arr.astype(np.int16))

        self.task = aio.spawn(consume(), "test browser consumer")

    async def offer(self) -> str:
        async def make() -> str:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            return str(self.pc.localDescription.sdp)

        return await aio.as_deferred(make())

    async def answer(self, sdp: str) -> None:
        await aio.as_deferred(self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer")))

    def recording(self) -> np.ndarray:
        return np.concatenate(self.received) if self.received else np.zeros(0, dtype=np.int16)

    async def heard(self, seconds: float = 2.0, timeout: float = 8.0, tail_s: float = 1.0) -> tuple[float, float]:
        """Wait until more than ``seconds`` of audio came from the far end (fails after
        ``timeout``); return the dominant frequency (Hz) and level (dBFS) of the last ``tail_s`` s."""
        got = await wait_for(lambda: self.rate is not None and len(self.recording()) > seconds * self.rate, timeout)
        assert got, f"the browser got {len(self.recording())} samples at {self.rate} Hz within {timeout} s"
        assert self.rate is not None
        tail = self.recording()[-int(tail_s * self.rate) :]
        return dominant_frequency(tail, self.rate), rms_dbfs(tail)

    async def close(self) -> None:
        aio.cancel(self.task)
        await aio.as_deferred(self.pc.close())


async def complete_call(ws: WsClient, browser: Browser, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send ``request`` (a ``call`` or an ``accept`` message) with the browser's offer, wait for
    ``accepted``, apply the ``answer`` and wait for ``progress answered``. Returns ``accepted``."""
    offer = await browser.offer()
    n = len(ws.messages)
    ws.send({**request, "sdp": offer})
    accepted = await ws.next("accepted", timeout=timeout, after=n)
    await browser.answer((await ws.next("answer", timeout=timeout, after=n))["sdp"])
    await ws.next("progress", timeout=timeout, after=n, state="answered")
    return accepted


async def close_all(gw: Gateway | None, browser: Browser | None, *clients: WsClient | None) -> None:
    """Test teardown: close the WebSocket clients that were opened, the browser, the gateway."""
    for ws in clients:
        if ws is not None:
            ws.close()
    if browser is not None:
        await browser.close()
    if gw is not None:
        await gw.stop()

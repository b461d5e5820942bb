"""Connection caps and deadlines on real sockets against a whole gateway (``build_gateway``):
SIP TCP, HTTP/WebSocket and RTMP listeners (issue 12, item 4; docs/security.md).

Other client addresses are other loopback addresses (127.0.0.2, ...): Linux routes all of
127.0.0.0/8 to lo, so a client socket bound to 127.0.0.2 reaches the gateway on 127.0.0.1 and the
gateway sees 127.0.0.2 as its peer.

- Past each cap (per address, then in total) a new connection is closed at accept (for a WebSocket:
  HTTP 503 ``too_many_connections`` before the upgrade) and counted in ``/metrics``
  (``webgate_connections_refused_total{listener,reason}``); connections under the cap stay open.
- While one address holds its caps everywhere, a browser (aiortc) on another places an ``echo``
  call over /ws and hears its own tone back.
- Silent, dripping and half-sent connections are closed by the idle, partial-message, request
  (handshake) and RTMP handshake deadlines (``webgate_connections_closed_total``); an RTMP
  client that answers the gateway's pings stays connected past the idle timeout.
"""

from __future__ import annotations

import struct
import wave
from typing import Any

import numpy as np
import pytest_twisted
from twisted.internet import endpoints, protocol
from twisted.internet.defer import Deferred

from tests.adapters.rtmp_helpers import ffmpeg, open_client
from tests.adapters.webrtc_client import Browser, complete_call, connect
from tests.calls.gw import assert_tone, reactor, sleep, wait_for
from tests.ops.helpers import RunningGateway, gateway_config, http
from tests.ops.test_metrics import samples, value
from webgate.calls.call import CallState

ATTACKER = "127.0.0.2"  # holds its per-address caps
OTHER = "127.0.0.3"  # fills the totals with ATTACKER
THIRD = "127.0.0.4"  # refused by the totals


class _Raw(protocol.Protocol):
    """A raw client connection that records what it got and when it was closed."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = False
        self.lost_at: float | None = None
        self.opened_at = reactor.seconds()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        self.lost_at = reactor.seconds()

    def send(self, data: bytes) -> None:
        if not self.lost:
            self.transport.write(data)

    def close(self) -> None:
        if not self.lost:
            self.transport.abortConnection()


async def raw(port: int, source: str) -> _Raw:
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    p: _Raw = await endpoints.connectProtocol(ep, _Raw())
    return p


async def refused_at_accept(port: int, source: str) -> bool:
    """Connect from ``source``: True if the gateway closed the connection at once, having sent nothing."""
    c = await raw(port, source)
    closed = await wait_for(lambda: c.lost, 3)
    c.close()
    return closed and not c.data


async def held(conns: list[_Raw], seconds: float = 0.3) -> bool:
    await sleep(seconds)
    return all(not c.lost for c in conns)


WS_UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def ws_open(port: int, source: str) -> tuple[int, _Raw]:
    """A raw WebSocket upgrade from ``source``; (HTTP status, the connection, left open)."""
    c = await raw(port, source)
    c.send(WS_UPGRADE.format(port=port).encode())
    assert await wait_for(lambda: b"\r\n\r\n" in c.data or c.lost, 5), "no answer to the upgrade"
    status_line = bytes(c.data).split(b"\r\n", 1)[0].decode()
    assert status_line.startswith("HTTP/1.1 "), bytes(c.data)[:200]
    return int(status_line.split()[1]), c


async def scrape(gw: RunningGateway) -> dict[Any, float]:
    status, _h, body = await http("GET", gw.url("/metrics"))
    assert status == 200
    return samples(body.decode())


def refused(m: dict[Any, float], listener: str, reason: str) -> float:
    return value(m, "webgate_connections_refused_total", listener=listener, reason=reason)


def closed(m: dict[Any, float], listener: str, reason: str) -> float:
    return value(m, "webgate_connections_closed_total", listener=listener, reason=reason)


def start(extra: dict[str, Any]) -> RunningGateway:
    return RunningGateway(gateway_config({"rtmp": {"listen": "127.0.0.1:0"}, **extra}))


def ports(gw: RunningGateway) -> tuple[int, int, int]:
    http_hp, rtmp_hp = gw.gw.listening_address("http"), gw.gw.listening_address("rtmp")
    assert http_hp is not None and rtmp_hp is not None
    return gw.svc.bound["tcp"][1], http_hp.port, rtmp_hp.port


CAPS = {
    "sip": {"max_connections": 4, "max_connections_per_ip": 2, "idle_timeout_s": 60, "partial_timeout_s": 60},
    "http": {"max_connections": 12, "max_connections_per_ip": 3, "request_timeout_s": 60},
    "webrtc": {"max_connections": 3, "max_connections_per_ip": 2},
    "rtmp": {"listen": "127.0.0.1:0", "max_connections": 4, "max_connections_per_ip": 2, "handshake_timeout_s": 60},
}


@pytest_twisted.ensureDeferred
async def test_caps_refuse_at_accept_count_and_leave_others_served() -> None:
    gw = start(CAPS)
    sip, web, rtmp = ports(gw)
    conns: list[_Raw] = []
    browser = Browser(tone_hz=900.0)
    ws = None
    try:
        # -- per address: ATTACKER holds every per-IP cap; one more is closed at accept
        for port in (sip, rtmp):
            conns += [await raw(port, ATTACKER) for _ in range(2)]
        for _ in range(2):
            status, c = await ws_open(web, ATTACKER)
            assert status == 101
            conns.append(c)
        idle_http = [await raw(web, ATTACKER) for _ in range(3)]  # HTTP connections without a request
        conns += idle_http
        assert await held(conns), "a connection under its cap was closed"
        assert await refused_at_accept(sip, ATTACKER)
        assert await refused_at_accept(rtmp, ATTACKER)
        assert await refused_at_accept(web, ATTACKER)  # the 4th HTTP connection (WebSockets left the HTTP count)
        conns.remove(idle_http[0])
        idle_http[0].close()  # one HTTP slot free: the upgrade is read and refused by the WebSocket cap
        assert await wait_for(lambda: gw.gw.site.limiter.count(ATTACKER) == 2, 3)
        status, c = await ws_open(web, ATTACKER)
        assert status == 503 and b'"code":"too_many_connections"' in bytes(c.data), bytes(c.data)
        c.close()
        m = await scrape(gw)
        assert refused(m, "sip_tcp", "per_ip") == 1
        assert refused(m, "rtmp", "per_ip") == 1
        assert refused(m, "http", "per_ip") == 1
        assert refused(m, "ws", "per_ip") == 1
        assert value(m, "webgate_connections_open", listener="ws") == 2
        assert value(m, "webgate_connections_open", listener="sip_tcp") == 2

        # -- meanwhile a browser on another address calls echo over /ws and hears its tone back
        ws = await connect(f"ws://127.0.0.1:{web}/ws")
        await ws.next("welcome")
        await complete_call(ws, browser, {"type": "call", "destination": "echo"})
        measured, level = await browser.heard()
        assert abs(measured - 900.0) < 15, measured
        assert level > -30
        assert await held(conns, 0), "the attacker's connections were dropped by the call"

        # -- in total: OTHER fills what is left, THIRD is refused by the total caps
        conns += [await raw(sip, OTHER) for _ in range(2)] + [await raw(rtmp, OTHER) for _ in range(2)]
        assert await held(conns)
        assert await refused_at_accept(sip, THIRD)
        assert await refused_at_accept(rtmp, THIRD)
        status, c = await ws_open(web, THIRD)  # ATTACKER's 2 + the browser's = 3 WebSockets
        assert status == 503
        c.close()
        m = await scrape(gw)
        assert refused(m, "sip_tcp", "total") == 1
        assert refused(m, "rtmp", "total") == 1
        assert refused(m, "ws", "total") == 1

        # -- the caps recover when connections close
        ws.close()
        for c in conns:
            c.close()
        assert await wait_for(lambda: gw.svc.transport.limiters["tcp"].open == 0, 5)
        assert await wait_for(lambda: gw.gw.site.resource.children[b"ws"].signalling.limiter.open == 0, 5)
        c = await raw(sip, THIRD)
        assert await held([c])
        c.close()
        status, c = await ws_open(web, THIRD)
        assert status == 101
        c.close()
    finally:
        for c in conns:
            c.close()
        if ws is not None:
            ws.close()
        await browser.close()
        await gw.stop()


DEADLINES = {
    "sip": {"idle_timeout_s": 2, "partial_timeout_s": 1},
    "http": {"request_timeout_s": 1},
    "rtmp": {"listen": "127.0.0.1:0", "handshake_timeout_s": 3, "idle_timeout_s": 4, "partial_timeout_s": 1},
}


async def drip(c: _Raw, data: bytes, every: float = 0.25) -> None:
    """Send ``data`` one byte at a time (a slowloris) until the connection is closed."""
    for b in data:
        if c.lost:
            return
        c.send(bytes([b]))
        await sleep(every)


@pytest_twisted.ensureDeferred
async def test_idle_partial_and_handshake_deadlines() -> None:
    gw = start(DEADLINES)
    sip, web, rtmp = ports(gw)
    conns: list[_Raw] = []
    try:
        # SIP: silent -> idle (2 s); a header dripped byte by byte -> partial (1 s), though bytes keep coming
        silent = await raw(sip, ATTACKER)
        slow = await raw(sip, ATTACKER)
        conns += [silent, slow]
        Deferred.fromCoroutine(drip(slow, b"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2;branch=z9hG4bK1\r\n" * 4))
        # HTTP: the upgrade request dripped -> closed by the request (handshake) deadline (1 s)
        slow_ws = await raw(web, ATTACKER)
        conns.append(slow_ws)
        Deferred.fromCoroutine(drip(slow_ws, WS_UPGRADE.format(port=web).encode()))
        # RTMP: no handshake -> closed by the handshake deadline (3 s)
        no_handshake = await raw(rtmp, ATTACKER)
        conns.append(no_handshake)

        assert await wait_for(lambda: slow.lost and slow_ws.lost and silent.lost and no_handshake.lost, 6)
        for c, lo, hi in ((slow, 0.8, 2.0), (slow_ws, 0.8, 2.0), (no_handshake, 2.8, 4.5), (silent, 1.8, 3.5)):
            assert c.lost_at is not None and lo <= c.lost_at - c.opened_at <= hi, (c.lost_at - c.opened_at, lo, hi)
        assert b"HTTP/1.1 101" not in bytes(slow_ws.data)

        # RTMP after the handshake: half a message then nothing more -> partial (1 s)
        half = await open_client(rtmp, source=ATTACKER)
        assert await wait_for(lambda: half.handshake_done, 5)
        # chunk basic header (fmt 0, csid 3) + message header: ts 0, length 1000, type 20, stream 0
        half.raw(bytes([3]) + b"\x00\x00\x00" + (1000).to_bytes(3, "big") + bytes([20]) + struct.pack("<I", 0) + b"\x02" * 100)
        t0 = reactor.seconds()
        assert await wait_for(lambda: half.lost, 4)
        assert 0.7 <= reactor.seconds() - t0 <= 2.5

        # RTMP idle: a connected client that never answers the gateway's ping (sent at 2 s) is closed (4 s);
        # one that answers stays
        mute = await open_client(rtmp, source=ATTACKER)
        talker = await open_client(rtmp, source=OTHER)
        for c in (mute, talker):
            res = await c.connect("call", port=rtmp)
            assert res.name == "_result", res

        def pings(c: Any) -> list[bytes]:
            return [m.payload for m in c.messages if m.type_id == 4 and m.payload[:2] == b"\x00\x06"]

        answered = 0

        async def answer_pings() -> None:
            nonlocal answered
            while not talker.lost and answered < 10:
                for p in pings(talker)[answered:]:
                    talker.message(2, 4, 0, 0, b"\x00\x07" + p[2:6])  # ping response, same timestamp
                    answered += 1
                await sleep(0.05)

        Deferred.fromCoroutine(answer_pings())
        t0 = reactor.seconds()
        assert await wait_for(lambda: mute.lost, 6), "a silent RTMP client was not closed"
        assert 3.5 <= reactor.seconds() - t0 <= 5.0
        assert pings(mute), "the gateway sent no ping before closing"
        await sleep(5.0 - (reactor.seconds() - t0))
        assert not talker.lost and answered >= 1, "a client answering pings was closed"
        talker.transport.loseConnection()

        m = await scrape(gw)
        assert closed(m, "sip_tcp", "idle") == 1
        assert closed(m, "sip_tcp", "partial") == 1
        assert closed(m, "http", "request_timeout") >= 1
        assert closed(m, "rtmp", "handshake") == 1
        assert closed(m, "rtmp", "partial") == 1
        assert closed(m, "rtmp", "idle") == 1
    finally:
        for c in conns:
            c.close()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_ffmpeg_player_answers_pings_and_outlives_the_idle_timeout(require_program: Any, tmp_path: Any) -> None:
    """A real player (ffmpeg) sends nothing of its own while it listens: with a 2 s idle timeout it
    stays for 5 s only because it answers the gateway's pings -- and hears the echoed tone."""
    require_program("ffmpeg")
    gw = start({"rtmp": {"listen": "127.0.0.1:0", "idle_timeout_s": 2}})
    _sip, _web, rtmp = ports(gw)
    out = tmp_path / "heard.wav"
    try:
        pub = ffmpeg(
            "-re", "-f", "lavfi", "-i", "sine=frequency=800:sample_rate=8000:duration=9",
            "-c:a", "pcm_mulaw", "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/call/echo", timeout=30,
        )
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10)
        sid = next(iter(gw.svc.registry)).session_id
        code, _o, err = await ffmpeg(
            "-i", f"rtmp://127.0.0.1:{rtmp}/session/{sid}", "-t", "5", "-ac", "1", "-ar", "8000", "-y", str(out), timeout=20
        ).wait()
        assert code == 0, err[-500:]
        with wave.open(str(out)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        assert len(pcm) >= 4.5 * 8000, f"the player got {len(pcm) / 8000:.1f} s of audio, not 5 s"
        assert_tone(pcm, 8000, 800.0, "echo heard over RTMP", seconds=1.0)
        m = await scrape(gw)
        assert closed(m, "rtmp", "idle") == 0
        await pub.wait()
    finally:
        await gw.stop()

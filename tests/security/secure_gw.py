"""A gateway with call tokens, a NON-public route and every ingress (WebSocket + RTMP) on one
TelephonyService, for the authorisation tests.

Destinations: ``echo``/``tone`` (built-in, public), ``1xxx`` (a route to the gateway's own SIP
address, user ``echo``: a real trunk call over SIP on loopback, NOT public), ``2xxx`` (the same,
public)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from twisted.internet import defer, endpoints, protocol
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.calls.gw import make_config, reactor, sleep, start_telephony
from tests.interop.peers import free_port
from webgate.adapters.rtmp import RtmpFactory
from webgate.legs.webrtc import WebRtcSettings
from webgate.security.tokens import mint_token
from webgate.web.ws import make_ws_resource

KEY = "webgate-test-token-key-0123456789abcdef"
OTHER_KEY = "not-the-gateway-key-0123456789abcdefgh"
ROUTED = "1234"  # non-public
DUMMY_SDP = "v=0\r\n"  # refusals happen before the SDP is looked at; passing calls fail with invalid_sdp


def token(dest: Any = ROUTED, key: str = KEY, **kw: Any) -> str:
    return mint_token(key, dest=dest, **kw)


def expired_token(dest: str = ROUTED) -> str:
    return mint_token(KEY, dest=dest, ttl_s=60, now=time.time() - 3600)


def alg_none_token(dest: str = ROUTED) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'exp': int(time.time()) + 600, 'dest': dest})}."


class Refusals:
    """A call observer recording refusal codes (what metrics would count)."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def call_refused(self, code: str, ingress: str, client: str) -> None:
        self.codes.append(code)


def secure_extra(limits: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    port = free_port("udp")
    extra: dict[str, Any] = {
        "sip": {"udp": f"127.0.0.1:{port}"},
        "tokens": {"key": KEY},
        "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{port}"}],
        "route": [
            {"pattern": r"1\d{3}", "trunk": "self", "rewrite": "echo"},
            {"pattern": r"2\d{3}", "trunk": "self", "rewrite": "echo", "public": True},
        ],
    }
    if limits:
        extra["limits"] = limits
    extra.update(more)
    return extra


class SecureGateway:
    def __init__(self, limits: dict[str, Any] | None = None, **more: Any) -> None:
        self.config = make_config(secure_extra(limits, **more))
        self.svc = start_telephony(self.config)
        self.refusals = Refusals()
        self.svc.manager.observers.append(self.refusals)
        root = Resource()
        self.ws = make_ws_resource(self.svc, self.config, reactor, settings=WebRtcSettings.from_config(self.config))
        root.putChild(b"ws", self.ws)
        self.site = Site(root)
        self.site.noisy = False
        self.http_port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.port = self.http_port.getHost().port
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.rtmp = RtmpFactory(self.svc.manager, self.config.rtmp, reactor)
        self.rtmp_listener = reactor.listenTCP(0, self.rtmp, interface="127.0.0.1")
        self.rtmp_port: int = self.rtmp_listener.getHost().port

    @property
    def manager(self) -> Any:
        return self.svc.manager

    def rtmp_url(self, path: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{path}"

    async def stop(self) -> None:
        for conn in list(self.ws.signalling.connections):  # type: ignore[attr-defined]
            conn.close()
        self.rtmp.close_all()
        await self.http_port.stopListening()
        await self.rtmp_listener.stopListening()
        await self.svc.stopService()
        await sleep(0.1)


class _Raw(protocol.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data and not self.done.called:
            self.done.callback(bytes(self.data))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(bytes(self.data))


async def ws_handshake(port: int, origin: str | None, host: str | None = None) -> int:
    """A real WebSocket upgrade request over TCP; the HTTP status of the answer (101 = upgraded)."""
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    p: _Raw = await endpoints.connectProtocol(ep, _Raw())
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    p.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    timer = reactor.callLater(5, p.transport.loseConnection)
    head = await p.done
    if timer.active():
        timer.cancel()
    p.transport.loseConnection()
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    assert status_line.startswith("HTTP/1.1 "), head[:200]
    return int(status_line.split()[1])

"""``/ws``: the WebSocket of browser (WebRTC) calls: framing, guards and connection caps.

One WebSocket carries at most one call at a time (the JS client opens one per call), so
"the WebSocket dropped" and "the browser went away" are the same event: the call is hung
up (BYE or CANCEL toward SIP). JSON text messages only; every message is documented in
docs/protocol.md (## WebSocket). Errors carry a stable ``code``; a bad message never
disturbs another client, and a client that keeps sending bad messages is disconnected.

This module is the transport: the Origin allow-list and the connection caps of the upgrade,
message size, idle and error guards, JSON decoding, dispatch and ``send``. What each message
does is webgate/web/handlers.py.

Built on Twisted's own ``twisted.web.websocket`` (wsproto underneath, see docs/decisions.md).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from wsproto.utilities import LocalProtocolError as WsStateError

from webgate.calls.errors import CallRefused
from webgate.counters import count_error
from webgate.legs.webrtc import WebRtcSettings
from webgate.logsafe import safe
from webgate.security.candidates import CANDIDATE_REFUSED, TOO_MANY_CANDIDATES
from webgate.security.connlimit import ConnectionLimiter
from webgate.security.origin import origin_allowed
from webgate.web.handlers import (
    BAD_MESSAGE,
    CALL_IN_PROGRESS,
    INTERNAL_ERROR,
    INVALID_CANDIDATE,
    INVALID_DTMF,
    INVALID_SDP,
    NO_CALL,
    NOT_REGISTERED,
    BadMessage,
    SignallingHandlers,
)

log = Logger()

__all__ = ["ERROR_CODES", "PROTOCOL_VERSION", "SignallingFactory", "SignallingProtocol", "make_ws_resource"]

PROTOCOL_VERSION = 1

# stable error codes of the transport (the messages' own: webgate/web/handlers.py; the call
# layer's: webgate/calls/errors.py)
BAD_JSON = "bad_json"
UNKNOWN_TYPE = "unknown_type"
MESSAGE_TOO_LARGE = "message_too_large"
TOO_MANY_ERRORS = "too_many_errors"
IDLE_TIMEOUT = "idle_timeout"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"  # HTTP 403 to the upgrade request (no WebSocket)
TOO_MANY_CONNECTIONS = "too_many_connections"  # HTTP 503 to the upgrade request (no WebSocket)
# CANDIDATE_REFUSED ("candidate_refused"), TOO_MANY_CANDIDATES ("too_many_candidates"):
# webgate/security/candidates.py
ERROR_CODES = (
    BAD_JSON,
    BAD_MESSAGE,
    UNKNOWN_TYPE,
    MESSAGE_TOO_LARGE,
    INVALID_SDP,
    INVALID_CANDIDATE,
    INVALID_DTMF,
    NO_CALL,
    CALL_IN_PROGRESS,
    TOO_MANY_ERRORS,
    IDLE_TIMEOUT,
    INTERNAL_ERROR,
    ORIGIN_NOT_ALLOWED,
    TOO_MANY_CONNECTIONS,
    NOT_REGISTERED,
    CANDIDATE_REFUSED,
    TOO_MANY_CANDIDATES,
)



def _host(request: Any) -> str:
    """The client address of an HTTP request (what the per-IP caps count)."""
    return str(getattr(request.getClientAddress(), "host", "?"))


def _peer(request: Any) -> str:
    """``host:port`` of the client of an HTTP request."""
    addr = request.getClientAddress()
    return f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', 0)}"


class SignallingProtocol(SignallingHandlers):
    """One WebSocket connection (``twisted.web.websocket.WebSocketProtocol``).

    After a ``register`` it is also the registration of a web user
    (``webgate.calls.users.WebUserEndpoint``): calls from SIP toward the user are offered here
    (``invited``), one at a time, on the same connection. The messages' handlers and the call
    state are ``SignallingHandlers``'s (webgate/web/handlers.py)."""

    def __init__(self, factory: SignallingFactory, client: str, channel: Any) -> None:
        super().__init__()
        self.factory: SignallingFactory = factory
        self.client = client
        self.channel = channel
        self.transport: WebSocketTransport | None = None
        self.closed = False
        self.closing = False  # we sent a close frame: nothing more is sent or handled
        self.errors = 0
        self._idle: Any = None
        self._bytes_since_message = 0
        self.admitted: str | None = None  # the address holding a slot of the factory's limiter

    # -- WebSocketProtocol ------------------------------------------------------------------
    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        self._guard_incoming_bytes()
        self.factory.connections.add(self)
        self._touch()
        self.send(
            {
                "type": "welcome",
                "version": PROTOCOL_VERSION,
                "ice_servers": [dict(s) for s in self.settings.ice_servers],
                "max_message_size": self.settings.max_message_size,
            }
        )

    def pongReceived(self, payload: bytes) -> None:
        self._touch()

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        if self.closing:
            return
        self._bytes_since_message = 0
        self._touch()
        self.error(BAD_MESSAGE, "binary messages are not accepted; send JSON text")

    def textMessageReceived(self, message: str) -> None:
        if self.closing:
            return
        self._bytes_since_message = 0
        self._touch()
        if len(message) > self.settings.max_message_size or len(message.encode("utf-8", "surrogatepass")) > self.settings.max_message_size:
            self.error(MESSAGE_TOO_LARGE, f"messages are limited to {self.settings.max_message_size} bytes")
            return
        try:
            msg = json.loads(message)
        except (ValueError, RecursionError):
            self.error(BAD_JSON, "the message is not valid JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self.error(BAD_MESSAGE, "a message is a JSON object with a string 'type'")
            return
        kind = msg["type"]
        handler = self._handlers.get(kind)
        if handler is None:
            self.error(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}", ref=kind[:40])
            return
        try:
            handler(self, msg)
        except BadMessage as e:
            self.error(e.code, e.message, ref=kind)
        except CallRefused as e:
            self.error(e.code, e.message, ref=kind)
        except Exception:  # noqa: BLE001 - the edge: log, answer internal_error, keep serving
            log.failure("ws {client}: handling {kind} failed", client=self.client, kind=kind)
            self.error(INTERNAL_ERROR, "internal error", ref=kind)

    def connectionLost(self, reason: Failure) -> None:
        if self.closed:
            return
        self.closed = True
        self.factory.connections.discard(self)
        if self.admitted is not None:
            self.factory.limiter.release(self.admitted)
            self.admitted = None
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self._connection_gone()

    # -- sending ------------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        if self.closed or self.closing or self.transport is None:
            return
        self.transport.sendTextMessage(json.dumps(msg, separators=(",", ":")))

    def error(self, code: str, message: str, ref: str | None = None, fatal: bool = False, counted: bool = True) -> None:
        """Send an ``error``; ``counted`` ones count toward ``[webrtc] max_errors``."""
        if counted:
            self.errors += 1
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if ref is not None:
            body["ref"] = ref
        if self.call is not None:
            body["session_id"] = self.call.session_id
        log.info("ws {client}: error {code}: {message}", client=self.client, code=code, message=safe(message))
        count_error("ws_protocol")
        self.send(body)
        if fatal:
            self.close(1008)
        elif counted and self.errors > self.settings.max_errors:
            self.send({"type": "error", "code": TOO_MANY_ERRORS, "message": "too many bad messages; closing"})
            self.close(1008)

    def close(self, code: int = 1000) -> None:
        if not self.closed and not self.closing and self.transport is not None:
            self.closing = True
            try:
                self.transport.loseConnection(code)
            except WsStateError:  # the peer's close already finished the handshake: nothing to send
                log.debug("ws {client}: closed by the peer before our close", client=self.client)

    # -- guards -------------------------------------------------------------------------------
    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.settings.idle_timeout_s)
        elif not self.closed:
            self._idle = self.factory.reactor.callLater(self.settings.idle_timeout_s, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        self.error(IDLE_TIMEOUT, f"no message for {self.settings.idle_timeout_s:g} s", fatal=True)

    def _guard_incoming_bytes(self) -> None:
        """twisted.web.websocket buffers a fragmented message without limit before
        delivering it; count the bytes received since the last complete message and cut a
        connection that streams far more than any valid message (RFC 6455 close 1009)."""
        channel = self.channel
        inner = getattr(channel, "dataReceived", None)
        if inner is None:
            return
        hard_limit = 2 * self.settings.max_message_size + 4096

        def data_received(data: bytes) -> None:
            if self.closed or self.closing:
                return
            self._bytes_since_message += len(data)
            if self._bytes_since_message > hard_limit:
                self.error(MESSAGE_TOO_LARGE, f"messages are limited to {self.settings.max_message_size} bytes; closing")
                self.close(1009)
                return
            inner(data)

        channel.dataReceived = data_received


class SignallingFactory:
    """``twisted.web.websocket.WebSocketServerFactory`` for ``/ws``."""

    def __init__(self, manager: Any, settings: WebRtcSettings, reactor: Any, limiter: ConnectionLimiter | None = None,
                 video: Any = None) -> None:
        self._manager = manager
        self.settings = settings
        self.reactor = reactor
        self.video = video  # [video] (config.video) for the calls' hubs; None: the hub's defaults
        self.connections: set[SignallingProtocol] = set()
        # open WebSockets, total and per address ([webrtc] max_connections*); counted in /metrics
        self.limiter = limiter or ConnectionLimiter("ws", 512, 32)

    @property
    def manager(self) -> Any:
        """The CallManager; a TelephonyService may be given instead (its manager exists only
        once the service has started, so it is looked up per call)."""
        m = self._manager
        return m if hasattr(m, "place_call") else m.manager

    def buildProtocol(self, request: Any) -> SignallingProtocol:
        p = SignallingProtocol(self, _peer(request), request.channel)
        p.admitted = _host(request)  # SignallingResource.render_GET took the limiter slot
        return p


class SignallingResource(WebSocketResource):
    """``/ws`` with the Origin allow-list (``[http] allowed_origins``, webgate/security/origin.py):
    a handshake from a browser page of another origin gets HTTP 403 and no WebSocket."""

    def __init__(self, factory: SignallingFactory, allowed_origins: tuple[str, ...] = ()) -> None:
        super().__init__(factory)  # type: ignore[arg-type]
        self.allowed_origins = tuple(allowed_origins)
        self.refused_origins = 0

    def render_GET(self, request: Any) -> Any:
        origin = request.getHeader("origin")
        host = request.getHeader("host")
        if not origin_allowed(origin, host, self.allowed_origins, secure=bool(request.isSecure())):
            self.refused_origins += 1
            log.info(
                "ws {client}: origin {origin} not allowed, refused",
                client=_peer(request),
                origin=safe(origin or "", 200),
            )
            body = {"type": "error", "code": ORIGIN_NOT_ALLOWED, "message": "this page's origin may not use this gateway"}
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            return json.dumps(body, separators=(",", ":")).encode() + b"\n"
        factory: SignallingFactory = self.factory  # type: ignore[assignment]
        host = _host(request)
        refused = factory.limiter.admit(host)
        if refused is not None:
            log.info("ws {client}: refused, {reason} WebSocket cap reached", client=_peer(request), reason=refused)
            body = {"type": "error", "code": TOO_MANY_CONNECTIONS, "message": "too many connections; try again later"}
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"retry-after", b"10")
            request.setHeader(b"connection", b"close")
            return json.dumps(body, separators=(",", ":")).encode() + b"\n"
        result = super().render_GET(request)
        if result is not NOT_DONE_YET:
            factory.limiter.release(host)  # no upgrade (a bad handshake): the slot is free again
            return result
        # the connection is a WebSocket now: it leaves the HTTP listener's count (webgate/web/site.py)
        handover = getattr(request.channel, "upgraded", None)
        if callable(handover):
            handover()
        return result


def make_ws_resource(manager: Any, config: Any, reactor: Any, settings: WebRtcSettings | None = None) -> Resource:
    """The ``/ws`` resource. ``manager``: the CallManager, or the TelephonyService (looked up
    lazily). ``settings`` default to ``WebRtcSettings.from_config(config)``; the Origin
    allow-list comes from ``config.http.allowed_origins``."""
    webrtc = getattr(config, "webrtc", None)
    limiter = None
    if webrtc is not None:
        limiter = ConnectionLimiter("ws", webrtc.max_connections, webrtc.max_connections_per_ip)
    factory = SignallingFactory(manager, settings or WebRtcSettings.from_config(config), reactor, limiter,
                                video=getattr(config, "video", None))
    http = getattr(config, "http", None)
    res = SignallingResource(factory, tuple(getattr(http, "allowed_origins", ()) or ()))
    res.signalling = factory  # type: ignore[attr-defined]  # for health/metrics and tests
    return res

"""Twisted transports for the sans-IO SIP user agent: UDP, TCP and TLS.

Thin by design: bytes in -> :class:`UserAgent.receive`; :meth:`UserAgent.outgoing` -> bytes
out; one DelayedCall follows :meth:`UserAgent.next_timer`. Every error from the core is
caught here, answered where SIP allows (400/413/513), logged, and never reaches the
reactor: one bad packet must not disturb anybody else's call.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from webgate.adapters.guard import DeadlineTimer, listen_tls
from webgate.logsafe import safe
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import SipMessage, SipRequest, StreamFramer, parse_message, stateless_error_response
from webgate.proto.sip.transaction import Addr
from webgate.proto.sip.useragent import Event, UserAgent
from webgate.security.connlimit import ConnectionLimiter, StreamDeadlines

log = Logger()

#: SIP messages that may wait for an outgoing TCP/TLS connection to come up (10 s connect timeout)
_MAX_CONNECT_QUEUE = 64
#: the kernel send buffer of a SIP TCP/TLS connection: fixed (no autotuning up to tcp_wmem's 4 MB),
#: so a peer that stops reading fills Twisted's buffer, which pauses us (see _StreamProtocol)
_KERNEL_SNDBUF = 64 * 1024


def _fix_send_buffer(transport: Any) -> None:
    """Set SO_SNDBUF on the socket under ``transport`` (TLS wraps a TCP transport)."""
    t = transport
    for _ in range(3):
        try:
            handle = t.getHandle()
        except Exception:  # noqa: BLE001 - a transport without a socket handle
            handle = None
        if isinstance(handle, socket.socket):
            try:
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _KERNEL_SNDBUF)
            except OSError:
                pass
            return
        t = getattr(t, "transport", None)
        if t is None:
            return

def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class _UdpProtocol(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, owner: "SipTransport", transport_name: str = "udp") -> None:
        self.owner = owner
        self.name = transport_name

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted API)
        host, port = addr[0], addr[1]
        self.owner.data_received(self.name, data, (self.name, host, port), self)


def _iface(transport: object) -> Any:
    """A Twisted transport for calling its methods: zope interfaces (ITransport, IUDPTransport)
    declare them without ``self``, so mypy (no zope plugin) rejects calls through those types."""
    return transport


@implementer(IPushProducer)
class _StreamProtocol(protocol.Protocol):
    """One SIP TCP/TLS connection. It is its transport's push producer, so Twisted tells it when its
    write buffer passes the high-water mark (``pauseProducing``) and when it drained
    (``resumeProducing``): SIP written while paused is what a peer that does not read makes us hold.
    Past ``[sip] max_send_buffer`` bytes of that, or ``[sip] send_stall_s`` seconds paused, the
    connection is aborted (its transactions fail over as for any lost connection), so a peer that
    stops reading cannot grow the gateway's memory (docs/security.md)."""

    def __init__(self, owner: "SipTransport", transport_name: str, client: "_ClientFactory | None" = None) -> None:
        self.owner = owner
        self.name = transport_name
        self.framer = StreamFramer(owner.max_message_size)
        self.peer: Addr = (transport_name, "", 0)
        self.client = client  # set for connections we opened
        self.keys: list[Addr] = []  # every address this connection is known under
        self.admitted: str | None = None  # the host holding a slot of the listener's ConnectionLimiter
        self.timer: DeadlineTimer | None = None
        self.paused_at: float | None = None  # when Twisted paused us (its buffer past the high-water mark)
        self.held = 0  # bytes written since then
        self.aborted = False

    def connectionMade(self) -> None:  # noqa: N802
        _fix_send_buffer(self.transport)
        _iface(self.transport).registerProducer(self, True)
        p = _iface(self.transport).getPeer()
        self.peer = (self.name, p.host, p.port)
        owner = self.owner
        # idle: accepted connections only (the peer reconnects when it has something to send);
        # partial: every connection
        idle = owner.idle_timeout_s if self.client is None else 0
        deadlines = StreamDeadlines(owner.reactor.seconds(), idle, owner.partial_timeout_s)
        self.timer = DeadlineTimer(owner.reactor, deadlines, self._deadline)
        self._register(self.peer)
        if self.client is not None:
            # also reachable under the name we dialled; send what waited for the connection
            self._register(self.client.key)
            self.owner.pending.pop(self.client.key, None)
            for data in self.client.queue:
                self.send(data)
            self.client.queue.clear()

    def _register(self, key: Addr) -> None:
        self.owner.connections[key] = self
        self.keys.append(key)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        items = self.framer.feed(data)
        if self.timer is not None:
            self.timer.received(progress=bool(items), pending=self.framer.pending > 0)
        for item in items:
            if isinstance(item, RemoteProtocolError):
                log.warn("SIP {transport} framing error from {peer}: {error}", transport=self.name, peer=self.peer, error=safe(item.message))
                continue
            self.owner.message_received(item, self.peer)
        if self.framer.broken:
            _iface(self.transport).loseConnection()

    def _deadline(self, reason: str) -> None:
        log.info("SIP {transport} connection from {peer} closed: {reason} timeout", transport=self.name, peer=self.peer, reason=reason)
        self.owner.limiters[self.name].note_closed(reason)
        if self.timer is not None:
            self.timer.cancel()
        _iface(self.transport).abortConnection()  # the peer may not be reading either

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.timer is not None:
            self.timer.cancel()
        if self.admitted is not None:
            self.owner.limiters[self.name].release(self.admitted)
            self.admitted = None
        for key in self.keys:
            if self.owner.connections.get(key) is self:
                del self.owner.connections[key]
        if self.client is not None:
            # e.g. a TLS handshake that failed: what was waiting on this connection fails now
            self.owner.connection_failed(self.client.key)

    # IPushProducer: Twisted's view of our write buffer
    def pauseProducing(self) -> None:  # noqa: N802
        if self.paused_at is None:
            self.paused_at, self.held = self.owner.reactor.seconds(), 0

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused_at, self.held = None, 0

    def stopProducing(self) -> None:  # noqa: N802
        pass

    def send(self, data: bytes) -> None:
        if self.aborted:
            return
        if self.paused_at is not None:
            self.held += len(data)
            owner = self.owner
            stalled = owner.reactor.seconds() - self.paused_at
            if self.held > owner.max_send_buffer or stalled > owner.send_stall_s:
                self.aborted = True
                owner.stats["send_overflow"] += 1
                log.warn(
                    "SIP {transport} connection to {peer} aborted: it does not read ({held} bytes waiting, {stalled:.1f} s)",
                    transport=self.name, peer=self.peer, held=self.held, stalled=stalled,
                )
                _iface(self.transport).abortConnection()
                return
        _iface(self.transport).write(data)


class _StreamFactory(protocol.Factory):
    noisy = False

    def __init__(self, owner: "SipTransport", transport_name: str) -> None:
        self.owner = owner
        self.name = transport_name

    def buildProtocol(self, addr: IAddress | None) -> _StreamProtocol | None:  # noqa: N802
        host = str(getattr(addr, "host", "?"))
        limiter = self.owner.limiters[self.name]
        refused = limiter.admit(host)
        if refused is not None:
            # closed at accept (no SIP answer: nothing was read); counted for /metrics
            log.info("SIP {transport} connection from {host} refused: {reason} connection cap", transport=self.name, host=host, reason=refused)
            return None
        p = _StreamProtocol(self.owner, self.name)
        p.admitted = host
        return p


class _ClientFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, owner: "SipTransport", transport_name: str, key: Addr) -> None:
        self.owner = owner
        self.name = transport_name
        self.key = key
        self.queue: list[bytes] = []

    def buildProtocol(self, addr: IAddress | None) -> _StreamProtocol:  # noqa: N802
        return _StreamProtocol(self.owner, self.name, client=self)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        log.warn("SIP {transport} connection to {dest} failed: {reason}", transport=self.name, dest=safe(self.key), reason=safe(reason.getErrorMessage()))
        self.owner.pending.pop(self.key, None)
        self.owner.connection_failed(self.key)


class SipTransport:
    """Owns the listening sockets and outgoing connections; feeds a :class:`UserAgent`."""

    def __init__(
        self,
        reactor: Any,
        ua: UserAgent,
        handler: Callable[[Event], None],
        *,
        max_message_size: int = 65535,
        tls_server_context: Any = None,
        tls_client_options: Callable[[str], Any] | None = None,
        max_connections: int = 256,
        max_connections_per_ip: int = 32,
        idle_timeout_s: float = 120.0,
        partial_timeout_s: float = 10.0,
        max_send_buffer: int = 256 * 1024,
        send_stall_s: float = 30.0,
    ) -> None:
        self.reactor = reactor
        # what a TCP/TLS peer that does not read may make us hold (see _StreamProtocol)
        self.max_send_buffer = max_send_buffer
        self.send_stall_s = send_stall_s
        # caps on accepted TCP/TLS connections and the deadlines of every stream connection
        # (webgate/security/connlimit.py); the limiters also count refusals for /metrics
        self.limiters = {
            name: ConnectionLimiter(f"sip_{name}", max_connections, max_connections_per_ip) for name in ("tcp", "tls")
        }
        self.idle_timeout_s = idle_timeout_s
        self.partial_timeout_s = partial_timeout_s
        self.ua = ua
        self.handler = handler
        self.max_message_size = max_message_size
        self.tls_server_context = tls_server_context
        self.tls_client_options = tls_client_options
        self.udp: dict[str, Any] = {}  # transport name -> listening port (udp)
        self.udp_protocol: _UdpProtocol | None = None
        self.listeners: list[Any] = []
        self.connections: dict[Addr, _StreamProtocol] = {}
        self.pending: dict[Addr, _ClientFactory] = {}
        self._timer: Any = None
        self.stats = {"received": 0, "sent": 0, "bad": 0, "send_overflow": 0, "queue_overflow": 0}

    # --- listening ---------------------------------------------------------------------
    def listen_udp(self, host: str, port: int) -> int:
        self.udp_protocol = _UdpProtocol(self)
        lp = self.reactor.listenUDP(port, self.udp_protocol, interface=host, maxPacketSize=self.max_message_size + 1)
        self.listeners.append(lp)
        self.udp["udp"] = lp
        return int(lp.getHost().port)

    def listen_tcp(self, host: str, port: int) -> int:
        lp = self.reactor.listenTCP(port, _StreamFactory(self, "tcp"), interface=host)
        self.listeners.append(lp)
        return int(lp.getHost().port)

    def listen_tls(self, host: str, port: int) -> int:
        if self.tls_server_context is None:
            raise ValueError("SIP TLS listener needs a certificate and key")
        lp = listen_tls(self.reactor, port, _StreamFactory(self, "tls"), self.tls_server_context, interface=host)
        self.listeners.append(lp)
        return int(lp.getHost().port)

    def stop(self) -> defer.Deferred[Any]:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        ds = [defer.maybeDeferred(lp.stopListening) for lp in self.listeners]
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                _iface(conn.transport).loseConnection()
        self.listeners = []
        return defer.DeferredList(ds)

    # --- input -------------------------------------------------------------------------
    def data_received(self, transport_name: str, data: bytes, source: Addr, proto: _UdpProtocol) -> None:
        if data in (b"\r\n\r\n", b"\r\n", b"\x00\x00\x00\x00"):
            return  # keepalives
        try:
            message = parse_message(data, self.max_message_size, datagram=True)
        except RemoteProtocolError as e:
            self.stats["bad"] += 1
            log.debug("bad SIP datagram from {source}: {error}", source=source, error=safe(e.message))
            reply = stateless_error_response(data, e.message, 513 if e.status_hint == 513 else 400)
            if reply is not None and proto.transport is not None:
                _iface(proto.transport).write(reply, (source[1], source[2]))
            return
        self.message_received(message, source)

    def message_received(self, message: SipMessage, source: Addr) -> None:
        self.stats["received"] += 1
        try:
            message.validate_basic()
        except RemoteProtocolError as e:
            self.stats["bad"] += 1
            if isinstance(message, SipRequest) and message.method != "ACK":
                reply = stateless_error_response(message.serialize(), e.message)
                if reply is not None:
                    self._send_raw(reply, source)
            return
        try:
            events = self.ua.receive(message, source, self.reactor.seconds())
        except (RemoteProtocolError, LocalProtocolError) as e:
            self.stats["bad"] += 1
            log.warn("SIP message from {source} refused: {error}", source=source, error=safe(e.message))
            events = []
        except Exception:
            self.stats["bad"] += 1
            log.failure("SIP core failed on a message from {source}", source=source)
            events = []
        self.flush()
        self._dispatch(events)

    def connection_failed(self, dest: Addr) -> None:
        try:
            events = self.ua.transport_failed(dest, self.reactor.seconds())
        except Exception:
            log.failure("SIP core failed on a transport failure to {dest}", dest=dest)
            events = []
        self.flush()
        self._dispatch(events)

    def _dispatch(self, events: list[Event]) -> None:
        for ev in events:
            try:
                self.handler(ev)
            except Exception:
                log.failure("SIP event handler failed on {event}", event=type(ev).__name__)
        self.flush()

    # --- output ------------------------------------------------------------------------
    def flush(self) -> None:
        """Send what the core queued and re-arm the timer. Call after every core API call."""
        for notice in self.ua.take_notices():
            log.warn("SIP core: {notice}", notice=safe(notice))
        for message, dest in self.ua.outgoing():
            try:
                self.send(message.serialize(), dest)
            except Exception:
                log.failure("sending SIP to {dest} failed", dest=dest)
        self._schedule()

    def _schedule(self) -> None:
        at = self.ua.next_timer()
        if at is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            return
        delay = max(0.0, at - self.reactor.seconds())
        if self._timer is not None and self._timer.active():
            if abs(self._timer.getTime() - at) < 0.001:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            events = self.ua.handle_timers(self.reactor.seconds())
        except Exception:
            log.failure("SIP timer handling failed")
            events = []
        self.flush()
        self._dispatch(events)

    def send(self, data: bytes, dest: Addr) -> None:
        transport, host, port = dest
        if not is_ip(host):
            d = self.reactor.resolve(host)
            d.addCallback(lambda ip: self._send_raw(data, (transport, ip, port)))
            d.addErrback(lambda f: log.warn("cannot resolve {host}: {err}", host=safe(host), err=safe(f.getErrorMessage())))
            return
        self._send_raw(data, dest)

    def _send_raw(self, data: bytes, dest: Addr) -> None:
        transport, host, port = dest
        self.stats["sent"] += 1
        if transport == "udp":
            if self.udp_protocol is None or self.udp_protocol.transport is None:
                log.warn("no UDP listener to send SIP to {dest}", dest=safe(dest))
                return
            _iface(self.udp_protocol.transport).write(data, (host, port))
            return
        conn = self.connections.get(dest)
        if conn is not None and conn.transport is not None:
            conn.send(data)
            return
        pend = self.pending.get(dest)
        if pend is None:
            pend = _ClientFactory(self, transport, dest)
            self.pending[dest] = pend
            if transport == "tls":
                if self.tls_client_options is None:
                    log.warn("no TLS client options; cannot reach {dest}", dest=safe(dest))
                    self.pending.pop(dest, None)
                    return
                self.reactor.connectSSL(host, port, pend, self.tls_client_options(host), timeout=10)
            else:
                self.reactor.connectTCP(host, port, pend, timeout=10)
        if len(pend.queue) >= _MAX_CONNECT_QUEUE:
            # a connection that does not come up: SIP waiting for it is bounded too
            self.stats["queue_overflow"] += 1
            log.warn("SIP to {dest} dropped: {n} messages already wait for the connection", dest=safe(dest), n=len(pend.queue))
            return
        pend.queue.append(data)

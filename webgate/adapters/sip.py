"""Twisted transports for the sans-IO SIP user agent: UDP, TCP and TLS.

Thin by design: bytes in -> :class:`UserAgent.receive`; :meth:`UserAgent.outgoing` -> bytes
out; one DelayedCall follows :meth:`UserAgent.next_timer`. Every error from the core is
caught here, answered where SIP allows (400/413/513), logged, and never reaches the
reactor: one bad packet must not disturb anybody else's call.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Protocol

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import SipMessage, SipRequest, StreamFramer, parse_message
from webgate.proto.sip.transaction import Addr
from webgate.proto.sip.useragent import Event, UserAgent

log = Logger()

_RAW_HDR = {
    "via": re.compile(rb"^(?:via|v)[ \t]*:(.*)$", re.I | re.M),
    "from": re.compile(rb"^(?:from|f)[ \t]*:(.*)$", re.I | re.M),
    "to": re.compile(rb"^(?:to|t)[ \t]*:(.*)$", re.I | re.M),
    "call-id": re.compile(rb"^(?:call-id|i)[ \t]*:(.*)$", re.I | re.M),
    "cseq": re.compile(rb"^cseq[ \t]*:(.*)$", re.I | re.M),
}

_CANONICAL = {"via": b"Via", "from": b"From", "to": b"To", "call-id": b"Call-ID", "cseq": b"CSeq"}


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def bad_request_for(data: bytes, reason: str, status: int = 400) -> bytes | None:
    """Build a stateless 400 (or 513 for an oversized message) for an unparseable request, if enough
    of it is readable (§8.2)."""
    start = data.lstrip(b"\r\n")[:4]
    if start in (b"SIP/", b"ACK ") or b"SIP/2.0\r\n" not in data[:512] and b"SIP/2.0\n" not in data[:512]:
        return None  # responses and ACKs are never answered (§17.1.1.1, §8.2); a non-SIP blob gets nothing
    head = data.split(b"\r\n\r\n", 1)[0][:8192]
    lines = []
    for name, rx in _RAW_HDR.items():
        m = rx.search(head)
        if m is None:
            return None
        value = m.group(1).strip()
        if any(c < 0x20 and c != 9 for c in value) or len(value) > 1024:
            return None
        lines.append(_CANONICAL[name] + b": " + value)
    safe_reason = re.sub(r"[^A-Za-z0-9 ,.:'()_-]", "?", reason)[:80]
    return b"SIP/2.0 %d " % status + safe_reason.encode() + b"\r\n" + b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"


class SipEventHandler(Protocol):
    def handle_sip_event(self, event: Event) -> None: ...


class _UdpProtocol(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, owner: "SipTransport", transport_name: str = "udp") -> None:
        self.owner = owner
        self.name = transport_name

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted API)
        host, port = addr[0], addr[1]
        self.owner.data_received(self.name, data, (self.name, host, port), self)


class _StreamProtocol(protocol.Protocol):
    def __init__(self, owner: "SipTransport", transport_name: str) -> None:
        self.owner = owner
        self.name = transport_name
        self.framer = StreamFramer(owner.max_message_size)
        self.peer: Addr = (transport_name, "", 0)

    def connectionMade(self) -> None:  # noqa: N802
        p = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = (self.name, p.host, p.port)
        self.owner.connections[self.peer] = self

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for item in self.framer.feed(data):
            if isinstance(item, RemoteProtocolError):
                log.warn("SIP {transport} framing error from {peer}: {error}", transport=self.name, peer=self.peer, error=item.message)
                continue
            self.owner.message_received(item, self.peer)
        if self.framer.broken:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.owner.connections.get(self.peer) is self:
            del self.owner.connections[self.peer]

    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class _StreamFactory(protocol.Factory):
    noisy = False

    def __init__(self, owner: "SipTransport", transport_name: str) -> None:
        self.owner = owner
        self.name = transport_name

    def buildProtocol(self, addr: IAddress) -> _StreamProtocol:  # noqa: N802
        return _StreamProtocol(self.owner, self.name)


class _ClientFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, owner: "SipTransport", transport_name: str, key: Addr) -> None:
        self.owner = owner
        self.name = transport_name
        self.key = key
        self.queue: list[bytes] = []
        self.proto: _StreamProtocol | None = None

    def buildProtocol(self, addr: IAddress) -> _StreamProtocol:  # noqa: N802
        p = _StreamProtocol(self.owner, self.name)
        self.proto = p
        orig = p.connectionMade

        def made() -> None:
            orig()
            # also reachable under the name we dialled
            self.owner.connections[self.key] = p
            self.owner.pending.pop(self.key, None)
            for data in self.queue:
                p.send(data)
            self.queue.clear()

        p.connectionMade = made  # type: ignore[method-assign]
        return p

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        log.warn("SIP {transport} connection to {dest} failed: {reason}", transport=self.name, dest=self.key, reason=reason.getErrorMessage())
        self.owner.pending.pop(self.key, None)


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
    ) -> None:
        self.reactor = reactor
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
        self.stats = {"received": 0, "sent": 0, "bad": 0}

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
        lp = self.reactor.listenSSL(port, _StreamFactory(self, "tls"), self.tls_server_context, interface=host)
        self.listeners.append(lp)
        return int(lp.getHost().port)

    def stop(self) -> defer.Deferred[Any]:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        ds = [defer.maybeDeferred(lp.stopListening) for lp in self.listeners]
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.loseConnection()
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
            log.debug("bad SIP datagram from {source}: {error}", source=source, error=e.message)
            reply = bad_request_for(data, e.message, 513 if e.status_hint == 513 else 400)
            if reply is not None and proto.transport is not None:
                proto.transport.write(reply, (source[1], source[2]))
            return
        self.message_received(message, source)

    def message_received(self, message: SipMessage, source: Addr) -> None:
        self.stats["received"] += 1
        try:
            message.validate_basic()
        except RemoteProtocolError as e:
            self.stats["bad"] += 1
            if isinstance(message, SipRequest) and message.method != "ACK":
                reply = bad_request_for(message.serialize(), e.message)
                if reply is not None:
                    self._send_raw(reply, source)
            return
        try:
            events = self.ua.receive(message, source, self.reactor.seconds())
        except (RemoteProtocolError, LocalProtocolError) as e:
            self.stats["bad"] += 1
            log.warn("SIP message from {source} refused: {error}", source=source, error=e.message)
            events = []
        except Exception:
            self.stats["bad"] += 1
            log.failure("SIP core failed on a message from {source}", source=source)
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
            d.addErrback(lambda f: log.warn("cannot resolve {host}: {err}", host=host, err=f.getErrorMessage()))
            return
        self._send_raw(data, dest)

    def _send_raw(self, data: bytes, dest: Addr) -> None:
        transport, host, port = dest
        self.stats["sent"] += 1
        if transport == "udp":
            if self.udp_protocol is None or self.udp_protocol.transport is None:
                log.warn("no UDP listener to send SIP to {dest}", dest=dest)
                return
            self.udp_protocol.transport.write(data, (host, port))
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
                    log.warn("no TLS client options; cannot reach {dest}", dest=dest)
                    self.pending.pop(dest, None)
                    return
                self.reactor.connectSSL(host, port, pend, self.tls_client_options(host), timeout=10)
            else:
                self.reactor.connectTCP(host, port, pend, timeout=10)
        pend.queue.append(data)

"""The gateway service: one ``MultiService`` that owns every listener and component.

``build_gateway(config)`` builds it; twistd's ``makeService`` (webgate/tap.py) returns
it: HTTP (and HTTPS) listeners, the telephony service, RTMP (and RTMPS) listeners, the
REST API, metrics and CDR writer (``webgate.ops``). Extension points:

- ``gateway.sip`` — the SIP user agent (adapters), ``None`` until built;
- ``gateway.registry`` — the call registry (calls/); ``health()["calls"]`` counts it
  with ``len()``;
- ``gateway.rtp_ports`` — the RTP port-pair pool;
- ``gateway.add_listener(name, kind, address, target)`` — a TCP/UDP/TLS listener that
  is a child service (opened in ``privilegedStartService``, closed on stop);
  ``gateway.listening_address(name)`` gives the bound address (useful with port 0);
- ``gateway.site`` — the twisted.web Site; add resources with
  ``gateway.site.resource.putChild(b"api", ...)``;
- ``gateway.drain()`` — awaited on shutdown after ``shutting_down`` is set (health
  answers 503) and before listeners close: hang up / wait for calls there;
- ``gateway.cluster`` — with ``[cluster] enabled``, the node's parts
  (``webgate.cluster.service.ClusterService``, owned by the telephony service), else ``None``.

Add components as child services (``svc.setServiceParent(gateway)``) so they start
and stop with the gateway.
"""

from __future__ import annotations

from typing import Any, Literal

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from webgate import __version__
from webgate.adapters.guard import listen_tls
from webgate.config import Config, HostPort
from webgate.listen import ListenError, tls_server_context
from webgate.web.site import make_site

__all__ = ["Gateway", "Listener", "build_gateway"]

log = Logger()

ListenerKind = Literal["tcp", "udp", "tls"]


class Listener(service.Service):
    """A listening socket as a service: TCP/TLS (a factory) or UDP (a protocol)."""

    def __init__(
        self,
        name: str,
        kind: ListenerKind,
        address: HostPort,
        target: Any,
        reactor: Any,
        tls_context: Any = None,
    ) -> None:
        self.setName(name)
        self.kind = kind
        self.address = address
        self.target = target
        self.reactor = reactor
        self.tls_context = tls_context
        # typed Any: zope's IListeningPort declares its methods without self, which mypy cannot call
        self.port: Any = None  # an IListeningPort while listening

    def _listen(self) -> None:
        host, port = self.address.host, self.address.port
        try:
            if self.kind == "tcp":
                self.port = self.reactor.listenTCP(port, self.target, interface=host)
            elif self.kind == "udp":
                self.port = self.reactor.listenUDP(port, self.target, interface=host)
            elif self.kind == "tls":
                # like listenSSL, but a factory may refuse a connection at accept (connection caps)
                self.port = listen_tls(self.reactor, port, self.target, self.tls_context, interface=host)
            else:
                raise ValueError(f"unknown listener kind {self.kind!r}")
        except CannotListenError as e:
            raise ListenError.from_cannot_listen(str(self.name), self.address, e) from e
        log.info("{name} listening on {kind} {address}", name=self.name, kind=self.kind, address=self.bound)

    def privilegedStartService(self) -> None:
        # twistd opens ports here, before it drops privileges (--uid/--gid).
        if self.port is None:
            self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        if self.port is None:
            self._listen()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return maybeDeferred(port.stopListening)

    @property
    def bound(self) -> HostPort | None:
        """The address actually bound (port 0 resolved), or None when not listening."""
        if self.port is None:
            return None
        h = self.port.getHost()
        return HostPort(h.host, h.port)


class Gateway(service.MultiService):
    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.setName("webgate")
        self.config = config
        self.reactor = reactor
        self.started_at: float | None = None
        self.shutting_down = False
        self.listeners: dict[str, Listener] = {}
        self.site: Any = None
        # Extension points, filled in by later issues (see the module docstring).
        self.sip: Any = None
        self.registry: Any = None
        self.rtp_ports: Any = None
        self.telephony: Any = None
        self.cluster: Any = None  # webgate.cluster.service.ClusterService with [cluster] enabled
        self.metrics: Any = None  # webgate.ops.metrics.GatewayMetrics
        self.cdr: Any = None  # webgate.ops.cdr.CdrWriter, when [cdr] file or webhook_url is set

    # -- building

    def add_listener(
        self,
        name: str,
        kind: ListenerKind,
        address: HostPort,
        target: Any,
        tls_context: Any = None,
    ) -> Listener:
        """Add a listener child service; ``target`` is a factory (tcp/tls) or protocol (udp)."""
        if name in self.listeners:
            raise ValueError(f"duplicate listener {name!r}")
        listener = Listener(name, kind, address, target, self.reactor, tls_context)
        listener.setServiceParent(self)
        self.listeners[name] = listener
        return listener

    def listening_address(self, name: str) -> HostPort | None:
        listener = self.listeners.get(name)
        return listener.bound if listener is not None else None

    # -- state

    def health(self) -> dict[str, Any]:
        """Health for ``GET /health`` (and monitoring): cheap, no secrets."""
        uptime = 0.0 if self.started_at is None else self.reactor.seconds() - self.started_at
        return {
            "status": "shutting_down" if self.shutting_down else "ok",
            "version": __version__,
            "reactor": type(self.reactor).__name__,
            "uptime_s": round(uptime, 3),
            "calls": len(self.registry) if self.registry is not None else 0,
            "listeners": {
                **{name: str(l.bound or l.address) for name, l in self.listeners.items()},
                **({f"sip_{t}": f"{h}:{p}" for t, (h, p) in self.telephony.bound.items()} if self.telephony is not None else {}),
            },
            **({"cluster": self.cluster.status()} if self.cluster is not None else {}),
        }

    # -- lifecycle

    def startService(self) -> None:
        self.started_at = self.reactor.seconds()
        self.shutting_down = False
        log.info(
            "webgate {version} starting on {reactor} (config {source})",
            version=__version__,
            reactor=type(self.reactor).__name__,
            source=self.config.source,
        )
        super().startService()
        self._attach_observers()
        if self.cluster is not None:  # the node's public addresses, now that the listeners are bound
            self.cluster.addresses(http=self.listening_address("http"), rtmp=self.listening_address("rtmp"))

    def _attach_observers(self) -> None:
        """Metrics and CDR writer watch the call manager (built when telephony starts)."""
        manager = getattr(self.telephony, "manager", None)
        if manager is None:
            return
        for obs in (self.metrics, self.cdr):
            if obs is not None and obs not in manager.observers:
                manager.observers.append(obs)

    async def drain(self) -> None:
        """End live calls (BYE/CANCEL, clients told) and wait for their answers and for CDR
        webhook deliveries, at most ``[shutdown] timeout_s`` in all, before the listeners close."""
        timeout = float(self.config.shutdown.timeout_s)
        start = self.reactor.seconds()
        if self.telephony is not None:
            await self.telephony.drain(max(0.1, timeout - 0.5))
        if self.cdr is not None and self.cdr.pending:
            left = max(0.1, timeout - (self.reactor.seconds() - start))
            d = self.cdr.flush()
            d.addTimeout(left, self.reactor)
            try:
                await d
            except Exception:  # noqa: BLE001 - TimeoutError: deliveries left behind are logged
                log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                    "shutdown: {n} CDR webhook deliveries unfinished", n=len(self.cdr.pending))

    async def _stop(self) -> None:
        self.shutting_down = True
        manager = getattr(self.telephony, "manager", None)
        if manager is not None:
            manager.accepting = False  # refuse new calls (shutting_down) from now on
        log.info(
            "webgate shutting down: ending {n} calls (at most {s} s)",
            n=len(self.registry) if self.registry is not None else 0,
            s=self.config.shutdown.timeout_s,
        )
        try:
            await self.drain()
        except Exception:  # noqa: BLE001 - shutdown goes on whatever failed
            log.failure("shutdown: draining calls failed")
        d = maybeDeferred(super().stopService)
        d.addTimeout(5, self.reactor)
        try:
            await d
        except Exception:  # noqa: BLE001 - shutdown goes on whatever failed
            log.failure("shutdown: stopping listeners failed")
        log.info("webgate stopped")

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())


def build_gateway(config: Config, reactor: Any = None) -> Gateway:
    """Build the gateway for ``config`` (not started). ``reactor`` defaults to the global one."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    gateway = Gateway(config, reactor)
    gateway.site = make_site(gateway)
    if config.http.listen is not None:
        gateway.add_listener("http", "tcp", config.http.listen, gateway.site)
    # SIP (udp/tcp/tls), the RTP port pool, the dial plan and the call manager
    from webgate.telephony import TelephonyService

    telephony = TelephonyService(config, reactor)
    telephony.setServiceParent(gateway)
    gateway.telephony = telephony
    gateway.registry = telephony.registry
    gateway.cluster = telephony.cluster
    # WebRTC: WebSocket signalling at /ws, the demo page at / and the JS client at /html5_client/
    from webgate.web.static import add_static
    from webgate.web.ws import make_ws_resource

    ws_resource = make_ws_resource(telephony, config, reactor)
    gateway.site.resource.putChild(b"ws", ws_resource)
    add_static(gateway.site.resource)
    # operations: /api (admin key), /metrics, CDRs (see docs/operations.md)
    from webgate.ops.api import ApiResource
    from webgate.ops.cdr import CdrWriter
    from webgate.ops.metrics import GatewayMetrics, MetricsResource

    gateway.metrics = GatewayMetrics(telephony)
    gateway.metrics.limiters += [gateway.site.limiter, ws_resource.signalling.limiter]  # type: ignore[attr-defined]
    if config.api.metrics:
        gateway.site.resource.putChild(b"metrics", MetricsResource(gateway.metrics))
    if config.api.admin_key:
        gateway.site.resource.putChild(b"api", ApiResource(gateway, config.api.admin_key))
    cdr = CdrWriter(config.cdr, reactor)
    gateway.cdr = cdr if cdr.enabled else None
    # HTTPS/WSS: the same site (/, /ws, /api, /metrics, /health) over TLS
    if config.http.tls_listen is not None:
        ctx = tls_server_context(config.http.tls_cert, config.http.tls_key)
        gateway.add_listener("https", "tls", config.http.tls_listen, gateway.site, tls_context=ctx)
    # RTMP ingress (Flash RPC and encoder style); RTMPS is the same factory over TLS
    if config.rtmp.listen is not None or config.rtmp.tls_listen is not None:
        from webgate.adapters.rtmp import RtmpFactory

        rtmp_factory = RtmpFactory(telephony, config.rtmp, reactor, video_config=config.video)
        gateway.metrics.limiters.append(rtmp_factory.limiter)
        if config.rtmp.listen is not None:
            gateway.add_listener("rtmp", "tcp", config.rtmp.listen, rtmp_factory)
        if config.rtmp.tls_listen is not None:
            ctx = tls_server_context(config.rtmp.tls_cert, config.rtmp.tls_key)
            gateway.add_listener("rtmps", "tls", config.rtmp.tls_listen, rtmp_factory, tls_context=ctx)
    return gateway

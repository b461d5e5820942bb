"""Builds the telephony side of the gateway from the configuration: the SIP user agent
and its transports, the RTP port pool, the dial plan, the call registry and the call
manager; and runs them as one Twisted service. With ``[cluster] enabled = true`` the registry,
the session IDs, the web users and the cluster-wide admission step are a cluster node's
(``webgate/cluster/service.py``), which joins the cluster when the service starts and leaves
it when the service stops (after the drain ended the calls)."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from webgate.adapters import media_loop
from webgate.adapters.recording_store import FileStore
from webgate.adapters.rtp import RtpPortPool
from webgate.adapters.sip import SipTransport
from webgate.adapters.sip_resolver import SipLocator, start_locator
from webgate.calls.dialplan import DialPlan, locate_key
from webgate.calls.manager import CallManager
from webgate.calls.policy import CallPolicy
from webgate.calls.recording import Recordings
from webgate.calls.registry import CallRegistry, InMemoryCallRegistry
from webgate.calls.session_id import SessionIdAllocator
from webgate.calls.users import InboundAllowList, WebUsers
from webgate.config import HostPort, RecordingConfig
from webgate.legs.hub_recording import HubRecordingFactory
from webgate.listen import ListenError, tls_server_context, tls_trust_root
from webgate.media.codecs import set_library_paths
from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.locate import plan_for
from webgate.proto.sip.message import SipURI
from webgate.proto.sip.transaction import Addr, TimerConfig, TransactionState
from webgate.proto.sip.useragent import (
    Credentials,
    LocalEndpoint,
    Registration,
    UAConfig,
    UserAgent,
)

log = Logger()

#: a node that got an out-of-dialog OPTIONS within this many seconds is being probed (a
#: dispatcher): its drain waits for the next probe, answered 503, before ending its calls
PROBED_WITHIN_S = 30.0


def _tls_client_options(ca_file: str) -> Any:
    from twisted.internet import ssl

    trust: Any = tls_trust_root(ca_file) if ca_file else None

    def make(host: str) -> Any:
        if trust is not None:
            return ssl.optionsForClientTLS(host, trustRoot=trust)
        return ssl.optionsForClientTLS(host)

    return make


class TelephonyService(service.Service):
    """Owns the SIP transports, RTP pool and call manager."""

    name: str | None = "telephony"  # type: ignore[assignment]  # Service declares name: None

    def __init__(self, config: Any, reactor: Any, registry: CallRegistry | None = None) -> None:
        self.config = config
        self.reactor = reactor
        # [codecs]: where the codec libraries are loaded from (an absent one: its codecs not offered)
        set_library_paths(config.codecs.library_paths())
        #: the cluster node's parts (webgate.cluster.service.ClusterService), None in one process
        self.cluster: Any = None
        if config.cluster.enabled and registry is None:
            from webgate.cluster.service import ClusterService

            self.cluster = ClusterService(config, reactor)
            registry = self.cluster.registry
        self.registry = registry if registry is not None else InMemoryCallRegistry()
        self.ua: UserAgent | None = None
        self.transport: SipTransport | None = None
        self.rtp_pool: RtpPortPool | None = None
        self.manager: CallManager | None = None
        #: call recording (webgate/calls/recording.py); its ``sink_factory`` (video/data) is set by the wiring
        self.recordings = Recordings(getattr(config, "recording", None) or RecordingConfig(), reactor,
                                     sink_factory=HubRecordingFactory(), store=FileStore())
        self.bound: dict[str, tuple[str, int]] = {}
        self.registrations: list[Any] = []
        #: RFC 3263 DNS for trunks named by DNS name (None: none is); ``locator_ready`` fires
        #: once its first lookups are done
        self.locator: SipLocator | None = None
        self.locator_ready: defer.Deferred[Any] = defer.succeed(None)

    # ------------------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.config
        sip = cfg.sip
        timers = TimerConfig(t1=sip.t1_ms / 1000.0, t2=sip.t2_ms / 1000.0, t4=sip.t4_ms / 1000.0)
        ua_cfg = UAConfig(endpoints={}, user_agent=sip.user_agent, timers=timers, honour_maddr=sip.honour_maddr,
                          failover_timeout=sip.failover_timeout_s)
        if sip.outbound_proxy is not None:
            ua_cfg.outbound_proxy = SipURI.parse(sip.outbound_proxy.text)
        self.ua = UserAgent(ua_cfg)
        tls_ctx = tls_server_context(sip.tls_cert, sip.tls_key) if sip.tls is not None else None
        self.transport = SipTransport(
            self.reactor,
            self.ua,
            self._on_event,
            max_message_size=sip.max_message_size,
            tls_server_context=tls_ctx,
            tls_client_options=_tls_client_options(sip.tls_ca),
            max_connections=sip.max_connections,
            max_connections_per_ip=sip.max_connections_per_ip,
            idle_timeout_s=sip.idle_timeout_s,
            partial_timeout_s=sip.partial_timeout_s,
            max_send_buffer=sip.max_send_buffer,
            send_stall_s=sip.send_stall_s,
        )
        # listen now (before anything else) so that port 0 resolves for the advertised address
        adv = sip.advertised_address
        for name in ("udp", "tcp", "tls"):
            hp = getattr(sip, name)
            if hp is None:
                continue
            listen = {"udp": self.transport.listen_udp, "tcp": self.transport.listen_tcp, "tls": self.transport.listen_tls}[name]
            try:
                port = listen(hp.host, hp.port)
            except CannotListenError as e:
                raise ListenError.from_cannot_listen(f"sip.{name}", hp, e) from None
            self.bound[name] = (hp.host, port)
            host = adv or hp.host
            if host in ("0.0.0.0", "::"):
                host = "127.0.0.1"
            ua_cfg.endpoints[name] = LocalEndpoint(name, host, port)
            log.info("SIP listening on {transport} {host}:{port} (advertised {adv})", transport=name, host=hp.host, port=port, adv=host)
        rtp = cfg.rtp
        media_loop.set_default_mode(rtp.media_io, rtp.read_interval_ms)  # also the WebRTC legs' ICE sockets
        self.rtp_pool = RtpPortPool(self.reactor, rtp.bind, rtp.port_min, rtp.port_max,
                                    strict_source=rtp.strict_source, relearn_after_s=rtp.relearn_after_s,
                                    media_io=rtp.media_io)
        rtp_adv = rtp.advertised_address or rtp.bind
        if rtp_adv in ("0.0.0.0", "::"):
            rtp_adv = "127.0.0.1"

        builtin: dict[str, str] = {}
        builtin_target = None
        if cfg.builtin.enabled and ua_cfg.endpoints:
            builtin = {cfg.builtin.echo: "echo", cfg.builtin.tone: "tone"}
            t = "udp" if "udp" in ua_cfg.endpoints else next(iter(ua_cfg.endpoints))
            ep = ua_cfg.endpoints[t]
            builtin_target = SipURI(host=ep.host, port=ep.port)
            if t != "udp":
                builtin_target.params["transport"] = t
        dialplan = DialPlan(cfg, builtin=builtin, builtin_target=builtin_target)
        trunk_hosts = [t.target.host for t in cfg.trunks]
        sids: SessionIdAllocator = (
            self.cluster.session_ids if self.cluster is not None
            else SessionIdAllocator(cfg.session_id.length, float(cfg.session_id.reuse_after_s), clock=self.reactor.seconds)
        )
        web_users: WebUsers | None = self.cluster.web_users(self.reactor) if self.cluster is not None else None
        self.manager = CallManager(
            self.reactor,
            self.ua,
            self.transport,
            self.rtp_pool,
            dialplan,
            self.registry,
            sids,
            rtp_advertise=rtp_adv,
            session_header=cfg.session_id.header,
            session_mode=cfg.session_id.mode,
            from_domain=sip.from_domain,
            max_calls=cfg.limits.max_calls,
            max_call_duration_s=cfg.limits.max_call_duration_s,
            builtin_enabled=cfg.builtin.enabled,
            tone_hz=cfg.builtin.tone_hz,
            jitter_min_ms=rtp.jitter_min_ms,
            jitter_max_ms=rtp.jitter_max_ms,
            policy=CallPolicy.from_config(cfg.limits, clock=self.reactor.seconds),
            tokens=cfg.tokens,
            inbound_from=InboundAllowList(sip.inbound_from, trunk_hosts),
            builtin_sip_from=InboundAllowList(cfg.builtin.sip_from, trunk_hosts),
            web_users=web_users,
        )
        self.locator, self.locator_ready = start_locator(
            cfg, self.reactor, dialplan, [self.manager.inbound_from, self.manager.builtin_sip_from], ua_cfg.endpoints)
        if self.cluster is not None:
            self.manager.cluster = self.cluster.node  # the cluster-wide admission step
            self.manager.observers.append(self.cluster.index)
        self.manager.observers.append(self.recordings)  # before the CDR writer: the sidecar is final first
        # REGISTER for trunks that require it
        now = self.reactor.seconds()
        for trunk in cfg.trunks:
            if not trunk.register:
                continue
            target = SipURI.parse(trunk.target.text)
            user = trunk.username or trunk.auth_username
            aor = SipURI(scheme="sip", user=user, host=target.host)
            creds = Credentials(trunk.auth_username or trunk.username, trunk.password, trunk.realm) if trunk.password else None
            where, transport = locate_key(cfg, trunk)
            if self.locator is not None and plan_for(where, transport).kind != "ip":
                # a registrar (or proxy) by DNS name: RFC 3263 servers, as for calls (first REGISTER
                # once they are known; failover to the next on 503 or no answer)
                self._register_located(trunk.name, aor, target, creds, trunk.register_expires, where, transport)
                continue
            reg = self.ua.register(aor, target, now, credentials=creds, expires=trunk.register_expires, transport=trunk.transport)
            self.registrations.append(reg)
        self.transport.flush()
        if self.cluster is not None and cfg.cluster.registrar:
            # the web users REGISTERed at Kamailio's registrar with this node's contact (docs/cluster.md)
            from webgate.cluster.sip_users import SipUserRegistrations

            self.cluster.register_users_at(SipUserRegistrations(
                self.ua, SipURI.parse(cfg.cluster.registrar), self.reactor.seconds, self.transport.flush,
                self.registrations))

    def _register_located(self, name: str, aor: SipURI, registrar: SipURI, creds: Credentials | None,
                          expires: int, where: SipURI, transport: str | None) -> None:
        """Trunk ``name``'s registration toward the located servers of ``where``: REGISTER when
        the first answer comes, and every DNS refresh updates its servers."""
        assert self.locator is not None
        held: list[Registration] = []

        def located(found: list[Addr]) -> None:
            if self.ua is None or self.transport is None or (held and not held[0].active):
                return
            if held:
                self.ua.set_register_destinations(held[0], found)
                return
            try:
                reg = self.ua.register(aor, registrar, self.reactor.seconds(), credentials=creds, expires=expires,
                                       transport=found[0][0], destinations=found)
            except LocalProtocolError as e:
                log.warn("trunk {trunk}: cannot register: {error}", trunk=name, error=e.message)  # noqa: G010
                return
            held.append(reg)
            self.registrations.append(reg)
            self.transport.flush()

        self.locator.subscribe(where, transport, located)

    def _on_event(self, ev: Any) -> None:
        if self.manager is not None:
            self.manager.handle_sip_event(ev)

    # ------------------------------------------------------------------------------
    def privilegedStartService(self) -> None:  # noqa: N802
        if self.ua is None:
            self.build()
        super().privilegedStartService()

    def startService(self) -> None:  # noqa: N802
        if self.ua is None:
            self.build()
        super().startService()
        self.recordings.sweep_at_start()  # in a thread: recordings a crash left unfinished
        if self.cluster is not None:
            bound = self.bound.get("udp") or self.bound.get("tcp")
            if bound is not None:
                self.cluster.addresses(sip=HostPort(self.config.sip.advertised_address or bound[0], bound[1]))
            self.cluster.start()  # in the background: the gateway fills in its HTTP and RTMP addresses first

    def drain(self, timeout_s: float = 10.0) -> defer.Deferred[None]:
        """Leave a SIP dispatcher's set first (SIP OPTIONS are answered 503 from now on; a node
        that is being probed waits for the next probe, at most half of ``timeout_s``), then end
        every live call (BYE/CANCEL; clients told, cause ``shutdown``), remove registrations,
        and wait until those requests are answered (or time out in the transaction layer), all
        within ``timeout_s``."""
        if self.ua is not None:
            self.ua.out_of_service = True
        return defer.ensureDeferred(self._drain(timeout_s))

    async def _drain(self, timeout_s: float) -> None:
        start = self.reactor.seconds()
        await self._leave_dispatcher(timeout_s / 2)
        if self.manager is not None:
            self.manager.shutdown()
        if self.ua is not None and self.transport is not None:
            now = self.reactor.seconds()
            for reg in self.registrations:
                self.ua.unregister(reg, now)
            self.transport.flush()
        await self._wait_for_requests(max(0.1, timeout_s - (self.reactor.seconds() - start)))

    async def _leave_dispatcher(self, wait_s: float) -> None:
        """A node probed with OPTIONS (one arrived in the last ``PROBED_WITHIN_S``: Kamailio's
        dispatcher, docs/cluster.md) keeps its calls until a probe was answered 503, so that
        the dispatcher sends new calls elsewhere before these end; at most ``wait_s``."""
        ua = self.ua
        if ua is None or ua.options_at is None or self.reactor.seconds() - ua.options_at > PROBED_WITHIN_S:
            return
        refused, deadline = ua.options_refused, self.reactor.seconds() + wait_s
        log.info("shutdown: answering SIP OPTIONS 503 until the next probe (at most {s} s) before ending calls",
                 s=round(wait_s, 1))
        while ua.options_refused == refused and self.reactor.seconds() < deadline:
            await task.deferLater(self.reactor, 0.05)

    def pending_requests(self) -> int:
        """Client transactions still waiting for a final response (BYE, CANCEL, the INVITEs
        they end, REGISTER)."""
        if self.ua is None:
            return 0
        waiting = (TransactionState.CALLING, TransactionState.TRYING, TransactionState.PROCEEDING)
        return sum(1 for t in self.ua.tm.client_transactions if t.state in waiting)

    async def _wait_for_requests(self, timeout_s: float) -> None:
        deadline = self.reactor.seconds() + timeout_s
        await task.deferLater(self.reactor, 0.05)  # let loopback answers (and the built-in UAS) arrive
        while self.pending_requests() and self.reactor.seconds() < deadline:
            await task.deferLater(self.reactor, 0.05)
        left = self.pending_requests()
        if left:
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                "shutdown: {n} SIP requests still unanswered after {s} s", n=left, s=timeout_s)

    def stopService(self) -> Any:  # noqa: N802
        super().stopService()
        self.recordings.shutdown()
        ds = []
        if self.cluster is not None:
            ds.append(self.cluster.stop(leave=True))  # the drain ended the calls: leave at once
        if self.transport is not None:
            ds.append(self.transport.stop())
        if self.locator is not None:
            self.locator.stop()
        if self.rtp_pool is not None:
            for ep in list(self.rtp_pool.in_use.values()):
                ep.release()
            self.rtp_pool.clock.stop()
        return defer.DeferredList(ds)

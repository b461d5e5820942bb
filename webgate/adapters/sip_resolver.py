"""DNS for SIP (RFC 3263) with twisted.names: the NAPTR, SRV and A/AAAA lookups that locate a
trunk's (or proxy's) servers, cached for their TTL and looked up again in the background, so
the call layer gets a trunk's ordered targets at once (``DialPlan.locator``); and the
addresses of DNS names in allow-lists (``[sip] inbound_from``), refreshed the same way.

Which lookups, the NAPTR choice and the SRV order are the sans-IO ``proto/sip/locate.py``; this
module only asks DNS. A failed refresh keeps the last answer and tries again after ``retry_s``.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, dns
from twisted.names import error as dns_error

from webgate.calls.dialplan import DialPlan, locate_key
from webgate.calls.users import InboundAllowList
from webgate.logsafe import safe
from webgate.proto.sip.locate import DEFAULT_PORTS, SRV_PREFIX, Naptr, Plan, Srv, naptr_choices, plan_for, srv_order
from webgate.proto.sip.message import SipURI
from webgate.proto.sip.transaction import Addr

__all__ = ["SipLocator", "start_locator"]

log = Logger()

_Key = tuple[str, str | None, int | None]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


class SipLocator:
    """RFC 3263 targets of trunks and proxies, and addresses of allow-list names, kept fresh.

    ``servers``: (IP, port) of the DNS servers to ask; None: the system's (resolv.conf, hosts).
    ``transports``: the SIP transports we have listeners for (NAPTR picks among them)."""

    def __init__(self, reactor: Any, servers: list[tuple[str, int]] | None, transports: Iterable[str], *,
                 min_ttl_s: float = 30.0, max_ttl_s: float = 3600.0, retry_s: float = 30.0,
                 timeout: tuple[int, ...] = (1, 3, 5)) -> None:
        self.reactor = reactor
        if servers:
            self.resolver: Any = client.Resolver(servers=servers, reactor=reactor, timeout=timeout)
        else:
            self.resolver = client.createResolver()
        self.transports = [t for t in ("udp", "tcp", "tls") if t in set(transports)]
        self.min_ttl_s = min_ttl_s
        self.max_ttl_s = max_ttl_s
        self.retry_s = retry_s
        self._targets: dict[_Key, list[Addr]] = {}
        self._timers: dict[object, Any] = {}  # key -> the DelayedCall of its next lookup
        self._on_targets: dict[_Key, list[Callable[[list[Addr]], None]]] = {}
        self.lookups = 0
        self.failures = 0

    # -- what the call layer asks (synchronous, from the cache) -------------------------------
    def targets(self, uri: SipURI, transport: str | None) -> list[Addr] | None:
        plan = plan_for(uri, transport)
        if plan.kind == "ip":
            assert plan.transport is not None and plan.port is not None
            return [(plan.transport, plan.host, plan.port)]
        found = self._targets.get((plan.host, plan.transport, plan.port))
        return list(found) if found else None

    # -- keeping answers fresh -------------------------------------------------------------------
    def watch(self, uri: SipURI, transport: str | None,
              on_targets: Callable[[list[Addr]], None] | None = None) -> defer.Deferred[None]:
        """Locate ``uri`` now and again at its TTL (``on_targets(targets)`` after each answer).
        The Deferred fires after the first lookup (whatever its outcome)."""
        plan = plan_for(uri, transport)
        if plan.kind == "ip":
            return defer.succeed(None)
        key: _Key = (plan.host, plan.transport, plan.port)
        if on_targets is not None:
            self._on_targets.setdefault(key, []).append(on_targets)
        return defer.Deferred.fromCoroutine(self._refresh_targets(key, plan))

    def subscribe(self, uri: SipURI, transport: str | None, on_targets: Callable[[list[Addr]], None]) -> None:
        """``on_targets(targets)`` after every answer for ``uri`` (already watched: its first
        lookup may be in flight), and now if its targets are known already."""
        plan = plan_for(uri, transport)
        key: _Key = (plan.host, plan.transport, plan.port)
        self._on_targets.setdefault(key, []).append(on_targets)
        found = self.targets(uri, transport)
        if found:
            on_targets(found)

    def watch_name(self, name: str, on_addresses: Callable[[list[str]], None]) -> defer.Deferred[None]:
        """Resolve ``name`` (A, else AAAA) now and again at its TTL; ``on_addresses(ips)`` on
        every answer (not on failures: the last answer stays)."""
        return defer.Deferred.fromCoroutine(self._refresh_name(name.rstrip(".").lower(), on_addresses))

    def stop(self) -> None:
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def _again(self, key: object, delay: float, fn: Callable[[], Any]) -> None:
        old = self._timers.get(key)
        if old is not None and old.active():
            old.cancel()
        self._timers[key] = self.reactor.callLater(delay, fn)

    def _ttl(self, ttl: float | None) -> float:
        return min(self.max_ttl_s, max(self.min_ttl_s, ttl if ttl is not None else self.min_ttl_s))

    async def _refresh_targets(self, key: _Key, plan: Plan) -> None:
        try:
            found, ttl = await self.locate(plan)
        except Exception as e:  # noqa: BLE001 - any DNS failure: keep the last answer, try later
            self.failures += 1
            log.warn("SIP DNS: locating {host} failed: {error}; {kept}", host=safe(plan.host), error=safe(e),
                     kept="keeping the last answer" if key in self._targets else "no servers known yet")
            self._again(key, self.retry_s, lambda: self._targets_again(key, plan))
            return
        if found:
            if found != self._targets.get(key):
                log.info("SIP DNS: {host} -> {targets} (TTL {ttl} s)", host=safe(plan.host),
                         targets=", ".join(f"{t}:{h}:{p}" for t, h, p in found), ttl=int(self._ttl(ttl)))
            self._targets[key] = found
            for fn in self._on_targets.get(key, []):
                try:
                    fn(list(found))
                except Exception:  # noqa: BLE001 - a failing consumer never stops the refresh
                    log.failure("SIP DNS: using the servers of {host} failed", host=safe(plan.host))
        else:
            log.warn("SIP DNS: {host} has no SIP servers (no NAPTR/SRV/A records)", host=safe(plan.host))
        self._again(key, self._ttl(ttl) if found else self.retry_s, lambda: self._targets_again(key, plan))

    def _targets_again(self, key: _Key, plan: Plan) -> None:
        self._timers.pop(key, None)
        defer.Deferred.fromCoroutine(self._refresh_targets(key, plan))

    async def _refresh_name(self, name: str, on_addresses: Callable[[list[str]], None]) -> None:
        key = ("name", name)
        try:
            ips, ttl = await self.addresses(name)
        except Exception as e:  # noqa: BLE001
            self.failures += 1
            log.warn("SIP DNS: resolving {name} failed: {error}", name=safe(name), error=safe(e))
            self._again(key, self.retry_s, lambda: self._name_again(name, on_addresses))
            return
        if ips:
            try:
                on_addresses(ips)
            except Exception:  # noqa: BLE001 - a failing consumer never stops the refresh
                log.failure("SIP DNS: using the addresses of {name} failed", name=safe(name))
        self._again(key, self._ttl(ttl) if ips else self.retry_s, lambda: self._name_again(name, on_addresses))

    def _name_again(self, name: str, on_addresses: Callable[[list[str]], None]) -> None:
        self._timers.pop(("name", name), None)
        defer.Deferred.fromCoroutine(self._refresh_name(name, on_addresses))

    # -- the lookups (RFC 3263 §4) ----------------------------------------------------------------
    async def locate(self, plan: Plan) -> tuple[list[Addr], float | None]:
        """The ordered targets of ``plan`` and the smallest TTL of the records used."""
        ttls: list[float] = []
        if plan.kind == "a":
            assert plan.transport is not None and plan.port is not None
            ips, ttl = await self.addresses(plan.host)
            return [(plan.transport, ip, plan.port) for ip in ips], ttl
        if plan.kind == "srv":
            assert plan.transport is not None
            found = await self._srv_targets(plan.transport, SRV_PREFIX[plan.transport] + plan.host, ttls)
            if not found:
                ips, ttl = await self.addresses(plan.host)
                found = [(plan.transport, ip, DEFAULT_PORTS[plan.transport]) for ip in ips]
                if ttl is not None:
                    ttls.append(ttl)
            return found, min(ttls) if ttls else None
        # NAPTR, then SRV of each transport we have, then A with UDP (§4.1)
        naptrs, ttl = await self._naptr(plan.host)
        if ttl is not None:
            ttls.append(ttl)
        choices = naptr_choices(naptrs, self.transports)
        if not choices:
            choices = [(t, SRV_PREFIX[t] + plan.host) for t in self.transports]
        found = []
        for t, name in choices:
            found += [a for a in await self._srv_targets(t, name, ttls) if a not in found]
        if not found:
            ips, ttl = await self.addresses(plan.host)
            t = "udp" if "udp" in self.transports else (self.transports[0] if self.transports else "udp")
            found = [(t, ip, DEFAULT_PORTS[t]) for ip in ips]
            if ttl is not None:
                ttls.append(ttl)
        return found, min(ttls) if ttls else None

    async def _query(self, fn: Callable[[str], Any], name: str) -> list[Any]:
        """The answer records of one query; an empty list when the name or record does not exist."""
        self.lookups += 1
        try:
            answers, _authority, _additional = await fn(name)
        except (dns_error.DNSNameError, dns_error.DomainError):
            return []
        return list(answers)

    async def _naptr(self, host: str) -> tuple[list[Naptr], float | None]:
        out: list[Naptr] = []
        ttls: list[float] = []
        for rr in await self._query(self.resolver.lookupNamingAuthorityPointer, host):
            if rr.type != dns.NAPTR:
                continue
            p = rr.payload
            out.append(Naptr(int(p.order), int(p.preference), _text(p.flags), _text(p.service), _text(p.replacement.name)))
            ttls.append(float(rr.ttl))
        return out, min(ttls) if ttls else None

    async def _srv_targets(self, transport: str, name: str, ttls: list[float]) -> list[Addr]:
        records: list[Srv] = []
        for rr in await self._query(self.resolver.lookupService, name):
            if rr.type != dns.SRV:
                continue
            p = rr.payload
            records.append(Srv(int(p.priority), int(p.weight), int(p.port), _text(p.target.name)))
            ttls.append(float(rr.ttl))
        out: list[Addr] = []
        for srv in srv_order(records, secrets.randbelow):
            ips, ttl = await self.addresses(srv.target.rstrip("."))
            if ttl is not None:
                ttls.append(ttl)
            out += [(transport, ip, srv.port) for ip in ips]
        return out

    async def addresses(self, host: str) -> tuple[list[str], float | None]:
        """A records, else AAAA (our SIP sockets are mostly IPv4), and their smallest TTL."""
        ttls: list[float] = []
        ips: list[str] = []
        for rr in await self._query(self.resolver.lookupAddress, host):
            if rr.type == dns.A:
                ips.append(rr.payload.dottedQuad())
                ttls.append(float(rr.ttl))
        if not ips:
            for rr in await self._query(self.resolver.lookupIPV6Address, host):
                if rr.type == dns.AAAA:
                    ips.append(socket.inet_ntop(socket.AF_INET6, rr.payload.address))
                    ttls.append(float(rr.ttl))
        return ips, min(ttls) if ttls else None


def start_locator(config: Any, reactor: Any, dialplan: DialPlan, allow_lists: Iterable[InboundAllowList],
                  transports: Iterable[str]) -> tuple[SipLocator | None, defer.Deferred[Any]]:
    """The locator of a gateway, when it needs one: trunks (or their proxies) named by DNS name
    and DNS names in the allow-lists. It is the dial plan's locator; the allow-lists get the
    addresses of their names, and of every DNS-named trunk's servers (for ``"trunks"``). Returns
    it (None when nothing is named by DNS) and a Deferred that fires once every first lookup
    is done."""
    lists = list(allow_lists)
    named = []
    for trunk in config.trunks:
        uri, transport = locate_key(config, trunk)
        if plan_for(uri, transport).kind != "ip":
            named.append((uri, transport, trunk.target.host.rstrip(".").lower()))
    names = {n for lst in lists for n in lst.names}
    if not named and not names:
        return None, defer.succeed(None)
    servers = [(hp.host.strip("[]"), hp.port) for hp in config.sip.dns_servers] or None
    locator = SipLocator(reactor, servers, transports)
    dialplan.locator = locator
    firsts: list[defer.Deferred[Any]] = []

    def servers_of(host: str) -> Callable[[list[Addr]], None]:
        def give(found: list[Addr]) -> None:
            for lst in lists:
                if host in lst.names:
                    lst.set_addresses(f"{host} (servers)", [h for _, h, _ in found])
        return give

    def addresses_of(name: str) -> Callable[[list[str]], None]:
        def give(ips: list[str]) -> None:
            for lst in lists:
                if name in lst.names:
                    lst.set_addresses(name, ips)
        return give

    for uri, transport, host in named:
        firsts.append(locator.watch(uri, transport, on_targets=servers_of(host)))
    for name in sorted(names):
        firsts.append(locator.watch_name(name, addresses_of(name)))
    return locator, defer.DeferredList(firsts)


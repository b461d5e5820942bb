"""Locating SIP servers (RFC 3263 §4) from DNS records: which lookups a URI needs, the NAPTR
records that name SIP services, the RFC 2782 order of SRV records, and the targets that result.
Sans-IO: the records come in (the adapter asks DNS, ``adapters/sip_resolver.py``), the ordered
``(transport, host, port)`` targets go out; the caller tries them in order (failover on 503 or a
timeout, ``UserAgent.invite(destinations=...)``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from webgate.proto.sip.message import SipURI

#: NAPTR services (RFC 3263 §4.1) and the transport each means
NAPTR_SERVICES = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
#: the SRV owner name prefix of each transport (§4.1)
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Plan:
    """What to look up for a URI (§4.1, §4.2): ``kind`` is ``"ip"`` (nothing: the host is an
    address), ``"a"`` (A/AAAA of ``host``: a port was given), ``"srv"`` (SRV of ``transport``'s
    name for ``host``, then A/AAAA) or ``"naptr"`` (NAPTR first: neither transport nor port
    was given). ``transport`` is the one fixed so far (None with ``"naptr"``)."""

    kind: str
    host: str
    transport: str | None
    port: int | None


def plan_for(uri: SipURI, transport: str | None = None) -> Plan:
    """The lookups for ``uri``; ``transport`` is the configured one (it counts as the URI's
    ``transport`` parameter). A ``maddr`` parameter replaces the host."""
    host = (uri.params.get("maddr") or uri.host).strip("[]").rstrip(".").lower()
    t = (uri.params.get("transport") or transport or "").lower() or None
    if uri.scheme == "sips":
        t = "tls"
    if is_ip(host):
        t = t or "udp"
        return Plan("ip", host, t, uri.port or DEFAULT_PORTS.get(t, 5060))
    if uri.port:
        return Plan("a", host, t or "udp", uri.port)
    if t is not None:
        return Plan("srv", host, t, None)
    return Plan("naptr", host, None, None)


def naptr_choices(records: Iterable[Naptr], transports: Iterable[str]) -> list[tuple[str, str]]:
    """The NAPTR records of SIP services we can use (``transports``: those we have a listener
    for), as (transport, SRV name), in order then preference (§4.1). Only terminal ``s``
    records with a replacement count."""
    usable = set(transports)
    out: list[tuple[int, int, str, str]] = []
    for r in records:
        t = NAPTR_SERVICES.get(r.service.lower())
        if t is None or t not in usable or r.flags.lower() != "s" or not r.replacement or r.replacement == ".":
            continue
        out.append((r.order, r.preference, t, r.replacement.rstrip(".").lower()))
    out.sort(key=lambda x: (x[0], x[1]))
    seen: set[tuple[str, str]] = set()
    result: list[tuple[str, str]] = []
    for _, _, t, name in out:
        if (t, name) not in seen:
            seen.add((t, name))
            result.append((t, name))
    return result


def srv_order(records: Iterable[Srv], randbelow: Callable[[int], int]) -> list[Srv]:
    """RFC 2782: lowest priority first; within one priority a weighted random order (weight 0
    records stay possible, at the end on average). ``randbelow(n)`` returns 0..n-1. A target
    of "." (the service is not offered there) is left out."""
    by_priority: dict[int, list[Srv]] = {}
    for r in records:
        if r.target in (".", ""):
            continue
        by_priority.setdefault(r.priority, []).append(r)
    out: list[Srv] = []
    for prio in sorted(by_priority):
        group = sorted(by_priority[prio], key=lambda r: r.weight)  # zero weights first, as §"Usage rules" says
        while group:
            total = sum(r.weight for r in group)
            pick = randbelow(total + 1) if total else 0
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out

"""Trunks by DNS name (RFC 3263) against a DNS server this test runs (twisted.names' own server on
a loopback port) and SIPp: NAPTR -> SRV -> A toward two SIPp servers, the first answering 503 (or
not at all) and the call landing on the second; a trunk's outbound proxy found by SRV; the DNS
names of ``[sip] inbound_from`` resolved and refreshed at their TTL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.names import common, dns, server
from twisted.names import error as dns_error

from tests.calls.gw import make_config, reactor, start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_sipp_uac import until_exit
from webgate.adapters.sip_resolver import SipLocator
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.proto.sip.message import SipURI


class Zone(common.ResolverBase):
    """A tiny authoritative zone in memory: name -> records; every query is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, list[Any]] = {}
        self.queries: list[tuple[str, int]] = []

    def add(self, name: str, record: Any, ttl: int = 60) -> None:
        record.ttl = ttl
        self.records.setdefault(name.lower(), []).append(record)

    def _lookup(self, name: Any, cls: int, type: int, timeout: Any) -> defer.Deferred[Any]:
        key = name.decode() if isinstance(name, bytes) else str(name)
        key = key.rstrip(".").lower()
        self.queries.append((key, type))
        records = self.records.get(key)
        if records is None:
            return defer.fail(dns_error.DomainError(key))
        answers = [dns.RRHeader(key, r.TYPE, dns.IN, r.ttl, r, auth=True) for r in records if r.TYPE == type]
        return defer.succeed((answers, [], []))


@pytest.fixture
def zone() -> Iterator[tuple[Zone, int]]:
    z = Zone()
    factory = server.DNSServerFactory(authorities=[z])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    try:
        yield z, port.getHost().port
    finally:
        port.stopListening()


def srv_zone(z: Zone, ports: list[int], service: str = "pbx.test") -> None:
    """NAPTR pbx.test -> _sip._udp.pbx.test -> SRV one (priority 10), two (20) -> 127.0.0.1."""
    z.add(service, dns.Record_NAPTR(10, 10, b"s", b"SIP+D2U", b"", f"_sip._udp.{service}".encode()))
    for i, port in enumerate(ports):
        host = f"s{i}.{service}"
        z.add(f"_sip._udp.{service}", dns.Record_SRV(10 * (i + 1), 10, port, host.encode()))
        z.add(host, dns.Record_A("127.0.0.1"))


def dns_config(dns_port: int, **extra: Any) -> Any:
    return make_config({
        "trunk": [{"name": "pbx", "target": "sip:pbx.test", **extra}],
        "route": [{"pattern": r"\d{3,15}", "trunk": "pbx", "public": True}],
    }, dns_servers=[f"127.0.0.1:{dns_port}"])


@pytest.mark.parametrize("first", ["uas_503", "nobody"])
@pytest_twisted.ensureDeferred
async def test_the_first_srv_server_fails_and_the_call_lands_on_the_second(
        sipp_factory: Callable[..., peers.Sipp], zone: tuple[Zone, int], first: str) -> None:
    z, dns_port = zone
    second = sipp_factory("uas_answer", rtp_echo=True)
    if first == "uas_503":
        one = sipp_factory("uas_503")
        first_port = one.port
    else:
        first_port = peers.free_port("udp")  # nothing listens: given up after [sip] failover_timeout_s (4 s)
    srv_zone(z, [first_port, second.port])
    svc = start_telephony(dns_config(dns_port))
    try:
        await svc.locator_ready
        assert svc.locator is not None
        assert svc.locator.targets(SipURI.parse("sip:pbx.test"), None) == [
            ("udp", "127.0.0.1", first_port), ("udp", "127.0.0.1", second.port)]
        kinds = {t for _, t in z.queries}
        assert {dns.NAPTR, dns.SRV, dns.A} <= kinds
        leg = LocalLeg()
        call = svc.manager.place_call(leg, "2600")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 12), second.describe()
        invite = second.received()[0]
        assert invite.header("Call-ID") == call.sip_call_id
        if first == "uas_503":
            assert await until_exit(one) == 0, one.describe()
            assert one.received_requests() == ["INVITE", "ACK"]
            assert one.received()[0].header("Call-ID") == call.sip_call_id
        call.hangup()
        assert await until_exit(second) == 0, second.describe()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_trunk_outbound_proxy_found_by_srv(sipp_factory: Callable[..., peers.Sipp], zone: tuple[Zone, int]) -> None:
    z, dns_port = zone
    proxy = sipp_factory("uas_answer")
    z.add("_sip._udp.proxy.test", dns.Record_SRV(10, 10, proxy.port, b"edge.proxy.test"))
    z.add("edge.proxy.test", dns.Record_A("127.0.0.1"))
    svc = start_telephony(make_config({
        "trunk": [{"name": "pbx", "target": "sip:192.0.2.10:5060", "outbound_proxy": "sip:proxy.test;lr"}],
        "route": [{"pattern": r"\d{3,15}", "trunk": "pbx", "public": True}],
    }, dns_servers=[f"127.0.0.1:{dns_port}"]))
    try:
        await svc.locator_ready
        call = svc.manager.place_call(LocalLeg(), "2601")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), proxy.describe()
        invite = proxy.received()[0]
        assert invite.first_line.startswith("INVITE sip:2601@192.0.2.10:5060 ")
        assert (invite.header("Route") or "").startswith("<sip:proxy.test;lr")
        call.hangup()
        assert await until_exit(proxy) == 0, proxy.describe()
        assert proxy.received_requests() == ["INVITE", "ACK", "BYE"]  # in-dialog requests via the proxy too
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_inbound_from_names_are_resolved(zone: tuple[Zone, int]) -> None:
    z, dns_port = zone
    z.add("pbx-out.test", dns.Record_A("192.0.2.44"))
    svc = start_telephony(make_config({}, dns_servers=[f"127.0.0.1:{dns_port}"], inbound_from=["pbx-out.test"]))
    try:
        await svc.locator_ready
        allow = svc.manager.inbound_from
        assert allow.allows("192.0.2.44") and not allow.allows("192.0.2.45") and not allow.allows("127.0.0.1")
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_answers_are_looked_up_again_at_their_ttl(zone: tuple[Zone, int]) -> None:
    z, dns_port = zone
    z.add("moving.test", dns.Record_A("192.0.2.1"), ttl=1)
    z.add("_sip._udp.pbx.test", dns.Record_SRV(10, 10, 5070, b"host.pbx.test"), ttl=1)
    z.add("host.pbx.test", dns.Record_A("192.0.2.7"), ttl=1)
    locator = SipLocator(reactor, [("127.0.0.1", dns_port)], ["udp"], min_ttl_s=0.5, retry_s=0.5)
    seen: list[list[str]] = []
    try:
        await locator.watch_name("moving.test", seen.append)
        await locator.watch(SipURI.parse("sip:pbx.test"), "udp")
        assert seen == [["192.0.2.1"]]
        assert locator.targets(SipURI.parse("sip:x@pbx.test;transport=udp"), None) == [("udp", "192.0.2.7", 5070)]
        z.records["moving.test"] = []
        z.add("moving.test", dns.Record_A("192.0.2.2"), ttl=1)
        z.records["host.pbx.test"] = []
        z.add("host.pbx.test", dns.Record_A("192.0.2.8"), ttl=1)
        assert await wait_for(lambda: seen[-1] == ["192.0.2.2"], 4)
        assert await wait_for(lambda: locator.targets(SipURI.parse("sip:pbx.test"), "udp") == [("udp", "192.0.2.8", 5070)], 4)
        # the DNS server goes away: the last answer stays
        del z.records["host.pbx.test"]
        await wait_for(lambda: False, 1.5)
        assert locator.targets(SipURI.parse("sip:pbx.test"), "udp") == [("udp", "192.0.2.8", 5070)]
    finally:
        locator.stop()

"""RFC 3263 server selection beyond calls' 503 (test_sipp_dns.py), against the same local DNS
server (twisted.names on a loopback port) and SIPp:

- a trunk's registration by DNS name: SRV with two targets, the first out of service (503) or
  silent (a UDP socket that reads and never answers), and the REGISTER lands on the second;
- ``[sip] failover_timeout_s``: a first SRV target that never answers an INVITE is given up
  after it (not after Timer B, 32 s with the default T1 used here), and the call is answered
  by SIPp, the second target, within about five seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol

from tests.calls.gw import make_config, reactor, start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_sipp_dns import Zone, srv_zone, zone  # noqa: F401 - zone is a fixture
from tests.interop.test_sipp_uac import until_exit
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg


class Silent(DatagramProtocol):
    """A SIP server that reads everything and never answers."""

    noisy = False

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.datagrams.append(data)

    def requests(self, method: str) -> list[bytes]:
        return [d for d in self.datagrams if d.startswith(method.encode() + b" ")]


@pytest.fixture
def silent() -> Iterator[tuple[Silent, int]]:
    proto = Silent()
    port = reactor.listenUDP(peers.free_port("udp"), proto, interface="127.0.0.1")
    try:
        yield proto, port.getHost().port
    finally:
        port.stopListening()


@pytest.mark.parametrize("first", ["registrar_503", "silent"])
@pytest_twisted.ensureDeferred
async def test_trunk_registration_lands_on_the_second_srv_target(
        sipp_factory: Callable[..., peers.Sipp], zone: tuple[Zone, int],  # noqa: F811
        silent: tuple[Silent, int], first: str) -> None:
    z, dns_port = zone
    quiet, quiet_port = silent
    second = sipp_factory("registrar_ok")
    one = sipp_factory("registrar_503") if first == "registrar_503" else None
    srv_zone(z, [one.port if one is not None else quiet_port, second.port])
    svc = start_telephony(make_config({
        "trunk": [{"name": "pbx", "target": "sip:pbx.test", "register": True, "username": "gw",
                   "register_expires": 60}],
        "route": [{"pattern": r"\d{3,15}", "trunk": "pbx", "public": True}],
    }, dns_servers=[f"127.0.0.1:{dns_port}"], t1_ms=500, failover_timeout_s=2))
    try:
        await svc.locator_ready
        assert await wait_for(lambda: bool(svc.registrations), 2)
        (reg,) = svc.registrations
        assert reg.destinations == [("udp", "127.0.0.1", one.port if one else quiet_port),
                                    ("udp", "127.0.0.1", second.port)]
        assert await wait_for(lambda: reg.registered_expires == 60, 4), second.describe()
        assert reg.dest_index == 1
        assert await until_exit(second) == 0, second.describe()
        register = second.received()[0]
        assert register.method == "REGISTER" and register.first_line.startswith("REGISTER sip:pbx.test ")
        assert (register.header("To") or "").startswith("<sip:gw@pbx.test")
        if one is not None:
            assert await until_exit(one) == 0, one.describe()
            assert one.received()[0].header("Call-ID") == register.header("Call-ID")
        else:
            assert quiet.requests("REGISTER")  # it got the first REGISTER (and its retransmissions)
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_a_silent_first_server_is_given_up_after_the_failover_timeout(
        sipp_factory: Callable[..., peers.Sipp], zone: tuple[Zone, int],  # noqa: F811
        silent: tuple[Silent, int]) -> None:
    z, dns_port = zone
    quiet, quiet_port = silent
    second = sipp_factory("uas_answer", rtp_echo=True)
    srv_zone(z, [quiet_port, second.port])
    svc = start_telephony(make_config({
        "trunk": [{"name": "pbx", "target": "sip:pbx.test"}],
        "route": [{"pattern": r"\d{3,15}", "trunk": "pbx", "public": True}],
    }, dns_servers=[f"127.0.0.1:{dns_port}"], t1_ms=500))  # Timer B: 32 s; failover_timeout_s: 4 (default)
    try:
        await svc.locator_ready
        t0 = reactor.seconds()
        call = svc.manager.place_call(LocalLeg(), "2700")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 8), second.describe()
        took = reactor.seconds() - t0
        assert 3.5 < took < 6.0, took
        invites = quiet.requests("INVITE")
        assert invites and all(b"Call-ID: " + call.sip_call_id.encode() in d for d in invites)
        assert not quiet.requests("CANCEL")  # it never sent anything: no CANCEL (RFC 3261 §9.1)
        n = len(invites)
        assert second.received()[0].header("Call-ID") == call.sip_call_id
        await wait_for(lambda: False, 1.5)
        assert len(quiet.requests("INVITE")) == n  # the abandoned transaction retransmits no more
        call.hangup()
        assert await until_exit(second) == 0, second.describe()
    finally:
        await svc.stopService()

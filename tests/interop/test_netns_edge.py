"""The gateway's SIP edge seen from outside (issue 12, items 1 and 2): a network namespace made
and deleted by each test (tests/interop/netns.py) is the outside world, at a real non-loopback
address (198.18.x.2) joined to this host (198.18.x.1) by a veth pair. The gateway listens for SIP
on 0.0.0.0, as the README's exposed example does; its HTTP, WebSocket and RTP stay on loopback.

(a) An INVITE whose top Via claims ``received=127.0.0.1`` (the issue's bypass of
    ``[sip] inbound_from``) for a web user registered over /ws gets 403; the 403 reaches the
    namespace socket, nothing reaches 127.0.0.1 at the Via's port, and the browser is not rung.
(b) INVITEs to ``echo``/``tone`` from the namespace get 403 and allocate nothing: the RTP port
    pool's cursor does not move and /api/stats shows no port in use.
(c) 1,000 INVITEs from the namespace leave the pool untouched while a loopback echo call keeps
    returning its 1 kHz, and a new echo call afterwards works.

Needs root and iproute2 (``ip``); skipped without them, failed under WEBGATE_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from tests.adapters.webrtc_client import connect
from tests.calls.gw import assert_tone, sleep, wait_for
from tests.interop.netns import NetnsUnavailable, OutsideWorld
from tests.ops.helpers import RunningGateway, api, local_call, start_gateway
from tests.require import unavailable
from tests.security.sip_peer import SipPeer
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"
FLOOD = 1000


@pytest.fixture
def outside() -> Iterator[OutsideWorld]:
    try:
        world = OutsideWorld()
        world.__enter__()
    except NetnsUnavailable as e:
        unavailable(f"no network namespace for the edge tests: {e}")  # fails under WEBGATE_REQUIRE_PEERS=1
    try:
        yield world
    finally:
        world.close()
        assert not world.exists(), f"namespace {world.name} left behind"


def _gateway() -> RunningGateway:
    return start_gateway({"tokens": {"key": KEY}}, udp="0.0.0.0:0")


def _sip_dest(gw: RunningGateway, world: OutsideWorld) -> tuple[str, int]:
    """The gateway's SIP/UDP address as seen from the namespace."""
    return world.host_ip, gw.svc.bound["udp"][1]


def _pool_state(gw: RunningGateway) -> tuple[int, frozenset[int]]:
    pool = gw.svc.rtp_pool
    return pool._cursor, frozenset(pool.in_use)  # noqa: SLF001 - the cursor moves on every allocation


async def _hears(leg: Any, hz: float, what: str) -> None:
    """One more second of audio reaches ``leg`` (however loaded the machine), and it is ``hz``."""
    mark = len(leg.recording())
    rate = leg.received_rate or 8000
    assert await wait_for(lambda: len(leg.recording()) - mark >= rate, 5), f"{what}: the call stopped returning audio"
    assert_tone(leg.recording(), leg.received_rate or rate, hz, what, seconds=0.8)


async def _rtp_ports_in_use(gw: RunningGateway) -> int:
    status, stats = await api("GET", "/api/stats", base=gw.base())
    assert status == 200, stats
    return int(stats["rtp_ports"]["in_use"])


@pytest_twisted.ensureDeferred
async def test_forged_via_invite_to_a_registered_web_user_gets_403_at_the_real_source(outside: OutsideWorld) -> None:
    gw = _gateway()
    ws: Any = None
    peer = decoy = None
    try:
        ws = await connect(gw.base().replace("http://", "ws://") + "/ws")
        await ws.next("welcome")
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice")})
        await ws.next("registered", user="alice")

        # 127.0.0.1:P is where the forged Via would aim the responses; the namespace socket has
        # the same port P at its own address (another network stack, so the port is free there)
        decoy_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        decoy_sock.bind(("127.0.0.1", 0))
        decoy = SipPeer(decoy_sock)
        peer = SipPeer(outside.udp_socket(decoy.port))
        assert (peer.host, peer.port) == (outside.inside_ip, decoy.port)
        dest = _sip_dest(gw, outside)

        forged = f"SIP/2.0/UDP {outside.inside_ip}:{decoy.port};received=127.0.0.1;branch={{branch}}"
        cid = peer.invite(dest, "alice", via=forged)
        final = await peer.wait_final(cid)
        assert final.status == 403, final
        assert {addr for _m, addr in peer.responses(cid)} == {dest}  # answered from the gateway's veth address
        assert final.top_via.params["received"] == outside.inside_ip  # ours, not the sender's
        await sleep(0.5)
        assert decoy.datagrams == 0, decoy.messages
        assert ws.of_type("invited") == []
        manager = gw.manager
        assert manager.counters["inbound_refused"] == 1 and len(manager.registry) == 0
        assert not gw.svc.rtp_pool.in_use

        # the control: the same user rings for a loopback caller (inbound_from's default), so the
        # 403 above was the source's doing; the browser declines
        honest = decoy.invite(("127.0.0.1", gw.svc.bound["udp"][1]), "alice")
        invited = await ws.next("invited")
        assert invited["to"] == "alice"
        ws.send({"type": "reject", "reason": "decline"})
        assert (await decoy.wait_final(honest)).status == 603
        assert await wait_for(lambda: len(manager.registry) == 0, 5)
    finally:
        for p in (peer, decoy):
            if p is not None:
                p.close()
        if ws is not None:
            ws.close()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_builtins_from_the_namespace_get_403_and_allocate_nothing(outside: OutsideWorld) -> None:
    gw = _gateway()
    peer = SipPeer(outside.udp_socket())
    try:
        dest = _sip_dest(gw, outside)
        before = _pool_state(gw)
        calls = [
            peer.invite(dest, "echo"),
            peer.invite(dest, "tone"),
            # a forged Via changes nothing
            peer.invite(dest, "echo", via=f"SIP/2.0/UDP {outside.inside_ip}:{peer.port};received=127.0.0.1;rport=5060;branch={{branch}}"),
            peer.invite(dest, "tone", via=f"SIP/2.0/UDP 127.0.0.1:{peer.port};maddr=127.0.0.1;received=127.0.0.1;branch={{branch}}"),
        ]
        for cid in calls:
            assert (await peer.wait_final(cid)).status == 403
        assert {addr for _m, addr in peer.responses()} == {dest}
        assert _pool_state(gw) == before
        assert before[1] == frozenset()
        assert await _rtp_ports_in_use(gw) == 0
        assert not gw.manager.builtin_calls and len(gw.manager.registry) == 0
        assert gw.manager.counters["builtin_refused"] == len(calls)
    finally:
        peer.close()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_flood_from_the_namespace_leaves_the_pool_and_a_loopback_echo_call_alone(outside: OutsideWorld) -> None:
    gw = _gateway()
    peer = SipPeer(outside.udp_socket())
    calls: list[Any] = []
    try:
        call, leg = await local_call(gw, "echo", tone_hz=1000.0)
        calls.append(call)
        await _hears(leg, 1000.0, "echo before the flood")
        before = _pool_state(gw)
        assert len(before[1]) == 2  # both ends of the echo call

        dest = _sip_dest(gw, outside)
        users = ("echo", "tone", "alice")  # the built-ins and a (would-be) web user
        for i in range(FLOOD):
            peer.invite(dest, users[i % len(users)])
            if i % 25 == 24:
                await sleep(0.005)  # paced, like a sender that wants every INVITE to land
        for _ in range(10):
            if await wait_for(lambda: len(peer.finals_by_call_id()) == FLOOD, 2):
                break
            peer.retransmit_unanswered()  # what the kernel dropped, as Timer A would
        finals = peer.finals_by_call_id()
        assert len(finals) == FLOOD, f"{FLOOD - len(finals)} INVITEs unanswered"
        assert set(finals.values()) == {403}, {s: list(finals.values()).count(s) for s in set(finals.values())}
        assert _pool_state(gw) == before
        assert await _rtp_ports_in_use(gw) == 2
        assert len(gw.manager.builtin_calls) == 1 and len(gw.manager.registry) == 1
        counters = gw.manager.counters
        assert counters["builtin_refused"] + counters["inbound_refused"] == FLOOD

        # the echo call that was up during the flood still returns its tone
        await _hears(leg, 1000.0, "echo after the flood")
        # and a new loopback echo call works
        call2, leg2 = await local_call(gw, "echo", tone_hz=700.0)
        calls.append(call2)
        await _hears(leg2, 700.0, "new echo call after the flood")
    finally:
        for c in calls:
            c.hangup()
        peer.close()
        await gw.stop()

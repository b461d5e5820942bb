"""Two whole gateways (``build_gateway`` with ``[cluster] enabled``) in this process, nodes "a"
and "b" of one cluster on a private redis-server: session IDs stay unique across the nodes under
400 concurrent calls to ``echo``, half on each (through the async admission step, the pool of IDs claimed ahead,
and WebSocket calls); ``max_calls_per_identity`` holds across the nodes; ``/api/nodes`` lists
both, ``/api/calls?scope=cluster`` the calls of both, ``/api/calls/{id}`` of a call on the other
node answers 307 to it; with Redis stopped new calls are refused ``cluster_unavailable`` while a
live call keeps its 1 kHz; Redis back, the nodes
re-publish their calls; a stopped node leaves at once. (The pool path, ``reserve=False``, is the one a
SIP call toward a web user takes: refused there, that caller gets 503.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.adapters.webrtc_client import Browser, complete_call, connect
from tests.calls.gw import reactor, rtp_range, sleep, wait_for
from tests.cluster.conftest import RedisServer
from tests.ops.helpers import ADMIN_KEY, RunningGateway, api, gateway_config, http
from webgate.adapters import aio
from webgate.calls.call import Call, CallState
from webgate.calls.errors import CallRefused
from webgate.legs.local import LocalLeg
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.security.tokens import mint_token

KEY = "cluster-wiring-token-key-0123456789abcdef"
TTL_S = 1.5


def node_config(server: RedisServer, node_id: str, **cluster: Any) -> Any:
    lo, hi = rtp_range(900)  # 200+ calls to echo: two port pairs each (the call's, the built-in's)
    return gateway_config({
        "cluster": {"enabled": True, "redis_url": server.url, "node_id": node_id, "heartbeat_s": 0.25,
                    "node_ttl_s": TTL_S, **cluster},
        "rtp": {"port_min": lo, "port_max": hi},
        "limits": {"max_calls": 250, "max_calls_per_identity": 2, "max_calls_per_ip": 0,
                   "max_attempts_per_ip_per_minute": 0},
        "tokens": {"key": KEY},
    })


@asynccontextmanager
async def two_nodes(server: RedisServer, **cluster: Any) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    a = RunningGateway(node_config(server, "a", **cluster))
    b = RunningGateway(node_config(server, "b", **cluster))
    try:
        assert await wait_for(lambda: a.gw.cluster.node.available and b.gw.cluster.node.available, 5)
        assert await wait_for(lambda: a.gw.cluster.node.pooled > 0 and b.gw.cluster.node.pooled > 0, 5)
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def place(gw: RunningGateway, destination: str = "echo", *, reserve: bool = True, token: str | None = None,
                tone_hz: float | None = None) -> tuple[Call, LocalLeg]:
    """A LocalLeg call: admitted, (with ``reserve``) the cluster's async admission step, placed."""
    leg = LocalLeg(tone_hz=tone_hz)
    manager = gw.manager
    admission = manager.admit(leg, destination, token=token)
    if reserve:
        admission = await aio.as_deferred(manager.reserve(leg, admission))
    call = manager.place_call(leg, destination, admission=admission)
    if tone_hz:
        leg.start_source(call)
    return call, leg


async def refusal(gw: RunningGateway, **kw: Any) -> CallRefused:
    try:
        call, _leg = await place(gw, **kw)
    except CallRefused as e:
        return e
    call.hangup()
    raise AssertionError(f"placed {call.session_id}, expected a refusal")


def ws_url(gw: RunningGateway) -> str:
    return gw.url("/ws").replace("http://", "ws://")


def hang_up(*calls: Call) -> None:
    for c in calls:
        if not c.ended:
            c.hangup()


@pytest_twisted.ensureDeferred
async def test_session_ids_unique_across_two_nodes(redis_server: RedisServer) -> None:
    async with two_nodes(redis_server) as (a, b):
        # 400 calls to echo at once, half on each node: 170 per node through the async step,
        # 30 from the IDs the node claimed ahead (an ingress without the step, a call from SIP;
        # the pool holds at least 32)
        ds = [defer.Deferred.fromCoroutine(place(gw, reserve=r)) for gw in (a, b)
              for r in [True] * 170 + [False] * 30]
        placed = await defer.gatherResults(ds, consumeErrors=True)
        calls = [c for c, _leg in placed]
        browser, ws = Browser(tone_hz=800), None
        try:
            # and a WebSocket call on B (the handlers take the same step)
            ws = await connect(ws_url(b))
            await ws.next("welcome")
            accepted = await complete_call(ws, browser, {"type": "call", "destination": "echo"})
            sids = [c.session_id for c in calls] + [accepted["session_id"]]
            assert len(set(sids)) == len(sids) == 401, "a session ID was given twice"
            assert all(len(s) == 10 and s[0] in "12345678" for s in sids)
            assert await wait_for(lambda: all(c.state is CallState.ANSWERED for c in calls), 40)
            # the index knows each call and its node
            await sleep(0.5)
            status, body = await api("GET", b.url("/api/calls?scope=cluster"))
            assert status == 200
            where = {c["session_id"]: c["node"] for c in body["calls"]}
            assert len(where) == 401
            assert all(where[c.session_id] == ("a" if c.manager is a.manager else "b") for c in calls)
            assert where[accepted["session_id"]] == "b"
            assert {c["state"] for c in body["calls"]} == {"answered"}
            # a client-chosen ID that A's call has is refused on B (checked across the cluster)
            e = await refusal(b, token=mint_token(KEY, dest="echo", session_id=calls[0].session_id))
            assert e.code == "session_id_in_use"
        finally:
            if ws is not None:
                ws.close()
            await browser.close()
            hang_up(*calls)
        # ended calls leave the index
        assert await wait_for(lambda: len(a.gw.registry) == 0 and len(b.gw.registry) == 0, 20)
        await sleep(0.5)
        status, body = await api("GET", a.url("/api/calls?scope=cluster"))
        assert status == 200 and body["calls"] == []


@pytest_twisted.ensureDeferred
async def test_identity_limit_nodes_calls_and_redirect(redis_server: RedisServer) -> None:
    async with two_nodes(redis_server) as (a, b):
        alice = mint_token(KEY, dest="echo", sub="alice")
        c1, _ = await place(a, token=alice)
        c2, _ = await place(a, token=alice)
        placed = [c1, c2]
        browser, ws = Browser(), None
        try:
            # the third call for alice, on B, is refused: through the WebSocket too
            assert (await refusal(b, token=alice)).code == "too_many_calls_for_identity"
            ws = await connect(ws_url(b))
            await ws.next("welcome")
            ws.send({"type": "call", "destination": "echo", "token": alice, "sdp": await browser.offer()})
            err = await ws.next("error", timeout=10)
            assert err["code"] == "too_many_calls_for_identity", err
            # a call of bob's on B is fine; one of alice's ends on A, and B may place hers
            c3, _ = await place(b, token=mint_token(KEY, dest="echo", sub="bob"))
            placed.append(c3)
            c1.hangup()
            assert await wait_for(lambda: len(a.gw.registry) == 1, 5)
            await sleep(0.3)  # the release goes out in the node's next write
            c4, _ = await place(b, token=alice)
            placed.append(c4)
            assert await wait_for(lambda: all(c.state is CallState.ANSWERED for c in (c2, c3, c4)), 10)

            # /api/nodes: both, with their addresses and load
            await sleep(0.6)  # a heartbeat
            status, body = await api("GET", a.url("/api/nodes"))
            assert status == 200
            nodes = {n["id"]: n for n in body["nodes"]}
            assert sorted(nodes) == ["a", "b"] and nodes["a"]["self"] and not nodes["b"]["self"]
            assert nodes["b"]["ws_url"] == ws_url(b) and nodes["a"]["calls"] == 1 and nodes["b"]["calls"] == 2
            assert nodes["b"]["sip_contact"].startswith("sip:127.0.0.1:") and nodes["b"]["seen_at"]
            # scope=cluster: the calls of both nodes, identities included
            status, body = await api("GET", b.url("/api/calls?scope=cluster"))
            assert status == 200
            got = {(c["session_id"], c["node"], c["identity"]) for c in body["calls"]}
            assert got == {(c2.session_id, "a", "alice"), (c3.session_id, "b", "bob"), (c4.session_id, "b", "alice")}
            status, body = await api("GET", b.url("/api/calls"))
            assert status == 200 and sorted(c["session_id"] for c in body["calls"]) == sorted([c3.session_id, c4.session_id])
            # a call on A asked of B: 307 to A (method kept for DELETE), A answers it
            path = f"/api/calls/{c2.session_id}"
            status, headers, raw = await http("GET", b.url(path), key=ADMIN_KEY)
            assert status == 307 and headers["location"] == a.url(path), (status, headers, raw)
            assert json.loads(raw)["error"] == "elsewhere"
            status, body = await api("GET", headers["location"])
            assert status == 200 and body["session_id"] == c2.session_id
            status, headers, _raw = await http("GET", b.url(path + "/snapshot.jpg"), key=ADMIN_KEY)
            assert status == 307 and headers["location"] == a.url(path + "/snapshot.jpg")
            # without the key nothing is told; an unknown call is 404 on every node
            status, _h, _raw = await http("GET", b.url(path))
            assert status == 401
            assert (await api("GET", b.url("/api/calls/4000000001")))[0] == 404
            status, body = await api("DELETE", b.url(path))
            assert status == 307
            assert c2.state is CallState.ANSWERED
        finally:
            if ws is not None:
                ws.close()
            await browser.close()
            hang_up(*placed)
        # a stopped node leaves the cluster at once (not after node_ttl_s)
        await a.stop()
        status, body = await api("GET", b.url("/api/nodes"))
        assert status == 200 and [n["id"] for n in body["nodes"]] == ["b"]


@pytest_twisted.ensureDeferred
async def test_redis_down_refuses_new_calls_live_call_keeps_audio(redis_server: RedisServer) -> None:
    async with two_nodes(redis_server) as (a, b):
        live, leg = await place(a, tone_hz=1000.0)
        assert await wait_for(lambda: live.state is CallState.ANSWERED, 10)
        assert await wait_for(lambda: len(leg.recording()) > 8000, 5)
        redis_server.stop()
        heard_before = len(leg.recording())
        # new calls: refused cluster_unavailable, through the async step and from the pool alike
        e = await refusal(a)
        assert (e.code, e.sip_status) == ("cluster_unavailable", 503)
        assert (await refusal(b)).code == "cluster_unavailable"
        assert await wait_for(lambda: not b.gw.cluster.node.available, 3)
        assert (await refusal(b, reserve=False)).code == "cluster_unavailable"
        status, body = await api("GET", a.url("/api/nodes"))
        assert (status, body["error"]) == (503, "cluster_unavailable")
        status, health = await api("GET", a.url("/health"), key=None)
        assert status == 200 and health["cluster"] == {"node_id": "a", "redis": "down", "on_redis_down": "refuse"}
        # the live call goes on: 1 kHz keeps coming back from echo
        await sleep(2.0)
        assert live.state is CallState.ANSWERED
        tail = leg.recording()[heard_before:]
        assert len(tail) > 12000, len(tail)
        tail = tail[-8000:]
        assert abs(dominant_frequency(tail, 8000) - 1000) < 20 and rms_dbfs(tail) > -30
        # Redis back (empty: no persistence): the nodes re-publish their calls
        redis_server.start()
        assert await wait_for(lambda: a.gw.cluster.node.available and b.gw.cluster.node.available, 5)
        status, body = await api("GET", b.url("/api/calls?scope=cluster"))
        assert status == 200 and [(c["session_id"], c["node"]) for c in body["calls"]] == [(live.session_id, "a")]
        assert (await api("GET", b.url(f"/api/calls/{live.session_id}")))[0] == 307
        # the live call's session ID is claimed again, and new calls work
        e = await refusal(b, token=mint_token(KEY, dest="echo", session_id=live.session_id))
        assert e.code == "session_id_in_use"
        assert await wait_for(lambda: b.gw.cluster.node.pooled > 0, 5)
        fresh, _ = await place(b, reserve=False)
        again, _ = await place(b)
        hang_up(live, fresh, again)


@pytest_twisted.ensureDeferred
async def test_redis_down_local_session_ids(redis_server: RedisServer) -> None:
    async with two_nodes(redis_server, on_redis_down="local") as (a, _b):
        redis_server.stop()
        call, _leg = await place(a)
        assert call.session_id.startswith("9" + a.gw.cluster.node.local_prefix)
        # a chosen session ID cannot be checked across the cluster now
        e = await refusal(a, token=mint_token(KEY, dest="echo", session_id="44400001"))
        assert e.code == "cluster_unavailable"
        redis_server.start()
        assert await wait_for(lambda: a.gw.cluster.node.available, 5)
        hang_up(call)


@pytest.fixture(autouse=True)
def _reactor_is_asyncio() -> None:
    assert type(reactor).__name__ == "AsyncioSelectorReactor"

"""The cluster's shared state against a real redis-server: two ClusterNodes ("nodes" A and B, two
clients of one private Redis) allocate session IDs atomically, check client-chosen IDs and the
per-identity, per-IP and attempt-rate limits cluster-wide; a node's index entries and users expire
with it; with Redis down new calls are refused (``cluster_unavailable``) or get local-prefix IDs,
and the node re-publishes its state when Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted

from tests.cluster.conftest import RedisServer
from webgate.adapters import aio
from webgate.calls.call import CallState, CallTimes
from webgate.calls.errors import CallRefused
from webgate.calls.session_id import SessionIdError
from webgate.cluster.node import ClusterNode, connect
from webgate.cluster.redis_registry import ClusterSessionIds, RedisCallRegistry
from webgate.config import ClusterConfig


TTL_S = 2.0  # node_ttl_s: long enough for a busy machine, short for the expiry test


@dataclass
class FakeCall:
    """What the registry reads of a Call."""

    session_id: str
    identity: str | None = None
    ingress_kind: str = "webrtc"
    direction: str = "outbound"
    state: CallState = CallState.CALLING
    client: str = "203.0.113.5:4000"
    times: CallTimes = field(default_factory=CallTimes)


def node(server: RedisServer, node_id: str, on_redis_down: str = "refuse", **limits: Any) -> ClusterNode:
    settings = ClusterConfig(enabled=True, redis_url=server.url, node_id=node_id, ws_url=f"ws://{node_id}:8080/ws",
                               rtmp_url=f"rtmp://{node_id}:1935", sip_contact=f"sip:{node_id}:5060",
                               heartbeat_s=0.25, node_ttl_s=TTL_S, on_redis_down=on_redis_down)
    return ClusterNode(connect(settings, 0.5), settings, **limits)


def twisted_test(body: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Any]:
    """Run an asyncio test body on the reactor's loop (pytest-twisted drives the reactor)."""

    @pytest_twisted.ensureDeferred
    async def test(redis_server: RedisServer) -> None:
        await aio.as_deferred(body(redis_server))

    test.__name__ = body.__name__
    test.__doc__ = body.__doc__
    return test


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return await check()


async def refused(coro: Awaitable[Any]) -> CallRefused:
    with pytest.raises(CallRefused) as e:
        await coro
    return e.value


async def close(*nodes: ClusterNode) -> None:
    for n in nodes:
        await n.stop(leave=False)
        await n.redis.aclose(close_connection_pool=True)


@twisted_test
async def test_session_ids_are_unique_across_nodes(server: RedisServer) -> None:
    a, b = node(server, "a"), node(server, "b")
    try:
        await a.start()
        await b.start()
        assert a.available and b.available
        # 200 reservations at once on each node: no ID twice, none in the local-prefix space
        sids = await asyncio.gather(*(n.reserve("198.51.100.1") for n in [a, b] * 200))
        assert len(set(sids)) == 400 and all(len(s) == 10 and s[0] in "12345678" for s in sids)
        # a client-chosen ID in use on A is refused on B, also after A released it (reuse window)
        sid = await a.reserve("198.51.100.2", session_id="55500001")
        assert (await refused(b.reserve("198.51.100.3", session_id="55500001"))).code == "session_id_in_use"
        a.release(sid)
        await a.flush()
        assert (await refused(b.reserve("198.51.100.3", session_id="55500001"))).code == "session_id_in_use"
        assert (await refused(a.reserve("198.51.100.3", session_id="5550x"))).code == "invalid_session_id"
        # the call manager's allocator hands out what the node reserved, or an ID claimed ahead
        ids = ClusterSessionIds(b)
        mine = await b.reserve("198.51.100.4", session_id="55500002")
        assert ids.allocate(mine) == mine
        assert await until(lambda: _pooled(b), 2.0)
        pooled = ids.allocate(None)
        assert pooled not in sids and b.is_held(pooled)
        assert (await refused(a.reserve("198.51.100.5", session_id=pooled))).code == "session_id_in_use"
        with pytest.raises(SessionIdError):
            ids.allocate("55500001")
        ids.release(mine)
        ids.release(pooled)
        assert not b.is_held(mine) and not b.is_held(pooled)
    finally:
        await close(a, b)


async def _pooled(n: ClusterNode) -> bool:
    return n.pooled >= 16


@twisted_test
async def test_index_and_users_expire_with_the_node(server: RedisServer) -> None:
    a, b = node(server, "a"), node(server, "b")
    try:
        await a.start()
        await b.start()
        registry = RedisCallRegistry(a)
        sid = await a.reserve("198.51.100.1", "alice")
        call = FakeCall(sid, identity="alice")
        registry.add(call)  # type: ignore[arg-type]
        a.register_user("bob", "webrtc")
        await a.flush()
        found = await b.lookup_call(sid)
        assert found is not None
        entry, where = found
        assert (entry.node, entry.ingress, entry.state, entry.identity) == ("a", "webrtc", "calling", "alice")
        assert where.ws_url == "ws://a:8080/ws" and where.sip_contact == "sip:a:5060"
        # the heartbeat carries the state change
        call.state = CallState.ANSWERED
        assert await until(lambda: _state(b, sid, "answered"), 2.0)
        assert sorted(n.node_id for n in await b.nodes()) == ["a", "b"]
        assert [c.session_id for c in await b.cluster_calls()] == [sid]
        user = await b.lookup_user("bob")
        assert user is not None and user[0].node == "a" and user[1].rtmp_url == "rtmp://a:1935"
        # newest registration wins across the cluster
        b.register_user("bob", "rtmp")
        await b.flush()
        user = await a.lookup_user("bob")
        assert user is not None and (user[0].node, user[0].kind) == ("b", "rtmp")
        # A dies (no more heartbeats, nothing cleaned up): its call, counts and users vanish in node_ttl_s
        a.register_user("carol", "rtmp")
        await a.flush()
        aio.cancel(a._task)
        assert await until(lambda: _gone(b, sid), TTL_S + 1.5)
        assert [n.node_id for n in await b.nodes()] == ["b"]
        assert await b.lookup_user("carol") is None
        # B's own registration of bob is still there
        user = await b.lookup_user("bob")
        assert user is not None and user[0].node == "b"
        # the session ID stays claimed for the reuse window
        assert (await refused(b.reserve("198.51.100.9", session_id=sid))).code == "session_id_in_use"
        # a graceful stop removes the node at once
        await b.stop()
        c = node(server, "c")
        try:
            await c.start()
            assert [n.node_id for n in await c.nodes()] == ["c"]
        finally:
            await close(c)
    finally:
        await close(a, b)


async def _state(n: ClusterNode, sid: str, state: str) -> bool:
    found = await n.lookup_call(sid)
    return found is not None and found[0].state == state


async def _gone(n: ClusterNode, sid: str) -> bool:
    return await n.lookup_call(sid) is None


@twisted_test
async def test_limits_are_cluster_wide(server: RedisServer) -> None:
    limits = {"max_calls_per_identity": 2, "max_calls_per_ip": 3, "max_attempts_per_ip_per_minute": 3}
    a, b = node(server, "a", **limits), node(server, "b", **limits)
    try:
        await a.start()
        await b.start()
        # per identity: two calls on A, the third on B is refused
        s1 = await a.reserve("198.51.100.1", "alice")
        await a.reserve("198.51.100.2", "alice")
        e = await refused(b.reserve("198.51.100.3", "alice"))
        assert (e.code, e.sip_status) == ("too_many_calls_for_identity", 429)
        a.release(s1)
        await a.flush()
        await b.reserve("198.51.100.3", "alice")
        # per IP: three calls from one address across both nodes, the fourth refused
        await a.reserve("192.0.2.7")
        await b.reserve("192.0.2.7", "dave")
        await b.reserve("192.0.2.7")
        assert (await refused(a.reserve("192.0.2.7", "erin"))).code == "too_many_calls_from_ip"
        # attempts per minute: two on A, one on B, the fourth anywhere is refused (and not counted)
        await a.attempt("192.0.2.50")
        await a.attempt("192.0.2.50")
        await b.attempt("192.0.2.50")
        e = await refused(b.attempt("192.0.2.50"))
        assert (e.code, e.sip_status) == ("rate_limited", 429) and "retry in" in e.message
        assert (await refused(a.attempt("192.0.2.50"))).code == "rate_limited"
        await a.attempt("192.0.2.51")  # another address is not affected
    finally:
        await close(a, b)


@twisted_test
async def test_redis_down_refuse_then_republish(server: RedisServer) -> None:
    a = node(server, "a", max_calls_per_identity=1, max_attempts_per_ip_per_minute=10)
    b = node(server, "b", max_calls_per_identity=1)
    try:
        await a.start()
        registry = RedisCallRegistry(a)
        sid = await a.reserve("198.51.100.1", "alice")
        registry.add(FakeCall(sid, identity="alice"))  # type: ignore[arg-type]
        a.register_user("bob", "webrtc")
        await a.flush()
        server.stop()
        for attempt in (a.reserve("198.51.100.2"), a.attempt("198.51.100.2"), a.lookup_call(sid)):
            e = await refused(attempt)
            assert (e.code, e.sip_status) == ("cluster_unavailable", 503)
        assert not a.available and len(registry) == 1  # the live call goes on
        server.start()  # empty: no persistence
        assert await until(lambda: _available(a), 3.0)
        await b.start()
        found = await b.lookup_call(sid)
        assert found is not None and found[0].node == "a"
        user = await b.lookup_user("bob")
        assert user is not None and user[0].node == "a"
        # the session ID claim and the identity count are back
        assert (await refused(b.reserve("198.51.100.3", session_id=sid))).code == "session_id_in_use"
        assert (await refused(b.reserve("198.51.100.3", "alice"))).code == "too_many_calls_for_identity"
    finally:
        await close(a, b)


async def _available(n: ClusterNode) -> bool:
    return n.available


@twisted_test
async def test_redis_down_local_prefix(server: RedisServer) -> None:
    a = node(server, "a", on_redis_down="local", max_attempts_per_ip_per_minute=1)
    b = node(server, "b")
    try:
        await a.start()
        assert a.local_prefix_confirmed
        server.stop()
        await a.attempt("198.51.100.1")  # no cluster-wide rate while Redis is away: the node's own applies
        sids = [await a.reserve("198.51.100.1") for _ in range(20)]
        assert len(set(sids)) == 20 and all(s.startswith("9" + a.local_prefix) and len(s) == 10 for s in sids)
        e = await refused(a.reserve("198.51.100.1", session_id="44400001"))
        assert (e.code, e.sip_status) == ("cluster_unavailable", 503)
        server.start()
        assert await until(lambda: _available(a), 3.0)
        await b.start()
        assert (await refused(b.reserve("198.51.100.2", session_id=sids[0]))).code == "session_id_in_use"
        # a second node in local mode gets another prefix
        c = node(server, "c", on_redis_down="local")
        c.local_prefix = a.local_prefix
        try:
            await c.start()
            await c.heartbeat()
            assert c.local_prefix != a.local_prefix and c.local_prefix_confirmed
        finally:
            await close(c)
    finally:
        await close(a, b)

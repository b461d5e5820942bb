"""This node's membership of the cluster, over Redis (issue 15, docs/cluster.md).

:class:`ClusterNode` is everything a node shares:

- the **heartbeat**: every ``heartbeat_s`` the node's hash and its index keys get ``node_ttl_s``
  again, so a killed node's calls, counts and users vanish within ``node_ttl_s``;
- **session IDs**, allocated cluster-wide (``SET NX`` with the reuse window as TTL), and
  client-chosen IDs checked cluster-wide (:meth:`ClusterNode.reserve`); a small pool of IDs
  claimed ahead (:meth:`ClusterNode.allocate_now`) serves the paths that cannot wait for Redis
  (a call from SIP toward a web user, an ingress without the async admission step);
- the **index of live calls** (session ID -> node, ingress, state, identity): written when a call
  starts, its state refreshed by the heartbeat, withdrawn when it ends;
- **registered web users** -> node (the newest registration across the cluster wins);
- **cluster-wide limits**: ``max_calls_per_identity``, ``max_calls_per_ip`` (counted in
  :meth:`reserve`) and the per-IP attempt rate (:meth:`attempt`), each one Lua script;
- **Redis down**: live calls go on; new ones follow ``on_redis_down``: ``"refuse"`` raises
  :class:`ClusterUnavailable` (``cluster_unavailable``, 503), ``"local"`` allocates session IDs
  ``9`` + this node's 3-digit prefix + random digits (cluster-allocated IDs never start with 9);
  when Redis answers again the node re-publishes its calls, counts, users and session IDs.

The node's own state (:attr:`ClusterNode.calls_source`, the reservations, the users) is the
truth; Redis holds a copy that the heartbeat repairs. Index writes are queued and sent in one
pipeline in order; the call path awaits only :meth:`attempt` and :meth:`reserve` (one round trip
each). Everything runs on the reactor's asyncio loop (``adapters/aio.py``).
"""

from __future__ import annotations

import json
import secrets
import socket
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from twisted.logger import Logger

from webgate.adapters import aio
from webgate.calls import errors
from webgate.calls.errors import CallRefused
from webgate.calls.errors import CLUSTER_UNAVAILABLE
from webgate.calls.policy import WINDOW_S
from webgate.cluster import scripts
from webgate.cluster.entries import CallEntry, NodeInfo, UserEntry, pairs_to_dict
from webgate.config import ClusterConfig
from webgate.syntax import SESSION_ID_RULE, is_valid_session_id

__all__ = ["CLUSTER_UNAVAILABLE", "LOCAL_FIRST_DIGIT", "ClusterNode", "ClusterUnavailable", "connect", "default_node_id"]

log = Logger()

#: session IDs allocated without Redis start with this digit (then the node's prefix)
LOCAL_FIRST_DIGIT = "9"
SESSION_IDS_EXHAUSTED = "session_ids_exhausted"

Op = Callable[[Pipeline], Awaitable[Any]]
#: the pool of session IDs claimed ahead: at least this many, refilled below half
POOL_MIN = 32
POOL_MAX = 1024


def default_node_id(port: int) -> str:
    """The default ``node_id``: the host name plus a port (the node's HTTP or SIP port)."""
    return f"{socket.gethostname()}:{port}"


class ClusterUnavailable(CallRefused):
    """Redis is unreachable and the node may not go on alone (``on_redis_down = "refuse"``)."""

    def __init__(self, message: str = "the cluster's shared state (Redis) is unreachable") -> None:
        super().__init__(CLUSTER_UNAVAILABLE, message, 503)


def connect(settings: ClusterConfig, timeout_s: float = 1.0, max_connections: int = 16) -> Redis:
    """A redis.asyncio client for ``settings.redis_url`` that fails fast: ``timeout_s`` to
    connect and per command, one immediate retry (a pooled connection broken by a Redis restart).
    At most ``max_connections``: a burst of call set-ups waits for a free one (up to five times
    ``timeout_s``) instead of opening a connection per call."""
    pool = BlockingConnectionPool.from_url(settings.redis_url, max_connections=max_connections, timeout=5 * timeout_s,
                                           socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry=Retry(NoBackoff(), 1), decode_responses=True)
    return Redis(connection_pool=pool)


class ClusterNode:
    def __init__(
        self,
        redis: Redis,
        settings: ClusterConfig,
        *,
        session_id_length: int = 10,
        reuse_after_s: float = 3600.0,
        max_calls_per_identity: int = 0,
        max_calls_per_ip: int = 0,
        max_attempts_per_ip_per_minute: int = 0,
        namespace: str = "{webgate}:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.node_id:
            raise ValueError("cluster.node_id is empty")
        if not 8 <= session_id_length <= 10:
            raise ValueError("session ID length must be 8..10")
        self.redis = redis
        self.settings = settings
        self.node_id = settings.node_id
        self.length = session_id_length
        self.reuse_ms = max(1, int(reuse_after_s * 1000))
        self.max_calls_per_identity = max_calls_per_identity
        self.max_calls_per_ip = max_calls_per_ip
        self.max_attempts = max_attempts_per_ip_per_minute
        self.prefix = namespace
        self.clock = clock
        self.ttl_ms = int(settings.node_ttl_s * 1000)
        #: this node's live calls as index entries (the call registry sets it)
        self.calls_source: Callable[[], Iterable[CallEntry]] = lambda: ()
        self.available = False  # Redis answered the last time it was asked
        self.started_ms = int(clock() * 1000)
        self.local_prefix = f"{zlib.crc32(self.node_id.encode()) % 1000:03d}"
        self.local_prefix_confirmed = False
        self._held: dict[str, tuple[str, str | None, float]] = {}  # sid -> ip, identity, claimed (monotonic)
        self._released: OrderedDict[str, float] = OrderedDict()  # sid -> released (monotonic)
        self._published: dict[str, str] = {}  # sid -> entry JSON as Redis has it
        self._users: dict[str, UserEntry] = {}
        self._pending: list[Op] = []
        self._flusher: Any = None  # the asyncio task sending _pending
        self._republishing = False
        self._task: Any = None
        self._stopped = False
        self._pool: deque[tuple[str, float]] = deque()  # session IDs claimed ahead, (sid, claimed monotonic)
        self._pool_task: Any = None  # the asyncio task refilling it
        self._taken: deque[float] = deque()  # when pooled IDs were taken in the last 10 s (sizes the pool)
        r = redis.register_script
        self._attempt, self._reserve, self._release = r(scripts.ATTEMPT), r(scripts.RESERVE), r(scripts.RELEASE)
        self._heartbeat, self._republish_s = r(scripts.HEARTBEAT), r(scripts.REPUBLISH)
        self._lookup_call, self._lookup_user, self._nodes = r(scripts.LOOKUP_CALL), r(scripts.LOOKUP_USER), r(scripts.NODES)
        self._claim, self._newer_elsewhere = r(scripts.CLAIM), r(scripts.NEWER_ELSEWHERE)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def local_mode(self) -> bool:
        return self.settings.on_redis_down == "local"

    # -- life ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """First heartbeat (Redis may be down: the loop keeps trying), then the heartbeat loop."""
        self._stopped = False
        try:
            await self.heartbeat()
        except ClusterUnavailable:
            pass
        if not self._stopped:
            self._task = aio.spawn(self._run(), "cluster heartbeat", node=self.node_id)

    async def stop(self, leave: bool = True) -> None:
        """Stop the heartbeat; with ``leave``, send what is queued and remove the node's keys
        (after its calls ended: a drained node leaves at once instead of after ``node_ttl_s``)."""
        self._stopped = True
        aio.cancel(self._task)
        aio.cancel(self._pool_task)
        self._task = self._pool_task = None
        if leave and self.available:
            await self.flush()
            base = self._key("node", self.node_id)
            try:
                async with self._guard():
                    await self.redis.delete(base, *(f"{base}:{s}" for s in ("calls", "ip", "identity", "users")))
                    await self.redis.srem(self._key("nodes"), self.node_id)
            except ClusterUnavailable:
                pass

    async def _run(self) -> None:
        while True:
            await aio.sleep(self.settings.heartbeat_s if self.available else min(1.0, self.settings.heartbeat_s))
            try:
                await self.heartbeat()
            except ClusterUnavailable:
                pass
            except Exception:
                log.failure("cluster heartbeat failed")

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as e:
            self._went_down(e)
            raise ClusterUnavailable() from e

    def _went_down(self, e: BaseException) -> None:
        self._pending.clear()  # the re-publish rebuilds it all from the node's own state
        self._pool.clear()  # a Redis that comes back empty lost their claims
        if self.available:
            self.available = False
            log.warn("cluster: Redis unreachable ({error}); new calls: {mode}", error=repr(e),
                     mode="local session IDs" if self.local_mode else "refused (cluster_unavailable)")

    async def heartbeat(self) -> None:
        """One heartbeat: refresh the node's keys; re-publish everything if Redis lost them (or
        was unreachable); else write the calls whose state changed and refresh old ID claims."""
        n_calls = sum(1 for _ in self.calls_source())
        info = NodeInfo(self.node_id, self.settings.ws_url, self.settings.rtmp_url, self.settings.sip_contact,
                        n_calls, len(self._users), self.started_ms)
        fields = [x for kv in info.fields().items() for x in kv]
        prefix = self.local_prefix if self.local_mode else ""
        async with self._guard():
            existed, prefix_ok, _now = await self._heartbeat(args=[self.prefix, self.node_id, self.ttl_ms, prefix, *fields])
        if prefix and not prefix_ok:
            old, self.local_prefix = self.local_prefix, f"{(int(self.local_prefix) + 1) % 1000:03d}"
            log.info("cluster: local session-ID prefix {old} is another node's; trying {new}", old=old, new=self.local_prefix)
        elif prefix:
            self.local_prefix_confirmed = True
        if not existed or not self.available:
            if not existed:
                self._pool.clear()  # Redis lost the node's keys (restarted?): the claims may be gone too
            await self.republish()
            self._refill_soon()
            return
        self._refill_soon()
        current = {e.session_id: e.to_json() for e in self.calls_source()}
        changed = {sid: j for sid, j in current.items() if self._published.get(sid) != j}
        gone = [sid for sid in self._published if sid not in current]
        now = time.monotonic()
        stale = [sid for sid, (_ip, _id, at) in self._held.items() if now - at > self.reuse_ms / 2000]
        for sid in stale:
            ip, ident, _at = self._held[sid]
            self._held[sid] = (ip, ident, now)
        self._published = current
        if changed or gone or stale:
            calls = self._key("node", self.node_id, "calls")

            async def op(pipe: Pipeline) -> None:
                if changed:
                    pipe.hset(calls, mapping=changed)  # type: ignore[arg-type]
                if gone:
                    pipe.hdel(calls, *gone)
                pipe.pexpire(calls, self.ttl_ms)
                for sid in stale:
                    pipe.pexpire(self._key("sid", sid), self.reuse_ms)

            self._enqueue(op)

    async def republish(self) -> None:
        """Write the node's whole state to Redis (after Redis was unreachable or lost it)."""
        self._republishing = True
        try:
            await self.flush()
            now = time.monotonic()
            self._prune_released(now)
            calls = {e.session_id: e.to_json() for e in self.calls_source()}
            ips: dict[str, int] = {}
            idents: dict[str, int] = {}
            for ip, ident, _at in self._held.values():
                if ip:  # "" = an ID from the pool (a call from SIP): no slot
                    ips[ip] = ips.get(ip, 0) + 1
                if ident is not None:
                    idents[ident] = idents.get(ident, 0) + 1
            sids = {sid: self.reuse_ms for sid in self._held}
            for sid, at in self._released.items():
                sids[sid] = max(1, self.reuse_ms - int((now - at) * 1000))
            state = {"calls": calls, "ip": ips, "identity": idents, "sids": sids,
                     "users": {u: e.to_json() for u, e in self._users.items()}}
            was_available = self.available
            async with self._guard():
                conflicts = await self._republish_s(args=[self.prefix, self.node_id, self.ttl_ms, json.dumps(state)])
            for sid in conflicts or ():
                log.warn("cluster: session ID {session_id} is also another node's (placed while Redis was unreachable)",
                         session_id=sid)
            self._published = calls
            self.available = True
            if not was_available:
                log.info("cluster: Redis reachable; published {calls} calls and {users} users of node {node}",
                         calls=len(calls), users=len(self._users), node=self.node_id)
        finally:
            self._republishing = False
            if self._pending and self._flusher is None:
                self._flusher = aio.spawn(self._flush_loop(), "cluster write", node=self.node_id)

    # -- the queued writes ---------------------------------------------------------------------
    def _enqueue(self, op: Op) -> None:
        if not self.available:
            return  # the re-publish will write the node's state
        self._pending.append(op)
        if self._flusher is None and not self._republishing:
            self._flusher = aio.spawn(self._flush_loop(), "cluster write", node=self.node_id)

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                ops, self._pending = self._pending, []
                async with self._guard():
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for op in ops:
                            await op(pipe)
                        await pipe.execute()
        except ClusterUnavailable:
            pass
        finally:
            self._flusher = None

    async def flush(self) -> None:
        """Wait until the queued writes were sent (or failed)."""
        while self._flusher is not None:
            await self._flusher

    # -- admission -----------------------------------------------------------------------------
    async def attempt(self, ip: str) -> None:
        """Count one call attempt from ``ip`` cluster-wide; raise ``rate_limited`` (429) if it
        made ``max_attempts_per_ip_per_minute`` in the last 60 s (a refused one is not counted)."""
        if self.max_attempts <= 0:
            return
        try:
            if not self.available:
                raise ClusterUnavailable()
            async with self._guard():
                ok, retry_ms = await self._attempt(args=[self.prefix, ip, self.max_attempts, int(WINDOW_S * 1000)])
        except ClusterUnavailable:
            if self.local_mode:
                return  # the node's own CallPolicy still counts
            raise
        if not ok:
            retry = max(1, -(-int(retry_ms) // 1000))
            raise CallRefused(errors.RATE_LIMITED,
                              f"too many call attempts from this address (limit {self.max_attempts} per minute); retry in {retry} s",
                              429)

    async def reserve(self, ip: str, identity: str | None = None, session_id: str | None = None) -> str:
        """Claim a session ID (``session_id``, the client's, or a new one) and one call slot of
        ``ip`` and ``identity`` across the cluster; returns the ID. Raises :class:`CallRefused`:
        ``invalid_session_id``, ``session_id_in_use``, ``too_many_calls_from_ip`` /
        ``too_many_calls_for_identity`` (429), ``cluster_unavailable`` (503). :meth:`release`
        gives it all back."""
        if session_id is not None and not is_valid_session_id(session_id):
            raise CallRefused(errors.INVALID_SESSION_ID, SESSION_ID_RULE)
        if session_id is not None and (session_id in self._held or session_id in self._released):
            raise CallRefused(errors.SESSION_ID_IN_USE, "session ID is in use or was used recently")
        for _ in range(1 if session_id is not None else 20):
            sid = session_id or self._generate(str(1 + secrets.randbelow(8)))
            try:
                if not self.available:
                    raise ClusterUnavailable()
                async with self._guard():
                    code, _n = await self._reserve(args=[
                        self.prefix, self.node_id, sid, self.reuse_ms, ip, identity or "",
                        self.max_calls_per_ip, self.max_calls_per_identity if identity else 0, self.ttl_ms])
            except ClusterUnavailable:
                return self._reserve_locally(ip, identity, session_id)
            if code == "ok":
                self._held[sid] = (ip, identity, time.monotonic())
                self._released.pop(sid, None)
                return sid
            if code == errors.TOO_MANY_CALLS_FROM_IP:
                raise CallRefused(code, f"this address already has {self.max_calls_per_ip} calls (limits.max_calls_per_ip)", 429)
            if code == errors.TOO_MANY_CALLS_FOR_IDENTITY:
                raise CallRefused(code, f"this identity already has {self.max_calls_per_identity} calls (limits.max_calls_per_identity)", 429)
            if session_id is not None:
                raise CallRefused(errors.SESSION_ID_IN_USE, "session ID is in use or was used recently")
        raise CallRefused(SESSION_IDS_EXHAUSTED, "no free session ID")

    def _reserve_locally(self, ip: str, identity: str | None, session_id: str | None) -> str:
        if not self.local_mode:
            raise ClusterUnavailable()
        if session_id is not None:
            raise ClusterUnavailable("a chosen session ID cannot be checked across the cluster while Redis is unreachable")
        if not self.local_prefix_confirmed:
            log.warn("cluster: local session-ID prefix {prefix} was never confirmed by Redis", prefix=self.local_prefix)
            self.local_prefix_confirmed = True  # say it once
        for _ in range(1000):
            sid = self._generate(LOCAL_FIRST_DIGIT + self.local_prefix)
            if sid not in self._held and sid not in self._released:
                self._held[sid] = (ip, identity, time.monotonic())
                return sid
        raise CallRefused(SESSION_IDS_EXHAUSTED, "no free session ID")

    # -- session IDs claimed ahead (for the paths that cannot wait) ---------------------------
    def allocate_now(self) -> str:
        """A session ID without waiting for Redis: one claimed ahead (the pool), or, while Redis
        is unreachable and ``on_redis_down = "local"``, one of this node's prefix. It holds no
        call slot (no IP, no identity); :meth:`release` gives it back. Raises
        :class:`ClusterUnavailable` (Redis unreachable and ``"refuse"``, or a burst emptied the
        pool before the refill came back)."""
        now = time.monotonic()
        self._taken.append(now)
        while self._taken and now - self._taken[0] > 10.0:
            self._taken.popleft()
        try:
            while self._pool:
                sid, at = self._pool.popleft()
                # a claim lives for the reuse window; the heartbeat refreshes held IDs after half of it
                if (now - at) * 2000 < self.reuse_ms and sid not in self._held and sid not in self._released:
                    self._held[sid] = ("", None, now)
                    return sid
            if not self.available:
                return self._reserve_locally("", None, None)
            raise ClusterUnavailable("no session ID claimed ahead yet (a burst of calls); retry")
        finally:
            self._refill_soon()

    @property
    def pool_target(self) -> int:
        """How many IDs the pool holds when full: twice what was taken in the last 10 s."""
        return max(POOL_MIN, min(POOL_MAX, 2 * len(self._taken)))

    @property
    def pooled(self) -> int:
        return len(self._pool)

    def _refill_soon(self) -> None:
        if self.available and self._pool_task is None and len(self._pool) < self.pool_target // 2 + 1:
            self._pool_task = aio.spawn(self._refill(), "cluster session-ID pool", node=self.node_id)

    async def _refill(self) -> None:
        try:
            while self.available and len(self._pool) < self.pool_target:
                want = self.pool_target - len(self._pool)
                sids = {self._generate(str(1 + secrets.randbelow(8))) for _ in range(want)}
                async with self._guard():
                    got = await self._claim(args=[self.prefix, self.node_id, self.reuse_ms, *sids])
                now = time.monotonic()
                self._pool.extend((str(sid), now) for sid in got or ())
        except ClusterUnavailable:
            pass
        finally:
            self._pool_task = None

    def _generate(self, head: str) -> str:
        n = self.length - len(head)
        return head + str(secrets.randbelow(10**n)).zfill(n)

    def is_held(self, session_id: str) -> bool:
        """Whether ``session_id`` was reserved here and not released."""
        return session_id in self._held

    def release(self, session_id: str) -> None:
        """The call (or the reservation that did not become one) ended: withdraw its index entry,
        give back its slots, keep its ID out of use for the reuse window."""
        held = self._held.pop(session_id, None)
        if held is None:
            return
        ip, ident, _at = held
        self._published.pop(session_id, None)
        now = time.monotonic()
        self._released[session_id] = now
        self._prune_released(now)

        async def op(pipe: Pipeline) -> None:
            await self._release(args=[self.prefix, self.node_id, session_id, self.reuse_ms, ip, ident or ""], client=pipe)

        self._enqueue(op)

    def _prune_released(self, now: float) -> None:
        while self._released:
            at = next(iter(self._released.values()))
            if (now - at) * 1000 < self.reuse_ms:
                break
            self._released.popitem(last=False)

    # -- the index -----------------------------------------------------------------------------
    def publish_call(self, entry: CallEntry) -> None:
        """A call of this node started: index it (its state is refreshed by the heartbeat)."""
        text = entry.to_json()
        self._published[entry.session_id] = text
        calls = self._key("node", self.node_id, "calls")

        async def op(pipe: Pipeline) -> None:
            pipe.hset(calls, entry.session_id, text)
            pipe.pexpire(calls, self.ttl_ms)

        self._enqueue(op)

    def withdraw_call(self, session_id: str) -> None:
        if self._published.pop(session_id, None) is None:
            return
        calls = self._key("node", self.node_id, "calls")

        async def op(pipe: Pipeline) -> None:
            pipe.hdel(calls, session_id)

        self._enqueue(op)

    def register_user(self, user: str, kind: str) -> UserEntry:
        """``user`` registered here now: the newest registration across the cluster wins
        (other nodes hear of it on the ``users`` channel)."""
        entry = UserEntry(user, self.node_id, kind, self.clock())
        self._users[user] = entry
        key = self._key("node", self.node_id, "users")
        note = json.dumps({"user": user, "node": self.node_id})

        async def op(pipe: Pipeline) -> None:
            pipe.hset(key, user, entry.to_json())
            pipe.pexpire(key, self.ttl_ms)
            pipe.publish(self._key("users"), note)

        self._enqueue(op)
        return entry

    def unregister_user(self, user: str) -> None:
        if self._users.pop(user, None) is None:
            return
        key = self._key("node", self.node_id, "users")

        async def op(pipe: Pipeline) -> None:
            pipe.hdel(key, user)

        self._enqueue(op)

    async def _ask(self, script: Any, *args: Any) -> Any:
        if not self.available:
            raise ClusterUnavailable()
        async with self._guard():
            return await script(args=[self.prefix, self.node_id, *args])

    async def lookup_call(self, session_id: str) -> tuple[CallEntry, NodeInfo] | None:
        """The live call ``session_id`` anywhere in the cluster, and its node (for a redirect)."""
        r = await self._ask(self._lookup_call, session_id)
        if not r:
            return None
        node, entry, info = r
        return CallEntry.from_json(session_id, node, entry), NodeInfo.from_fields(node, pairs_to_dict(info))

    async def lookup_user(self, user: str) -> tuple[UserEntry, NodeInfo] | None:
        """The node holding ``user``'s newest registration."""
        r = await self._ask(self._lookup_user, user)
        if not r:
            return None
        node, entry, info = r
        return UserEntry.from_json(user, node, entry), NodeInfo.from_fields(node, pairs_to_dict(info))

    async def newer_elsewhere(self, users: list[str]) -> list[str]:
        """Which of ``users`` (registered here) registered on another live node later."""
        if not users:
            return []
        return [str(u) for u in await self._ask(self._newer_elsewhere, *users) or ()]

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes and their load."""
        rows = await self._ask(self._nodes, "0")
        return [NodeInfo.from_fields(n, pairs_to_dict(f), int(c), int(u)) for n, f, c, u, _calls in rows]

    async def cluster_calls(self) -> list[CallEntry]:
        """Every live call of every live node (``/api/calls?scope=cluster``)."""
        rows = await self._ask(self._nodes, "1")
        return [CallEntry.from_json(sid, n, text) for n, _f, _c, _u, calls in rows
                for sid, text in pairs_to_dict(calls).items()]

"""A cluster node's parts, built from ``[cluster]`` and run with the telephony service
(``webgate/telephony.py`` builds it when ``[cluster] enabled = true``; docs/cluster.md).

:class:`ClusterService` owns the Redis client, the :class:`~webgate.cluster.node.ClusterNode`
and what the call manager uses of it: the call registry (:class:`RedisCallRegistry`), the
session-ID allocator (:class:`ClusterSessionIds`), the web users (:class:`ClusterWebUsers`), the
admission step (``CallManager.cluster``, the node) and the call observer that keeps the index
current (:class:`CallIndex`). :meth:`ClusterService.start` starts the heartbeat (Redis may be
down then: the node keeps trying, and new calls follow ``on_redis_down``);
:meth:`ClusterService.stop` leaves the cluster at once (after the drain ended the calls) instead
of after ``node_ttl_s``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from webgate.adapters import aio
from webgate.calls.users import WebUsers
from webgate.cluster.node import ClusterNode, ClusterUnavailable, connect, default_node_id
from webgate.cluster.redis_registry import CallIndex, ClusterSessionIds, ClusterWebUsers, RedisCallRegistry
from webgate.cluster.sip_users import SipUserRegistrations
from webgate.config import ClusterConfig, Config, HostPort

__all__ = ["ClusterService", "node_settings"]

log = Logger()


def _host(hp: HostPort) -> str:
    host = hp.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"[{host}]" if ":" in host else host


def node_settings(config: Config) -> ClusterConfig:
    """``[cluster]`` with ``node_id`` decided: as configured, else host name ``:`` the HTTP
    port (the SIP UDP port without HTTP; the process ID when that port is 0, chosen by the
    kernel)."""
    c = config.cluster
    if c.node_id:
        return c
    hp = config.http.listen or config.sip.udp or config.sip.tcp
    port = hp.port if hp is not None else 0
    return replace(c, node_id=default_node_id(port) if port else f"{socket.gethostname()}:pid{os.getpid()}")


class ClusterService:
    """The cluster parts of one node (not a Twisted service: the telephony service starts and
    stops it, so the node leaves only after the drain ended its calls)."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        settings = node_settings(config)
        self.redis = connect(settings)
        limits = config.limits
        self.node = ClusterNode(
            self.redis,
            settings,
            session_id_length=config.session_id.length,
            reuse_after_s=float(config.session_id.reuse_after_s),
            max_calls_per_identity=limits.max_calls_per_identity,
            max_calls_per_ip=limits.max_calls_per_ip,
            max_attempts_per_ip_per_minute=limits.max_attempts_per_ip_per_minute,
        )
        self.registry = RedisCallRegistry(self.node)
        self.session_ids = ClusterSessionIds(self.node)
        self.index = CallIndex(self.node, lambda sid: self.registry.by_session_id(sid) is not None)
        self.running = False
        self._web_users: list[ClusterWebUsers] = []
        self.sip_users: SipUserRegistrations | None = None
        self._sip_task: Any = None

    @property
    def node_id(self) -> str:
        return self.node.node_id

    def web_users(self, clock: Any) -> WebUsers:
        """The registered web users, published to the cluster."""
        users = ClusterWebUsers(self.node, clock)
        self._web_users.append(users)
        return users

    def register_users_at(self, sip: SipUserRegistrations) -> None:
        """Bind the web users at Kamailio's registrar (``[cluster] registrar``) from now on."""
        self.sip_users = sip
        for users in self._web_users:
            users.sip = sip

    async def _watch_sip_users(self) -> None:
        """Every ``heartbeat_s``: a user whose newest registration is on another node stops
        being refreshed here (Kamailio's route must stay with the newest)."""
        while self.running:
            await aio.sleep(self.node.settings.heartbeat_s)
            sip = self.sip_users
            if sip is None or not sip.by_user or not self.node.available:
                continue
            try:
                moved = await self.node.newer_elsewhere(list(sip.by_user))
            except ClusterUnavailable:
                continue
            for user in moved:
                sip.superseded(user)

    def addresses(self, *, http: HostPort | None = None, rtmp: HostPort | None = None, sip: HostPort | None = None) -> None:
        """The node's public addresses that ``[cluster]`` left empty, from the bound listeners
        (the configured values win)."""
        s, c = self.node.settings, self.config.cluster
        ws_url = c.ws_url or (f"ws://{_host(http)}:{http.port}/ws" if http is not None else s.ws_url)
        rtmp_url = c.rtmp_url or (f"rtmp://{_host(rtmp)}:{rtmp.port}" if rtmp is not None else s.rtmp_url)
        sip_contact = c.sip_contact or (f"sip:{_host(sip)}:{sip.port}" if sip is not None else s.sip_contact)
        self.node.settings = replace(s, ws_url=ws_url, rtmp_url=rtmp_url, sip_contact=sip_contact)

    def start(self) -> None:
        """Join the cluster: the first heartbeat (and publishing the node's state), then one
        every ``heartbeat_s``; runs in the background."""
        if self.running:
            return
        self.running = True
        log.info("cluster: node {node} joining through Redis ({mode} while Redis is unreachable)",
                 node=self.node_id, mode="local session IDs" if self.node.local_mode else "new calls refused")
        aio.spawn(self.node.start(), "cluster start", node=self.node_id)
        self._sip_task = aio.spawn(self._watch_sip_users(), "cluster web users at the registrar", node=self.node_id)

    def stop(self, leave: bool = True) -> Deferred[None]:
        """Stop the heartbeat; with ``leave`` remove the node from Redis at once (its calls
        ended already); close the Redis connections."""
        self.running = False
        aio.cancel(self._sip_task)
        self._sip_task = None
        return aio.as_deferred(self._stop(leave))

    async def _stop(self, leave: bool) -> None:
        try:
            await self.node.stop(leave=leave)
        finally:
            await self.redis.aclose(close_connection_pool=True)
        log.info("cluster: node {node} left", node=self.node_id)

    def status(self) -> dict[str, Any]:
        """For ``/health``: the node and whether Redis answers."""
        return {"node_id": self.node_id, "redis": "up" if self.node.available else "down",
                "on_redis_down": self.node.settings.on_redis_down}

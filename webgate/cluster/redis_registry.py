"""The Redis-backed :class:`~webgate.calls.registry.CallRegistry`, session-ID allocator and
web-user registry of a cluster node, and the call observer that keeps the index current.

A :class:`~webgate.calls.call.Call` is a live Python object of one process, so lookups by
session ID, SIP Call-ID or client stay local (an :class:`InMemoryCallRegistry` inside); what the
cluster shares goes through the :class:`~webgate.cluster.node.ClusterNode`: each call's index
entry (node, ingress, state, identity) when it is added, withdrawn when it is removed, its state
written when it changes (:class:`CallIndex`, a call observer) and refreshed by the heartbeat.
:meth:`RedisCallRegistry.locate` finds a call on any node.

:class:`ClusterSessionIds` takes the in-memory allocator's place in the call manager: a call
placed by an ingress that took the async admission step (``await manager.reserve(...)``, which
asks :meth:`ClusterNode.reserve`) places with the session ID claimed there; any other call (from
SIP toward a web user, an ingress without that step) gets one claimed ahead
(:meth:`ClusterNode.allocate_now`). Releasing it gives the claim and the call's slots back.
:class:`ClusterWebUsers` publishes the node's registered web users.

Wiring: ``webgate/cluster/service.py`` (``ClusterService``), built by ``webgate/telephony.py``
when ``[cluster] enabled = true``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from webgate.calls import errors
from webgate.calls.call import CallState
from webgate.calls.errors import CallRefused
from webgate.calls.registry import CallRegistry, InMemoryCallRegistry
from webgate.calls.session_id import SessionIdAllocator, SessionIdError
from webgate.calls.users import WebUserEndpoint, WebUsers
from webgate.cluster.entries import CallEntry, NodeInfo
from webgate.cluster.node import ClusterNode
from webgate.cluster.sip_users import SipUserRegistrations

if TYPE_CHECKING:
    from webgate.calls.call import Call

__all__ = ["CallIndex", "ClusterSessionIds", "ClusterWebUsers", "RedisCallRegistry", "entry_of"]


def entry_of(call: Call, node: str) -> CallEntry:
    """The index entry of a live call of this node."""
    grant = getattr(call, "grant", None)
    return CallEntry(call.session_id, node, call.ingress_kind, call.state.value, call.identity,
                     call.direction, call.times.created, grant is not None, getattr(grant, "sub", None))


class RedisCallRegistry(CallRegistry):
    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.local = InMemoryCallRegistry()
        node.calls_source = self._entries

    def _entries(self) -> Iterator[CallEntry]:
        for call in self.local:
            yield entry_of(call, self.node.node_id)

    def add(self, call: Call) -> None:
        self.local.add(call)
        self.node.publish_call(entry_of(call, self.node.node_id))

    def remove(self, call: Call) -> None:
        if self.local.by_session_id(call.session_id) is call:
            self.node.withdraw_call(call.session_id)
        self.local.remove(call)

    def by_session_id(self, session_id: str) -> Call | None:
        return self.local.by_session_id(session_id)

    def by_sip_call_id(self, call_id: str) -> Call | None:
        return self.local.by_sip_call_id(call_id)

    def bind_sip_call_id(self, call: Call, call_id: str) -> None:
        self.local.bind_sip_call_id(call, call_id)

    def by_client(self, client: str) -> list[Call]:
        return self.local.by_client(client)

    def __iter__(self) -> Iterator[Call]:
        return iter(self.local)

    def __len__(self) -> int:
        return len(self.local)

    async def locate(self, session_id: str) -> tuple[CallEntry, NodeInfo] | None:
        """The live call ``session_id`` on any node (raises ``cluster_unavailable``)."""
        return await self.node.lookup_call(session_id)

    async def elsewhere(self, session_id: str) -> tuple[CallEntry, NodeInfo] | None:
        """The live call ``session_id`` if it lives on another node (for a client's redirect;
        raises ``cluster_unavailable``)."""
        found = await self.locate(session_id)
        return found if found is not None and found[0].node != self.node.node_id else None


class CallIndex:
    """A call observer (``CallManager.observers``): a call's new state reaches the index at once
    (the heartbeat would carry it within ``heartbeat_s``)."""

    def __init__(self, node: ClusterNode, live: Callable[[str], bool]) -> None:
        self.node = node
        self.live = live  # is this session ID a live call of this node (the registry)?

    def _update(self, call: Call) -> None:
        if call.state is not CallState.ENDED and self.live(call.session_id):
            self.node.publish_call(entry_of(call, self.node.node_id))

    def call_progress(self, call: Call, state: Any) -> None:
        self._update(call)

    def call_answered(self, call: Call) -> None:
        self._update(call)


class ClusterSessionIds(SessionIdAllocator):
    """The call manager's allocator in a cluster: the ID the node reserved for the call (the
    async admission step), else one claimed ahead; a chosen ID that was not reserved is refused
    (it cannot be checked across the cluster without waiting for Redis)."""

    def __init__(self, node: ClusterNode) -> None:
        super().__init__(node.length, node.reuse_ms / 1000)
        self.node = node

    def is_available(self, sid: str) -> bool:
        return self.node.is_held(sid) and sid not in self.live

    def allocate(self, requested: str | None = None) -> str:
        if requested is None:
            try:
                sid = self.node.allocate_now()
            except CallRefused as e:
                raise SessionIdError(e.code, e.message) from None
        elif self.is_available(requested):
            sid = requested
        else:
            raise SessionIdError(errors.SESSION_ID_IN_USE,
                                 "a chosen session ID must be reserved across the cluster first (it is in use, or this "
                                 "ingress does not reserve yet)")
        self.live.add(sid)
        return sid

    def release(self, sid: str) -> None:
        self.live.discard(sid)
        self.node.release(sid)


class ClusterWebUsers(WebUsers):
    """The registered web users of this node, published to the cluster (the newest registration
    across the cluster wins; a killed node's users vanish with it)."""

    def __init__(self, node: ClusterNode, clock: Any = None, wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock, wall_clock)
        self.node = node
        #: the users' bindings at Kamailio's registrar (``[cluster] registrar``), else None
        self.sip: SipUserRegistrations | None = None

    def register(self, user: str, endpoint: WebUserEndpoint, expires: float | None = None) -> WebUserEndpoint | None:
        old = super().register(user, endpoint, expires)
        self.node.register_user(user, endpoint.kind)
        if self.sip is not None:
            self.sip.register(user)
        return old

    def unregister(self, user: str, endpoint: WebUserEndpoint) -> bool:
        gone = super().unregister(user, endpoint)
        if gone:
            self.node.unregister_user(user)
            if self.sip is not None:
                self.sip.unregister(user)
        return gone

    def _expire(self, user: str, endpoint: WebUserEndpoint) -> None:
        super()._expire(user, endpoint)
        if self.lookup(user) is None:
            self.node.unregister_user(user)
            if self.sip is not None:
                self.sip.unregister(user)

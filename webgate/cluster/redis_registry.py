"""The Redis-backed :class:`~webgate.calls.registry.CallRegistry` and session-ID allocator of a
cluster node.

A :class:`~webgate.calls.call.Call` is a live Python object of one process, so lookups by
session ID, SIP Call-ID or client stay local (an :class:`InMemoryCallRegistry` inside); what the
cluster shares goes through the :class:`~webgate.cluster.node.ClusterNode`: each call's index
entry (node, ingress, state, identity) when it is added, withdrawn when it is removed, and the
state refreshed by the heartbeat. :meth:`RedisCallRegistry.locate` finds a call on any node.

:class:`ClusterSessionIds` takes the in-memory allocator's place in the call manager: a call
places with the session ID that ``await node.reserve(...)`` claimed cluster-wide (the one async
step before ``place_call``), and releasing it gives the claim and the call's slots back.

Wiring (telephony.py, later)::

    node = ClusterNode(connect(settings), settings, session_id_length=..., reuse_after_s=..., max_...=...)
    registry = RedisCallRegistry(node)
    session_ids = ClusterSessionIds(node)
    await node.start()
    # per call: await node.attempt(ip); sid = await node.reserve(ip, identity, requested_sid)
    #           manager.place_call(..., session_id=sid)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from webgate.calls.registry import CallRegistry, InMemoryCallRegistry
from webgate.calls.session_id import SessionIdAllocator, SessionIdError
from webgate.cluster.entries import CallEntry, NodeInfo
from webgate.cluster.node import CLUSTER_UNAVAILABLE, ClusterNode

if TYPE_CHECKING:
    from webgate.calls.call import Call

__all__ = ["ClusterSessionIds", "RedisCallRegistry", "entry_of"]


def entry_of(call: Call, node: str) -> CallEntry:
    """The index entry of a live call of this node."""
    return CallEntry(call.session_id, node, call.ingress_kind, call.state.value, call.identity,
                     call.direction, call.times.created)


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


class ClusterSessionIds(SessionIdAllocator):
    """The call manager's allocator in a cluster: hands out only IDs the node reserved."""

    def __init__(self, node: ClusterNode) -> None:
        super().__init__(node.length, node.reuse_ms / 1000)
        self.node = node

    def is_available(self, sid: str) -> bool:
        return self.node.is_held(sid) and sid not in self.live

    def allocate(self, requested: str | None = None) -> str:
        if requested is None or not self.is_available(requested):
            raise SessionIdError(CLUSTER_UNAVAILABLE if requested is None else "session_id_in_use",
                                 "a cluster node places calls only with a session ID it reserved")
        self.live.add(requested)
        return requested

    def release(self, sid: str) -> None:
        self.live.discard(sid)
        self.node.release(sid)

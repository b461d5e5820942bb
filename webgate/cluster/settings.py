"""The ``[cluster]`` settings as one small frozen dataclass (issue 15), until the section joins
``webgate/config``: the Redis URL, this node's identity and public addresses, the heartbeat,
and what a node does with new calls while Redis is unreachable."""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["ON_REDIS_DOWN", "ClusterSettings", "default_node_id"]

#: ``on_redis_down`` values: "refuse" answers new calls ``cluster_unavailable`` (HTTP/SIP 503);
#: "local" places them with session IDs from this node's own prefix
ON_REDIS_DOWN = ("refuse", "local")


def default_node_id(port: int) -> str:
    """The default ``node_id``: the host name plus a port (the node's HTTP or SIP port)."""
    return f"{socket.gethostname()}:{port}"


@dataclass(frozen=True)
class ClusterSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    node_id: str = ""  # "" = default_node_id(port), decided by the wiring
    ws_url: str = ""  # this node's WebSocket URL for clients (ws[s]://HOST:PORT/ws)
    rtmp_url: str = ""  # this node's RTMP URL for clients (rtmp[s]://HOST:PORT)
    sip_contact: str = ""  # this node's SIP address as Kamailio sees it (sip:HOST:PORT)
    heartbeat_s: float = 2.0
    node_ttl_s: float = 6.0  # index entries and users of a silent node disappear after this long
    on_redis_down: str = "refuse"  # "refuse" | "local"

    def __post_init__(self) -> None:
        if self.on_redis_down not in ON_REDIS_DOWN:
            raise ValueError(f"cluster.on_redis_down must be one of {', '.join(ON_REDIS_DOWN)}")
        if self.node_id and (any(c.isspace() or c in "{}" for c in self.node_id) or len(self.node_id) > 128):
            raise ValueError("cluster.node_id must be 1-128 characters without spaces or braces")
        if self.heartbeat_s <= 0 or self.node_ttl_s < 2 * self.heartbeat_s:
            raise ValueError("cluster.node_ttl_s must be at least twice cluster.heartbeat_s (> 0)")

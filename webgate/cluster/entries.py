"""What the cluster index holds, as plain values: a live call (:class:`CallEntry`), a registered
web user (:class:`UserEntry`) and a node (:class:`NodeInfo`), with their JSON forms in Redis."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CallEntry", "NodeInfo", "UserEntry", "pairs_to_dict"]


def pairs_to_dict(flat: Sequence[Any]) -> dict[str, str]:
    """Redis ``HGETALL`` as returned inside a Lua reply (field, value, field, value...)."""
    it = iter(_text(x) for x in flat)
    return dict(zip(it, it))


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


@dataclass(frozen=True)
class NodeInfo:
    """A live node: its public addresses and load (``/api/nodes``, redirects)."""

    node_id: str
    ws_url: str = ""
    rtmp_url: str = ""
    sip_contact: str = ""
    calls: int = 0
    users: int = 0
    started_ms: int = 0
    seen_ms: int = 0  # Redis time of its last heartbeat

    def fields(self) -> dict[str, str]:
        """The node hash's fields, as the heartbeat writes them (``seen_ms`` is Redis's own)."""
        return {"id": self.node_id, "ws_url": self.ws_url, "rtmp_url": self.rtmp_url, "sip_contact": self.sip_contact,
                "calls": str(self.calls), "users": str(self.users), "started_ms": str(self.started_ms)}

    @classmethod
    def from_fields(cls, node_id: str, f: dict[str, str], calls: int | None = None, users: int | None = None) -> NodeInfo:
        return cls(node_id, f.get("ws_url", ""), f.get("rtmp_url", ""), f.get("sip_contact", ""),
                   calls if calls is not None else int(f.get("calls", 0) or 0),
                   users if users is not None else int(f.get("users", 0) or 0),
                   int(f.get("started_ms", 0) or 0), int(f.get("seen_ms", 0) or 0))


@dataclass(frozen=True)
class CallEntry:
    """One live call in the index: where it lives and what it is."""

    session_id: str
    node: str
    ingress: str  # "webrtc" | "rtmp" | "local" | "sip"
    state: str  # CallState value
    identity: str | None = None
    direction: str = "outbound"
    started: float = 0.0  # wall clock, seconds since the epoch
    #: the call was placed with a token (``grant``), and that token's ``sub``: who may watch or
    #: listen to it from another node (the redirects, webgate/calls/elsewhere.py)
    token: bool = False
    sub: str | None = None

    def to_json(self) -> str:
        d: dict[str, Any] = {"ingress": self.ingress, "state": self.state, "identity": self.identity,
                             "direction": self.direction, "started": round(self.started, 3)}
        if self.token:
            d["tok"], d["sub"] = 1, self.sub
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, session_id: str, node: str, text: str | bytes) -> CallEntry:
        d = json.loads(text)
        return cls(session_id, node, str(d.get("ingress", "")), str(d.get("state", "")), d.get("identity"),
                   str(d.get("direction", "outbound")), float(d.get("started", 0.0)), bool(d.get("tok")),
                   d.get("sub") if isinstance(d.get("sub"), str) else None)

    def as_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "node": self.node, "ingress": self.ingress, "state": self.state,
                "identity": self.identity, "direction": self.direction, "started": self.started}


@dataclass(frozen=True)
class UserEntry:
    """A registered web user: the node that holds its newest registration."""

    user: str
    node: str
    kind: str  # "rtmp" | "webrtc"
    at: float  # when it registered (wall clock, seconds): the newest across the cluster wins

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "at": int(self.at * 1000)}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, user: str, node: str, text: str | bytes) -> UserEntry:
        d = json.loads(text)
        return cls(user, node, str(d.get("kind", "")), int(d.get("at", 0)) / 1000.0)

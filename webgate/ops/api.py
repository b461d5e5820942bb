"""The REST API under ``/api`` (JSON; ``Authorization: Bearer <[api] admin_key>``).

=======  ===========================  ==================================================
GET      /api/calls                   live calls (``?scope=cluster``: every node's, from the
                                      cluster's index)
GET      /api/calls/{session_id}      one live call (with ``video`` and ``data`` when the call
                                      has them); 307 to its node when it lives on another
GET      /api/calls/{session_id}/     the latest keyframe of the caller's video as a JPEG,
         snapshot.jpg                 decoded on demand (CTI screen pops):
                                      webgate/ops/snapshot_api.py
DELETE   /api/calls/{session_id}      hang it up (BYE/CANCEL, cause ``admin_hangup``, the
                                      client is told)
GET      /api/stats                   gateway figures
GET      /api/nodes                   the cluster's live nodes and their load (this node
                                      alone without ``[cluster]``)
GET      /api/openapi.json            the OpenAPI 3.1 document of this API (no key needed):
                                      webgate/ops/openapi.py
...      /api/recordings/..., POST    call recording: webgate/ops/recordings_api.py
         /api/calls/{id}/recording
=======  ===========================  ==================================================

With ``admin_key = ""`` the whole ``/api`` answers 404 (the API is off). Errors are JSON
``{"error": CODE, "message": TEXT}``. Answers are built field by field from the
documented schema, so nothing undocumented (and no secret: trunk passwords, the token
key, call tokens, the admin key) can reach them.

On a cluster node (``[cluster] enabled``, docs/cluster.md) ``/api/calls/{session_id}`` (and its
``snapshot.jpg``) of a call that lives on another node answers ``307`` with that node's URL
(from its ``ws_url``); while Redis is unreachable the cluster's views answer ``503``
``cluster_unavailable``.
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from webgate import __version__
from webgate.adapters import aio
from webgate.calls.errors import CallRefused
from webgate.counters import count_error
from webgate.logsafe import safe
from webgate.ops.metrics import calls_by_ingress
from webgate.ops.openapi import openapi_document
from webgate.ops.recordings_api import route_recordings
from webgate.ops.snapshot_api import SNAPSHOT, answer_snapshot
from webgate.web.site import json_body
from webgate.web.site import json_error as _err

__all__ = ["ApiResource", "call_view"]

log = Logger()

SESSION_ID_RE = re.compile(r"[0-9]{8,10}")
ADMIN_HANGUP = "admin_hangup"


def _any(request: IRequest) -> Any:
    """The request for calling its methods: zope's ``IRequest`` declares them without ``self``,
    so mypy (without the zope plugin) rejects every call through the interface type."""
    return request


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


def _http_base(ws_url: str) -> str | None:
    """A node's HTTP(S) base URL from its WebSocket URL (``ws://h:p/ws`` -> ``http://h:p``)."""
    m = re.fullmatch(r"(wss?)://([^/\s]+)(?:/.*)?", ws_url)
    if m is None:
        return None
    return ("https" if m[1] == "wss" else "http") + "://" + m[2]


def cluster_call_view(entry: Any) -> dict[str, Any]:
    """A call of the cluster's index as the API shows it (the ``ClusterCall`` schema)."""
    return {"session_id": str(entry.session_id), "node": str(entry.node), "ingress": str(entry.ingress),
            "state": str(entry.state), "identity": entry.identity, "direction": str(entry.direction),
            "created_at": _iso(entry.started) or _iso(time.time())}


def node_view(info: Any, self_id: str) -> dict[str, Any]:
    """A node as the API shows it (the ``Node`` schema)."""
    return {"id": str(info.node_id), "self": info.node_id == self_id, "ws_url": info.ws_url, "rtmp_url": info.rtmp_url,
            "sip_contact": info.sip_contact, "calls": int(info.calls), "users": int(info.users),
            "started_at": _iso(info.started_ms / 1000) or _iso(time.time()), "seen_at": _iso(info.seen_ms / 1000)}


def call_view(call: Any) -> dict[str, Any]:
    """A call as the API shows it: exactly the ``Call`` schema's fields."""
    i = call.info()
    return {
        "session_id": i["session_id"],
        "direction": i["direction"],
        "held": i["held"],
        "ingress": i["ingress"],
        "client": i["client"],
        "identity": i["identity"],
        "destination": i["destination"],
        "state": i["state"],
        "sip_call_id": i["sip_call_id"],
        "codecs": {"sip": i["codecs"]["sip"], "ingress": i["codecs"]["ingress"]},
        "transcoded": bool(i["transcoded"]),
        "media_path": i["media_path"],
        "created_at": i["created_at"],
        "answered_at": i["answered_at"],
        "ended_at": i["ended_at"],
        "duration_s": float(i["duration_s"]),
        "end_cause": i["end_cause"],
        "end_status": i["end_status"],
        "to_sip": {k: i["to_sip"][k] for k in ("packets", "bytes", "lost", "fraction_lost")},
        "from_sip": {k: i["from_sip"][k] for k in ("packets", "bytes", "lost", "jitter_ms", "dropped", "rtcp_dropped")},
        "dtmf_sent": i["dtmf_sent"],
        "dtmf_received": i["dtmf_received"],
        **hub_view(call),
    }


def hub_view(call: Any) -> dict[str, Any]:
    """The ``video`` and ``data`` objects of a call with a media hub (a WebRTC or RTMP call:
    its video and data, watched by session ID); nothing for a call without one."""
    hub = getattr(call, "hub", None)
    if hub is None:
        return {}
    snap = hub.snapshot()
    v, d = snap["video"], snap["data"]

    def opt_int(x: Any) -> int | None:
        return int(x) if x is not None else None

    return {
        "video": {
            "codec": str(v["codec"]) if v["codec"] is not None else None,
            "width": opt_int(v["width"]),
            "height": opt_int(v["height"]),
            "watchers": int(v["watchers"]),
            "packets_in": int(v["packets_in"]),
            "bytes_in": int(v["bytes_in"]),
            "packets_forwarded": int(v["packets_forwarded"]),
            "bytes_forwarded": int(v["bytes_forwarded"]),
            "keyframe_requests": int(v["keyframe_requests"]),
        },
        "data": {k: int(d[k]) for k in ("from_caller", "to_caller", "dropped_too_big", "dropped_rate")},
    }


class ApiResource(resource.Resource):
    """``/api``: routes on ``request.postpath`` (a leaf, so every path under /api lands here)."""

    isLeaf = True

    def __init__(self, gateway: Any, admin_key: str) -> None:
        super().__init__()
        self.gateway = gateway
        self._key = admin_key.encode()
        self._snapshots_running = 0

    # -- plumbing
    def _authorized(self, request: IRequest) -> bool:
        header = _any(request).getHeader(b"authorization") or b""
        scheme, _, given = header.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return False
        return hmac.compare_digest(given.strip(), self._key)

    def render(self, request: IRequest) -> bytes | int:
        path = [p.decode("utf-8", "replace") for p in request.postpath]
        while path and path[-1] == "":
            path.pop()
        method = request.method.decode("ascii", "replace")
        if method == "HEAD":
            method = "GET"
        try:
            return self._route(request, method, path)
        except Exception:  # noqa: BLE001 - a failing handler answers 500, never kills the site
            count_error("api")
            log.failure("API {method} /api/{path} failed", method=safe(method, 16), path=safe("/".join(path)))
            return _err(request, 500, "internal_error", "internal error")

    def _route(self, request: IRequest, method: str, path: list[str]) -> bytes | int:
        handled = route_recordings(self, request, method, path)  # call recording (ops/recordings_api.py)
        if handled is not None:
            return handled
        if path == ["openapi.json"]:
            if method != "GET":
                return self._not_allowed(request, "GET")
            return json_body(request, 200, openapi_document())
        if len(path) == 3 and path[0] == "calls" and path[2] == SNAPSHOT:
            if method != "GET":
                return self._not_allowed(request, "GET")
            if not self._authorized(request):
                return self._unauthorized(request)
            return answer_snapshot(self, request, path[1])
        if path and path[0] in ("calls", "stats", "nodes") and (len(path) == 1 or (path[0] == "calls" and len(path) == 2)):
            allowed = "GET" if len(path) == 1 else "GET, DELETE"
            if method not in allowed.split(", "):
                return self._not_allowed(request, allowed)
            if not self._authorized(request):
                return self._unauthorized(request)
            if path[0] == "stats":
                return json_body(request, 200, self.stats())
            if path[0] == "nodes":
                return self._nodes(request)
            if len(path) == 1:
                scope = (_any(request).args or {}).get(b"scope", [b"local"])[0]
                if scope == b"cluster":
                    return self._cluster_calls(request)
                if scope != b"local":
                    return _err(request, 400, "invalid_scope", "scope must be local or cluster")
                return json_body(request, 200, {"calls": [call_view(c) for c in self._calls()]})
            return self._one_call(request, method, path[1])
        return _err(request, 404, "not_found", "no such API resource")

    def _unauthorized(self, request: IRequest) -> bytes:
        _any(request).setHeader(b"www-authenticate", b'Bearer realm="webgate"')
        return _err(request, 401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)")

    def _not_allowed(self, request: IRequest, allowed: str) -> bytes:
        _any(request).setHeader(b"allow", allowed.encode())
        return _err(request, 405, "method_not_allowed", f"allowed: {allowed}")

    def _calls(self) -> list[Any]:
        reg = self.gateway.registry
        return sorted(reg, key=lambda c: c.times.created) if reg is not None else []

    def _live_call(self, session_id: str) -> Any:
        reg = self.gateway.registry
        call = reg.by_session_id(session_id) if reg is not None and SESSION_ID_RE.fullmatch(session_id) else None
        return None if call is None or call.ended else call

    # -- the cluster
    def _answer_later(self, request: IRequest, work: Any) -> int:
        """Answer ``request`` with what the asyncio coroutine ``work`` returns (bytes, the
        response already set up); a :class:`CallRefused` (Redis unreachable) answers 503."""
        gone: list[bool] = []
        _any(request).notifyFinish().addBoth(lambda _: gone.append(True))
        d: Deferred[bytes] = aio.as_deferred(work)

        def failed(f: Failure) -> bytes:
            if f.check(CallRefused):
                _any(request).setHeader(b"retry-after", b"1")
                return _err(request, 503, "cluster_unavailable", str(f.value.message))
            count_error("api")
            log.failure("API cluster request failed", f)
            return _err(request, 500, "internal_error", "internal error")

        def answer(body: bytes) -> None:
            if not gone:
                _any(request).write(body)
                _any(request).finish()

        d.addErrback(failed)
        d.addCallback(answer)
        d.addErrback(lambda f: log.failure("API: answering failed", f))
        return server.NOT_DONE_YET

    def _nodes(self, request: IRequest) -> bytes | int:
        cluster = self.gateway.cluster
        if cluster is None:
            return json_body(request, 200, {"nodes": [self._this_node()]})

        async def work() -> bytes:
            nodes = await cluster.node.nodes()
            views = sorted((node_view(n, cluster.node_id) for n in nodes), key=lambda v: str(v["id"]))
            return json_body(request, 200, {"nodes": views})

        return self._answer_later(request, work())

    def _this_node(self) -> dict[str, Any]:
        """This process as the one node of a cluster of one (no ``[cluster]``)."""
        from webgate.cluster.service import node_settings  # (not imported at all in one process otherwise)

        gw = self.gateway
        http = gw.listening_address("http")
        rtmp = gw.listening_address("rtmp")
        sip = next(iter(getattr(gw.telephony, "bound", {}).values()), None)
        manager = getattr(gw.telephony, "manager", None)
        now = time.time()
        started = now - (gw.reactor.seconds() - gw.started_at) if gw.started_at is not None else now
        return {
            "id": node_settings(gw.config).node_id,
            "self": True,
            "ws_url": f"ws://{http}/ws" if http is not None else "",
            "rtmp_url": f"rtmp://{rtmp}" if rtmp is not None else "",
            "sip_contact": f"sip:{sip[0]}:{sip[1]}" if sip is not None else "",
            "calls": len(self._calls()),
            "users": len(manager.web_users) if manager is not None else 0,
            "started_at": _iso(started),
            "seen_at": _iso(now),
        }

    def _cluster_calls(self, request: IRequest) -> bytes | int:
        cluster = self.gateway.cluster
        if cluster is None:
            me = self._this_node()["id"]
            views = [{"session_id": c.session_id, "node": me, "ingress": c.ingress_kind, "state": c.state.value,
                      "identity": c.identity, "direction": c.direction, "created_at": _iso(c.times.created)}
                     for c in self._calls()]
            return json_body(request, 200, {"calls": views})

        async def work() -> bytes:
            entries = sorted(await cluster.node.cluster_calls(), key=lambda e: (e.started, e.session_id))
            return json_body(request, 200, {"calls": [cluster_call_view(e) for e in entries]})

        return self._answer_later(request, work())

    def _elsewhere(self, request: IRequest, session_id: str) -> bytes | int:
        """A call that is not live here: on a cluster node, 307 to the node it lives on."""
        cluster = self.gateway.cluster
        if cluster is None or not SESSION_ID_RE.fullmatch(session_id):
            return _err(request, 404, "no_such_call", "no live call with this session ID")

        async def work() -> bytes:
            found = await cluster.registry.elsewhere(session_id)
            if found is not None:
                entry, info = found
                base = _http_base(info.ws_url)
                if base is not None:
                    location = base + _any(request).uri.decode("ascii", "replace")
                    _any(request).setHeader(b"location", location.encode())
                    return _err(request, 307, "elsewhere", f"the call lives on node {entry.node}")
            return _err(request, 404, "no_such_call", "no live call with this session ID")

        return self._answer_later(request, work())

    def _one_call(self, request: IRequest, method: str, session_id: str) -> bytes | int:
        call = self._live_call(session_id)
        if call is None:
            return self._elsewhere(request, session_id)
        if method == "DELETE":
            log.info("call {session_id}: hung up through the API", session_id=call.session_id)
            call.manager.hangup(call, ADMIN_HANGUP)
        return json_body(request, 200, call_view(call))

    def stats(self) -> dict[str, Any]:
        gw = self.gateway
        tel = self.gateway.telephony
        manager = getattr(tel, "manager", None)
        pool = getattr(tel, "rtp_pool", None)
        transport = getattr(tel, "transport", None)
        calls = self._calls()
        by_state: dict[str, int] = {}
        for c in calls:
            by_state[c.state.value] = by_state.get(c.state.value, 0) + 1
        counters = dict(getattr(manager, "counters", {}) or {})
        started = gw.started_at
        return {
            "version": __version__,
            "status": "shutting_down" if gw.shutting_down else "ok",
            "accepting_calls": bool(getattr(manager, "accepting", False)),
            "uptime_s": round(gw.reactor.seconds() - started, 3) if started is not None else 0.0,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "calls": {
                "active": len(calls),
                "by_ingress": calls_by_ingress(calls),
                "by_state": by_state,
                "placed": int(counters.get("calls_placed", 0)),
                "refused": int(counters.get("calls_refused", 0)),
                "transcoded": sum(1 for c in calls if c.transcoded()),
                "max": int(getattr(manager, "max_calls", 0) or 0),
            },
            "rtp_ports": {
                "total": int(pool.capacity) if pool is not None else 0,
                "in_use": len(pool.in_use) if pool is not None else 0,
            },
            "sip": {k: int(v) for k, v in (getattr(transport, "stats", None) or {"received": 0, "sent": 0, "bad": 0}).items()},
        }

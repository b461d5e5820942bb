"""The REST API under ``/api`` (JSON; ``Authorization: Bearer <[api] admin_key>``).

=======  ===========================  ==================================================
GET      /api/calls                   live calls (``?scope=cluster``: every node's, from the
                                      cluster's index)
GET      /api/calls/{session_id}      one live call (with ``video`` and ``data`` when the call
                                      has them); 307 to its node when it lives on another
GET      /api/calls/{session_id}/     the latest keyframe of the caller's video as a JPEG,
         snapshot.jpg                 decoded on demand (CTI screen pops)
DELETE   /api/calls/{session_id}      hang it up (BYE/CANCEL, cause ``admin_hangup``, the
                                      client is told)
GET      /api/stats                   gateway figures
GET      /api/nodes                   the cluster's live nodes and their load (this node
                                      alone without ``[cluster]``)
GET      /api/openapi.json            the OpenAPI 3.1 document of this API (no key needed)
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

from twisted.internet import threads
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
from webgate.media.snapshot import SnapshotError, keyframe_to_jpeg
from webgate.ops.metrics import calls_by_ingress
from webgate.web.site import json_body

__all__ = ["ApiResource", "call_view", "openapi_document"]

log = Logger()

SESSION_ID_RE = re.compile(r"[0-9]{8,10}")
ADMIN_HANGUP = "admin_hangup"
SNAPSHOT = "snapshot.jpg"
#: snapshot decodes running at once (in the reactor's thread pool); one more answers 503
MAX_SNAPSHOTS_AT_ONCE = 2


def _any(request: IRequest) -> Any:
    """The request for calling its methods: zope's ``IRequest`` declares them without ``self``,
    so mypy (without the zope plugin) rejects every call through the interface type."""
    return request


def _err(request: IRequest, status: int, code: str, message: str) -> bytes:
    return json_body(request, status, {"error": code, "message": message})


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
        if path == ["openapi.json"]:
            if method != "GET":
                return self._not_allowed(request, "GET")
            return json_body(request, 200, openapi_document())
        if len(path) == 3 and path[0] == "calls" and path[2] == SNAPSHOT:
            if method != "GET":
                return self._not_allowed(request, "GET")
            if not self._authorized(request):
                return self._unauthorized(request)
            return self._snapshot(request, path[1])
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
            found = await cluster.registry.locate(session_id)
            if found is not None:
                entry, info = found
                base = _http_base(info.ws_url)
                if entry.node != cluster.node_id and base is not None:
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

    def _snapshot(self, request: IRequest, session_id: str) -> bytes | int:
        """The latest keyframe as a JPEG, decoded in the reactor's thread pool (the only place
        video is ever decoded; docs/operations.md)."""
        call = self._live_call(session_id)
        if call is None:
            return self._elsewhere(request, session_id)
        hub = getattr(call, "hub", None)
        keyframe = hub.last_keyframe() if hub is not None else None
        if keyframe is None:
            return _err(request, 404, "no_keyframe", "no video keyframe from this call yet")
        if self._snapshots_running >= MAX_SNAPSHOTS_AT_ONCE:
            _any(request).setHeader(b"retry-after", b"1")
            return _err(request, 503, "busy", f"{MAX_SNAPSHOTS_AT_ONCE} snapshots are being decoded; retry")
        codec, bitstream = keyframe
        self._snapshots_running += 1
        gone: list[bool] = []
        _any(request).notifyFinish().addBoth(lambda _: gone.append(True))
        reactor = self.gateway.reactor
        d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), keyframe_to_jpeg, codec, bytes(bitstream))

        def answer(body: bytes) -> None:
            if not gone:
                _any(request).write(body)
                _any(request).finish()

        def jpeg(data: bytes) -> None:
            r = _any(request)
            r.setResponseCode(200)
            r.setHeader(b"content-type", b"image/jpeg")
            r.setHeader(b"cache-control", b"no-store")
            r.setHeader(b"x-content-type-options", b"nosniff")
            r.setHeader(b"content-length", str(len(data)).encode())
            answer(data)

        def failed(f: Failure) -> None:
            if f.check(SnapshotError):
                log.info("call {session_id}: snapshot failed: {why}", session_id=call.session_id, why=safe(f.getErrorMessage()))
                answer(_err(request, 502, "undecodable", f"the caller's keyframe could not be decoded: {f.getErrorMessage()}"))
            else:
                count_error("api")
                log.failure("API snapshot of {session_id} failed", f, session_id=call.session_id)
                answer(_err(request, 500, "internal_error", "internal error"))

        def release(result: object) -> object:
            self._snapshots_running -= 1
            return result

        d.addBoth(release)
        d.addCallbacks(jpeg, failed)
        d.addErrback(lambda f: log.failure("API snapshot of {session_id}: answering failed", f, session_id=call.session_id))
        return server.NOT_DONE_YET

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


# ---- the OpenAPI document ---------------------------------------------------------------------

_NULLABLE_STR = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API (what ``/api/openapi.json`` serves)."""
    unauthorized = {"$ref": "#/components/responses/Unauthorized"}
    sid_param = {
        "name": "session_id",
        "in": "path",
        "required": True,
        "description": "The call's session ID (8-10 digits).",
        "schema": {"type": "string", "pattern": "^[0-9]{8,10}$"},
    }
    call_ok = {"description": "The call.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Call"}}}}
    elsewhere = {"$ref": "#/components/responses/Elsewhere"}
    unavailable = {"$ref": "#/components/responses/ClusterUnavailable"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webgate admin API",
            "version": __version__,
            "description": "Live calls and gateway figures. Every operation but this document needs "
            "`Authorization: Bearer <[api] admin_key>`. With no admin_key configured /api answers 404.",
        },
        "servers": [{"url": "/"}],
        "security": [{"adminKey": []}],
        "paths": {
            "/api/calls": {
                "get": {
                    "operationId": "listCalls",
                    "summary": "Live calls",
                    "parameters": [
                        {
                            "name": "scope",
                            "in": "query",
                            "required": False,
                            "description": "`local` (default): this node's calls, in full; `cluster`: every node's "
                            "calls from the cluster's index (this node's alone without `[cluster]`).",
                            "schema": {"type": "string", "enum": ["local", "cluster"], "default": "local"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Every live call, oldest first (`ClusterCallList` with `scope=cluster`).",
                            "content": {"application/json": {"schema": {"anyOf": [
                                {"$ref": "#/components/schemas/CallList"}, {"$ref": "#/components/schemas/ClusterCallList"},
                            ]}}},
                        },
                        "400": _error_response("`scope` is neither `local` nor `cluster` (`invalid_scope`)."),
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/api/calls/{session_id}": {
                "parameters": [sid_param],
                "get": {
                    "operationId": "getCall",
                    "summary": "One live call",
                    "responses": {"200": call_ok, "307": elsewhere, "401": unauthorized,
                                  "404": {"$ref": "#/components/responses/NoSuchCall"}, "503": unavailable},
                },
                "delete": {
                    "operationId": "hangUpCall",
                    "summary": "Hang up a live call",
                    "description": "Ends the call with BYE (CANCEL before the answer), end cause `admin_hangup`; "
                    "the client is told (WebSocket `ended`, RTMP status/callback). Answers the call as it is "
                    "after the hang-up (state `ended`).",
                    "responses": {"200": call_ok, "307": elsewhere, "401": unauthorized,
                                  "404": {"$ref": "#/components/responses/NoSuchCall"}, "503": unavailable},
                },
            },
            "/api/calls/{session_id}/snapshot.jpg": {
                "parameters": [sid_param],
                "get": {
                    "operationId": "getCallSnapshot",
                    "summary": "The caller's video now, as a JPEG",
                    "description": "Decodes the latest keyframe of the caller's video (H.264 or VP8) on demand, "
                    "scaled down to fit 1920x1080: for CTI screen pops. The only place the gateway decodes video. "
                    f"At most {MAX_SNAPSHOTS_AT_ONCE} decodes run at once (more: 503 `busy`).",
                    "responses": {
                        "200": {"description": "The picture.", "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                        "307": elsewhere,
                        "401": unauthorized,
                        "404": _error_response(
                            "No live call with this session ID (`no_such_call`), or no keyframe of its video yet (`no_keyframe`)."
                        ),
                        "502": _error_response("The caller's keyframe could not be decoded (`undecodable`)."),
                        "503": _error_response("Too many snapshots being decoded at once (`busy`), or the cluster's "
                                               "Redis is unreachable (`cluster_unavailable`); retry."),
                    },
                }
            },
            "/api/stats": {
                "get": {
                    "operationId": "getStats",
                    "summary": "Gateway figures",
                    "responses": {
                        "200": {
                            "description": "Figures.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Stats"}}},
                        },
                        "401": unauthorized,
                    },
                }
            },
            "/api/nodes": {
                "get": {
                    "operationId": "listNodes",
                    "summary": "The cluster's nodes",
                    "description": "The live nodes of the cluster (docs/cluster.md) with their addresses and load; "
                    "without `[cluster]` this node alone.",
                    "responses": {
                        "200": {
                            "description": "The nodes, by id.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NodeList"}}},
                        },
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {"type": "object"}}}}},
                }
            },
        },
        "components": {
            "securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer", "description": "[api] admin_key"}},
            "responses": {
                "Unauthorized": {
                    **_error_response("Missing or wrong API key (`error`: `unauthorized`)."),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                },
                "NoSuchCall": _error_response("No live call with this session ID (`error`: `no_such_call`)."),
                "Elsewhere": {
                    **_error_response("The call lives on another node of the cluster (`error`: `elsewhere`): "
                                      "repeat the request at `Location`."),
                    "headers": {"Location": {"schema": {"type": "string"}, "description": "the same path on the call's node"}},
                },
                "ClusterUnavailable": {
                    **_error_response("The cluster's shared state (Redis) is unreachable (`error`: `cluster_unavailable`)."),
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "additionalProperties": False,
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "CallList": {
                    "type": "object",
                    "required": ["calls"],
                    "additionalProperties": False,
                    "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}}},
                },
                "ClusterCallList": {
                    "type": "object",
                    "required": ["calls"],
                    "additionalProperties": False,
                    "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/ClusterCall"}}},
                },
                "ClusterCall": {
                    "type": "object",
                    "description": "A live call as the cluster's index has it (its state refreshed within the heartbeat)",
                    "additionalProperties": False,
                    "required": ["session_id", "node", "ingress", "state", "identity", "direction", "created_at"],
                    "properties": {
                        "session_id": {"type": "string", "pattern": "^[0-9]{8,10}$"},
                        "node": {"type": "string", "description": "the node the call lives on"},
                        "ingress": {"type": "string", "enum": ["webrtc", "rtmp", "local"]},
                        "state": {"type": "string", "enum": ["calling", "ringing", "early_media", "answered", "ended"]},
                        "identity": _NULLABLE_STR,
                        "direction": {"type": "string", "enum": ["outbound", "inbound"]},
                        "created_at": {"type": "string", "format": "date-time"},
                    },
                },
                "NodeList": {
                    "type": "object",
                    "required": ["nodes"],
                    "additionalProperties": False,
                    "properties": {"nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}},
                },
                "Node": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "self", "ws_url", "rtmp_url", "sip_contact", "calls", "users", "started_at", "seen_at"],
                    "properties": {
                        "id": {"type": "string", "description": "[cluster] node_id"},
                        "self": {"type": "boolean", "description": "the node that answered"},
                        "ws_url": {"type": "string", "description": "where clients reach its /ws"},
                        "rtmp_url": {"type": "string"},
                        "sip_contact": {"type": "string", "description": "its SIP address as Kamailio sees it"},
                        "calls": {**_COUNT, "description": "its live calls"},
                        "users": {**_COUNT, "description": "its registered web users"},
                        "started_at": {"type": "string", "format": "date-time"},
                        "seen_at": {"type": ["string", "null"], "format": "date-time", "description": "its last heartbeat"},
                    },
                },
                "Call": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [
                        "session_id", "direction", "ingress", "client", "identity", "destination", "state", "held", "sip_call_id", "codecs",
                        "transcoded", "media_path", "created_at", "answered_at", "ended_at", "duration_s", "end_cause",
                        "end_status", "to_sip", "from_sip", "dtmf_sent", "dtmf_received",
                    ],
                    "properties": {
                        "session_id": {"type": "string", "pattern": "^[0-9]{8,10}$"},
                        "direction": {
                            "type": "string",
                            "enum": ["outbound", "inbound"],
                            "description": "outbound: placed by the web client; inbound: from SIP to a registered web user",
                        },
                        "ingress": {"type": "string", "enum": ["webrtc", "rtmp", "local"]},
                        "client": {"type": "string", "description": "the client's address"},
                        "identity": {**_NULLABLE_STR, "description": "the call token's subject, if a token was used"},
                        "destination": {"type": "string"},
                        "state": {"type": "string", "enum": ["calling", "ringing", "early_media", "answered", "ended"]},
                        "held": {"type": "boolean", "description": "the web side has put the far end on hold (re-INVITE accepted)"},
                        "sip_call_id": _NULLABLE_STR,
                        "codecs": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["sip", "ingress"],
                            "properties": {
                                "sip": {**_NULLABLE_STR, "description": "negotiated SIP codec"},
                                "ingress": {**_NULLABLE_STR, "description": "browser or FLV codec, if known"},
                            },
                        },
                        "transcoded": {"type": "boolean"},
                        "media_path": {"type": ["string", "null"], "enum": ["packet", "frame", None]},
                        "created_at": {"type": "string", "format": "date-time"},
                        "answered_at": {"type": ["string", "null"], "format": "date-time"},
                        "ended_at": {"type": ["string", "null"], "format": "date-time"},
                        "duration_s": {"type": "number", "minimum": 0},
                        "end_cause": _NULLABLE_STR,
                        "end_status": {"type": ["integer", "null"]},
                        "to_sip": {
                            "type": "object",
                            "description": "RTP sent toward SIP; lost/fraction_lost as the far end reported in RTCP (null before a report)",
                            "additionalProperties": False,
                            "required": ["packets", "bytes", "lost", "fraction_lost"],
                            "properties": {
                                "packets": _COUNT,
                                "bytes": _COUNT,
                                "lost": {"type": ["integer", "null"], "minimum": 0},
                                "fraction_lost": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                            },
                        },
                        "from_sip": {
                            "type": "object",
                            "description": "RTP received from SIP, measured by the gateway",
                            "additionalProperties": False,
                            "required": ["packets", "bytes", "lost", "jitter_ms", "dropped", "rtcp_dropped"],
                            "properties": {
                                "packets": _COUNT,
                                "bytes": _COUNT,
                                "lost": _COUNT,
                                "jitter_ms": {"type": "number", "minimum": 0},
                                "dropped": {
                                    **_COUNT,
                                    "description": "RTP packets from another address than the far end's learnt source, dropped ([rtp] strict_source)",
                                },
                                "rtcp_dropped": {**_COUNT, "description": "RTCP packets from another address than the far end's, dropped"},
                            },
                        },
                        "dtmf_sent": _COUNT,
                        "dtmf_received": _COUNT,
                        "video": {
                            "type": "object",
                            "description": "the caller's video, forwarded to watchers undecoded (only for calls with "
                            "video and data: WebRTC and RTMP)",
                            "additionalProperties": False,
                            "required": [
                                "codec", "width", "height", "watchers", "packets_in", "bytes_in", "packets_forwarded",
                                "bytes_forwarded", "keyframe_requests",
                            ],
                            "properties": {
                                "codec": {**_NULLABLE_STR, "description": "VP8, H264 (WebRTC) or the FLV codec; null before the first video"},
                                "width": {"type": ["integer", "null"], "minimum": 0},
                                "height": {"type": ["integer", "null"], "minimum": 0},
                                "watchers": {**_COUNT, "description": "watchers now"},
                                "packets_in": {**_COUNT, "description": "RTP packets or FLV tags from the caller"},
                                "bytes_in": _COUNT,
                                "packets_forwarded": {**_COUNT, "description": "packets or tags sent to watchers, all together"},
                                "bytes_forwarded": _COUNT,
                                "keyframe_requests": {**_COUNT, "description": "keyframes asked of the caller (PLI)"},
                            },
                        },
                        "data": {
                            "type": "object",
                            "description": "data messages relayed between the caller and its watchers",
                            "additionalProperties": False,
                            "required": ["from_caller", "to_caller", "dropped_too_big", "dropped_rate"],
                            "properties": {
                                "from_caller": {**_COUNT, "description": "messages from the caller (each sent to every watcher)"},
                                "to_caller": {**_COUNT, "description": "messages from watchers to the caller"},
                                "dropped_too_big": {**_COUNT, "description": "dropped: larger than [video] max_data_bytes"},
                                "dropped_rate": {**_COUNT, "description": "dropped: past [video] data_rate_per_s"},
                            },
                        },
                    },
                },
                "Stats": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["version", "status", "accepting_calls", "uptime_s", "time", "calls", "rtp_ports", "sip"],
                    "properties": {
                        "version": {"type": "string"},
                        "status": {"type": "string", "enum": ["ok", "shutting_down"]},
                        "accepting_calls": {"type": "boolean"},
                        "uptime_s": {"type": "number", "minimum": 0},
                        "time": {"type": "string", "format": "date-time"},
                        "calls": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["active", "by_ingress", "by_state", "placed", "refused", "transcoded", "max"],
                            "properties": {
                                "active": _COUNT,
                                "by_ingress": {"type": "object", "additionalProperties": _COUNT},
                                "by_state": {"type": "object", "additionalProperties": _COUNT},
                                "placed": _COUNT,
                                "refused": _COUNT,
                                "transcoded": _COUNT,
                                "max": _COUNT,
                            },
                        },
                        "rtp_ports": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["total", "in_use"],
                            "properties": {"total": _COUNT, "in_use": _COUNT},
                        },
                        "sip": {
                            "type": "object",
                            "description": "SIP transport counters: messages received, sent, refused as bad",
                            "additionalProperties": _COUNT,
                        },
                    },
                },
            },
        },
    }

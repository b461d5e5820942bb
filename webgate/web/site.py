"""The HTTP side of webgate: a twisted.web resource tree.

Here: ``GET /health`` (200 JSON ``{"status": "ok", ...}``, 503 while shutting down)
and a JSON 404 for everything else. ``webgate.gateway.build_gateway`` adds ``/``
(demo page), ``/html5_client/``, ``/ws`` (WebSocket signalling), ``/api`` (REST, only
with an admin key) and ``/metrics`` (``webgate/ops/``) with
``site.resource.putChild(b"name", resource)``; the HTTPS listener serves the same Site.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

from twisted.web import resource, server
from twisted.web.iweb import IRequest

from webgate.config import HttpConfig
from webgate.security.connlimit import ConnectionLimiter
from webgate.web.limits import GuardedSite

__all__ = ["HealthResource", "HealthSource", "NotFound", "Root", "html5_client_dir", "json_body", "json_error", "make_site"]


class HealthSource(Protocol):
    """What the web layer needs from the gateway (``webgate.gateway.Gateway``)."""

    def health(self) -> dict[str, Any]: ...


def json_body(request: IRequest, status: int, body: Any) -> bytes:
    """Set status and JSON headers on ``request``; return the encoded body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def json_error(request: IRequest, status: int, code: str, message: str) -> bytes:
    """:func:`json_body` of an API error: ``{"error": code, "message": message}``."""
    return json_body(request, status, {"error": code, "message": message})


class NotFound(resource.Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return json_body(request, 404, {"error": "not found"})


class HealthResource(resource.Resource):
    """``GET /health``: the gateway's health dict; 503 unless its status is "ok"."""

    isLeaf = True

    def __init__(self, gateway: HealthSource) -> None:
        super().__init__()
        self.gateway = gateway

    def render(self, request: IRequest) -> bytes:
        if request.postpath not in ([], [b""]):
            return json_body(request, 404, {"error": "not found"})
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return json_body(request, 405, {"error": "method not allowed"})
        health = self.gateway.health()
        return json_body(request, 200 if health.get("status") == "ok" else 503, health)


class Root(resource.Resource):
    """The root: children by name; anything unknown is a JSON 404."""

    def __init__(self, gateway: HealthSource) -> None:
        super().__init__()
        self.gateway = gateway
        self.putChild(b"health", HealthResource(gateway))

    def getChild(self, path: bytes, request: IRequest) -> resource.Resource:
        return NotFound()

    def render(self, request: IRequest) -> bytes:
        return json_body(request, 404, {"error": "not found"})


def make_site(gateway: HealthSource) -> server.Site:
    """The twisted.web Site the gateway's HTTP listener serves: connections capped and request
    headers due in time per the gateway's ``[http]`` settings (webgate/web/limits.py)."""
    cfg = getattr(getattr(gateway, "config", None), "http", None) or HttpConfig()
    limiter = ConnectionLimiter("http", cfg.max_connections, cfg.max_connections_per_ip)
    site = GuardedSite(Root(gateway), limiter=limiter, request_timeout_s=cfg.request_timeout_s, reactor=getattr(gateway, "reactor", None))
    site.displayTracebacks = False
    site.noisy = False
    return site


def html5_client_dir() -> Path | None:
    """Where the html5_client files are: the checkout (also editable installs), else
    ``<prefix>/share/webgate/html5_client`` (normal installs, via setup.py data_files)."""
    here = Path(__file__).resolve().parents[2] / "html5_client"
    for candidate in (here, Path(sys.prefix) / "share" / "webgate" / "html5_client"):
        if candidate.is_dir():
            return candidate
    return None

"""The WebSocket Origin allow-list (``[http] allowed_origins``), sans-IO.

- a request without an Origin header is always let through: browsers always send one on a
  WebSocket handshake, and any other client could write whatever Origin it likes anyway;
- ``[]`` (the default): an Origin whose host[:port] equals the Host header (the gateway's own
  page);
- ``["*"]``: any origin;
- otherwise: an exact match of ``scheme://host[:port]``, case-insensitive; a default port
  (80 for http, 443 for https) may be written or left out on either side.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["normalise_origin", "origin_allowed"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalise_origin(origin: str) -> str | None:
    """``"HTTPS://Example.com:443"`` -> ``"https://example.com"``; None if it is not an origin."""
    origin = origin.strip()
    if not origin or origin == "null" or len(origin) > 512:
        return None
    try:
        u = urlsplit(origin)
        port = u.port
    except ValueError:
        return None
    scheme = u.scheme.lower()
    host = (u.hostname or "").lower()
    if not scheme or not host or u.path not in ("", "/") or u.query or u.fragment or u.username or u.password:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _host_port(origin: str) -> str:
    """``https://example.com`` -> ``example.com:443``."""
    scheme, _, rest = origin.partition("://")
    if rest.startswith("["):
        host_end = rest.index("]") + 1
        if len(rest) > host_end and rest[host_end] == ":":
            return rest
        return f"{rest}:{_DEFAULT_PORTS.get(scheme, 0)}"
    if ":" in rest:
        return rest
    return f"{rest}:{_DEFAULT_PORTS.get(scheme, 0)}"


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...] | list[str], secure: bool = False) -> bool:
    """Whether a WebSocket handshake with this ``Origin`` (None = no header) and ``Host``
    header may proceed. ``secure``: the request came over TLS (default port 443 for Host)."""
    if "*" in allowed:
        return True
    if origin is None:
        return True  # not a browser (browsers always send Origin on a WebSocket handshake)
    norm = normalise_origin(origin)
    if norm is None:
        return False
    if allowed:
        return norm in {normalise_origin(a) for a in allowed}
    if not host:
        return False
    host = host.strip().lower()
    default_port = 443 if secure else 80
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return False
        h, p = host[: end + 1], host[end + 2 :] if host[end + 1 : end + 2] == ":" else ""
    else:
        h, _, p = host.partition(":")
    if p and not p.isdigit():
        return False
    return _host_port(norm) == f"{h}:{int(p) if p else default_port}"

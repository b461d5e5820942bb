"""A client's request for a call that lives on another cluster node: whether to redirect it
(docs/cluster.md "Redirects", docs/protocol.md).

A WebSocket ``watch`` and an RTMP play of ``session/ID`` or ``watch/ID`` that name a call of
another node are answered with that node's address instead of ``not_found``, but only when the
same request would be allowed there: a redirect must not tell a prober more than a refusal
would. The rules are those of the call's own node, applied to its index entry (the placing
token's ``sub`` and whether there was one; webgate/cluster/entries.py ``CallEntry``):

- watching (:func:`may_watch`): a valid token whose ``watch`` claim covers the session ID, or
  whose ``sub`` is that of the token that placed the call (``webgate/calls/watch.py``);
- listening by session ID (:func:`may_listen`): a call placed without a token is open, else
  the token must name the session or have the placer's ``sub``
  (``webgate.security.tokens.call_access_allowed``).

The node that receives the redirected client checks everything again (and more: whether the
call has video and data, its watcher limit).

:func:`locate` asks the call registry; only a cluster node's (``RedisCallRegistry.elsewhere``)
can answer, one process has no other node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from webgate.security.tokens import TokenError, call_access_allowed, verify_token
from webgate.syntax import is_valid_session_id

__all__ = ["Located", "locate", "may_listen", "may_watch", "redirect_url"]


class Located(Protocol):
    """What a redirect needs of a call's index entry (``CallEntry``)."""

    session_id: str
    node: str
    token: bool
    sub: str | None


@dataclass(frozen=True)
class _Grant:
    sub: str | None


@dataclass(frozen=True)
class _RemoteCall:
    """The attributes ``call_access_allowed`` reads of a call, from its index entry."""

    session_id: str
    grant: _Grant | None
    source_ip: None = None


async def locate(registry: Any, session_id: object) -> tuple[Any, Any] | None:
    """``(entry, node info)`` of the live call ``session_id`` on another node, or None (no such
    call, it is here, or this is not a cluster). Raises ``CallRefused`` ``cluster_unavailable``
    when the cluster's state cannot be read."""
    elsewhere = getattr(registry, "elsewhere", None)
    if elsewhere is None or not is_valid_session_id(session_id):  # (ASCII digits only)
        return None
    found: tuple[Any, Any] | None = await elsewhere(session_id)
    return found


def may_watch(entry: Located, token: object, tokens: Any, now: float) -> bool:
    """Whether the holder of ``token`` may watch the call of ``entry`` (its own node decides
    the rest)."""
    if not isinstance(token, str) or not token:
        return False
    try:
        grant = verify_token(token, tokens, now=now)
    except TokenError:
        return False
    if grant.may_watch(entry.session_id):
        return True
    return entry.token and entry.sub is not None and grant.sub == entry.sub


def may_listen(entry: Located, token: str | None, tokens: Any, now: float) -> bool:
    """Whether the holder of ``token`` may play ``session/ID`` of the call of ``entry``."""
    call = _RemoteCall(entry.session_id, _Grant(entry.sub) if entry.token else None)
    try:
        return call_access_allowed(call, token, tokens, now)
    except TokenError:
        return False


def redirect_url(base: str, path: str) -> str:
    """``base`` (a node's ``rtmp_url``) joined with ``path`` (``session/ID?...``)."""
    return base.rstrip("/") + "/" + path.lstrip("/")

"""Who may watch a web call's video and data by its session ID (docs/protocol.md "Who may watch").

:meth:`Watches.authorize` (the manager's ``authorize_watch``) is the one check every watch
ingress makes (a WebSocket ``watch``, an RTMP play of ``watch/SESSIONID``). It counts the
attempt toward the per-IP attempt rate, like a call attempt, and then returns the live call
only when a valid token allows it:

- the token's ``watch`` claim holds the call's session ID, or is ``"*"`` (an agent), or
- the token's ``sub`` equals the ``sub`` of the token that placed the call (the same user on
  a second device).

Nothing else may watch: no token, an invalid or expired token, a token for another call, an
unknown session ID, an ended call or a call without video and data (no hub) all get the same
:class:`CallRefused` ``not_found`` with the same message, so that session IDs cannot be probed.
The only other refusal is the attempt rate's own code (``rate_limited``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls.call import Call, CallState
from webgate.calls.errors import CallRefused
from webgate.calls.policy import CallPolicy, client_ip
from webgate.calls.registry import CallRegistry
from webgate.logsafe import safe
from webgate.security.tokens import TokenError, verify_token
from webgate.syntax import is_valid_session_id

__all__ = ["NOT_FOUND", "NOT_FOUND_MESSAGE", "WatchHost", "Watches"]

log = Logger()

#: the one refusal for every "no such call, or not yours" case (docs/protocol.md "Who may watch")
NOT_FOUND = "not_found"
NOT_FOUND_MESSAGE = "no such call"


class WatchHost(Protocol):
    """What watch authorisation uses of the call manager."""

    policy: CallPolicy
    registry: CallRegistry
    tokens: Any  # [tokens] configuration (key, issuer, audience, leeway_s); None = no token is valid
    wall_clock: Callable[[], float]
    counters: dict[str, int]


class Watches:
    """Authorises watch attempts for one manager."""

    def __init__(self, host: WatchHost) -> None:
        self.host = host
        host.counters.setdefault("watches_authorized", 0)
        host.counters.setdefault("watches_refused", 0)

    def authorize(self, session_id: object, token: object, source_ip: str) -> Call:
        """The live call with ``session_id`` if ``token`` may watch it (see the module doc).

        Raises :class:`CallRefused`: the attempt rate's code (``rate_limited``, 429), else
        ``not_found`` ("no such call", 404) for every other refusal."""
        h = self.host
        ip = client_ip(source_ip)
        try:
            h.policy.attempt(ip)
        except CallRefused as e:
            self._refused(e.code, ip, session_id, "attempt rate")
            raise
        why = self._why_not(session_id, token)
        if why is not None:
            self._refused(NOT_FOUND, ip, session_id, why)
            raise CallRefused(NOT_FOUND, NOT_FOUND_MESSAGE, 404)
        assert isinstance(session_id, str)
        call = h.registry.by_session_id(session_id)
        assert call is not None
        h.counters["watches_authorized"] += 1
        return call

    def _why_not(self, session_id: object, token: object) -> str | None:
        """Why ``token`` may not watch ``session_id`` (for the log only; the client always gets
        ``not_found``), or None when it may."""
        if not is_valid_session_id(session_id) or not session_id.isdigit():
            return "not a session ID"
        if token is None or token == "":
            return "no token"
        h = self.host
        try:
            grant = verify_token(token, h.tokens, now=h.wall_clock())
        except TokenError as e:
            return e.code
        call = h.registry.by_session_id(session_id)
        if call is None or call.state is CallState.ENDED:
            return "no live call"
        if call.hub is None or getattr(call.hub, "closed", False):
            return "no video or data"
        if grant.may_watch(session_id):
            return None
        placed_with = call.grant
        placed_sub = getattr(placed_with, "sub", None) if placed_with is not None else None
        if placed_sub is not None and grant.sub == placed_sub:
            return None
        return "not allowed"

    def _refused(self, code: str, ip: str, session_id: object, why: str) -> None:
        self.host.counters["watches_refused"] += 1
        log.info(
            "watch refused: {client} -> {session_id}: {code} ({why})",
            client=safe(ip), session_id=safe(session_id, 40), code=code, why=why,
        )

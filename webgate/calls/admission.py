"""Admission of a call attempt, before anything is allocated: the per-IP attempt rate, the dial
plan, the call token and its fixed values, the syntax of what the client chose, and the
concurrent-call limits (docs/protocol.md "Call tokens"). A refusal is counted, logged and told
to the call observers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls import errors
from webgate.calls.call import IngressLeg
from webgate.calls.dialplan import DialPlan, RouteDecision
from webgate.calls.errors import CallRefused
from webgate.calls.policy import CallPolicy, client_ip
from webgate.logsafe import safe
from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.message import check_display_name, check_user
from webgate.security.tokens import Grant, verify_token
from webgate.syntax import SESSION_ID_RULE, is_valid_session_id

__all__ = ["Admission", "AdmissionHost", "Admissions"]

#: these lines were the call manager's before they moved here: same namespace
log = Logger(namespace="webgate.calls.manager")


@dataclass(frozen=True)
class Admission:
    """A call attempt that passed authorisation and limits (:meth:`CallManager.admit`): what
    the call will use. Hand it to :meth:`CallManager.place_call` (``admission=``) to place it."""

    route: RouteDecision
    grant: Grant | None  # the valid token's grant, None without a token
    source_ip: str
    identity: str | None  # the call's identity: the token's ``sub``, else the client's
    limit_identity: str | None  # the identity per-identity limits count (the token's ``sub`` only)
    session_id: str | None
    display_name: str | None
    caller_id: str | None
    max_duration_s: int  # 0 = none
    #: the session ID was claimed across the cluster (:meth:`CallManager.reserve`)
    reserved: bool = False


class AdmissionHost(Protocol):
    """What admission uses of the call manager (its settings are read live: ``accepting``
    turns False at shutdown)."""

    accepting: bool
    policy: CallPolicy
    dialplan: DialPlan
    tokens: Any  # [tokens] configuration (key, issuer, audience, leeway_s); None = no token is valid
    wall_clock: Callable[[], float]
    counters: dict[str, int]
    max_calls: int
    max_call_duration_s: int

    def live_calls(self) -> int: ...

    def emit(self, event: str, *args: Any) -> None: ...


class Admissions:
    """Authorises call attempts for one manager."""

    def __init__(self, host: AdmissionHost) -> None:
        self.host = host

    def admit(
        self,
        leg: IngressLeg,
        destination: object,
        *,
        session_id: str | None = None,
        display_name: str | None = None,
        caller_id: str | None = None,
        identity: str | None = None,
        route: RouteDecision | None = None,
        max_duration_s: int | None = None,
        token: str | None = None,
        source_ip: str | None = None,
    ) -> Admission:
        """Authorise a call attempt without placing it (counts as an attempt for the per-IP
        rate limit). Raises :class:`CallRefused`; the refusal reaches the observers."""
        h = self.host
        # The order matters: nothing costly before the rate limit, no token check before the
        # destination is known to exist, limits last (see docs/protocol.md "Call tokens").
        with self.reporting_refusal(leg, destination):
            if not h.accepting:
                raise CallRefused(errors.SHUTTING_DOWN, "the gateway is shutting down", 503)
            ip = client_ip(source_ip or getattr(leg, "client", None))
            h.policy.attempt(ip)
            if route is None:
                route = h.dialplan.resolve(destination)
            grant: Grant | None = None
            if token is not None and token != "":
                grant = verify_token(token, h.tokens, now=h.wall_clock())  # a TokenError is a CallRefused
            if not route.public:
                if grant is None:
                    raise CallRefused(errors.TOKEN_REQUIRED, f"destination {route.destination!r} needs a call token", 403)
                if not grant.allows(route.destination):
                    raise CallRefused(errors.DESTINATION_NOT_ALLOWED, f"the token does not allow destination {route.destination!r}", 403)
            limit_identity: str | None = None
            if grant is not None:
                if grant.display_name is not None:
                    if display_name is not None and display_name != grant.display_name:
                        raise CallRefused(errors.DISPLAY_NAME_NOT_ALLOWED, "the display name differs from the token's", 403)
                    display_name = grant.display_name
                if grant.caller_id is not None:
                    if caller_id is not None and caller_id != grant.caller_id:
                        raise CallRefused(errors.CALLER_ID_NOT_ALLOWED, "the caller ID differs from the token's", 403)
                    caller_id = grant.caller_id
                if grant.session_id is not None:
                    if session_id is not None and session_id != grant.session_id:
                        raise CallRefused(errors.SESSION_ID_NOT_ALLOWED, "the session ID differs from the token's", 403)
                    session_id = grant.session_id
                if grant.sub is not None:
                    identity = limit_identity = grant.sub
            if session_id is not None and not is_valid_session_id(session_id):
                raise CallRefused(errors.INVALID_SESSION_ID, SESSION_ID_RULE)
            if display_name is not None:
                try:
                    if not isinstance(display_name, str):
                        raise LocalProtocolError("invalid display name: not a string")
                    check_display_name(display_name)
                except LocalProtocolError as e:
                    raise CallRefused(errors.INVALID_DISPLAY_NAME, e.message) from None
            if caller_id is not None:
                try:
                    if not isinstance(caller_id, str):
                        raise LocalProtocolError("invalid caller ID: not a string")
                    check_user(caller_id, "caller ID")
                except LocalProtocolError as e:
                    raise CallRefused(errors.INVALID_DESTINATION, e.message) from None
            limit = max_duration_s or route.max_duration_s or h.max_call_duration_s
            if grant is not None and grant.max_duration_s:
                limit = min(limit, grant.max_duration_s) if limit else grant.max_duration_s
            self.check_limits(ip, limit_identity)
            return Admission(route, grant, ip, identity, limit_identity, session_id, display_name, caller_id, int(limit or 0))

    def check_limits(self, ip: str, identity: str | None) -> None:
        """The gateway's ``max_calls``, then the per-IP and per-identity limits (raises)."""
        if self.host.live_calls() >= self.host.max_calls:
            raise CallRefused(errors.TOO_MANY_CALLS, "the gateway is at its call limit", 503)
        self.host.policy.check(ip, identity)

    @contextmanager
    def reporting_refusal(self, leg: IngressLeg, destination: object) -> Iterator[None]:
        """A :class:`CallRefused` raised inside is counted, logged and told to the observers."""
        try:
            yield
        except CallRefused as e:
            self._refused(e, leg, destination)
            raise

    def _refused(self, e: CallRefused, leg: IngressLeg, destination: object) -> None:
        self.host.counters["calls_refused"] += 1
        log.info(
            "call refused: {ingress} {client} -> {destination}: {code}",
            ingress=getattr(leg, "kind", "?"),
            client=safe(getattr(leg, "client", "?")),
            destination=safe(destination, 80),
            code=e.code,
        )
        self.host.emit("call_refused", e.code, getattr(leg, "kind", "?"), getattr(leg, "client", "?"))

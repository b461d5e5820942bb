"""Registered web users: who receives calls from the SIP side (webgate as UAS toward web clients).

A web client (a Flash RPC connection to ``rtmp://HOST/sip/USER``, or a WebSocket that sent
``register``) registers USER while it stays connected. An INVITE whose Request-URI user is a
registered user rings that client (``CallManager``, docs/protocol.md "Calls toward web users").

Rules (docs/decisions.md):

- registering USER needs a valid call token whose ``sub`` is exactly USER
  (:func:`check_registration`): nobody can receive somebody else's calls;
- one registration per user: the most recent one wins; the replaced client is told
  (``replaced``) and no longer rings;
- a registration ends when its connection closes (or the client unregisters), and when its
  token expires (``exp`` plus ``[tokens] leeway_s``): the client is told ``token_expired``,
  unless it registered again with a fresh token first (which moves the end to that token's
  expiry). A call already offered or in progress is not touched; only new calls stop ringing.

No sockets; time is injected (an ``IReactorTime`` for the expiry timers, a wall clock for the
tokens' ``exp``). Interface-shaped like :class:`~webgate.calls.registry.CallRegistry` so a
shared registry can replace it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger

from webgate.calls import errors
from webgate.calls.errors import CallRefused
from webgate.logsafe import safe
from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.message import NameAddr, check_user
from webgate.security.tokens import TOKEN_EXPIRED, Grant, verify_token

if TYPE_CHECKING:
    from webgate.calls.call import Call, IngressLeg

log = Logger()

__all__ = [
    "InboundAllowList",
    "WebUserEndpoint",
    "WebUsers",
    "check_registration",
    "party",
    "registration_expires",
    "validate_user",
]

#: stable codes of a refused registration (docs/protocol.md)
USER_NOT_ALLOWED = "user_not_allowed"  # 403: the token's sub is not this user
INVALID_USER = "invalid_user"  # 400: not a SIP user part
MAX_USER_LENGTH = 64
# TOKEN_EXPIRED (security/tokens.py) is also the ``unregistered`` reason when a registration's
# token expired (docs/protocol.md)
#: longest single wait of an expiry timer: a later deadline is re-armed when it fires (the wall
#: clock is read again then, so a wall-clock step is caught within this long)
_MAX_TIMER_S = 3600.0


class WebUserEndpoint(Protocol):
    """A connected web client that can be offered calls (one RTMP or WebSocket connection)."""

    kind: str  # "rtmp" | "webrtc"
    client: str
    grant: Grant | None  # the registration token's grant (becomes the incoming calls' grant)

    def busy(self) -> bool:
        """True while the client has a call (then a new INVITE gets 486 Busy Here)."""
        ...

    def invited(self, call: Call, caller: str, caller_display: str | None) -> IngressLeg:
        """Tell the client about the incoming ``call``; return the leg that gets its events
        until the client accepts (it may then put another leg on the call)."""
        ...

    def unregistered(self, user: str, reason: str) -> None:
        """The registration ended without the client asking (``replaced``, ``token_expired``)."""
        ...


def party(uri: Any, display: str | None = None) -> str:
    """``"Display" <sip:user@host>`` (siprtmp's ``invited(from, to)`` form); a display name that
    cannot be quoted safely is left out."""
    try:
        return str(NameAddr(uri=uri, display_name=display or None))
    except LocalProtocolError:
        return str(NameAddr(uri=uri))


def validate_user(user: object) -> str:
    """A web user name: a SIP user part (no '@', no controls), 1-64 characters."""
    if not isinstance(user, str) or not user or len(user) > MAX_USER_LENGTH or "@" in user:
        raise CallRefused(INVALID_USER, f"a user is 1-{MAX_USER_LENGTH} characters of a SIP user part", 400)
    try:
        check_user(user, "user")
    except LocalProtocolError as e:
        raise CallRefused(INVALID_USER, e.message, 400) from None
    return user


def check_registration(user: object, token: str | None, tokens_config: Any, now: float) -> Grant:
    """May the holder of ``token`` register ``user``? Returns the token's grant; raises
    :class:`CallRefused`: ``invalid_user``, ``token_required`` (403), ``invalid_token`` /
    ``token_expired`` (401), ``user_not_allowed`` (403: the token's ``sub`` is another user)."""
    name = validate_user(user)
    if not token:
        raise CallRefused(errors.TOKEN_REQUIRED, "registering a user needs a call token whose 'sub' is the user", 403)
    grant = verify_token(token, tokens_config, now=now)
    if grant.sub != name:
        raise CallRefused(USER_NOT_ALLOWED, "the token's 'sub' is not this user", 403)
    return grant


def registration_expires(grant: Grant, tokens_config: Any) -> float | None:
    """When a registration made with ``grant`` ends (wall clock, seconds since the epoch): the
    token's ``exp`` plus ``[tokens] leeway_s`` -- the last moment :func:`verify_token` would
    still accept it. None for a grant without an expiry."""
    if not grant.expires:
        return None
    return float(grant.expires) + float(getattr(tokens_config, "leeway_s", 0) or 0)


class WebUsers:
    """User name -> the endpoint that receives its calls (the most recent registration).

    ``clock`` (an ``IReactorTime``) runs the expiry timers and ``wall_clock`` reads the time the
    tokens' ``exp`` is in; without a clock registrations never expire (sans-IO use)."""

    def __init__(self, clock: Any = None, wall_clock: Callable[[], float] = time.time) -> None:
        self._by_user: dict[str, WebUserEndpoint] = {}
        self._timers: dict[str, Any] = {}  # user -> the DelayedCall that ends its registration
        self._expires: dict[str, float] = {}  # user -> wall-clock end of its registration
        self.clock = clock
        self.wall_clock = wall_clock
        self.expired = 0  # registrations ended by their token's expiry

    def register(self, user: str, endpoint: WebUserEndpoint, expires: float | None = None) -> WebUserEndpoint | None:
        """Register ``endpoint`` for ``user`` until ``expires`` (wall clock; see
        :func:`registration_expires`; None: until it unregisters). Registering again -- the same
        endpoint with a fresh token, or another one -- replaces the deadline. Returns the endpoint
        it replaced (already told ``replaced``)."""
        old = self._by_user.get(user)
        self._by_user[user] = endpoint
        self._clear_expiry(user)
        if expires is not None:
            self._expires[user] = expires
            self._arm(user, endpoint)
        if old is not None and old is not endpoint:
            try:
                old.unregistered(user, "replaced")
            except Exception:  # noqa: BLE001 - one client's failure never blocks a registration
                log.failure("telling the replaced registration of {user} failed", user=safe(user))
            return old
        return None

    def unregister(self, user: str, endpoint: WebUserEndpoint) -> bool:
        """Drop ``user``'s registration if ``endpoint`` still holds it."""
        if self._by_user.get(user) is endpoint:
            del self._by_user[user]
            self._clear_expiry(user)
            return True
        return False

    def expires(self, user: str) -> float | None:
        """When ``user``'s registration ends (wall clock), None if it has no expiry."""
        return self._expires.get(user) if user in self._by_user else None

    # -- expiry ---------------------------------------------------------------------------
    def _arm(self, user: str, endpoint: WebUserEndpoint) -> None:
        if self.clock is None:
            return
        delay = self._expires[user] - self.wall_clock()
        self._timers[user] = self.clock.callLater(min(max(0.0, delay), _MAX_TIMER_S), self._expire, user, endpoint)

    def _clear_expiry(self, user: str) -> None:
        self._expires.pop(user, None)
        timer = self._timers.pop(user, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _expire(self, user: str, endpoint: WebUserEndpoint) -> None:
        self._timers.pop(user, None)
        if self._by_user.get(user) is not endpoint or user not in self._expires:
            return
        if self.wall_clock() < self._expires[user]:
            self._arm(user, endpoint)  # a far deadline (or the wall clock was stepped back)
            return
        del self._by_user[user]
        self._expires.pop(user, None)
        self.expired += 1
        log.info("registration of web user {user} ended: its token expired", user=safe(user))
        try:
            endpoint.unregistered(user, TOKEN_EXPIRED)
        except Exception:  # noqa: BLE001 - one client's failure never reaches the reactor
            log.failure("telling the expired registration of {user} failed", user=safe(user))

    def lookup(self, user: str) -> WebUserEndpoint | None:
        return self._by_user.get(user)

    def users(self) -> list[str]:
        return sorted(self._by_user)

    def __len__(self) -> int:
        return len(self._by_user)


class InboundAllowList:
    """Which SIP sources may call web users (``[sip] inbound_from``).

    Entries: IP addresses, CIDR networks, DNS names, ``"loopback"`` (127.0.0.0/8 and ::1) and
    ``"trunks"`` (the host of every ``[[trunk]]`` target). DNS names (entries, and trunk hosts that
    are names) are in :attr:`names`; whoever resolves them (``adapters/sip_resolver.py``) gives
    their addresses with :meth:`set_addresses`, again at each refresh; until then they match
    nothing. An empty list lets nobody call web users."""

    def __init__(self, entries: Iterable[str] = ("trunks", "loopback"), trunk_hosts: Iterable[str] = ()) -> None:
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        names: list[str] = []
        for entry in entries:
            e = entry.strip().lower()
            if e == "loopback":
                nets += [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
            elif e == "trunks":
                for host in trunk_hosts:
                    try:
                        nets.append(ipaddress.ip_network(host.strip("[]")))
                    except ValueError:
                        names.append(host.rstrip(".").lower())  # a DNS name: resolved at run time
            else:
                try:
                    nets.append(ipaddress.ip_network(e.strip("[]"), strict=False))
                except ValueError:
                    names.append(e.rstrip("."))
        self.networks = tuple(nets)
        self.names = tuple(dict.fromkeys(names))
        self._resolved: dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]] = {}

    def set_addresses(self, name: str, addresses: Iterable[str]) -> None:
        """The current addresses of the DNS name ``name`` (replacing the previous ones)."""
        out = []
        for a in addresses:
            try:
                out.append(ipaddress.ip_address(a.strip("[]")))
            except ValueError:
                continue
        self._resolved[name.rstrip(".").lower()] = tuple(out)

    def allows(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr.version == n.version and addr in n for n in self.networks):
            return True
        return any(addr in found for found in self._resolved.values())

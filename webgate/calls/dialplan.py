"""The dial plan: which destinations may be called, and how they map to SIP targets.

Nothing here lets an unconfigured gateway call a real phone: with no ``[[route]]`` only
the built-in destinations (``echo``, ``tone``) resolve; everything else is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from webgate.calls import errors
from webgate.calls.errors import CallRefused
from webgate.config import Config, RouteConfig, TrunkConfig
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import SipURI, check_user
from webgate.proto.sip.transaction import Addr
from webgate.proto.sip.useragent import Credentials
from webgate.syntax import DESTINATION_RULE, is_valid_destination

BUILTIN_ROUTE_CODECS = ("PCMU", "PCMA", "G722", "opus", "GSM", "speex/16000", "speex",
                        "G729", "AMR", "AMR-WB", "G726-32", "AAL2-G726-32", "G723")


@dataclass(frozen=True)
class RouteDecision:
    destination: str  # what the client asked for
    target: SipURI  # the Request-URI to INVITE
    builtin: str | None = None  # "echo" / "tone" for the built-in destinations
    trunk_name: str | None = None
    public: bool = False
    max_duration_s: int = 0
    credentials: Credentials | None = field(default=None, repr=False)
    transport: str = "udp"
    dtmf_mode: str = "rfc4733"
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722", "opus")
    headers: tuple[tuple[str, str], ...] = ()
    from_user: str = ""
    from_display: str = ""
    #: RFC 4028 Session-Expires asked for in the INVITE (the trunk's session_expires_s); 0 = none
    session_expires_s: int = 0
    #: the far end may transfer the call (the route's ``transfer``; REFER, webgate/calls/transfer.py)
    transfer: bool = False
    #: the trunk's own outbound proxy (None: [sip] outbound_proxy, if any)
    outbound_proxy: SipURI | None = None
    #: where the INVITE goes, in failover order (RFC 3263, from the locator's cache); () = the
    #: target's (or proxy's) host as it is
    destinations: tuple[Addr, ...] = ()
    #: the route's ``record`` ("off" / "audio" / "audio+video") and ``record_on_request``
    record: str = "off"
    record_on_request: bool = False


class ServerLocator(Protocol):
    """RFC 3263 targets of a URI from a cache kept fresh elsewhere (``adapters/sip_resolver.py``)."""

    def targets(self, uri: SipURI, transport: str | None) -> list[Addr] | None:
        """The ordered (transport, IP, port) servers for ``uri``; None when not known (yet)."""
        ...


def validate_destination(destination: object) -> str:
    """``destination`` if it is a dial string (webgate/syntax.py), else ``invalid_destination`` (484)."""
    if not is_valid_destination(destination):
        raise CallRefused(errors.INVALID_DESTINATION, DESTINATION_RULE, 484)
    return destination


# -- the [[route]] table: first full match wins, rewritten toward its trunk


@dataclass(frozen=True)
class RouteMatch:
    """The result of :func:`match_route`: which route, which trunk, which request-URI user."""

    route: RouteConfig
    trunk: TrunkConfig
    user: str
    #: effective call duration limit in seconds (0 = none)
    max_duration_s: int


def rewrite_for(route: RouteConfig, dest: str) -> str | None:
    """The request-URI user ``route`` makes of ``dest``, or None if its pattern does not match."""
    m = route.regex.fullmatch(dest)
    if m is None:
        return None
    return _apply_rewrite(route.rewrite, m)


def match_route(config: Config, dest: str) -> RouteMatch | None:
    """The first of ``config.routes`` whose pattern fully matches ``dest``.

    Builtin destinations (``builtin.echo``/``builtin.tone``) are not routes; the
    caller checks them first. None means the destination is not callable.
    """
    for r in config.routes:
        user = rewrite_for(r, dest)
        if user is not None:
            limit = r.max_duration_s or config.limits.max_call_duration_s
            return RouteMatch(r, config.trunk(r.trunk), user, limit)
    return None


def _apply_rewrite(rewrite: str, m: re.Match[str]) -> str:
    groups = [g if g is not None else "" for g in m.groups()]
    named = {k: (v if v is not None else "") for k, v in m.groupdict().items()}
    return rewrite.format(m.group(0), *groups, **{**named, "dest": m.string})


def locate_key(config: Any, trunk: TrunkConfig) -> tuple[SipURI, str | None]:
    """What to locate (RFC 3263) for calls through ``trunk``: its proxy (its own, else
    ``[sip] outbound_proxy``) or its target, and the transport to look for: None for a ``udp``
    trunk (the default: NAPTR may choose among the transports we listen on), else the trunk's."""
    proxy = trunk.outbound_proxy or getattr(getattr(config, "sip", None), "outbound_proxy", None)
    uri = SipURI.parse((proxy or trunk.target).text)
    return uri, None if trunk.transport == "udp" else trunk.transport


class DialPlan:
    def __init__(self, config: Any, builtin: dict[str, str] | None = None, builtin_target: SipURI | None = None) -> None:
        """``config`` is the gateway's :class:`webgate.config.Config`: its ``[[route]]`` table is
        matched and rewritten by :func:`match_route`. ``builtin`` maps a destination name ("echo") to its
        kind ("echo"/"tone"); ``builtin_target`` is the gateway's own SIP address that answers them."""
        self.config = config
        self.builtin = dict(builtin or {})
        self.builtin_target = builtin_target
        #: DNS for trunks named by DNS name (set by the telephony service); None: hosts as they are
        self.locator: ServerLocator | None = None

    def resolve(self, destination: object) -> RouteDecision:
        dest = validate_destination(destination)
        kind = self.builtin.get(dest)
        if kind is not None and self.builtin_target is not None:
            target = self.builtin_target.copy(user=kind)
            public = bool(getattr(getattr(self.config, "builtin", None), "public", True))  # [builtin] public
            # the built-in answerer takes every codec the gateway knows
            return RouteDecision(dest, target, builtin=kind, public=public, transport=target.transport, codecs=BUILTIN_ROUTE_CODECS)
        try:
            match = match_route(self.config, dest)
        except (IndexError, KeyError, ValueError) as e:
            raise CallRefused(errors.INVALID_DESTINATION, f"dial plan rewrite failed: {e}", 484) from None
        if match is None:
            raise CallRefused(errors.DESTINATION_NOT_ALLOWED, f"destination {dest!r} is not allowed by the dial plan", 403)
        route, trunk = match.route, match.trunk
        try:
            check_user(match.user, "rewritten destination")
            base = SipURI.parse(trunk.target.text)
        except (LocalProtocolError, RemoteProtocolError) as e:
            raise CallRefused(errors.INVALID_DESTINATION, f"dial plan rewrite failed: {e}", 484) from None
        target = base.copy(user=match.user)
        if trunk.transport != "udp":
            target.params["transport"] = trunk.transport
        creds = None
        if trunk.username or trunk.auth_username:
            creds = Credentials(trunk.auth_username or trunk.username, trunk.password, trunk.realm)
        proxy = SipURI.parse(trunk.outbound_proxy.text) if trunk.outbound_proxy is not None else None
        destinations: tuple[Addr, ...] = ()
        if self.locator is not None:
            destinations = tuple(self.locator.targets(*locate_key(self.config, trunk)) or ())
        return RouteDecision(
            dest,
            target,
            trunk_name=trunk.name,
            public=bool(route.public),
            max_duration_s=int(route.max_duration_s),
            credentials=creds,
            transport=trunk.transport,
            dtmf_mode=trunk.dtmf,
            codecs=tuple(trunk.codecs),
            headers=tuple(trunk.headers),
            from_user=trunk.from_user,
            from_display=trunk.from_display,
            session_expires_s=trunk.session_expires_s,
            transfer=bool(route.transfer),
            outbound_proxy=proxy,
            destinations=destinations,
            record=route.record,
            record_on_request=bool(route.record_on_request),
        )

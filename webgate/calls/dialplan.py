"""The dial plan: which destinations may be called, and how they map to SIP targets.

Nothing here lets an unconfigured gateway call a real phone: with no ``[[route]]`` only
the built-in destinations (``echo``, ``tone``) resolve; everything else is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from webgate.calls import errors
from webgate.calls.errors import CallRefused
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import SipURI, check_user
from webgate.proto.sip.useragent import Credentials

# What a client may type as a destination: a dial string, not a URI.
_DEST_RE = re.compile(r"[A-Za-z0-9+*#._\-]{1,64}")


BUILTIN_ROUTE_CODECS = ("PCMU", "PCMA", "G722", "opus", "GSM", "speex/16000", "speex")


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


def validate_destination(destination: object) -> str:
    if not isinstance(destination, str) or not _DEST_RE.fullmatch(destination):
        raise CallRefused(
            errors.INVALID_DESTINATION,
            "destination must be 1-64 characters of letters, digits, + * # . _ -",
            484,
        )
    return destination


class DialPlan:
    def __init__(self, config: Any, builtin: dict[str, str] | None = None, builtin_target: SipURI | None = None) -> None:
        """``config`` is the gateway's :class:`webgate.config.Config`: its ``route()`` is the
        ``[[route]]`` matching and rewriting. ``builtin`` maps a destination name ("echo") to its
        kind ("echo"/"tone"); ``builtin_target`` is the gateway's own SIP address that answers them."""
        self.config = config
        self.builtin = dict(builtin or {})
        self.builtin_target = builtin_target

    def resolve(self, destination: object) -> RouteDecision:
        dest = validate_destination(destination)
        kind = self.builtin.get(dest)
        if kind is not None and self.builtin_target is not None:
            target = self.builtin_target.copy(user=kind)
            public = bool(getattr(getattr(self.config, "builtin", None), "public", True))  # [builtin] public
            # the built-in answerer takes every codec the gateway knows
            return RouteDecision(dest, target, builtin=kind, public=public, transport=target.transport, codecs=BUILTIN_ROUTE_CODECS)
        try:
            match = self.config.route(dest)
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
        )

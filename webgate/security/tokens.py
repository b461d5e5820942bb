"""Signed call tokens: JWT (RFC 7519) with HMAC-SHA256 (HS256) via PyJWT, sans-IO.

The customer's web application mints a token with the shared key (``[tokens] key``); the
client hands it to webgate with the call request; :func:`verify_token` checks it and returns
a :class:`Grant` saying what the holder may do. Claims (docs/protocol.md, "Call tokens"):

- ``exp`` (required), ``nbf``, ``iat``: NumericDate; ``iss``/``aud`` checked when configured;
- ``sub``: the client's identity (per-identity limits, logs, CDRs);
- ``dest``: a destination or a list of them (exact match); ``dest_pattern``: a regular
  expression the destination must fully match. Without either the token allows no
  destination (only public ones remain callable, with the token's identity);
- ``max_duration``: seconds; the call's limit is the smallest of token, route and global;
- ``display_name``, ``caller_id``, ``session_id``: when present, the call uses exactly these;
- ``watch``: a session ID, a list of them, or ``"*"`` (any live call): the calls whose video and
  data the holder may watch (``webgate/calls/watch.py``, docs/protocol.md "Who may watch").

Every string claim is validated like client input (no CR/LF/controls, no SIP syntax), so a
claim can never inject a header or a URI. Algorithms are pinned to HS256: ``alg: none`` and
algorithm confusion are refused by PyJWT before the signature is looked at.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.message import check_display_name, check_header_value, check_user
from webgate.syntax import CallRefused, is_valid_destination, is_valid_session_id

__all__ = [
    "INVALID_TOKEN",
    "MAX_TOKEN_LENGTH",
    "TOKEN_EXPIRED",
    "WATCH_ANY",
    "Grant",
    "TokenError",
    "call_access_allowed",
    "looks_like_jwt",
    "mint_token",
    "verify_token",
]

ALGORITHM = "HS256"
#: longer tokens are refused before any parsing
MAX_TOKEN_LENGTH = 4096
MAX_PATTERN_LENGTH = 256
MAX_DESTS = 64
#: the most session IDs one ``watch`` claim may list
MAX_WATCH = 64
#: the ``watch`` claim's value for "any live call" (agents)
WATCH_ANY = "*"
#: the values of the ``record`` claim (as ``[[route]] record``)
RECORD_CLAIMS = ("off", "audio", "audio+video")
MAX_SUB_LENGTH = 128
#: the longest call a token can grant (one day); the global and route limits still apply
MAX_TOKEN_DURATION_S = 86400
_JWT_RE = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")

# stable refusal codes of a presented token (docs/protocol.md "Call tokens"; the call layer's
# own codes: webgate/calls/errors.py)
INVALID_TOKEN = "invalid_token"  # 401: bad signature, malformed, wrong iss/aud, bad claim, nbf
TOKEN_EXPIRED = "token_expired"  # 401


class TokenError(CallRefused):
    """A token that is presented but not valid: ``invalid_token`` or ``token_expired`` (401).
    A :class:`CallRefused` (webgate/syntax.py), so a caller refusing a call on it needs no mapping."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, 401)


def looks_like_jwt(value: object) -> bool:
    """The compact JWS form (three base64url parts). Used where a field may carry either a
    legacy password or a token (the Flash RPC connect argument)."""
    return isinstance(value, str) and len(value) <= MAX_TOKEN_LENGTH and bool(_JWT_RE.fullmatch(value))


@dataclass(frozen=True)
class Grant:
    """What a valid token allows."""

    sub: str | None = None
    dests: tuple[str, ...] = ()
    dest_pattern: re.Pattern[str] | None = field(default=None, compare=False)
    max_duration_s: int | None = None
    display_name: str | None = None
    caller_id: str | None = None
    session_id: str | None = None
    expires: float = 0.0
    #: the ``watch`` claim: session IDs whose calls the holder may watch, or ``("*",)`` for any
    watch: tuple[str, ...] = ()
    #: the ``record`` claim: "off", "audio" or "audio+video" (None: the route decides)
    record: str | None = None

    def allows(self, destination: str) -> bool:
        if destination in self.dests:
            return True
        return self.dest_pattern is not None and self.dest_pattern.fullmatch(destination) is not None

    def may_watch(self, session_id: str) -> bool:
        """The ``watch`` claim covers the call with ``session_id`` (``"*"``: every call)."""
        return WATCH_ANY in self.watch or session_id in self.watch


def _invalid(message: str) -> TokenError:
    return TokenError(INVALID_TOKEN, message)


def _str_claim(claims: dict[str, Any], name: str) -> str | None:
    v = claims.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise _invalid(f"claim {name!r} must be a non-empty string")
    return v


def _checked_claim(claims: dict[str, Any], name: str, check: Callable[[str, str], str]) -> str | None:
    """A string claim that must also pass ``check`` (a SIP-syntax validator) like client input."""
    v = _str_claim(claims, name)
    if v is not None:
        try:
            check(v, f"claim {name!r}")
        except LocalProtocolError as e:
            raise _invalid(e.message) from None
    return v


def _number_claim(claims: dict[str, Any], name: str) -> float | None:
    v = claims.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _invalid(f"claim {name!r} must be a number (seconds since the epoch)")
    return float(v)


def grant_from_claims(claims: dict[str, Any], expires: float = 0.0) -> Grant:
    """Validate the webgate claims (not the registered time claims) and build a Grant.
    Raises :class:`TokenError` (``invalid_token``) naming the bad claim."""
    sub = _checked_claim(claims, "sub", check_header_value)
    if sub is not None and len(sub) > MAX_SUB_LENGTH:
        raise _invalid(f"claim 'sub' is longer than {MAX_SUB_LENGTH} characters")

    raw_dest = claims.get("dest")
    dests: list[str] = []
    if raw_dest is not None:
        items = [raw_dest] if isinstance(raw_dest, str) else raw_dest
        if not isinstance(items, list) or not items or len(items) > MAX_DESTS:
            raise _invalid(f"claim 'dest' must be a destination or a list of 1-{MAX_DESTS} destinations")
        for d in items:
            if not is_valid_destination(d):
                raise _invalid(f"claim 'dest' holds an invalid destination {str(d)[:80]!r}")
            dests.append(d)

    pattern = None
    raw_pattern = _str_claim(claims, "dest_pattern")
    if raw_pattern is not None:
        if len(raw_pattern) > MAX_PATTERN_LENGTH:
            raise _invalid(f"claim 'dest_pattern' is longer than {MAX_PATTERN_LENGTH} characters")
        try:
            check_header_value(raw_pattern, "claim 'dest_pattern'")
            pattern = re.compile(raw_pattern)
        except LocalProtocolError as e:
            raise _invalid(e.message) from None
        except (re.error, RecursionError, OverflowError, ValueError) as e:
            raise _invalid(f"claim 'dest_pattern' is not a valid regular expression: {e}") from None

    max_duration = claims.get("max_duration")
    if max_duration is not None and (
        isinstance(max_duration, bool) or not isinstance(max_duration, int) or not 1 <= max_duration <= MAX_TOKEN_DURATION_S
    ):
        raise _invalid(f"claim 'max_duration' must be an integer 1..{MAX_TOKEN_DURATION_S} (seconds)")

    display_name = _checked_claim(claims, "display_name", check_display_name)
    caller_id = _checked_claim(claims, "caller_id", check_user)

    session_id = claims.get("session_id")
    if session_id is not None and not is_valid_session_id(session_id):
        raise _invalid("claim 'session_id' must be a string of 8-10 digits")

    watch = _watch_claim(claims.get("watch"))

    record = claims.get("record")
    if record is not None and record not in RECORD_CLAIMS:
        raise _invalid("claim 'record' must be \"off\", \"audio\" or \"audio+video\"")

    return Grant(
        sub=sub,
        dests=tuple(dests),
        dest_pattern=pattern,
        max_duration_s=max_duration,
        display_name=display_name,
        caller_id=caller_id,
        session_id=session_id,
        expires=expires,
        watch=watch,
        record=record,
    )


def _watch_claim(raw: object) -> tuple[str, ...]:
    """The ``watch`` claim: a session ID, ``"*"``, or a list of 1-MAX_WATCH of them."""
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    rule = f"claim 'watch' must be a session ID (8-10 digits), \"*\", or a list of 1-{MAX_WATCH} of them"
    if not isinstance(items, list) or not items or len(items) > MAX_WATCH:
        raise _invalid(rule)
    for item in items:
        if item != WATCH_ANY and not (is_valid_session_id(item) and item.isascii() and item.isdigit()):
            raise _invalid(rule)
    return tuple(dict.fromkeys(items))


def verify_token(token: object, config: Any, now: float | None = None) -> Grant:
    """Check ``token`` against ``config`` (a :class:`webgate.config.TokensConfig`: ``key``,
    ``issuer``, ``audience``, ``leeway_s``) at time ``now`` (default: the wall clock).

    Returns the :class:`Grant`; raises :class:`TokenError` with ``invalid_token`` or
    ``token_expired``. Messages never contain the token or the key."""
    if now is None:
        now = time.time()
    if not isinstance(token, str) or not token:
        raise _invalid("the token must be a non-empty string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _invalid(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    key = getattr(config, "key", "")
    if not key:
        raise _invalid("this gateway does not accept call tokens (no [tokens] key configured)")
    issuer = getattr(config, "issuer", "") or None
    audience = getattr(config, "audience", "") or None
    leeway = float(getattr(config, "leeway_s", 0) or 0)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            # exp/nbf/iat are checked below against ``now`` (so tests can inject the clock)
            options={
                "require": ["exp"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": audience is not None,
                "verify_iss": issuer is not None,
            },
        )
    except jwt.MissingRequiredClaimError as e:
        raise _invalid(f"the token has no {e.claim!r} claim") from None
    except jwt.InvalidAudienceError:
        raise _invalid("the token is for another audience ('aud')") from None
    except jwt.InvalidIssuerError:
        raise _invalid("the token is from another issuer ('iss')") from None
    except jwt.InvalidSignatureError:
        raise _invalid("the token's signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise _invalid(f"the token must be signed with {ALGORITHM}") from None
    except jwt.DecodeError:
        raise _invalid("the token is malformed") from None
    except jwt.InvalidTokenError as e:
        raise _invalid(f"the token is not valid ({type(e).__name__})") from None
    if not isinstance(claims, dict):
        raise _invalid("the token's payload is not a JSON object")
    exp = _number_claim(claims, "exp")
    assert exp is not None  # required above
    if now > exp + leeway:
        raise TokenError(TOKEN_EXPIRED, "the token has expired")
    nbf = _number_claim(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise _invalid("the token is not valid yet ('nbf' is in the future)")
    iat = _number_claim(claims, "iat")
    if iat is not None and now + leeway < iat:
        raise _invalid("the token was issued in the future ('iat')")
    return grant_from_claims(claims, exp)


def call_access_allowed(
    call: Any,
    token: str | None,
    config: Any,
    now: float | None = None,
    *,
    by_destination: bool = False,
    client_ip: str | None = None,
) -> bool:
    """May the holder of ``token`` see or hear ``call``? For anything that reaches a call by its
    session ID (RTMP ``session/ID``, and any later API that looks calls up by session ID) or, with
    ``by_destination``, by the destination it was placed to (RTMP ``call/DESTINATION``) from the
    address ``client_ip``:

    - a call placed without a token (a public destination) is open to whoever knows its session
      ID; by destination (no secret: anyone can guess ``call/echo``) only to the address that
      placed it (an encoder publishes and plays from one host);
    - otherwise a valid token is needed whose ``session_id`` claim is the call's session ID, or,
      for a call placed with a token, whose ``sub`` equals the ``sub`` of the token that placed
      it.

    Raises :class:`TokenError` for a presented token that is not valid."""
    placed_with = getattr(call, "grant", None)
    if placed_with is None:
        if not by_destination:
            return True
        if client_ip is not None and client_ip == getattr(call, "source_ip", None):
            return True
    if not token:
        return False
    grant = verify_token(token, config, now)
    if grant.session_id is not None and grant.session_id == getattr(call, "session_id", None):
        return True
    return placed_with is not None and grant.sub is not None and grant.sub == placed_with.sub


def mint_token(
    key: str,
    *,
    dest: str | list[str] | tuple[str, ...] | None = None,
    dest_pattern: str | None = None,
    ttl_s: int = 3600,
    max_duration: int | None = None,
    sub: str | None = None,
    display_name: str | None = None,
    caller_id: str | None = None,
    session_id: str | None = None,
    watch: str | list[str] | tuple[str, ...] | None = None,
    record: str | None = None,
    issuer: str = "",
    audience: str = "",
    now: float | None = None,
) -> str:
    """A signed token with these claims (validated the way :func:`verify_token` will).
    Raises :class:`TokenError` for a claim the gateway would refuse, ValueError for no key."""
    if not key:
        raise ValueError("no token key")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    t = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iat": t, "exp": t + int(ttl_s)}
    if dest is not None:
        claims["dest"] = dest if isinstance(dest, str) else list(dest)
    if watch is not None:
        claims["watch"] = list(watch) if isinstance(watch, (list, tuple)) else watch
    optional = {
        "dest_pattern": dest_pattern,
        "max_duration": max_duration,
        "sub": sub,
        "display_name": display_name,
        "caller_id": caller_id,
        "session_id": session_id,
        "record": record,
        "iss": issuer or None,
        "aud": audience or None,
    }
    claims.update({k: v for k, v in optional.items() if v is not None})
    grant_from_claims(claims)  # refuse what the gateway would refuse
    return jwt.encode(claims, key, algorithm=ALGORITHM)

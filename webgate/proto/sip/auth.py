"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 3261 §22, RFC 8760). Sans-IO.

Client side: :func:`parse_challenge` reads a ``WWW-Authenticate`` / ``Proxy-Authenticate``
value, :func:`select_challenge` picks the best of several (SHA-256 over SHA-512-256 over
MD5), :func:`build_authorization` answers it. Server side: :func:`make_challenge`,
:func:`parse_authorization` and :func:`verify_authorization`.

One header value carries one challenge (SIP sends one header per challenge); a second
``Digest`` inside the same value is refused as garbage.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote as _pct_quote
from urllib.parse import unquote as _pct_unquote

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError


def _hasher(name: str) -> Callable[[bytes], str] | None:
    try:
        hashlib.new(name, b"")
    except (ValueError, TypeError):  # not offered by this OpenSSL build
        return None

    def h(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return h


_HASHES: dict[str, Callable[[bytes], str]] = {}
for _alg, _impl in (("MD5", "md5"), ("SHA-256", "sha256"), ("SHA-512-256", "sha512_256")):
    _fn = _hasher(_impl)
    if _fn is not None:
        _HASHES[_alg] = _fn

# canonical spellings, and the preference of select_challenge (higher wins)
_CANONICAL_ALGS = {
    "MD5": "MD5",
    "MD5-SESS": "MD5-sess",
    "SHA-256": "SHA-256",
    "SHA-256-SESS": "SHA-256-sess",
    "SHA-512-256": "SHA-512-256",
    "SHA-512-256-SESS": "SHA-512-256-sess",
}
_PREFERENCE = {"SHA-256": 3, "SHA-512-256": 2, "MD5": 1}

SUPPORTED_ALGORITHMS = tuple(
    a for a in _CANONICAL_ALGS.values() if a.removesuffix("-sess") in _HASHES
)

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_WS = frozenset(" \t\r\n")  # linear white space (folded lines are accepted as such)
_VALUE_STOP = frozenset(',"\t\r\n ')


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"  # canonical spelling when known, else as received (upper case)
    qop: tuple[str, ...] = ()  # lower case, in the order offered
    stale: bool = False
    domain: str | None = None
    userhash: bool = False
    charset: str | None = None
    algorithm_given: bool = False  # the challenge named its algorithm (echoed back then)
    scheme: str = "Digest"
    params: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def supported(self) -> bool:
        return self.algorithm.removesuffix("-sess") in _HASHES and (
            not self.qop or any(q in ("auth", "auth-int") for q in self.qop)
        )

    @property
    def is_session(self) -> bool:
        return self.algorithm.endswith("-sess")


@dataclass(frozen=True)
class Credentials:
    """A parsed ``Authorization`` / ``Proxy-Authorization`` value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False
    params: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


# ---------------------------------------------------------------------------------------
# auth-param lists


def _parse_auth_params(text: str, what: str) -> tuple[str, dict[str, str]]:
    """``Scheme a=b, c="d"`` -> ("Scheme", {"a": "b", "c": "d"}) with names lower-cased."""
    text = text.strip()
    m = _TOKEN_RE.match(text)
    if not m:
        raise RemoteProtocolError(f"bad {what}: no scheme", 400)
    scheme = m.group(0)
    i = m.end()
    n = len(text)
    if i < n and text[i] not in _WS:
        raise RemoteProtocolError(f"bad {what}: no space after scheme", 400)
    params: dict[str, str] = {}
    expect_sep = False
    while True:
        while i < n and text[i] in _WS:
            i += 1
        if i >= n:
            break
        if text[i] == ",":
            i += 1
            expect_sep = False
            continue
        if expect_sep:
            raise RemoteProtocolError(f"bad {what}: expected ',' at {text[i:i + 20]!r}", 400)
        m = _TOKEN_RE.match(text, i)
        if not m:
            raise RemoteProtocolError(f"bad {what}: bad parameter at {text[i:i + 20]!r}", 400)
        name = m.group(0).lower()
        i = m.end()
        while i < n and text[i] in _WS:
            i += 1
        if i >= n or text[i] != "=":
            raise RemoteProtocolError(f"bad {what}: parameter {name!r} without value", 400)
        i += 1
        while i < n and text[i] in _WS:
            i += 1
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise RemoteProtocolError(f"bad {what}: unterminated quoted string", 400)
                c = text[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise RemoteProtocolError(f"bad {what}: dangling escape", 400)
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                buf.append(c)
                i += 1
            value = "".join(buf)
        else:
            start = i
            while i < n and text[i] not in _VALUE_STOP:
                i += 1
            value = text[start:i]
            if not value:
                raise RemoteProtocolError(f"bad {what}: empty value for {name!r}", 400)
        if name in params:
            raise RemoteProtocolError(f"bad {what}: duplicate parameter {name!r}", 400)
        for ch in value:
            if ord(ch) < 0x20 or ord(ch) == 0x7F:
                raise RemoteProtocolError(f"bad {what}: control character in {name!r}", 400)
        params[name] = value
        expect_sep = True
    return scheme, params


def _quote(value: str) -> str:
    for ch in value:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise LocalProtocolError("control character in a digest parameter")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _canonical_alg(text: str | None) -> str:
    if text is None:
        return "MD5"
    return _CANONICAL_ALGS.get(text.upper(), text.upper())


def _bool_param(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


# ---------------------------------------------------------------------------------------
# client side


def parse_challenge(header_value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value. Raises RemoteProtocolError."""
    scheme, p = _parse_auth_params(header_value, "challenge")
    if scheme.lower() != "digest":
        raise RemoteProtocolError(f"unsupported authentication scheme {scheme!r}", 400)
    if "realm" not in p or "nonce" not in p:
        raise RemoteProtocolError("digest challenge without realm or nonce", 400)
    if not p["nonce"]:
        raise RemoteProtocolError("digest challenge with an empty nonce", 400)
    qop = tuple(q.strip().lower() for q in p.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=p["realm"],
        nonce=p["nonce"],
        opaque=p.get("opaque"),
        algorithm=_canonical_alg(p.get("algorithm")),
        qop=qop,
        stale=_bool_param(p.get("stale")),
        domain=p.get("domain"),
        userhash=_bool_param(p.get("userhash")),
        charset=p.get("charset"),
        algorithm_given="algorithm" in p,
        scheme="Digest",
        params=p,
    )


def select_challenge(challenges: Iterable[Challenge | str]) -> Challenge:
    """The challenge to answer: strongest supported algorithm, first offered on a tie.

    Strings are parsed; unparsable or unsupported ones are skipped. Raises
    RemoteProtocolError when none is usable.
    """
    best: Challenge | None = None
    best_rank = 0
    for c in challenges:
        if isinstance(c, str):
            try:
                c = parse_challenge(c)
            except RemoteProtocolError:
                continue
        if not c.supported:
            continue
        rank = _PREFERENCE.get(c.algorithm.removesuffix("-sess"), 0)
        if rank > best_rank:
            best, best_rank = c, rank
    if best is None:
        raise RemoteProtocolError("no supported digest challenge", None)
    return best


def _hash_for(algorithm: str) -> Callable[[bytes], str]:
    h = _HASHES.get(algorithm.removesuffix("-sess"))
    if h is None:
        raise RemoteProtocolError(f"unsupported digest algorithm {algorithm!r}", None)
    return h


def _digest_response(
    h: Callable[[bytes], str],
    *,
    session: bool,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    cnonce: str | None,
    nc: str | None,
    body: bytes,
) -> str:
    def hs(s: str) -> str:
        return h(s.encode("utf-8"))

    ha1 = hs(f"{username}:{realm}:{password}")
    if session:
        ha1 = hs(f"{ha1}:{nonce}:{cnonce or ''}")
    if qop == "auth-int":
        ha2 = hs(f"{method}:{uri}:{h(body)}")
    else:
        ha2 = hs(f"{method}:{uri}")
    if qop:
        return hs(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return hs(f"{ha1}:{nonce}:{ha2}")


def _needs_ext_username(username: str) -> bool:
    return any(ord(ch) > 0x7E or ord(ch) < 0x20 for ch in username)


def build_authorization(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """The ``Authorization`` / ``Proxy-Authorization`` value answering ``challenge``.

    qop: ``auth`` when offered, else ``auth-int`` when only that is offered (``body`` is then
    the request body), else none (RFC 2069 compatibility). ``uri`` is the Request-URI as a
    string. ``nc`` is the count of requests made with this nonce (1 for a fresh one).
    """
    h = _hash_for(challenge.algorithm)
    if not 1 <= nc <= 0xFFFFFFFF:
        raise LocalProtocolError(f"nonce count out of range: {nc}")
    if "auth" in challenge.qop:
        qop: str | None = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    elif challenge.qop:
        raise RemoteProtocolError(f"no supported qop in {challenge.qop!r}", None)
    else:
        qop = None
    if (qop or challenge.is_session) and cnonce is None:
        cnonce = secrets.token_hex(12)
    nc_text = f"{nc:08x}" if qop else None
    response = _digest_response(
        h,
        session=challenge.is_session,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        cnonce=cnonce,
        nc=nc_text,
        body=body,
    )
    parts: list[str] = []
    if challenge.userhash:
        parts.append(f"username={_quote(h(f'{username}:{challenge.realm}'.encode()))}")
    elif _needs_ext_username(username):
        parts.append("username*=UTF-8''" + _pct_quote(username.encode("utf-8"), safe=""))
    else:
        parts.append(f"username={_quote(username)}")
    parts.append(f"realm={_quote(challenge.realm)}")
    parts.append(f"nonce={_quote(challenge.nonce)}")
    parts.append(f"uri={_quote(uri)}")
    parts.append(f"response={_quote(response)}")
    if challenge.algorithm_given or challenge.algorithm != "MD5":
        parts.append(f"algorithm={challenge.algorithm}")
    if cnonce is not None:
        parts.append(f"cnonce={_quote(cnonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if qop:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc_text}")
    if challenge.userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


# ---------------------------------------------------------------------------------------
# server side


def make_challenge(
    realm: str,
    nonce: str | None = None,
    algorithm: str = "MD5",
    qop: tuple[str, ...] = ("auth",),
    opaque: str | None = None,
    stale: bool = False,
) -> str:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (send one per algorithm)."""
    alg = _canonical_alg(algorithm)
    _hash_for(alg)
    parts = [f"realm={_quote(realm)}", f"nonce={_quote(nonce or secrets.token_urlsafe(24))}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    if stale:
        parts.append("stale=TRUE")
    parts.append(f"algorithm={alg}")
    if qop:
        parts.append(f"qop={_quote(','.join(qop))}")
    return "Digest " + ", ".join(parts)


def parse_authorization(header_value: str) -> Credentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` value. Raises RemoteProtocolError."""
    scheme, p = _parse_auth_params(header_value, "credentials")
    if scheme.lower() != "digest":
        raise RemoteProtocolError(f"unsupported authentication scheme {scheme!r}", 400)
    username = p.get("username")
    if username is None and "username*" in p:
        ext = p["username*"]
        charset, sep, rest = ext.partition("'")
        _lang, sep2, encoded = rest.partition("'")
        if not sep or not sep2 or charset.upper() != "UTF-8":
            raise RemoteProtocolError("bad username* in credentials", 400)
        try:
            username = _pct_unquote(encoded, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise RemoteProtocolError("bad username* in credentials", 400) from None
    for name in ("realm", "nonce", "uri", "response"):
        if name not in p:
            raise RemoteProtocolError(f"credentials without {name}", 400)
    if username is None:
        raise RemoteProtocolError("credentials without username", 400)
    qop = p.get("qop")
    if qop is not None:
        qop = qop.lower()
        if "cnonce" not in p or "nc" not in p:
            raise RemoteProtocolError("credentials with qop but without cnonce/nc", 400)
    return Credentials(
        username=username,
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"].lower(),
        algorithm=_canonical_alg(p.get("algorithm")),
        cnonce=p.get("cnonce"),
        opaque=p.get("opaque"),
        qop=qop,
        nc=p.get("nc"),
        userhash=_bool_param(p.get("userhash")),
        params=p,
    )


def verify_authorization(
    header_value: str,
    method: str,
    password: str,
    realm: str,
    username: str | None = None,
    body: bytes = b"",
    uri: str | None = None,
) -> bool:
    """True when ``header_value`` holds a correct digest for ``password`` in ``realm``.

    ``username``, when given, must match (plain or RFC 7616 userhash); ``uri``, when given,
    must equal the digest-uri. Nonce freshness and nc replay are the caller's business
    (see :func:`parse_authorization`). Garbage gives False, never an exception.
    """
    try:
        cred = parse_authorization(header_value)
        h = _hash_for(cred.algorithm)
    except RemoteProtocolError:
        return False
    if cred.realm != realm:
        return False
    if uri is not None and cred.uri != uri:
        return False
    if cred.qop not in (None, "auth", "auth-int"):
        return False
    if cred.qop and (not cred.nc or not re.fullmatch(r"[0-9a-fA-F]{8}", cred.nc)):
        return False
    name = cred.username
    if cred.userhash:
        if username is None:
            return False
        expected_name = h(f"{username}:{realm}".encode())
        if not hmac.compare_digest(expected_name.encode(), cred.username.lower().encode()):
            return False
        name = username
    elif username is not None and name != username:
        return False
    expected = _digest_response(
        h,
        session=cred.algorithm.endswith("-sess"),
        username=name,
        realm=realm,
        password=password,
        method=method,
        uri=cred.uri,
        nonce=cred.nonce,
        qop=cred.qop,
        cnonce=cred.cnonce,
        nc=cred.nc,
        body=body,
    )
    return hmac.compare_digest(expected.encode(), cred.response.encode("utf-8", "replace"))


__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Challenge",
    "Credentials",
    "build_authorization",
    "make_challenge",
    "parse_authorization",
    "parse_challenge",
    "select_challenge",
    "verify_authorization",
]

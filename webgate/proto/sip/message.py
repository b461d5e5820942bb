"""SIP messages (RFC 3261 §7, §20, §25): parse, build, serialize. Sans-IO.

Parsing is strict where a mistake would be dangerous (start line, Content-Length, header
names, sizes) and lenient where real peers differ (folded headers, LF-only line ends,
header name case, compact forms). Every problem with input from the network raises
:class:`RemoteProtocolError` with ``status_hint=400`` (or 413/513 for size limits);
values our own code puts into a header that are not allowed there raise
:class:`LocalProtocolError`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Union

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

SIP_VERSION = "SIP/2.0"
DEFAULT_MAX_SIZE = 65535

COMPACT_FORMS = {
    "a": "Accept-Contact",
    "u": "Allow-Events",
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "o": "Event",
    "f": "From",
    "y": "Identity",
    "r": "Refer-To",
    "b": "Referred-By",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "x": "Session-Expires",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "Min-Expires",
        "Min-SE",
        "MIME-Version",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose values may be comma-joined lists (RFC 3261 §7.3.1). Authorization-style
# headers and Date etc. contain commas that are not list separators, so they are absent.
_LIST_HEADERS = {
    "via",
    "route",
    "record-route",
    "contact",
    "allow",
    "supported",
    "require",
    "proxy-require",
    "unsupported",
    "accept",
    "accept-encoding",
    "accept-language",
    "allow-events",
    "p-asserted-identity",
    "p-preferred-identity",
}

TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+\Z")
# RFC 3261 user part: unreserved / escaped / user-unreserved ("&=+$,;?/"); we refuse ';' '?'
# '&' '=' ',' '$' '/' as well, since a dial string never needs them and they change meaning.
_USER_RE = re.compile(r"^[A-Za-z0-9\-_.!~*'()+%#]+\Z")
# What a user / password may hold unescaped on the wire: RFC 3261 unreserved and user-unreserved
# (password: its own set), except '?' and ':' (where parsers split the userinfo); anything else,
# '#' included, is percent-escaped (escape_uri_part). An escape already there ("%23") stays.
_USER_WIRE_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;/]|%[0-9A-Fa-f]{2})*\Z")
_PASSWORD_WIRE_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
_HEX2_RE = re.compile(r"[0-9A-Fa-f]{2}")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)\Z")
_STATUS_LINE_RE = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9]) ?(.*)\Z")
_REQUEST_LINE_RE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) SIP/2\.0\Z")


def _is_ascii_digits(text: str) -> bool:
    """str.isdigit() accepts '²' and Arabic-Indic digits, which int() then rejects or reads."""
    return text.isascii() and text.isdigit()


def canonical_name(name: str) -> str:
    """Return the canonical spelling of a header name (compact forms expanded)."""
    low = name.lower()
    if len(low) == 1 and low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low, name)


# ---------------------------------------------------------------------------------------
# Validation of values our own code (or a client) wants to put into a message.


def check_token(value: str, what: str = "token") -> str:
    if not value or not _TOKEN_RE.match(value):
        raise LocalProtocolError(f"invalid {what}: {value!r} is not a SIP token")
    return value


def check_header_value(value: str, what: str = "header value") -> str:
    """Refuse CR, LF, NUL and other control characters (header injection)."""
    for ch in value:
        o = ord(ch)
        if (o < 0x20 and ch != "\t") or o == 0x7F:
            raise LocalProtocolError(f"invalid {what}: control character {ch!r} not allowed")
    if len(value) > 1024:
        raise LocalProtocolError(f"invalid {what}: longer than 1024 characters")
    return value


def check_user(value: str, what: str = "SIP user") -> str:
    """A dial string / URI user part: digits, letters and a few safe marks only. Escaped octets
    ("%41") must be well formed and, unescaped, UTF-8 text without control characters (C0, DEL,
    C1, format controls such as bidi overrides, line and paragraph separators)."""
    if not value or len(value) > 128 or not _USER_RE.match(value):
        raise LocalProtocolError(
            f"invalid {what}: {value!r} (allowed: letters, digits and - _ . ! ~ * ' ( ) + % #)"
        )
    if "%" in value:
        try:
            text = unescape_uri_part(value)
        except ValueError:
            raise LocalProtocolError(f"invalid {what}: bad escape in {value!r}") from None
        if any(_is_control(ch) for ch in text):
            raise LocalProtocolError(f"invalid {what}: escaped control character in {value!r}")
    return value


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def unescape_uri_part(value: str) -> str:
    """``value`` with its %HH escapes decoded as UTF-8. Raises ValueError for a malformed escape
    or octets that are not UTF-8."""
    out = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "%":
            hx = value[i + 1 : i + 3]
            if not _HEX2_RE.fullmatch(hx):
                raise ValueError(f"bad escape at {i}")
            out.append(int(hx, 16))
            i += 3
        else:
            out += ch.encode("utf-8")
            i += 1
    return out.decode("utf-8")  # UnicodeDecodeError is a ValueError


def escape_uri_part(value: str, wire: re.Pattern[str] = _USER_WIRE_RE) -> str:
    """``value`` (a URI user or password) as it may appear on the wire: every character that
    ``wire`` does not allow unescaped is percent-escaped (its UTF-8 octets), '#' -> "%23"; a
    well-formed escape already present is kept. Idempotent."""
    if wire.fullmatch(value):
        return value
    out: list[str] = []
    for i, ch in enumerate(value):
        if ch == "%" and _HEX2_RE.fullmatch(value[i + 1 : i + 3]):
            out.append(ch)
        elif ch != "%" and wire.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def check_host(value: str, what: str = "host") -> str:
    if not value or len(value) > 255 or not _HOST_RE.match(value):
        raise LocalProtocolError(f"invalid {what}: {value!r}")
    return value


def check_display_name(value: str, what: str = "display name") -> str:
    check_header_value(value, what)
    if len(value) > 128:
        raise LocalProtocolError(f"invalid {what}: longer than 128 characters")
    return value


def quote_display_name(value: str) -> str:
    """Quote a display name for From/To/PAI (RFC 3261 quoted-string)."""
    check_display_name(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------
# Small grammar helpers


def split_outside_quotes(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and angle brackets."""
    parts: list[str] = []
    buf: list[str] = []
    in_quote = False
    depth = 0
    escape = False
    for ch in value:
        if escape:
            buf.append(ch)
            escape = False
            continue
        if in_quote:
            if ch == "\\":
                escape = True
            elif ch == '"':
                in_quote = False
            buf.append(ch)
            continue
        if ch == '"':
            in_quote = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        if ch == sep and depth == 0:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if in_quote:
        raise RemoteProtocolError("unterminated quoted string", 400)
    parts.append("".join(buf))
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` (leading ';' optional) into an ordered dict (names lowercased)."""
    params: dict[str, str | None] = {}
    for piece in split_outside_quotes(text, ";"):
        piece = piece.strip()
        if not piece:
            continue
        if "=" in piece:
            k, v = piece.split("=", 1)
            k = k.strip().lower()
            v = v.strip()
        else:
            k, v = piece.lower(), None
        if not k:
            raise RemoteProtocolError(f"empty parameter name in {text!r}", 400)
        params[k] = v
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# ---------------------------------------------------------------------------------------
# URIs


@dataclass
class SipURI:
    """A ``sip:``/``sips:`` or ``tel:`` URI (RFC 3261 §19.1, RFC 3966)."""

    scheme: str = "sip"
    user: str | None = None
    host: str = ""
    port: int | None = None
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> "SipURI":
        text = text.strip()
        if ":" not in text:
            raise RemoteProtocolError(f"not a URI: {text!r}", 400)
        scheme, rest = text.split(":", 1)
        scheme = scheme.lower()
        if scheme == "tel":
            number, _, ptext = rest.partition(";")
            if not number or not re.match(r"^[0-9A-Fa-f*#+\-.()pw]+\Z", number):
                raise RemoteProtocolError(f"invalid tel URI: {text!r}", 400)
            return cls(scheme="tel", user=number, host="", params=parse_params(ptext))
        if scheme not in ("sip", "sips"):
            raise RemoteProtocolError(f"unsupported URI scheme {scheme!r}", 416)
        user = password = None
        # The user part may hold ';' and '?' (user-unreserved, e.g. "+4930123;npdi@gw"):
        # take userinfo up to the first '@' unless a '?' (URI headers) comes before it.
        at = rest.find("@")
        qmark = rest.find("?")
        if at >= 0 and (qmark < 0 or at < qmark):
            userinfo, rest = rest[:at], rest[at + 1 :]
            if ":" in userinfo:
                user, password = userinfo.split(":", 1)
            else:
                user = userinfo
            if not user:
                raise RemoteProtocolError(f"empty user in URI {text!r}", 400)
        headers = ""
        if "?" in rest:
            rest, headers = rest.split("?", 1)
        hostport, _, ptext = rest.partition(";")
        host, port = parse_hostport(hostport)
        return cls(
            scheme=scheme,
            user=user,
            host=host,
            port=port,
            password=password,
            params=parse_params(ptext),
            headers=headers,
        )

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        out = self.scheme + ":"
        if self.user is not None:
            out += escape_uri_part(self.user)
            if self.password is not None:
                out += ":" + escape_uri_part(self.password, _PASSWORD_WIRE_RE)
            out += "@"
        out += format_host(self.host)
        if self.port is not None:
            out += f":{self.port}"
        out += format_params(self.params)
        if self.headers:
            out += "?" + self.headers
        return out

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def copy(self, **changes: object) -> "SipURI":
        kw: dict[str, Any] = {"params": dict(self.params)}
        kw.update(changes)
        return replace(self, **kw)


def parse_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if not text:
        raise RemoteProtocolError("empty host", 400)
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RemoteProtocolError(f"bad IPv6 reference {text!r}", 400)
        host = text[1:end]
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise RemoteProtocolError(f"bad host:port {text!r}", 400)
            port = _parse_port(rest[1:], text)
        if not re.match(r"^[0-9A-Fa-f:.]+\Z", host):
            raise RemoteProtocolError(f"bad IPv6 address {host!r}", 400)
        return host, port
    if text.count(":") > 1:
        # bare IPv6 (not allowed in URIs, but some Vias carry it)
        if not re.match(r"^[0-9A-Fa-f:.]+\Z", text):
            raise RemoteProtocolError(f"bad host {text!r}", 400)
        return text, None
    host, sep, ptext = text.partition(":")
    if sep:
        port = _parse_port(ptext, text)
    if not re.match(r"^[A-Za-z0-9\-._]+\Z", host):
        raise RemoteProtocolError(f"bad host {host!r}", 400)
    return host, port


def _parse_port(ptext: str, whole: str) -> int:
    if not _is_ascii_digits(ptext) or len(ptext) > 5:
        raise RemoteProtocolError(f"bad port in {whole!r}", 400)
    port = int(ptext)
    if not 0 < port < 65536:
        raise RemoteProtocolError(f"port out of range in {whole!r}", 400)
    return port


def format_host(host: str) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


# ---------------------------------------------------------------------------------------
# name-addr headers (From, To, Contact, Route, Record-Route, P-Asserted-Identity)


@dataclass
class NameAddr:
    uri: SipURI
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    wildcard: bool = False  # Contact: *

    @classmethod
    def parse(cls, text: str) -> "NameAddr":
        text = text.strip()
        if text == "*":
            return cls(uri=SipURI(host="*"), wildcard=True)
        display: str | None = None
        if "<" in text:
            lt = _find_unquoted(text, "<")
            if lt < 0:
                raise RemoteProtocolError(f"bad name-addr {text!r}", 400)
            gt = text.find(">", lt)
            if gt < 0:
                raise RemoteProtocolError(f"unterminated <...> in {text!r}", 400)
            dtext = text[:lt].strip()
            if dtext.startswith('"'):
                if len(dtext) < 2 or not dtext.endswith('"'):
                    raise RemoteProtocolError(f"bad display name in {text!r}", 400)
                display = re.sub(r"\\(.)", r"\1", dtext[1:-1])
            elif dtext:
                display = dtext
            uri = SipURI.parse(text[lt + 1 : gt])
            params = parse_params(text[gt + 1 :])
        else:
            # addr-spec form: parameters after ';' belong to the header, not the URI
            utext, _, ptext = text.partition(";")
            uri = SipURI.parse(utext)
            params = parse_params(ptext)
        return cls(uri=uri, display_name=display, params=params)

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        out = ""
        if self.display_name:
            out += quote_display_name(self.display_name) + " "
        out += f"<{self.uri}>"
        out += format_params(self.params)
        return out

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def _find_unquoted(text: str, ch: str) -> int:
    in_quote = False
    escape = False
    for i, c in enumerate(text):
        if escape:
            escape = False
            continue
        if in_quote:
            if c == "\\":
                escape = True
            elif c == '"':
                in_quote = False
            continue
        if c == '"':
            in_quote = True
        elif c == ch:
            return i
    return -1


# ---------------------------------------------------------------------------------------
# Via and CSeq


@dataclass
class Via:
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Via":
        text = text.strip()
        m = re.match(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+(.+)\Z", text, re.IGNORECASE)
        if not m:
            raise RemoteProtocolError(f"bad Via {text!r}", 400)
        transport = m.group(1).upper()
        sent_by, _, ptext = m.group(2).partition(";")
        host, port = parse_hostport(sent_by)
        return cls(transport=transport, host=host, port=port, params=parse_params(ptext))

    def __str__(self) -> str:
        out = f"SIP/2.0/{self.transport} {format_host(self.host)}"
        if self.port is not None:
            out += f":{self.port}"
        return out + format_params(self.params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> "CSeq":
        parts = text.split()
        if len(parts) != 2 or not _is_ascii_digits(parts[0]) or len(parts[0]) > 10:
            raise RemoteProtocolError(f"bad CSeq {text!r}", 400)
        number = int(parts[0])
        if number >= 2**31:
            raise RemoteProtocolError(f"CSeq number too large {text!r}", 400)
        if not _TOKEN_RE.match(parts[1]):
            raise RemoteProtocolError(f"bad CSeq method {text!r}", 400)
        return cls(number, parts[1].upper())

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# ---------------------------------------------------------------------------------------
# Headers container


class Headers:
    """Ordered, case-insensitive, multi-valued header storage.

    Values are stored one per list element: a received ``Via: a, b`` becomes two values.
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def add_checked(self, name: str, value: str) -> None:
        """Add a header from our own code: name must be a token, value free of CR/LF/controls."""
        check_token(name, "header name")
        check_header_value(value, f"value of header {name}")
        self.add(name, value)

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (canonical_name(name), value))

    def get(self, name: str, default: str | None = None) -> str | None:
        cname = canonical_name(name).lower()
        for k, v in self._items:
            if k.lower() == cname:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        cname = canonical_name(name).lower()
        return [v for k, v in self._items if k.lower() == cname]

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with one value (kept at the first position)."""
        cname = canonical_name(name)
        low = cname.lower()
        out: list[tuple[str, str]] = []
        done = False
        for k, v in self._items:
            if k.lower() == low:
                if not done:
                    out.append((cname, value))
                    done = True
            else:
                out.append((k, v))
        if not done:
            out.append((cname, value))
        self._items = out

    def remove(self, name: str) -> None:
        low = canonical_name(name).lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != low]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> "Headers":
        h = Headers()
        h._items = list(self._items)
        return h


# ---------------------------------------------------------------------------------------
# Messages


@dataclass
class _Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # --- typed accessors -----------------------------------------------------------
    @property
    def call_id(self) -> str:
        v = self.headers.get("Call-ID")
        if not v:
            raise RemoteProtocolError("missing Call-ID", 400)
        return v.strip()

    @property
    def cseq(self) -> CSeq:
        v = self.headers.get("CSeq")
        if v is None:
            raise RemoteProtocolError("missing CSeq", 400)
        return CSeq.parse(v)

    @property
    def from_(self) -> NameAddr:
        v = self.headers.get("From")
        if v is None:
            raise RemoteProtocolError("missing From", 400)
        return NameAddr.parse(v)

    @property
    def to(self) -> NameAddr:
        v = self.headers.get("To")
        if v is None:
            raise RemoteProtocolError("missing To", 400)
        return NameAddr.parse(v)

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        v = self.headers.get("Via")
        if v is None:
            raise RemoteProtocolError("missing Via", 400)
        return Via.parse(v)

    @property
    def contacts(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact")]

    @property
    def record_routes(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Record-Route")]

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def validate_basic(self) -> None:
        """Check the mandatory headers are present and parse (RFC 3261 §8.1.1)."""
        _ = self.call_id
        _ = self.cseq
        _ = self.from_
        _ = self.to
        _ = self.top_via


@dataclass
class SipRequest(_Message):
    method: str = "OPTIONS"
    uri: SipURI = field(default_factory=SipURI)

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {SIP_VERSION}")

    def __str__(self) -> str:
        return f"{self.method} {self.uri}"


@dataclass
class SipResponse(_Message):
    status: int = 200
    reason: str = "OK"

    def serialize(self) -> bytes:
        return self._serialize(f"{SIP_VERSION} {self.status} {self.reason}")

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


SipMessage = Union[SipRequest, SipResponse]

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Unknown")


# ---------------------------------------------------------------------------------------
# Parsing


def _split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """Split header block and body; returns None when the blank line is missing."""
    idx = data.find(b"\r\n\r\n")
    idx_lf = data.find(b"\n\n")
    if idx >= 0 and (idx_lf < 0 or idx <= idx_lf):
        return data[:idx], data[idx + 4 :]
    if idx_lf >= 0:
        return data[:idx_lf], data[idx_lf + 2 :]
    return None


def _parse_head(head: bytes) -> tuple[str, Headers, int | None]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("message head is not UTF-8", 400) from None
    raw_lines = text.replace("\r\n", "\n").split("\n")
    # unfold continuation lines (RFC 3261 §7.3.1)
    lines: list[str] = []
    for line in raw_lines:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    if not lines or not lines[0]:
        raise RemoteProtocolError("empty start line", 400)
    start = lines[0]
    for ch in start:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise RemoteProtocolError("control character in start line", 400)
    headers = Headers()
    content_length: int | None = None
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or not _TOKEN_RE.match(name):
            raise RemoteProtocolError(f"malformed header line {line[:60]!r}", 400)
        for ch in value:
            if ord(ch) < 0x20 and ch != "\t":
                raise RemoteProtocolError(f"control character in header {name}", 400)
        value = value.strip()
        cname = canonical_name(name)
        if cname.lower() in _LIST_HEADERS:
            for part in split_outside_quotes(value, ","):
                part = part.strip()
                if part:
                    headers.add(cname, part)
        else:
            headers.add(cname, value)
        if cname == "Content-Length":
            if not _is_ascii_digits(value) or len(value) > 9:
                raise RemoteProtocolError(f"bad Content-Length {value!r}", 400)
            cl = int(value)
            if content_length is not None and cl != content_length:
                raise RemoteProtocolError("conflicting Content-Length headers", 400)
            content_length = cl
    return start, headers, content_length


def _build(start: str, headers: Headers, body: bytes) -> SipMessage:
    m = _STATUS_LINE_RE.match(start)
    if m:
        return SipResponse(headers=headers, body=body, status=int(m.group(1)), reason=m.group(2))
    m = _REQUEST_LINE_RE.match(start)
    if not m:
        raise RemoteProtocolError(f"malformed start line {start[:80]!r}", 400)
    method = m.group(1).upper()
    uri = SipURI.parse(m.group(2))
    return SipRequest(headers=headers, body=body, method=method, uri=uri)


def parse_message(data: bytes, max_size: int = DEFAULT_MAX_SIZE, datagram: bool = True) -> SipMessage:
    """Parse one whole message (a UDP datagram, or one framed off a stream)."""
    if len(data) > max_size:
        raise RemoteProtocolError(f"message larger than {max_size} bytes", 513)
    # RFC 5626 keepalives and stray leading CRLFs
    data = data.lstrip(b"\r\n")
    if not data:
        raise RemoteProtocolError("empty message", None)
    parts = _split_head(data)
    if parts is None:
        raise RemoteProtocolError("no blank line after headers", 400)
    head, body = parts
    start, headers, clen = _parse_head(head)
    if clen is not None:
        if clen > len(body):
            raise RemoteProtocolError("body shorter than Content-Length", 400)
        body = body[:clen]
    elif not datagram:
        raise RemoteProtocolError("missing Content-Length on a stream transport", 400)
    return _build(start, headers, body)


class StreamFramer:
    """Frames SIP messages off a byte stream (TCP/TLS) by Content-Length (RFC 3261 §18.3)."""

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[SipMessage | RemoteProtocolError]:
        """Return the complete messages (or the error for a bad one) found so far.

        After an error whose framing cannot be recovered (bad Content-Length, oversize
        header block) the buffer is cleared and :attr:`broken` is set: the adapter closes
        the connection.
        """
        self._buf += data
        out: list[SipMessage | RemoteProtocolError] = []
        while True:
            # skip CRLF keepalives (RFC 5626 §3.5.1 "double CRLF ping")
            # (any leading CR/LF bytes: a message never starts with them, and a CRLF
            # split across two reads must not leave a lone byte in front of the next one)
            while self._buf and self._buf[0] in (0x0D, 0x0A):
                del self._buf[:1]
            if not self._buf:
                break
            idx = self._buf.find(b"\r\n\r\n")
            if idx < 0:
                if len(self._buf) > self.max_size:
                    self._buf.clear()
                    self.broken = True
                    out.append(RemoteProtocolError("header block too large", 513))
                break
            head = bytes(self._buf[:idx])
            try:
                start, headers, clen = _parse_head(head)
            except RemoteProtocolError as e:
                self._buf.clear()
                self.broken = True
                out.append(e)
                break
            if clen is None:
                self._buf.clear()
                self.broken = True
                out.append(RemoteProtocolError("missing Content-Length on a stream transport", 400))
                break
            total = idx + 4 + clen
            if total > self.max_size:
                self._buf.clear()
                self.broken = True
                out.append(RemoteProtocolError(f"message larger than {self.max_size} bytes", 513))
                break
            if len(self._buf) < total:
                break
            body = bytes(self._buf[idx + 4 : total])
            del self._buf[:total]
            try:
                out.append(_build(start, headers, body))
            except RemoteProtocolError as e:
                out.append(e)
        return out

    broken: bool = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message buffered (0 between messages)."""
        return len(self._buf)


# ---------------------------------------------------------------------------------------
# Building


def make_response(request: SipRequest, status: int, reason: str | None = None, to_tag: str | None = None) -> SipResponse:
    """A response copying Via, From, To (adding a tag), Call-ID, CSeq (RFC 3261 §8.2.6)."""
    h = Headers()
    for name in ("Via", "Record-Route", "From", "To", "Call-ID", "CSeq"):
        if name == "Record-Route" and not (100 < status < 300):
            continue
        for v in request.headers.get_all(name):
            if name == "To" and to_tag and status != 100:
                try:
                    na = NameAddr.parse(v)
                except RemoteProtocolError:
                    na = None
                if na is not None and na.tag is None:
                    na.params["tag"] = to_tag
                    v = str(na)
            h.add(name, v)
    return SipResponse(headers=h, status=status, reason=reason or reason_phrase(status))


# ---------------------------------------------------------------------------------------
# A stateless error answer for a request too broken to parse (RFC 3261 §8.2)

_RAW_HDR = {
    "via": re.compile(rb"^(?:via|v)[ \t]*:(.*)$", re.I | re.M),
    "from": re.compile(rb"^(?:from|f)[ \t]*:(.*)$", re.I | re.M),
    "to": re.compile(rb"^(?:to|t)[ \t]*:(.*)$", re.I | re.M),
    "call-id": re.compile(rb"^(?:call-id|i)[ \t]*:(.*)$", re.I | re.M),
    "cseq": re.compile(rb"^cseq[ \t]*:(.*)$", re.I | re.M),
}

_RAW_CANONICAL = {"via": b"Via", "from": b"From", "to": b"To", "call-id": b"Call-ID", "cseq": b"CSeq"}


def stateless_error_response(data: bytes, reason: str, status: int = 400) -> bytes | None:
    """Build a stateless 400 (or 513 for an oversized message) for an unparseable request, if enough
    of it is readable (§8.2)."""
    start = data.lstrip(b"\r\n")[:4]
    if start in (b"SIP/", b"ACK ") or b"SIP/2.0\r\n" not in data[:512] and b"SIP/2.0\n" not in data[:512]:
        return None  # responses and ACKs are never answered (§17.1.1.1, §8.2); a non-SIP blob gets nothing
    head = data.split(b"\r\n\r\n", 1)[0][:8192]
    lines = []
    for name, rx in _RAW_HDR.items():
        m = rx.search(head)
        if m is None:
            return None
        value = m.group(1).strip()
        if any(c < 0x20 and c != 9 for c in value) or len(value) > 1024:
            return None
        lines.append(_RAW_CANONICAL[name] + b": " + value)
    safe_reason = re.sub(r"[^A-Za-z0-9 ,.:'()_-]", "?", reason)[:80]
    return b"SIP/2.0 %d " % status + safe_reason.encode() + b"\r\n" + b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"

"""The validator framework: reading one TOML table into checked values, and the value checks.

:class:`Section` reads one table key by key, checks each value's type and range, and reports
every problem as ``"prefix.key: message"`` to a :class:`Reporter` (the validator of
:mod:`webgate.config.validate`), returning :data:`MISSING` for a bad value so that the checks
go on and all errors are reported together; :class:`Collector` is that reporter's base (the
validator and its readers' mixins). The ``check_*`` functions take a string and return
what is wrong with it (None: nothing). Internal to :mod:`webgate.config`, except
:func:`parse_host_port` and :func:`parse_sip_uri`, which the package exports.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from webgate.config.model import HostPort, SipUri

# RFC 3261 token: 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?"
)
# user part of a SIP URI: unreserved / escaped / user-unreserved (RFC 3261 25.1)
_SIP_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

T = TypeVar("T")


def _is_host(host: str) -> bool:
    """A bare IPv4/IPv6 literal or a DNS name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return bool(_HOSTNAME_RE.fullmatch(host)) and not host.replace(".", "").isdigit()


def parse_host_port(text: str) -> HostPort:
    """Parse ``"HOST:PORT"`` / ``"[V6]:PORT"``. Port 0 = any free port. Raises ValueError."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError
        host, port_s = text[1:end], text[end + 2 :]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ValueError from None
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep or ":" in host or not _is_host(host):
            raise ValueError
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError
    return HostPort(host, int(port_s))


_SIP_URI_RE = re.compile(
    r"(?P<scheme>sips?):(?:(?P<user>[^@;?\s]+)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(?P<port>\d+))?"
    r"(?P<params>[;?][^\s]*)?",
    re.IGNORECASE,
)


def parse_sip_uri(text: str) -> SipUri:
    m = _SIP_URI_RE.fullmatch(text)
    if not m:
        raise ValueError
    host = m["host"]
    if host.startswith("["):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError
    elif not _is_host(host):
        raise ValueError
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError
    if m["user"] and not _SIP_USER_RE.fullmatch(m["user"].split(":", 1)[0]):
        raise ValueError
    return SipUri(m["scheme"].lower(), m["user"] or "", host, port, m["params"] or "", text)


# ---------------------------------------------------------------------------
# Reading a table


class Reporter(Protocol):
    """Where a :class:`Section` reports problems: one message per problem, naming its key."""

    def err(self, key: str, message: str) -> None: ...


class Section:
    """Reads one table, checks types, records errors naming ``prefix.key``."""

    def __init__(self, v: Reporter, prefix: str, table: Any, defaults: Any = None) -> None:
        self.v = v
        self.prefix = prefix
        self.defaults = defaults
        if not isinstance(table, Mapping):
            v.err(prefix, f"must be a table, not {type_name(table)}")
            table = {}
        self.table = table
        self.known: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def _get(self, name: str, types: tuple[type, ...], what: str, required: bool) -> Any:
        self.known.add(name)
        if name not in self.table:
            if required:
                self.v.err(self.key(name), "is required")
                return MISSING
            return getattr(self.defaults, name)
        value = self.table[name]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            self.v.err(self.key(name), f"must be {what}, not {type_name(value)} {value!r}")
            return MISSING
        return value

    def string(self, name: str, required: bool = False, check: Callable[[str], str | None] | None = None) -> Any:
        value = self._get(name, (str,), "a string", required)
        if isinstance(value, str) and check is not None:
            problem = check(value)
            if problem:
                self.v.err(self.key(name), problem)
                return MISSING
        return value

    def integer(self, name: str, lo: int | None = None, hi: int | None = None) -> Any:
        value = self._get(name, (int,), "an integer", False)
        if isinstance(value, int) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                self.v.err(self.key(name), f"{value} is out of range ({rng})")
                return MISSING
        return value

    def number(self, name: str, lo: float, hi: float) -> Any:
        """An integer or a float in ``lo..hi``, as a float."""
        value = self._get(name, (int, float), "a number", False)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not lo <= value <= hi:
                self.v.err(self.key(name), f"{value} is out of range ({lo:g}..{hi:g})")
                return MISSING
            return float(value)
        return value

    def boolean(self, name: str) -> Any:
        return self._get(name, (bool,), "true or false", False)

    def choice(self, name: str, choices: tuple[str, ...]) -> Any:
        value = self._get(name, (str,), "a string", False)
        if isinstance(value, str) and value not in choices:
            self.v.err(self.key(name), f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
            return MISSING
        return value

    def listen(self, name: str) -> Any:
        """A "HOST:PORT" listener; "" = off (None)."""
        self.known.add(name)
        if name not in self.table:
            return getattr(self.defaults, name)
        value = self.table[name]
        if not isinstance(value, str):
            self.v.err(self.key(name), f"must be a string \"HOST:PORT\", not {type_name(value)} {value!r}")
            return MISSING
        if value == "":
            return None
        try:
            return parse_host_port(value)
        except ValueError:
            self.v.err(self.key(name), f"invalid address {value!r} (expected \"HOST:PORT\", IPv6 as \"[::1]:5060\")")
            return MISSING

    def finish(self) -> None:
        for k in self.table:
            if k not in self.known:
                self.v.err(self.key(k), "unknown key")


class _Missing:
    """The value of a key that had an error: the section it belongs to is not built."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
"""The value :class:`Section` returns for a key it reported an error for."""


class Collector:
    """The errors of one validation run (it is the :class:`Reporter` of its sections) and the
    building of a section's dataclass: the base of the validator and of its readers' mixins."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, key: str, message: str) -> None:
        self.errors.append(f"{key}: {message}")

    def build(self, cls: Callable[..., T], values: dict[str, Any]) -> T | Any:
        """``cls(**values)``, or :data:`MISSING` when a value is missing (its error already reported)."""
        if any(v is MISSING for v in values.values()):
            return MISSING
        return cls(**values)


def type_name(value: Any) -> str:
    """The TOML name of a value's type, for messages."""
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------
# Value checks: what is wrong with a string (None: nothing)


def check_host(value: str) -> str | None:
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
        try:
            ipaddress.IPv6Address(value)
            return None
        except ValueError:
            return f"invalid IPv6 address {value!r}"
    if not _is_host(value):
        return f"invalid host {value!r} (expected an IP address or a DNS name, no port)"
    return None


def check_optional_host(value: str) -> str | None:
    return None if value == "" else check_host(value)


def check_text(value: str) -> str | None:
    if CONTROL_RE.search(value):
        return "must not contain control characters (CR, LF, ...)"
    return None


def check_nonempty_text(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return check_text(value)


def check_token(value: str) -> str | None:
    if not TOKEN_RE.fullmatch(value):
        return f"{value!r} is not a valid SIP header name (token)"
    return None


def check_sip_user(value: str) -> str | None:
    if value and not _SIP_USER_RE.fullmatch(value):
        return f"{value!r} is not a valid SIP URI user part"
    return None


def check_dest_name(value: str) -> str | None:
    if not value or not _SIP_USER_RE.fullmatch(value):
        return f"{value!r} is not a valid destination name"
    return None


def check_file(value: str) -> str | None:
    if value and not Path(value).is_file():
        return f"file not found: {value!r}"
    return None


_HTTP_URL_RE = re.compile(r"https?://[^\s]+", re.IGNORECASE)


#: shortest call-token key accepted (HMAC-SHA256), here and by ``webgate token``
MIN_TOKEN_KEY_BYTES = 32


def check_token_key(value: str) -> str | None:
    if value and len(value.encode()) < MIN_TOKEN_KEY_BYTES:
        return "must be at least 32 bytes (HMAC-SHA256 key); generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    return check_text(value)


def check_admin_key(value: str) -> str | None:
    if value and len(value) < 16:
        return "must be at least 16 characters"
    return check_text(value)


def check_http_url(value: str) -> str | None:
    if value and not _HTTP_URL_RE.fullmatch(value):
        return f"{value!r} is not an http:// or https:// URL"
    return None


_REDIS_URL_RE = re.compile(r"(?:rediss?://[^\s/]+(?:/\d{1,2})?|unix:///[^\s]+)", re.IGNORECASE)
_NODE_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def check_redis_url(value: str) -> str | None:
    if not _REDIS_URL_RE.fullmatch(value):
        return f"{value!r} is not a redis://HOST:PORT/DB, rediss:// or unix:///PATH URL"
    return None


def check_node_id(value: str) -> str | None:
    if value and not _NODE_ID_RE.fullmatch(value):
        return f"{value!r}: 1-128 letters, digits and . _ : - (\"\" = host name:port)"
    return None


def check_url(schemes: tuple[str, ...]) -> Callable[[str], str | None]:
    """A check for a URL with one of ``schemes`` (or "")."""
    pattern = re.compile(rf"(?:{'|'.join(schemes)}):[^\s]+", re.IGNORECASE)

    def check(value: str) -> str | None:
        if value and not pattern.fullmatch(value):
            return f"{value!r} is not a {' or '.join(s + ':' for s in schemes)} URL"
        return None

    return check


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


"""webgate configuration: one TOML file, validated once, into frozen dataclasses.

Use :func:`load_config` (a file, or the embedded default when ``path`` is None, plus
command-line overrides) or :func:`parse_config` (an already-parsed mapping). Every
error names the key it is about (``sip.udp: invalid address 'x:99999'``); all errors
found are reported together in one :class:`ConfigError`. Unknown keys are errors.

Every key has a default (see :data:`DEFAULT_TOML`), so an empty file is a valid
configuration. Secrets (trunk passwords) are kept out of ``repr()``.
"""

from __future__ import annotations

import ipaddress
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from webgate import __version__

__all__ = [
    "DEFAULT_TOML",
    "KNOWN_CODECS",
    "BuiltinConfig",
    "Config",
    "ConfigError",
    "HostPort",
    "ApiConfig",
    "CdrConfig",
    "HttpConfig",
    "IceServerConfig",
    "LimitsConfig",
    "LogConfig",
    "RouteConfig",
    "RouteMatch",
    "RtmpConfig",
    "RtpConfig",
    "SessionIdConfig",
    "SipConfig",
    "ShutdownConfig",
    "SipUri",
    "TokensConfig",
    "TrunkConfig",
    "WebRtcConfig",
    "default_config",
    "load_config",
    "parse_config",
    "parse_host_port",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is invalid. ``errors`` lists one message per problem."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + e for e in self.errors))


# ---------------------------------------------------------------------------
# Value types


@dataclass(frozen=True)
class HostPort:
    """A listening address. ``host`` is bare (no brackets) even for IPv6."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host


@dataclass(frozen=True)
class SipUri:
    """A parsed ``sip:``/``sips:`` URI as written in the configuration."""

    scheme: str  # "sip" or "sips"
    user: str  # may be ""
    host: str  # bare, no brackets
    port: int | None
    params: str  # everything from the first ';' (may be "")
    text: str  # the URI exactly as configured

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class HttpConfig:
    listen: HostPort | None = HostPort("127.0.0.1", 8080)
    #: HTTPS/WSS listener ("" = off); needs tls_cert and tls_key
    tls_listen: HostPort | None = None
    tls_cert: str = ""
    tls_key: str = ""
    #: Origins allowed to open /ws ("https://shop.example.com"); empty = same origin as the
    #: Host header, or no Origin header at all (non-browser clients); "*" = any origin
    allowed_origins: tuple[str, ...] = ()
    #: open HTTP connections (not yet WebSockets), in total and per client address (IPv6: per /64)
    max_connections: int = 1024
    max_connections_per_ip: int = 128
    #: a request's headers (the WebSocket upgrade included) must be complete this long after the
    #: connection opened or the previous response; else the connection is closed
    request_timeout_s: int = 10


@dataclass(frozen=True)
class RtmpConfig:
    listen: HostPort | None = HostPort("127.0.0.1", 1935)
    max_chunk_size: int = 65536
    max_message_size: int = 1048576
    max_streams_per_connection: int = 8
    max_connections_per_ip: int = 20
    #: open RTMP/RTMPS connections in total
    max_connections: int = 256
    #: handshake + connect must be done this long after the connection opened
    handshake_timeout_s: int = 10
    #: nothing received for this long closes the connection (a ping is sent at half of it); 0 = off
    idle_timeout_s: int = 60
    #: a partly received message with no message completed for this long closes the connection
    partial_timeout_s: int = 10
    #: partly received (reassembled) message bytes held per connection, all chunk streams together
    max_buffer_bytes: int = 2097152
    #: a connection whose unsent data has waited this long gets no more audio until it drains
    #: (its players' audio is dropped, not queued: a slow reader hears a gap, not a growing delay)
    player_max_queue_ms: int = 1000
    #: a connection whose unsent data has waited this long is closed (a player that stopped reading)
    player_max_behind_s: int = 10
    #: SO_SNDBUF of a connection once it plays (bytes; 0 = the kernel's own, autotuned up to
    #: net.ipv4.tcp_wmem's maximum: minutes of audio that a stalled reader would get late)
    player_send_buffer: int = 16384
    #: failed plays (no such call, or not allowed) on one connection before it is closed; each
    #: also counts toward [limits] max_attempts_per_ip_per_minute
    play_failures_before_close: int = 3
    #: RTMPS (RTMP over TLS) listener ("" = off); needs tls_cert and tls_key
    tls_listen: HostPort | None = None
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class IceServerConfig:
    urls: tuple[str, ...]
    username: str = ""
    credential: str = field(default="", repr=False)


@dataclass(frozen=True)
class WebRtcConfig:
    #: STUN/TURN servers used by the gateway's peer connections and handed to browsers
    ice_servers: tuple[IceServerConfig, ...] = ()
    #: a call whose ICE/DTLS is not connected this long after the answer (or drops, or whose
    #: WebSocket is gone) is hung up
    ice_timeout_s: int = 15
    #: largest signalling message accepted (bytes of UTF-8 JSON)
    max_message_size: int = 65536
    #: a WebSocket without any message for this long is closed (clients ping every 20 s)
    idle_timeout_s: int = 60
    #: how much SIP audio may queue toward the browser before the oldest is dropped
    max_playout_ms: int = 200
    #: once DTLS is up, send and receive the call's audio RTP in webgate itself (no pacing
    #: queue, no aiortc jitter buffer or decoder thread; docs/performance.md); false keeps
    #: all media on aiortc's own path
    direct_audio: bool = True
    #: protocol errors tolerated on one connection before it is closed
    max_errors: int = 20
    #: open signalling WebSockets in total and per client address (past a cap: HTTP 503)
    max_connections: int = 512
    max_connections_per_ip: int = 32
    #: remote ICE candidates one call may give the gateway over its whole life (the offer's and
    #: trickled ones together); more are refused (trickled: error ``too_many_candidates``)
    max_remote_candidates: int = 64
    #: accept remote ICE candidates whose address is loopback, link-local, multicast, broadcast or
    #: unspecified, or an mDNS name (.local): the gateway would send ICE checks to itself or its
    #: link. Private ranges (RFC 1918, ULA) are always accepted. true only for tests on one machine
    allow_private_candidates: bool = False


@dataclass(frozen=True)
class TokensConfig:
    #: shared HMAC-SHA256 key for call tokens (JWT HS256); "" = tokens are refused and only
    #: public destinations can be called
    key: str = field(default="", repr=False)
    #: required "iss"/"aud" claims ("" = not checked)
    issuer: str = ""
    audience: str = ""
    #: clock skew tolerated on exp/nbf
    leeway_s: int = 30


@dataclass(frozen=True)
class ApiConfig:
    #: admin key for /api (sent as "Authorization: Bearer KEY", the only way); "" = /api is off
    admin_key: str = field(default="", repr=False)
    #: serve /metrics (Prometheus text) on the HTTP listener(s)
    metrics: bool = True


@dataclass(frozen=True)
class CdrConfig:
    #: one JSON line per finished call appended here ("" = no file)
    file: str = ""
    #: POST each CDR as JSON to this http(s) URL ("" = off)
    webhook_url: str = ""
    webhook_timeout_s: int = 5
    #: attempts after the first, with exponential backoff
    webhook_retries: int = 3


@dataclass(frozen=True)
class ShutdownConfig:
    #: on SIGTERM: stop taking calls, BYE live ones, and exit at the latest after this long
    timeout_s: int = 10


@dataclass(frozen=True)
class SipConfig:
    udp: HostPort | None = HostPort("127.0.0.1", 5060)
    tcp: HostPort | None = HostPort("127.0.0.1", 5060)
    tls: HostPort | None = None
    tls_cert: str = ""
    tls_key: str = ""
    #: PEM file of the CA(s) that sign the certificates of TLS peers we connect to; "" = system CAs
    tls_ca: str = ""
    #: host used in Via/Contact; "" = the bind address
    advertised_address: str = ""
    user_agent: str = f"webgate/{__version__}"
    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    max_message_size: int = 65535
    outbound_proxy: SipUri | None = None
    from_domain: str = ""
    #: SIP sources that may call registered web users: IPs, CIDRs, "trunks", "loopback"
    inbound_from: tuple[str, ...] = ("trunks", "loopback")
    #: send responses to a request's Via maddr (RFC 3261 18.2.2); false: always to the request's source
    honour_maddr: bool = False
    #: accepted SIP TCP/TLS connections, in total and per peer address (IPv6: per /64)
    max_connections: int = 256
    max_connections_per_ip: int = 32
    #: an accepted connection with nothing received for this long is closed; 0 = off
    idle_timeout_s: int = 120
    #: a partly received SIP message with no message completed for this long closes the connection
    partial_timeout_s: int = 10


@dataclass(frozen=True)
class RtpConfig:
    bind: str = "127.0.0.1"
    advertised_address: str = ""
    port_min: int = 20000
    port_max: int = 20999
    jitter_min_ms: int = 20
    jitter_max_ms: int = 200
    #: accept RTP/RTCP only from the far end's learnt source (the SDP's address, or a short
    #: in-sequence run from one address); packets from elsewhere are dropped and counted.
    #: false: any source is accepted (the address sent to follows the first one)
    strict_source: bool = True
    #: > 0: a learnt source silent this long is learnt again (probation again); 0 = only when a
    #: re-INVITE/UPDATE moves the far end's media
    relearn_after_s: int = 0

    @property
    def port_pairs(self) -> int:
        """How many (even RTP, odd RTCP) port pairs the range holds."""
        return (self.port_max - self.port_min + 1) // 2


@dataclass(frozen=True)
class SessionIdConfig:
    length: int = 10
    header: str = "X-Session-ID"
    mode: str = "header"  # "header", "caller_id" or "both"
    reuse_after_s: int = 3600


@dataclass(frozen=True)
class BuiltinConfig:
    enabled: bool = True
    tone_hz: int = 1000
    echo: str = "echo"
    tone: str = "tone"
    #: callable without a token (the embedded default: yes, and nothing else is)
    public: bool = True
    #: SIP sources (IPs, CIDRs, "trunks", "loopback") that may call echo/tone directly over SIP;
    #: the gateway's own calls (from web clients) are not affected
    sip_from: tuple[str, ...] = ("loopback",)


@dataclass(frozen=True)
class LimitsConfig:
    max_calls: int = 100
    #: 0 = no limit
    max_call_duration_s: int = 3600
    #: concurrent calls per token identity (0 = no limit)
    max_calls_per_identity: int = 10
    #: concurrent calls per client IP address (0 = no limit)
    max_calls_per_ip: int = 10
    #: call attempts per client IP address per minute, refused ones included (0 = no limit)
    max_attempts_per_ip_per_minute: int = 60


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"  # "text" or "json"
    level: str = "info"  # debug, info, warn, error, critical


@dataclass(frozen=True)
class TrunkConfig:
    name: str
    target: SipUri
    transport: str = "udp"
    username: str = ""
    password: str = field(default="", repr=False)
    auth_username: str = ""
    realm: str = ""
    register: bool = False
    register_expires: int = 300
    dtmf: str = "rfc4733"
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722", "opus")
    #: custom headers for INVITEs, in file order
    headers: tuple[tuple[str, str], ...] = ()
    from_user: str = ""
    from_display: str = ""


@dataclass(frozen=True)
class RouteMatch:
    """The result of :meth:`Config.route`: which route, which trunk, which request-URI user."""

    route: RouteConfig
    trunk: TrunkConfig
    user: str
    #: effective call duration limit in seconds (0 = none)
    max_duration_s: int


@dataclass(frozen=True)
class RouteConfig:
    pattern: str
    trunk: str
    rewrite: str = "{dest}"
    public: bool = False
    #: 0 = the global limit (limits.max_call_duration_s)
    max_duration_s: int = 0
    regex: re.Pattern[str] = field(default=re.compile(""), repr=False, compare=False)

    def rewrite_for(self, dest: str) -> str | None:
        """The request-URI user for ``dest``, or None if the pattern does not match."""
        m = self.regex.fullmatch(dest)
        if m is None:
            return None
        return _apply_rewrite(self.rewrite, m)


@dataclass(frozen=True)
class Config:
    http: HttpConfig = HttpConfig()
    rtmp: RtmpConfig = RtmpConfig()
    sip: SipConfig = SipConfig()
    rtp: RtpConfig = RtpConfig()
    session_id: SessionIdConfig = SessionIdConfig()
    builtin: BuiltinConfig = BuiltinConfig()
    limits: LimitsConfig = LimitsConfig()
    log: LogConfig = LogConfig()
    webrtc: WebRtcConfig = WebRtcConfig()
    tokens: TokensConfig = TokensConfig()
    api: ApiConfig = ApiConfig()
    cdr: CdrConfig = CdrConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    trunks: tuple[TrunkConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    #: where it came from: a file path, or "<default>"
    source: str = field(default="<default>", compare=False)

    def trunk(self, name: str) -> TrunkConfig:
        for t in self.trunks:
            if t.name == name:
                return t
        raise KeyError(name)

    def route(self, dest: str) -> RouteMatch | None:
        """The dial plan: the first route whose pattern fully matches ``dest``.

        Builtin destinations (``builtin.echo``/``builtin.tone``) are not routes; the
        caller checks them first. None means the destination is not callable.
        """
        for r in self.routes:
            user = r.rewrite_for(dest)
            if user is not None:
                limit = r.max_duration_s or self.limits.max_call_duration_s
                return RouteMatch(r, self.trunk(r.trunk), user, limit)
        return None


# ---------------------------------------------------------------------------
# The embedded default. webgate.example.toml documents the same values; a test
# checks the two agree.

DEFAULT_TOML = f"""\
[http]
listen = "127.0.0.1:8080"
tls_listen = ""
tls_cert = ""
tls_key = ""
allowed_origins = []
max_connections = 1024
max_connections_per_ip = 128
request_timeout_s = 10

[rtmp]
listen = "127.0.0.1:1935"
max_chunk_size = 65536
max_message_size = 1048576
max_streams_per_connection = 8
max_connections_per_ip = 20
max_connections = 256
handshake_timeout_s = 10
idle_timeout_s = 60
partial_timeout_s = 10
max_buffer_bytes = 2097152
player_max_queue_ms = 1000
player_max_behind_s = 10
player_send_buffer = 16384
play_failures_before_close = 3
tls_listen = ""
tls_cert = ""
tls_key = ""

[sip]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"
tls = ""
tls_cert = ""
tls_key = ""
tls_ca = ""
advertised_address = ""
user_agent = "webgate/{__version__}"
t1_ms = 500
t2_ms = 4000
t4_ms = 5000
max_message_size = 65535
outbound_proxy = ""
from_domain = ""
inbound_from = ["trunks", "loopback"]
honour_maddr = false
max_connections = 256
max_connections_per_ip = 32
idle_timeout_s = 120
partial_timeout_s = 10

[rtp]
bind = "127.0.0.1"
advertised_address = ""
port_min = 20000
port_max = 20999
jitter_min_ms = 20
jitter_max_ms = 200
strict_source = true
relearn_after_s = 0

[session_id]
length = 10
header = "X-Session-ID"
mode = "header"
reuse_after_s = 3600

[builtin]
enabled = true
tone_hz = 1000
echo = "echo"
tone = "tone"
public = true
sip_from = ["loopback"]

[limits]
max_calls = 100
max_call_duration_s = 3600
max_calls_per_identity = 10
max_calls_per_ip = 10
max_attempts_per_ip_per_minute = 60

[log]
format = "text"
level = "info"

[webrtc]
ice_servers = []
ice_timeout_s = 15
max_message_size = 65536
idle_timeout_s = 60
max_playout_ms = 200
direct_audio = true
max_errors = 20
max_connections = 512
max_connections_per_ip = 32
max_remote_candidates = 64
allow_private_candidates = false

[tokens]
key = ""
issuer = ""
audience = ""
leeway_s = 30

[api]
admin_key = ""
metrics = true

[cdr]
file = ""
webhook_url = ""
webhook_timeout_s = 5
webhook_retries = 3

[shutdown]
timeout_s = 10
"""

KNOWN_CODECS = ("PCMU", "PCMA", "G722", "opus", "GSM", "speex", "speex/16000")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
# Headers the SIP UA writes itself; a trunk may not set them.
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Content-Length", "l", "Content-Type", "c", "Max-Forwards", "Route", "Record-Route", "Authorization", "Proxy-Authorization", "Content-Encoding", "e", "Supported", "k", "Allow"]
)

# RFC 3261 token: 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?"
)
# user part of a SIP URI: unreserved / escaped / user-unreserved (RFC 3261 25.1)
_SIP_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


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


def _apply_rewrite(rewrite: str, m: re.Match[str]) -> str:
    groups = [g if g is not None else "" for g in m.groups()]
    named = {k: (v if v is not None else "") for k, v in m.groupdict().items()}
    return rewrite.format(m.group(0), *groups, **{**named, "dest": m.string})


# ---------------------------------------------------------------------------
# The validator


class _Section:
    """Reads one table, checks types, records errors naming ``prefix.key``."""

    def __init__(self, v: _Validator, prefix: str, table: Any, defaults: Any = None) -> None:
        self.v = v
        self.prefix = prefix
        self.defaults = defaults
        if not isinstance(table, Mapping):
            v.err(prefix, f"must be a table, not {_tname(table)}")
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
                return _MISSING
            return getattr(self.defaults, name)
        value = self.table[name]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            self.v.err(self.key(name), f"must be {what}, not {_tname(value)} {value!r}")
            return _MISSING
        return value

    def str(self, name: str, required: bool = False, check: Callable[[str], str | None] | None = None) -> Any:
        value = self._get(name, (str,), "a string", required)
        if isinstance(value, str) and check is not None:
            problem = check(value)
            if problem:
                self.v.err(self.key(name), problem)
                return _MISSING
        return value

    def int(self, name: str, lo: int | None = None, hi: int | None = None) -> Any:
        value = self._get(name, (int,), "an integer", False)
        if isinstance(value, int) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                self.v.err(self.key(name), f"{value} is out of range ({rng})")
                return _MISSING
        return value

    def bool(self, name: str) -> Any:
        return self._get(name, (bool,), "true or false", False)

    def choice(self, name: str, choices: tuple[str, ...]) -> Any:
        value = self._get(name, (str,), "a string", False)
        if isinstance(value, str) and value not in choices:
            self.v.err(self.key(name), f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
            return _MISSING
        return value

    def listen(self, name: str) -> Any:
        """A "HOST:PORT" listener; "" = off (None)."""
        self.known.add(name)
        if name not in self.table:
            return getattr(self.defaults, name)
        value = self.table[name]
        if not isinstance(value, str):
            self.v.err(self.key(name), f"must be a string \"HOST:PORT\", not {_tname(value)} {value!r}")
            return _MISSING
        if value == "":
            return None
        try:
            return parse_host_port(value)
        except ValueError:
            self.v.err(self.key(name), f"invalid address {value!r} (expected \"HOST:PORT\", IPv6 as \"[::1]:5060\")")
            return _MISSING

    def finish(self) -> None:
        for k in self.table:
            if k not in self.known:
                self.v.err(self.key(k), "unknown key")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _tname(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _check_host(value: str) -> str | None:
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


def _check_optional_host(value: str) -> str | None:
    return None if value == "" else _check_host(value)


def _check_text(value: str) -> str | None:
    if _CONTROL_RE.search(value):
        return "must not contain control characters (CR, LF, ...)"
    return None


def _check_nonempty_text(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return _check_text(value)


def _check_token(value: str) -> str | None:
    if not _TOKEN_RE.fullmatch(value):
        return f"{value!r} is not a valid SIP header name (token)"
    return None


def _check_sip_user(value: str) -> str | None:
    if value and not _SIP_USER_RE.fullmatch(value):
        return f"{value!r} is not a valid SIP URI user part"
    return None


def _check_dest_name(value: str) -> str | None:
    if not value or not _SIP_USER_RE.fullmatch(value):
        return f"{value!r} is not a valid destination name"
    return None


def _check_file(value: str) -> str | None:
    if value and not Path(value).is_file():
        return f"file not found: {value!r}"
    return None


_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9\-.\[\]:]+(?::\d{1,5})?/?", re.IGNORECASE)
_ICE_URL_RE = re.compile(r"(?:stuns?|turns?):[^\s]+", re.IGNORECASE)
_HTTP_URL_RE = re.compile(r"https?://[^\s]+", re.IGNORECASE)


#: shortest call-token key accepted (HMAC-SHA256), here and by ``webgate token``
MIN_TOKEN_KEY_BYTES = 32


def _check_token_key(value: str) -> str | None:
    if value and len(value.encode()) < MIN_TOKEN_KEY_BYTES:
        return "must be at least 32 bytes (HMAC-SHA256 key); generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    return _check_text(value)


def _check_admin_key(value: str) -> str | None:
    if value and len(value) < 16:
        return "must be at least 16 characters"
    return _check_text(value)


def _check_http_url(value: str) -> str | None:
    if value and not _HTTP_URL_RE.fullmatch(value):
        return f"{value!r} is not an http:// or https:// URL"
    return None


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class _Validator:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.trunk_names: set[str] = set()

    def err(self, key: str, message: str) -> None:
        self.errors.append(f"{key}: {message}")

    def build(self, cls: Callable[..., T], values: dict[str, Any]) -> T | Any:
        if any(v is _MISSING for v in values.values()):
            return _MISSING
        return cls(**values)

    def config(self, data: Mapping[str, Any], source: str) -> Config:
        sections = {
            "http", "rtmp", "sip", "rtp", "session_id", "builtin", "limits", "log", "trunk", "route",
            "webrtc", "tokens", "api", "cdr", "shutdown",
        }
        for k in data:
            if k not in sections:
                self.err(k, "unknown section" if isinstance(data[k], Mapping) else "unknown key")

        s = _Section(self, "http", data.get("http", {}), HttpConfig())
        http = self.build(
            HttpConfig,
            dict(
                listen=s.listen("listen"),
                **self.tls_listener(s),
                allowed_origins=self.origins(s),
                max_connections=s.int("max_connections", 0, 1000000),
                max_connections_per_ip=s.int("max_connections_per_ip", 0, 1000000),
                request_timeout_s=s.int("request_timeout_s", 1, 3600),
            ),
        )
        s.finish()

        s = _Section(self, "rtmp", data.get("rtmp", {}), RtmpConfig())
        rtmp = self.build(
            RtmpConfig,
            dict(
                listen=s.listen("listen"),
                max_chunk_size=s.int("max_chunk_size", 128, 0xFFFFFF),
                max_message_size=s.int("max_message_size", 128, 0xFFFFFF),
                max_streams_per_connection=s.int("max_streams_per_connection", 1, 1000),
                max_connections_per_ip=s.int("max_connections_per_ip", 1, 100000),
                max_connections=s.int("max_connections", 0, 1000000),
                handshake_timeout_s=s.int("handshake_timeout_s", 1, 3600),
                idle_timeout_s=s.int("idle_timeout_s", 0, 86400),
                partial_timeout_s=s.int("partial_timeout_s", 1, 3600),
                max_buffer_bytes=s.int("max_buffer_bytes", 128, 1 << 30),
                player_max_queue_ms=s.int("player_max_queue_ms", 20, 60000),
                player_max_behind_s=s.int("player_max_behind_s", 1, 3600),
                player_send_buffer=s.int("player_send_buffer", 0, 1 << 26),
                play_failures_before_close=s.int("play_failures_before_close", 1, 1000),
                **self.tls_listener(s),
            ),
        )
        s.finish()
        if rtmp is not _MISSING and rtmp.max_buffer_bytes < rtmp.max_message_size:
            self.err("rtmp.max_buffer_bytes", f"{rtmp.max_buffer_bytes} must be >= rtmp.max_message_size ({rtmp.max_message_size})")

        sip = self.sip(data.get("sip", {}))
        rtp = self.rtp(data.get("rtp", {}))

        s = _Section(self, "session_id", data.get("session_id", {}), SessionIdConfig())
        session_id = self.build(
            SessionIdConfig,
            dict(
                length=s.int("length", 8, 10),
                header=s.str("header", check=_check_token),
                mode=s.choice("mode", ("header", "caller_id", "both")),
                reuse_after_s=s.int("reuse_after_s", 0),
            ),
        )
        s.finish()

        s = _Section(self, "builtin", data.get("builtin", {}), BuiltinConfig())
        builtin = self.build(
            BuiltinConfig,
            dict(
                enabled=s.bool("enabled"),
                tone_hz=s.int("tone_hz", 20, 3999),
                echo=s.str("echo", check=_check_dest_name),
                tone=s.str("tone", check=_check_dest_name),
                public=s.bool("public"),
                sip_from=self.source_list(s, "sip_from"),
            ),
        )
        s.finish()
        if builtin is not _MISSING and builtin.echo == builtin.tone:
            self.err("builtin.tone", f"must differ from builtin.echo (both {builtin.echo!r})")

        s = _Section(self, "limits", data.get("limits", {}), LimitsConfig())
        limits = self.build(
            LimitsConfig,
            dict(
                max_calls=s.int("max_calls", 1),
                max_call_duration_s=s.int("max_call_duration_s", 0),
                max_calls_per_identity=s.int("max_calls_per_identity", 0),
                max_calls_per_ip=s.int("max_calls_per_ip", 0),
                max_attempts_per_ip_per_minute=s.int("max_attempts_per_ip_per_minute", 0),
            ),
        )
        s.finish()

        s = _Section(self, "log", data.get("log", {}), LogConfig())
        level = s.choice("level", LOG_LEVELS + ("warning",))
        log = self.build(
            LogConfig,
            dict(format=s.choice("format", ("text", "json")), level="warn" if level == "warning" else level),
        )
        s.finish()

        s = _Section(self, "webrtc", data.get("webrtc", {}), WebRtcConfig())
        webrtc = self.build(
            WebRtcConfig,
            dict(
                ice_servers=self.ice_servers(s),
                ice_timeout_s=s.int("ice_timeout_s", 1, 3600),
                max_message_size=s.int("max_message_size", 1024, 1 << 24),
                idle_timeout_s=s.int("idle_timeout_s", 1, 86400),
                max_playout_ms=s.int("max_playout_ms", 20, 10000),
                direct_audio=s.bool("direct_audio"),
                max_errors=s.int("max_errors", 1, 100000),
                max_connections=s.int("max_connections", 0, 1000000),
                max_connections_per_ip=s.int("max_connections_per_ip", 0, 1000000),
                max_remote_candidates=s.int("max_remote_candidates", 1, 1000),
                allow_private_candidates=s.bool("allow_private_candidates"),
            ),
        )
        s.finish()

        s = _Section(self, "tokens", data.get("tokens", {}), TokensConfig())
        tokens = self.build(
            TokensConfig,
            dict(
                key=s.str("key", check=_check_token_key),
                issuer=s.str("issuer", check=_check_text),
                audience=s.str("audience", check=_check_text),
                leeway_s=s.int("leeway_s", 0, 3600),
            ),
        )
        s.finish()

        s = _Section(self, "api", data.get("api", {}), ApiConfig())
        api = self.build(ApiConfig, dict(admin_key=s.str("admin_key", check=_check_admin_key), metrics=s.bool("metrics")))
        s.finish()

        s = _Section(self, "cdr", data.get("cdr", {}), CdrConfig())
        cdr = self.build(
            CdrConfig,
            dict(
                file=s.str("file", check=_check_text),
                webhook_url=s.str("webhook_url", check=_check_http_url),
                webhook_timeout_s=s.int("webhook_timeout_s", 1, 600),
                webhook_retries=s.int("webhook_retries", 0, 100),
            ),
        )
        s.finish()

        s = _Section(self, "shutdown", data.get("shutdown", {}), ShutdownConfig())
        shutdown = self.build(ShutdownConfig, dict(timeout_s=s.int("timeout_s", 1, 3600)))
        s.finish()

        trunks = self.trunks(data.get("trunk", []))
        routes = self.routes(data.get("route", []), trunks)

        if self.errors:
            raise ConfigError(self.errors, source)
        return Config(
            http=http,
            rtmp=rtmp,
            sip=sip,
            rtp=rtp,
            session_id=session_id,
            builtin=builtin,
            limits=limits,
            log=log,
            webrtc=webrtc,
            tokens=tokens,
            api=api,
            cdr=cdr,
            shutdown=shutdown,
            trunks=tuple(trunks),
            routes=tuple(routes),
            source=source,
        )

    def tls_listener(self, s: _Section) -> dict[str, Any]:
        """``tls_listen``/``tls_cert``/``tls_key`` of an HTTP or RTMP section."""
        values = dict(
            tls_listen=s.listen("tls_listen"),
            tls_cert=s.str("tls_cert", check=_check_file),
            tls_key=s.str("tls_key", check=_check_file),
        )
        if values["tls_listen"] not in (None, _MISSING):
            for k in ("tls_cert", "tls_key"):
                if values[k] == "":
                    self.err(s.key(k), "is required when tls_listen is set")
        return values

    def source_list(self, s: _Section, key: str) -> Any:
        """An allow-list of SIP sources (``[sip] inbound_from``, ``[builtin] sip_from``): IP
        addresses, CIDR networks, "trunks", "loopback"."""
        s.known.add(key)
        if key not in s.table:
            return getattr(s.defaults, key)
        value = s.table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.err(s.key(key), f"must be an array of strings, not {value!r}")
            return _MISSING
        out: list[str] = []
        for v in value:
            word = v.strip().lower()
            if word not in ("trunks", "loopback"):
                try:
                    ipaddress.ip_network(word.strip("[]"), strict=False)
                except ValueError:
                    self.err(s.key(key), f"{v!r} is not an IP address, a network (CIDR), \"trunks\" or \"loopback\"")
                    return _MISSING
            out.append(word)
        return tuple(out)

    def origins(self, s: _Section) -> Any:
        s.known.add("allowed_origins")
        if "allowed_origins" not in s.table:
            return s.defaults.allowed_origins
        value = s.table["allowed_origins"]
        if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
            self.err(s.key("allowed_origins"), f"must be an array of strings, not {value!r}")
            return _MISSING
        out: list[str] = []
        for o in value:
            if o != "*" and not _ORIGIN_RE.fullmatch(o):
                self.err(s.key("allowed_origins"), f"{o!r} is not an origin (e.g. \"https://www.example.com\" or \"*\")")
                return _MISSING
            out.append(o.rstrip("/").lower())
        return tuple(out)

    def ice_servers(self, s: _Section) -> Any:
        s.known.add("ice_servers")
        if "ice_servers" not in s.table:
            return s.defaults.ice_servers
        value = s.table["ice_servers"]
        if not isinstance(value, list):
            self.err(s.key("ice_servers"), f"must be an array of tables ([[webrtc.ice_servers]]), not {_tname(value)}")
            return _MISSING
        out: list[IceServerConfig] = []
        ok = True
        for i, item in enumerate(value):
            t = _Section(self, f"{s.key('ice_servers')}[{i}]", item, IceServerConfig(urls=()))
            t.known.add("urls")
            urls = t.table.get("urls")
            if isinstance(urls, str):
                urls = [urls]
            if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and _ICE_URL_RE.fullmatch(u) for u in urls):
                self.err(t.key("urls"), f"must be a stun:/stuns:/turn:/turns: URL or an array of them, not {t.table.get('urls')!r}")
                ok = False
            username = t.str("username", check=_check_text)
            credential = t.str("credential", check=_check_text)
            t.finish()
            if ok and username is not _MISSING and credential is not _MISSING:
                out.append(IceServerConfig(tuple(urls), username, credential))
        return tuple(out) if ok else _MISSING

    def sip(self, table: Any) -> Any:
        s = _Section(self, "sip", table, SipConfig())

        def proxy(value: str) -> Any:
            if value == "":
                return None
            try:
                return parse_sip_uri(value)
            except ValueError:
                self.err("sip.outbound_proxy", f"invalid SIP URI {value!r} (e.g. \"sip:proxy.example.com:5060\")")
                return _MISSING

        values = dict(
            udp=s.listen("udp"),
            tcp=s.listen("tcp"),
            tls=s.listen("tls"),
            tls_cert=s.str("tls_cert", check=_check_file),
            tls_key=s.str("tls_key", check=_check_file),
            tls_ca=s.str("tls_ca", check=_check_file),
            advertised_address=s.str("advertised_address", check=_check_optional_host),
            user_agent=s.str("user_agent", check=_check_nonempty_text),
            t1_ms=s.int("t1_ms", 1, 60000),
            t2_ms=s.int("t2_ms", 1, 600000),
            t4_ms=s.int("t4_ms", 1, 600000),
            max_message_size=s.int("max_message_size", 1500, 1 << 20),
            outbound_proxy=s.str("outbound_proxy"),
            from_domain=s.str("from_domain", check=_check_optional_host),
            inbound_from=self.source_list(s, "inbound_from"),
            honour_maddr=s.bool("honour_maddr"),
            max_connections=s.int("max_connections", 0, 1000000),
            max_connections_per_ip=s.int("max_connections_per_ip", 0, 1000000),
            idle_timeout_s=s.int("idle_timeout_s", 0, 86400),
            partial_timeout_s=s.int("partial_timeout_s", 1, 3600),
        )
        s.finish()
        if isinstance(values["outbound_proxy"], str):
            values["outbound_proxy"] = proxy(values["outbound_proxy"])
        if isinstance(values["advertised_address"], str):
            values["advertised_address"] = _strip_brackets(values["advertised_address"])
        t1, t2 = values["t1_ms"], values["t2_ms"]
        if isinstance(t1, int) and isinstance(t2, int) and t2 < t1:
            self.err("sip.t2_ms", f"{t2} must be >= sip.t1_ms ({t1})")
        if values["tls"] not in (None, _MISSING):
            for k in ("tls_cert", "tls_key"):
                if values[k] == "":
                    self.err(f"sip.{k}", "is required when sip.tls is set")
        return self.build(SipConfig, values)

    def rtp(self, table: Any) -> Any:
        s = _Section(self, "rtp", table, RtpConfig())
        values = dict(
            bind=s.str("bind", check=_check_host),
            advertised_address=s.str("advertised_address", check=_check_optional_host),
            port_min=s.int("port_min", 1024, 65534),
            port_max=s.int("port_max", 1025, 65535),
            jitter_min_ms=s.int("jitter_min_ms", 0, 10000),
            jitter_max_ms=s.int("jitter_max_ms", 1, 10000),
            strict_source=s.bool("strict_source"),
            relearn_after_s=s.int("relearn_after_s", 0, 86400),
        )
        s.finish()
        for k in ("bind", "advertised_address"):
            if isinstance(values[k], str):
                values[k] = _strip_brackets(values[k])
        lo, hi = values["port_min"], values["port_max"]
        if isinstance(lo, int) and lo % 2:
            self.err("rtp.port_min", f"{lo} must be even (RTP even, RTCP odd)")
        if isinstance(lo, int) and isinstance(hi, int) and hi <= lo:
            self.err("rtp.port_max", f"{hi} must be greater than rtp.port_min ({lo})")
        jlo, jhi = values["jitter_min_ms"], values["jitter_max_ms"]
        if isinstance(jlo, int) and isinstance(jhi, int) and jhi < jlo:
            self.err("rtp.jitter_max_ms", f"{jhi} must be >= rtp.jitter_min_ms ({jlo})")
        return self.build(RtpConfig, values)

    def trunks(self, items: Any) -> list[TrunkConfig]:
        if not isinstance(items, list):
            self.err("trunk", "must be an array of tables ([[trunk]])")
            return []
        out: list[TrunkConfig] = []
        seen: set[str] = set()
        defaults = TrunkConfig(name="", target=SipUri("sip", "", "x", None, "", "sip:x"))
        for i, item in enumerate(items):
            s = _Section(self, f"trunk[{i}]", item, defaults)
            name = s.str("name", required=True)
            if isinstance(name, str):
                if not _NAME_RE.fullmatch(name):
                    self.err(s.key("name"), f"{name!r} is not a valid name (letters, digits, '_', '.', '-')")
                elif name in seen:
                    self.err(s.key("name"), f"duplicate trunk name {name!r}")
                seen.add(name)
                self.trunk_names.add(name)
            target = s.str("target", required=True)
            if isinstance(target, str):
                try:
                    target = parse_sip_uri(target)
                except ValueError:
                    self.err(s.key("target"), f"invalid SIP URI {target!r} (e.g. \"sip:pbx.example.com:5060\")")
                    target = _MISSING
            values = dict(
                name=name,
                target=target,
                transport=s.choice("transport", ("udp", "tcp", "tls")),
                username=s.str("username", check=_check_sip_user),
                password=s.str("password", check=_check_text),
                auth_username=s.str("auth_username", check=_check_text),
                realm=s.str("realm", check=_check_text),
                register=s.bool("register"),
                register_expires=s.int("register_expires", 60, 86400),
                dtmf=s.choice("dtmf", ("rfc4733", "info")),
                codecs=self.codecs(s),
                headers=self.headers(s),
                from_user=s.str("from_user", check=_check_sip_user),
                from_display=s.str("from_display", check=_check_text),
            )
            s.finish()
            if values["register"] is True and values["username"] == "":
                self.err(s.key("username"), "is required when register = true")
            if isinstance(target, SipUri) and target.scheme == "sips" and values["transport"] not in ("tls", _MISSING):
                self.err(s.key("transport"), "must be \"tls\" for a sips: target")
            t = self.build(TrunkConfig, values)
            if t is not _MISSING:
                out.append(t)
        return out

    def codecs(self, s: _Section) -> Any:
        s.known.add("codecs")
        if "codecs" not in s.table:
            return s.defaults.codecs
        value = s.table["codecs"]
        canon = {c.lower(): c for c in KNOWN_CODECS}
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            self.err(s.key("codecs"), f"must be a non-empty array of strings, not {value!r}")
            return _MISSING
        out: list[str] = []
        for c in value:
            if c.lower() not in canon:
                self.err(s.key("codecs"), f"unknown codec {c!r} (known: {', '.join(KNOWN_CODECS)})")
                return _MISSING
            if canon[c.lower()] in out:
                self.err(s.key("codecs"), f"duplicate codec {c!r}")
                return _MISSING
            out.append(canon[c.lower()])
        return tuple(out)

    def headers(self, s: _Section) -> Any:
        s.known.add("headers")
        if "headers" not in s.table:
            return ()
        value = s.table["headers"]
        if not isinstance(value, Mapping):
            self.err(s.key("headers"), f"must be a table of header = \"value\", not {_tname(value)}")
            return _MISSING
        out: list[tuple[str, str]] = []
        ok = True
        for name, val in value.items():
            key = f"{s.key('headers')}.{name}"
            if not _TOKEN_RE.fullmatch(name):
                self.err(key, f"{name!r} is not a valid SIP header name (token)")
                ok = False
            elif name.lower() in _RESERVED_HEADERS:
                self.err(key, f"{name!r} is set by the SIP stack and cannot be configured")
                ok = False
            elif not isinstance(val, str):
                self.err(key, f"must be a string, not {_tname(val)}")
                ok = False
            elif _CONTROL_RE.sub("", val.replace("\t", " ")) != val.replace("\t", " "):
                self.err(key, "value must not contain CR, LF or other control characters")
                ok = False
            else:
                out.append((name, val))
        return tuple(out) if ok else _MISSING

    def routes(self, items: Any, trunks: list[TrunkConfig]) -> list[RouteConfig]:
        if not isinstance(items, list):
            self.err("route", "must be an array of tables ([[route]])")
            return []
        names = self.trunk_names  # including trunks that had other errors
        out: list[RouteConfig] = []
        defaults = RouteConfig(pattern="", trunk="")
        for i, item in enumerate(items):
            s = _Section(self, f"route[{i}]", item, defaults)
            pattern = s.str("pattern", required=True)
            regex: Any = _MISSING
            if isinstance(pattern, str):
                try:
                    regex = re.compile(pattern)
                except re.error as e:
                    self.err(s.key("pattern"), f"invalid regular expression {pattern!r}: {e}")
            trunk = s.str("trunk", required=True)
            if isinstance(trunk, str) and trunk not in names:
                self.err(s.key("trunk"), f"no trunk named {trunk!r}")
            rewrite = s.str("rewrite")
            if isinstance(rewrite, str) and regex is not _MISSING:
                problem = _check_rewrite(rewrite, regex)
                if problem:
                    self.err(s.key("rewrite"), problem)
                    rewrite = _MISSING
            values = dict(
                pattern=pattern,
                trunk=trunk,
                rewrite=rewrite,
                public=s.bool("public"),
                max_duration_s=s.int("max_duration_s", 0),
                regex=regex,
            )
            s.finish()
            r = self.build(RouteConfig, values)
            if r is not _MISSING:
                out.append(r)
        return out


def _check_rewrite(rewrite: str, regex: re.Pattern[str]) -> str | None:
    try:
        parsed = list(string.Formatter().parse(rewrite))
    except ValueError as e:
        return f"invalid format string {rewrite!r}: {e}"
    allowed = {"dest", *map(str, range(regex.groups + 1)), *regex.groupindex}
    for _literal, fname, spec, conv in parsed:
        if fname is None:
            continue
        if fname not in allowed:
            return (
                f"unknown field {{{fname}}} in {rewrite!r} (use {{dest}}, {{0}}..{{{regex.groups}}}"
                + "".join(f", {{{n}}}" for n in regex.groupindex)
                + ")"
            )
        if spec or conv:
            return f"format specs and conversions are not allowed in {rewrite!r}"
    if not any(fname is not None for _l, fname, _s, _c in parsed) and not rewrite:
        return "must not be empty"
    return None


# ---------------------------------------------------------------------------
# Public entry points

#: command-line override keys (dotted) accepted by :func:`load_config`
OVERRIDABLE = frozenset(
    f"{section}.{f.name}"
    for section, cls in (
        ("http", HttpConfig),
        ("rtmp", RtmpConfig),
        ("sip", SipConfig),
        ("rtp", RtpConfig),
        ("session_id", SessionIdConfig),
        ("builtin", BuiltinConfig),
        ("limits", LimitsConfig),
        ("log", LogConfig),
        ("webrtc", WebRtcConfig),
        ("tokens", TokensConfig),
        ("api", ApiConfig),
        ("cdr", CdrConfig),
        ("shutdown", ShutdownConfig),
    )
    for f in fields(cls)
    if f.name not in ("ice_servers", "allowed_origins", "inbound_from", "sip_from")
)


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate an already-parsed TOML mapping. Raises :class:`ConfigError`."""
    return _Validator().config(data, source)


def default_config() -> Config:
    """The embedded default configuration (no file, no PBX: builtin destinations only)."""
    return parse_config(tomllib.loads(DEFAULT_TOML), "<default>")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load ``path`` (or the embedded default), apply ``overrides``, validate.

    ``overrides`` maps dotted keys (``"sip.udp"``, ``"rtp.port_min"``) to values as they
    would appear in the file; they win over the file. Raises :class:`ConfigError`.
    """
    if path is None:
        data: dict[str, Any] = tomllib.loads(DEFAULT_TOML)
        source = "<default>"
    else:
        source = str(path)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError([f"cannot read: {e.strerror or e}"], source) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([f"invalid TOML: {e}"], source) from None
        except UnicodeDecodeError as e:  # tomllib.load decodes the file as UTF-8 first
            raise ConfigError([f"invalid TOML: not UTF-8 (byte {e.start})"], source) from None
    for key, value in (overrides or {}).items():
        if key not in OVERRIDABLE:
            raise ConfigError([f"{key}: cannot be overridden"], source)
        section, name = key.split(".", 1)
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError([f"{section}: must be a table"], source)
        table[name] = value
    return parse_config(data, source)

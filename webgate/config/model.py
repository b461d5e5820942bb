"""The configuration's data: frozen dataclasses, one per TOML section, and :class:`Config`.

Every field's default here is the embedded default (:data:`webgate.config.defaults.DEFAULT_TOML`
states the same values; a test checks they agree). Nothing here reads or checks a file: that
is :mod:`webgate.config.validate`. Secrets (trunk passwords, keys) are kept out of ``repr()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from webgate import __version__

#: the codec names a ``[[trunk]]`` may list, in their canonical spelling
KNOWN_CODECS = ("PCMU", "PCMA", "G722", "opus", "GSM", "speex", "speex/16000",
                "G729", "AMR", "AMR-WB", "G726-32", "AAL2-G726-32", "G723")
#: the values of ``[log] level``
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


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
class VideoConfig:
    """A web call's video and data, watched by session ID (docs/protocol.md "Who may watch")."""

    #: watchers one call may have at once (agent, supervisor, ...); one more gets too_many_watchers
    max_watchers_per_call: int = 4
    #: the bitrate bound sent to a WebRTC caller (REMB), lowered to the lowest watcher's estimate
    max_bitrate_kbps: int = 1500
    #: decode and re-encode (to VP8) the video a WebRTC watcher cannot take as it comes (Sorenson,
    #: VP6 from RTMP), only while such a watcher exists; false: that watcher gets data only
    transcode: bool = False
    #: a data-channel or RTMP data message larger than this is dropped and counted
    max_data_bytes: int = 65536
    #: data messages per second one sender (the caller, each watcher) may relay (bursts of twice
    #: as many); more are dropped and counted
    data_rate_per_s: int = 100


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


#: ``[[route]] record`` and the token claim ``record``: what of a call is recorded
RECORD_MODES = ("off", "audio", "audio+video")


@dataclass(frozen=True)
class RecordingConfig:
    """``[recording]`` (docs/recording.md): where and how calls are recorded; whether a call is
    recorded is its route's ``record`` (and the token claim ``record``)."""

    #: the directory the recordings go under
    dir: str = "recordings"
    #: each recording's path under ``dir`` without extension; must contain ``{session_id}``
    path: str = "{date}/{session_id}"
    #: "wav" (16-bit PCM, crash safe) or "ogg" (Opus)
    format: str = "wav"
    #: a recording does not start while the disk of ``dir`` has less than this free
    min_free_mb: int = 500
    #: how often the file is written and its header made whole (seconds)
    flush_s: float = 1.0
    #: a short beep to both parties every this many seconds while recording (0 = off)
    record_beep_s: int = 0
    #: a WAV file played to both parties when recording starts ("" = none)
    record_announcement: str = ""
    #: at start, repair the recordings a crash left unfinished in this many recent days (0 = off)
    repair_days: int = 2


@dataclass(frozen=True)
class ShutdownConfig:
    #: on SIGTERM: stop taking calls, BYE live ones, and exit at the latest after this long
    timeout_s: int = 10


#: ``[cluster] on_redis_down`` values: "refuse" answers new calls ``cluster_unavailable`` (HTTP/SIP
#: 503); "local" places them with session IDs from this node's own prefix
ON_REDIS_DOWN = ("refuse", "local")


@dataclass(frozen=True)
class ClusterConfig:
    """This process as one node of a cluster sharing its state in Redis (docs/cluster.md)."""

    #: false: one process, no Redis (the embedded default)
    enabled: bool = False
    #: may hold a password (redis://:PASSWORD@HOST:PORT/DB): kept out of repr()
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    #: this node's name in the cluster; "" = host name ":" HTTP port (SIP port without HTTP)
    node_id: str = ""
    #: the node's WebSocket URL for clients (ws[s]://HOST:PORT/ws); "" = from [http] listen
    ws_url: str = ""
    #: the node's RTMP URL for clients (rtmp[s]://HOST:PORT); "" = from [rtmp] listen
    rtmp_url: str = ""
    #: the node's SIP address as Kamailio sees it (sip:HOST:PORT); "" = from [sip] udp
    sip_contact: str = ""
    #: how often the node refreshes its keys in Redis
    heartbeat_s: float = 2.0
    #: a silent node's calls, counts and users disappear from Redis after this long
    node_ttl_s: float = 6.0
    #: new calls while Redis is unreachable: "refuse" (cluster_unavailable) or "local"
    on_redis_down: str = "refuse"
    #: Kamailio's registrar (sip:HOST[:PORT]) at which the node REGISTERs its web users; "" = none
    registrar: str = ""


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
    #: SIP written to a TCP/TLS peer that does not read, past Twisted's buffer, before the connection is aborted
    max_send_buffer: int = 262144
    #: ... or seconds its buffer may stay full
    send_stall_s: int = 30
    #: DNS servers for trunks and proxies named by DNS name (RFC 3263 NAPTR/SRV/A); () = the system's
    dns_servers: tuple[HostPort, ...] = ()
    #: a located server (RFC 3263) that sends nothing back to an INVITE/REGISTER for this long is
    #: given up for the next one (before Timer B/F); 0 = wait for Timer B/F
    failover_timeout_s: float = 4.0


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
    #: how media sockets are read: "native" (the loop reader in C, relaying a packet-path call's
    #: audio there: webgate/adapters/native_reader.py), "loop" (one event-loop reader in Python
    #: draining every RTP/RTCP port and a directly relayed WebRTC call's ICE socket) or "twisted"
    #: (a Twisted/asyncio reader each)
    media_io: str = "native"
    #: media_io "native"/"loop": 0 = read when a socket is readable; N ms = after each read, wait
    #: N ms before watching the sockets again (one wake-up per N ms under load, up to N ms added delay)
    read_interval_ms: int = 2

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
class CodecsConfig:
    """``[codecs]``: where the codec libraries loaded at run time are (a soname looked up by the
    dynamic loader, or a path; "" = do not load it: the codecs needing it are not offered)."""

    bcg729_library: str = "libbcg729.so.0"  # G.729
    amrnb_library: str = "libopencore-amrnb.so.0"  # AMR when PyAV's FFmpeg lacks opencore
    amrwb_library: str = "libopencore-amrwb.so.0"  # AMR-WB decoding (same)
    amrwbenc_library: str = "libvo-amrwbenc.so.0"  # AMR-WB encoding
    spandsp_library: str = "libspandsp.so.2"  # G.726 encoding
    opus_library: str = "libopus.so.0"  # Opus decoding with concealment and FEC

    def library_paths(self) -> dict[str, str]:
        """By library key, as :func:`webgate.media.codecs.set_library_paths` takes them."""
        return {
            "bcg729": self.bcg729_library,
            "amrnb": self.amrnb_library,
            "amrwb": self.amrwb_library,
            "amrwbenc": self.amrwbenc_library,
            "spandsp": self.spandsp_library,
            "opus": self.opus_library,
        }


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
    #: RFC 4028 session timer asked for in our INVITEs (Session-Expires, seconds); 0 = off
    session_expires_s: int = 1800
    #: calls through this trunk go through this proxy (a Route header); None = [sip] outbound_proxy
    outbound_proxy: SipUri | None = None


@dataclass(frozen=True)
class RouteConfig:
    """One ``[[route]]``: a destination pattern toward a trunk. Matching and rewriting are the
    dial plan's (:func:`webgate.calls.dialplan.match_route`); ``regex`` is ``pattern`` compiled."""

    pattern: str
    trunk: str
    rewrite: str = "{dest}"
    public: bool = False
    #: 0 = the global limit (limits.max_call_duration_s)
    max_duration_s: int = 0
    #: the far end of a call through this route may transfer it (REFER; the target goes through the dial plan)
    transfer: bool = False
    #: record calls through this route: "off", "audio" or "audio+video" ([recording])
    record: str = "off"
    #: the token claim ``record`` may ask for more than ``record`` (else only for less)
    record_on_request: bool = False
    regex: re.Pattern[str] = field(default=re.compile(""), repr=False, compare=False)


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
    video: VideoConfig = VideoConfig()
    api: ApiConfig = ApiConfig()
    cdr: CdrConfig = CdrConfig()
    recording: RecordingConfig = RecordingConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    cluster: ClusterConfig = ClusterConfig()
    codecs: CodecsConfig = CodecsConfig()
    trunks: tuple[TrunkConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    #: where it came from: a file path, or "<default>"
    source: str = field(default="<default>", compare=False)

    def trunk(self, name: str) -> TrunkConfig:
        """The ``[[trunk]]`` named ``name``; KeyError if there is none."""
        for t in self.trunks:
            if t.name == name:
                return t
        raise KeyError(name)


"""Validation: the schema's driver and the older sections' readers, and the entry points that
load and parse a file (the newer sections' readers are :mod:`webgate.config.sections`'s, those of
``[[trunk]]`` and ``[[route]]`` :mod:`webgate.config.tables`'s).

:func:`load_config` reads a file (or the embedded default) and applies command-line overrides;
:func:`parse_config` checks an already-parsed mapping. Every error names the key it is about
(``sip.udp: invalid address 'x:99999'``); all errors found are reported together in one
:class:`ConfigError`. Unknown keys are errors.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from webgate.config.defaults import DEFAULT_TOML
from webgate.config.fields import (
    MISSING,
    Section,
    check_dest_name,
    check_file,
    check_host,
    check_nonempty_text,
    check_optional_host,
    check_text,
    check_token,
    parse_host_port,
    parse_sip_uri,
    strip_brackets,
    type_name,
)
from webgate.config.model import (
    LOG_LEVELS,
    ApiConfig,
    BuiltinConfig,
    CdrConfig,
    ClusterConfig,
    CodecsConfig,
    Config,
    HostPort,
    HttpConfig,
    IceServerConfig,
    LimitsConfig,
    LogConfig,
    RecordingConfig,
    RtmpConfig,
    RtpConfig,
    SessionIdConfig,
    ShutdownConfig,
    SipConfig,
    TokensConfig,
    VideoConfig,
    WebRtcConfig,
)
from webgate.config.sections import NewerSections
from webgate.config.tables import TrunkTables


class ConfigError(ValueError):
    """The configuration is invalid. ``errors`` lists one message per problem."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + e for e in self.errors))


_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9\-.\[\]:]+(?::\d{1,5})?/?", re.IGNORECASE)
_ICE_URL_RE = re.compile(r"(?:stuns?|turns?):[^\s]+", re.IGNORECASE)


class _Validator(NewerSections, TrunkTables):
    """One validation run: reads every section, collects the errors (it is the
    :class:`~webgate.config.fields.Reporter` of its :class:`Section` objects), and builds the
    :class:`Config` if there were none. The readers of the newer sections are
    :mod:`webgate.config.sections`'s, those of ``[[trunk]]`` and ``[[route]]``
    :mod:`webgate.config.tables`'s."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk_names: set[str] = set()

    def config(self, data: Mapping[str, Any], source: str) -> Config:
        sections = {
            "http", "rtmp", "sip", "rtp", "session_id", "builtin", "limits", "log", "trunk", "route",
            "webrtc", "tokens", "video", "api", "cdr", "shutdown", "cluster", "codecs",
            "recording",
        }
        for k in data:
            if k not in sections:
                self.err(k, "unknown section" if isinstance(data[k], Mapping) else "unknown key")

        s = Section(self, "http", data.get("http", {}), HttpConfig())
        http = self.build(
            HttpConfig,
            dict(
                listen=s.listen("listen"),
                **self.tls_listener(s),
                allowed_origins=self.origins(s),
                max_connections=s.integer("max_connections", 0, 1000000),
                max_connections_per_ip=s.integer("max_connections_per_ip", 0, 1000000),
                request_timeout_s=s.integer("request_timeout_s", 1, 3600),
            ),
        )
        s.finish()

        s = Section(self, "rtmp", data.get("rtmp", {}), RtmpConfig())
        rtmp = self.build(
            RtmpConfig,
            dict(
                listen=s.listen("listen"),
                max_chunk_size=s.integer("max_chunk_size", 128, 0xFFFFFF),
                max_message_size=s.integer("max_message_size", 128, 0xFFFFFF),
                max_streams_per_connection=s.integer("max_streams_per_connection", 1, 1000),
                max_connections_per_ip=s.integer("max_connections_per_ip", 1, 100000),
                max_connections=s.integer("max_connections", 0, 1000000),
                handshake_timeout_s=s.integer("handshake_timeout_s", 1, 3600),
                idle_timeout_s=s.integer("idle_timeout_s", 0, 86400),
                partial_timeout_s=s.integer("partial_timeout_s", 1, 3600),
                max_buffer_bytes=s.integer("max_buffer_bytes", 128, 1 << 30),
                player_max_queue_ms=s.integer("player_max_queue_ms", 20, 60000),
                player_max_behind_s=s.integer("player_max_behind_s", 1, 3600),
                player_send_buffer=s.integer("player_send_buffer", 0, 1 << 26),
                play_failures_before_close=s.integer("play_failures_before_close", 1, 1000),
                **self.tls_listener(s),
            ),
        )
        s.finish()
        if rtmp is not MISSING and rtmp.max_buffer_bytes < rtmp.max_message_size:
            self.err("rtmp.max_buffer_bytes", f"{rtmp.max_buffer_bytes} must be >= rtmp.max_message_size ({rtmp.max_message_size})")

        sip = self.sip(data.get("sip", {}))
        rtp = self.rtp(data.get("rtp", {}))

        s = Section(self, "session_id", data.get("session_id", {}), SessionIdConfig())
        session_id = self.build(
            SessionIdConfig,
            dict(
                length=s.integer("length", 8, 10),
                header=s.string("header", check=check_token),
                mode=s.choice("mode", ("header", "caller_id", "both")),
                reuse_after_s=s.integer("reuse_after_s", 0),
            ),
        )
        s.finish()

        s = Section(self, "builtin", data.get("builtin", {}), BuiltinConfig())
        builtin = self.build(
            BuiltinConfig,
            dict(
                enabled=s.boolean("enabled"),
                tone_hz=s.integer("tone_hz", 20, 3999),
                echo=s.string("echo", check=check_dest_name),
                tone=s.string("tone", check=check_dest_name),
                public=s.boolean("public"),
                sip_from=self.source_list(s, "sip_from"),
            ),
        )
        s.finish()
        if builtin is not MISSING and builtin.echo == builtin.tone:
            self.err("builtin.tone", f"must differ from builtin.echo (both {builtin.echo!r})")

        s = Section(self, "limits", data.get("limits", {}), LimitsConfig())
        limits = self.build(
            LimitsConfig,
            dict(
                max_calls=s.integer("max_calls", 1),
                max_call_duration_s=s.integer("max_call_duration_s", 0),
                max_calls_per_identity=s.integer("max_calls_per_identity", 0),
                max_calls_per_ip=s.integer("max_calls_per_ip", 0),
                max_attempts_per_ip_per_minute=s.integer("max_attempts_per_ip_per_minute", 0),
            ),
        )
        s.finish()

        s = Section(self, "log", data.get("log", {}), LogConfig())
        level = s.choice("level", LOG_LEVELS + ("warning",))
        log = self.build(
            LogConfig,
            dict(format=s.choice("format", ("text", "json")), level="warn" if level == "warning" else level),
        )
        s.finish()

        s = Section(self, "webrtc", data.get("webrtc", {}), WebRtcConfig())
        webrtc = self.build(
            WebRtcConfig,
            dict(
                ice_servers=self.ice_servers(s),
                ice_timeout_s=s.integer("ice_timeout_s", 1, 3600),
                max_message_size=s.integer("max_message_size", 1024, 1 << 24),
                idle_timeout_s=s.integer("idle_timeout_s", 1, 86400),
                max_playout_ms=s.integer("max_playout_ms", 20, 10000),
                direct_audio=s.boolean("direct_audio"),
                max_errors=s.integer("max_errors", 1, 100000),
                max_connections=s.integer("max_connections", 0, 1000000),
                max_connections_per_ip=s.integer("max_connections_per_ip", 0, 1000000),
                max_remote_candidates=s.integer("max_remote_candidates", 1, 1000),
                allow_private_candidates=s.boolean("allow_private_candidates"),
            ),
        )
        s.finish()

        tokens = self.tokens(Section(self, "tokens", data.get("tokens", {}), TokensConfig()))
        video = self.video(Section(self, "video", data.get("video", {}), VideoConfig()))
        api = self.api(Section(self, "api", data.get("api", {}), ApiConfig()))
        cdr = self.cdr(Section(self, "cdr", data.get("cdr", {}), CdrConfig()))
        recording = self.recording(Section(self, "recording", data.get("recording", {}), RecordingConfig()))
        shutdown = self.shutdown(Section(self, "shutdown", data.get("shutdown", {}), ShutdownConfig()))
        cluster = self.cluster(Section(self, "cluster", data.get("cluster", {}), ClusterConfig()))

        codecs = self.codec_libraries(Section(self, "codecs", data.get("codecs", {}), CodecsConfig()))
        trunks = self.trunks(data.get("trunk", []))
        routes = self.routes(data.get("route", []), trunks)
        if codecs is not MISSING:
            self.check_codec_libraries(codecs, trunks)

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
            video=video,
            api=api,
            cdr=cdr,
            recording=recording,
            shutdown=shutdown,
            cluster=cluster,
            codecs=codecs,
            trunks=tuple(trunks),
            routes=tuple(routes),
            source=source,
        )

    def tls_listener(self, s: Section) -> dict[str, Any]:
        """``tls_listen``/``tls_cert``/``tls_key`` of an HTTP or RTMP section."""
        values = dict(
            tls_listen=s.listen("tls_listen"),
            tls_cert=s.string("tls_cert", check=check_file),
            tls_key=s.string("tls_key", check=check_file),
        )
        if values["tls_listen"] not in (None, MISSING):
            for k in ("tls_cert", "tls_key"):
                if values[k] == "":
                    self.err(s.key(k), "is required when tls_listen is set")
        return values

    def dns_servers(self, s: Section) -> Any:
        """``[sip] dns_servers``: "host:port" (or "host", port 53) of IP-literal DNS servers."""
        s.known.add("dns_servers")
        value = s.table.get("dns_servers", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.err(s.key("dns_servers"), f"must be an array of \"host:port\" strings, not {value!r}")
            return MISSING
        out: list[HostPort] = []
        for v in value:
            text = v.strip()
            try:
                if text.startswith("[") or text.count(":") == 1:
                    hp = parse_host_port(text)  # "v4:port", "[v6]:port"
                else:
                    hp = HostPort(text, 53)  # "v4", "v6"
                ipaddress.ip_address(hp.host.strip("[]"))
            except ValueError:
                self.err(s.key("dns_servers"), f"{v!r} is not an IP address with an optional port (\"127.0.0.1:53\")")
                return MISSING
            out.append(hp)
        return tuple(out)

    def source_list(self, s: Section, key: str) -> Any:
        """An allow-list of SIP sources (``[sip] inbound_from``, ``[builtin] sip_from``): IP
        addresses, CIDR networks, DNS names (resolved at run time), "trunks", "loopback"."""
        s.known.add(key)
        if key not in s.table:
            return getattr(s.defaults, key)
        value = s.table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.err(s.key(key), f"must be an array of strings, not {value!r}")
            return MISSING
        out: list[str] = []
        for v in value:
            word = v.strip().lower()
            if word not in ("trunks", "loopback"):
                try:
                    ipaddress.ip_network(word.strip("[]"), strict=False)
                except ValueError:
                    if check_host(word) is not None or "." not in word:
                        self.err(s.key(key), f"{v!r} is not an IP address, a network (CIDR), a DNS name, \"trunks\" or \"loopback\"")
                        return MISSING
            out.append(word)
        return tuple(out)

    def origins(self, s: Section) -> Any:
        s.known.add("allowed_origins")
        if "allowed_origins" not in s.table:
            return s.defaults.allowed_origins
        value = s.table["allowed_origins"]
        if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
            self.err(s.key("allowed_origins"), f"must be an array of strings, not {value!r}")
            return MISSING
        out: list[str] = []
        for o in value:
            if o != "*" and not _ORIGIN_RE.fullmatch(o):
                self.err(s.key("allowed_origins"), f"{o!r} is not an origin (e.g. \"https://www.example.com\" or \"*\")")
                return MISSING
            out.append(o.rstrip("/").lower())
        return tuple(out)

    def ice_servers(self, s: Section) -> Any:
        s.known.add("ice_servers")
        if "ice_servers" not in s.table:
            return s.defaults.ice_servers
        value = s.table["ice_servers"]
        if not isinstance(value, list):
            self.err(s.key("ice_servers"), f"must be an array of tables ([[webrtc.ice_servers]]), not {type_name(value)}")
            return MISSING
        out: list[IceServerConfig] = []
        ok = True
        for i, item in enumerate(value):
            t = Section(self, f"{s.key('ice_servers')}[{i}]", item, IceServerConfig(urls=()))
            t.known.add("urls")
            urls = t.table.get("urls")
            if isinstance(urls, str):
                urls = [urls]
            if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and _ICE_URL_RE.fullmatch(u) for u in urls):
                self.err(t.key("urls"), f"must be a stun:/stuns:/turn:/turns: URL or an array of them, not {t.table.get('urls')!r}")
                ok = False
            username = t.string("username", check=check_text)
            credential = t.string("credential", check=check_text)
            t.finish()
            if ok and username is not MISSING and credential is not MISSING:
                out.append(IceServerConfig(tuple(urls), username, credential))
        return tuple(out) if ok else MISSING

    def sip(self, table: Any) -> Any:
        s = Section(self, "sip", table, SipConfig())

        def proxy(value: str) -> Any:
            if value == "":
                return None
            try:
                return parse_sip_uri(value)
            except ValueError:
                self.err("sip.outbound_proxy", f"invalid SIP URI {value!r} (e.g. \"sip:proxy.example.com:5060\")")
                return MISSING

        values = dict(
            udp=s.listen("udp"),
            tcp=s.listen("tcp"),
            tls=s.listen("tls"),
            tls_cert=s.string("tls_cert", check=check_file),
            tls_key=s.string("tls_key", check=check_file),
            tls_ca=s.string("tls_ca", check=check_file),
            advertised_address=s.string("advertised_address", check=check_optional_host),
            user_agent=s.string("user_agent", check=check_nonempty_text),
            t1_ms=s.integer("t1_ms", 1, 60000),
            t2_ms=s.integer("t2_ms", 1, 600000),
            t4_ms=s.integer("t4_ms", 1, 600000),
            max_message_size=s.integer("max_message_size", 1500, 1 << 20),
            outbound_proxy=s.string("outbound_proxy"),
            from_domain=s.string("from_domain", check=check_optional_host),
            inbound_from=self.source_list(s, "inbound_from"),
            honour_maddr=s.boolean("honour_maddr"),
            max_connections=s.integer("max_connections", 0, 1000000),
            max_connections_per_ip=s.integer("max_connections_per_ip", 0, 1000000),
            idle_timeout_s=s.integer("idle_timeout_s", 0, 86400),
            partial_timeout_s=s.integer("partial_timeout_s", 1, 3600),
            max_send_buffer=s.integer("max_send_buffer", 4096, 1 << 30),
            send_stall_s=s.integer("send_stall_s", 1, 3600),
            dns_servers=self.dns_servers(s),
            failover_timeout_s=s.number("failover_timeout_s", 0, 60),
        )
        s.finish()
        if isinstance(values["outbound_proxy"], str):
            values["outbound_proxy"] = proxy(values["outbound_proxy"])
        if isinstance(values["advertised_address"], str):
            values["advertised_address"] = strip_brackets(values["advertised_address"])
        t1, t2 = values["t1_ms"], values["t2_ms"]
        if isinstance(t1, int) and isinstance(t2, int) and t2 < t1:
            self.err("sip.t2_ms", f"{t2} must be >= sip.t1_ms ({t1})")
        if values["tls"] not in (None, MISSING):
            for k in ("tls_cert", "tls_key"):
                if values[k] == "":
                    self.err(f"sip.{k}", "is required when sip.tls is set")
        return self.build(SipConfig, values)

    def rtp(self, table: Any) -> Any:
        s = Section(self, "rtp", table, RtpConfig())
        values = dict(
            bind=s.string("bind", check=check_host),
            advertised_address=s.string("advertised_address", check=check_optional_host),
            port_min=s.integer("port_min", 1024, 65534),
            port_max=s.integer("port_max", 1025, 65535),
            jitter_min_ms=s.integer("jitter_min_ms", 0, 10000),
            jitter_max_ms=s.integer("jitter_max_ms", 1, 10000),
            strict_source=s.boolean("strict_source"),
            relearn_after_s=s.integer("relearn_after_s", 0, 86400),
            media_io=s.choice("media_io", ("native", "loop", "twisted")),
            read_interval_ms=s.integer("read_interval_ms", 0, 20),
        )
        s.finish()
        for k in ("bind", "advertised_address"):
            if isinstance(values[k], str):
                values[k] = strip_brackets(values[k])
        lo, hi = values["port_min"], values["port_max"]
        if isinstance(lo, int) and lo % 2:
            self.err("rtp.port_min", f"{lo} must be even (RTP even, RTCP odd)")
        if isinstance(lo, int) and isinstance(hi, int) and hi <= lo:
            self.err("rtp.port_max", f"{hi} must be greater than rtp.port_min ({lo})")
        jlo, jhi = values["jitter_min_ms"], values["jitter_max_ms"]
        if isinstance(jlo, int) and isinstance(jhi, int) and jhi < jlo:
            self.err("rtp.jitter_max_ms", f"{jhi} must be >= rtp.jitter_min_ms ({jlo})")
        return self.build(RtpConfig, values)



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
        ("video", VideoConfig),
        ("api", ApiConfig),
        ("cdr", CdrConfig),
        ("recording", RecordingConfig),
        ("shutdown", ShutdownConfig),
        ("cluster", ClusterConfig),
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



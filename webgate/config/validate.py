"""Validation: the schema of every section, and the entry points that load and parse a file.

:func:`load_config` reads a file (or the embedded default) and applies command-line overrides;
:func:`parse_config` checks an already-parsed mapping. Every error names the key it is about
(``sip.udp: invalid address 'x:99999'``); all errors found are reported together in one
:class:`ConfigError`. Unknown keys are errors.
"""

from __future__ import annotations

import ipaddress
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from webgate.config.defaults import DEFAULT_TOML
from webgate.config.fields import (
    CONTROL_RE,
    MISSING,
    TOKEN_RE,
    Section,
    check_admin_key,
    check_dest_name,
    check_file,
    check_host,
    check_http_url,
    check_node_id,
    check_redis_url,
    check_url,
    check_nonempty_text,
    check_optional_host,
    check_sip_user,
    check_text,
    check_token,
    check_token_key,
    parse_host_port,
    parse_sip_uri,
    strip_brackets,
    type_name,
)
from webgate.config.model import (
    KNOWN_CODECS,
    LOG_LEVELS,
    ON_REDIS_DOWN,
    RECORD_MODES,
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
    RouteConfig,
    RtmpConfig,
    RtpConfig,
    SessionIdConfig,
    ShutdownConfig,
    SipConfig,
    SipUri,
    TokensConfig,
    TrunkConfig,
    VideoConfig,
    WebRtcConfig,
)
from webgate.media.codecs import missing_message, probe, required_libraries

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is invalid. ``errors`` lists one message per problem."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + e for e in self.errors))


# Headers the SIP UA writes itself; a trunk may not set them.
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Content-Length", "l", "Content-Type", "c", "Max-Forwards", "Route", "Record-Route", "Authorization", "Proxy-Authorization", "Content-Encoding", "e", "Supported", "k", "Allow",
              "Session-Expires", "x", "Min-SE", "RSeq", "RAck"]
)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9\-.\[\]:]+(?::\d{1,5})?/?", re.IGNORECASE)
_ICE_URL_RE = re.compile(r"(?:stuns?|turns?):[^\s]+", re.IGNORECASE)


class _Validator:
    """One validation run: reads every section, collects the errors (it is the
    :class:`~webgate.config.fields.Reporter` of its :class:`Section` objects), and builds the
    :class:`Config` if there were none."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.trunk_names: set[str] = set()

    def err(self, key: str, message: str) -> None:
        self.errors.append(f"{key}: {message}")

    def build(self, cls: Callable[..., T], values: dict[str, Any]) -> T | Any:
        if any(v is MISSING for v in values.values()):
            return MISSING
        return cls(**values)

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

        s = Section(self, "tokens", data.get("tokens", {}), TokensConfig())
        tokens = self.build(
            TokensConfig,
            dict(
                key=s.string("key", check=check_token_key),
                issuer=s.string("issuer", check=check_text),
                audience=s.string("audience", check=check_text),
                leeway_s=s.integer("leeway_s", 0, 3600),
            ),
        )
        s.finish()

        s = Section(self, "video", data.get("video", {}), VideoConfig())
        video = self.build(
            VideoConfig,
            dict(
                max_watchers_per_call=s.integer("max_watchers_per_call", 1, 1000),
                max_bitrate_kbps=s.integer("max_bitrate_kbps", 50, 100000),
                transcode=s.boolean("transcode"),
                max_data_bytes=s.integer("max_data_bytes", 1, 1 << 24),
                data_rate_per_s=s.integer("data_rate_per_s", 1, 100000),
            ),
        )
        s.finish()

        s = Section(self, "api", data.get("api", {}), ApiConfig())
        api = self.build(ApiConfig, dict(admin_key=s.string("admin_key", check=check_admin_key), metrics=s.boolean("metrics")))
        s.finish()

        s = Section(self, "cdr", data.get("cdr", {}), CdrConfig())
        cdr = self.build(
            CdrConfig,
            dict(
                file=s.string("file", check=check_text),
                webhook_url=s.string("webhook_url", check=check_http_url),
                webhook_timeout_s=s.integer("webhook_timeout_s", 1, 600),
                webhook_retries=s.integer("webhook_retries", 0, 100),
            ),
        )
        s.finish()

        recording = self.recording(Section(self, "recording", data.get("recording", {}), RecordingConfig()))

        s = Section(self, "shutdown", data.get("shutdown", {}), ShutdownConfig())
        shutdown = self.build(ShutdownConfig, dict(timeout_s=s.integer("timeout_s", 1, 3600)))
        s.finish()

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

    def recording(self, s: Section) -> Any:
        """``[recording]`` (docs/recording.md)."""
        rec = self.build(
            RecordingConfig,
            dict(
                dir=s.string("dir", check=check_nonempty_text),
                path=s.string("path", check=_check_recording_path),
                format=s.choice("format", ("wav", "ogg")),
                min_free_mb=s.integer("min_free_mb", 0, 10_000_000),
                flush_s=s.number("flush_s", 0.05, 60.0),
                record_beep_s=s.integer("record_beep_s", 0, 3600),
                record_announcement=s.string("record_announcement", check=check_text),
            ),
        )
        s.finish()
        return rec

    def cluster(self, s: Section) -> Any:
        """``[cluster]`` (docs/cluster.md): off by default; a node's Redis, name, addresses, heartbeat."""
        cluster = self.build(
            ClusterConfig,
            dict(
                enabled=s.boolean("enabled"),
                redis_url=s.string("redis_url", check=check_redis_url),
                node_id=s.string("node_id", check=check_node_id),
                ws_url=s.string("ws_url", check=check_url(("ws", "wss"))),
                rtmp_url=s.string("rtmp_url", check=check_url(("rtmp", "rtmps"))),
                sip_contact=s.string("sip_contact", check=check_url(("sip", "sips"))),
                heartbeat_s=s.number("heartbeat_s", 0.1, 60),
                node_ttl_s=s.number("node_ttl_s", 0.2, 600),
                on_redis_down=s.choice("on_redis_down", ON_REDIS_DOWN),
                registrar=s.string("registrar", check=_check_registrar),
            ),
        )
        s.finish()
        if cluster is not MISSING and cluster.node_ttl_s < 2 * cluster.heartbeat_s:
            self.err(s.key("node_ttl_s"), f"{cluster.node_ttl_s:g} is less than twice heartbeat_s ({cluster.heartbeat_s:g})")
        return cluster

    def codec_libraries(self, s: Section) -> Any:
        """``[codecs]``: where the codec libraries loaded at run time are (a soname or a path)."""
        codecs = self.build(
            CodecsConfig,
            {f.name: s.string(f.name, check=check_text) for f in fields(CodecsConfig)},
        )
        s.finish()
        return codecs

    def check_codec_libraries(self, codecs: CodecsConfig, trunks: list[TrunkConfig]) -> None:
        """A trunk codec whose library does not load from its ``[codecs]`` path is an error that
        names the package: ``trunk pbx: codec G729 needs libbcg729 (apt install libbcg729-0)``."""
        paths = codecs.library_paths()
        for t in trunks:
            for codec in t.codecs:
                for key in required_libraries(codec):
                    if probe(key, paths[key]) is None:
                        self.err(f"trunk {t.name}", missing_message(codec, key))

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
            media_io=s.choice("media_io", ("loop", "twisted")),
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

    def trunks(self, items: Any) -> list[TrunkConfig]:
        if not isinstance(items, list):
            self.err("trunk", "must be an array of tables ([[trunk]])")
            return []
        out: list[TrunkConfig] = []
        seen: set[str] = set()
        defaults = TrunkConfig(name="", target=SipUri("sip", "", "x", None, "", "sip:x"))
        for i, item in enumerate(items):
            s = Section(self, f"trunk[{i}]", item, defaults)
            name = s.string("name", required=True)
            if isinstance(name, str):
                if not _NAME_RE.fullmatch(name):
                    self.err(s.key("name"), f"{name!r} is not a valid name (letters, digits, '_', '.', '-')")
                elif name in seen:
                    self.err(s.key("name"), f"duplicate trunk name {name!r}")
                seen.add(name)
                self.trunk_names.add(name)
            target = s.string("target", required=True)
            if isinstance(target, str):
                try:
                    target = parse_sip_uri(target)
                except ValueError:
                    self.err(s.key("target"), f"invalid SIP URI {target!r} (e.g. \"sip:pbx.example.com:5060\")")
                    target = MISSING
            values = dict(
                name=name,
                target=target,
                transport=s.choice("transport", ("udp", "tcp", "tls")),
                username=s.string("username", check=check_sip_user),
                password=s.string("password", check=check_text),
                auth_username=s.string("auth_username", check=check_text),
                realm=s.string("realm", check=check_text),
                register=s.boolean("register"),
                register_expires=s.integer("register_expires", 60, 86400),
                dtmf=s.choice("dtmf", ("rfc4733", "info")),
                codecs=self.codecs(s),
                headers=self.headers(s),
                from_user=s.string("from_user", check=check_sip_user),
                from_display=s.string("from_display", check=check_text),
                session_expires_s=s.integer("session_expires_s", 0, 86400),
                outbound_proxy=s.string("outbound_proxy"),
            )
            s.finish()
            if isinstance(values["outbound_proxy"], str):
                if values["outbound_proxy"] == "":
                    values["outbound_proxy"] = None
                else:
                    try:
                        values["outbound_proxy"] = parse_sip_uri(values["outbound_proxy"])
                    except ValueError:
                        self.err(s.key("outbound_proxy"), f"invalid SIP URI {values['outbound_proxy']!r} (e.g. \"sip:proxy.example.com;lr\")")
                        values["outbound_proxy"] = MISSING
            se = values["session_expires_s"]
            if isinstance(se, int) and 0 < se < 90:
                self.err(s.key("session_expires_s"), f"{se} is below 90 (RFC 4028's smallest Min-SE); 0 turns the session timer off")
            if values["register"] is True and values["username"] == "":
                self.err(s.key("username"), "is required when register = true")
            if isinstance(target, SipUri) and target.scheme == "sips" and values["transport"] not in ("tls", MISSING):
                self.err(s.key("transport"), "must be \"tls\" for a sips: target")
            t = self.build(TrunkConfig, values)
            if t is not MISSING:
                out.append(t)
        return out

    def codecs(self, s: Section) -> Any:
        s.known.add("codecs")
        if "codecs" not in s.table:
            return s.defaults.codecs
        value = s.table["codecs"]
        canon = {c.lower(): c for c in KNOWN_CODECS}
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            self.err(s.key("codecs"), f"must be a non-empty array of strings, not {value!r}")
            return MISSING
        out: list[str] = []
        for c in value:
            if c.lower() not in canon:
                self.err(s.key("codecs"), f"unknown codec {c!r} (known: {', '.join(KNOWN_CODECS)})")
                return MISSING
            if canon[c.lower()] in out:
                self.err(s.key("codecs"), f"duplicate codec {c!r}")
                return MISSING
            out.append(canon[c.lower()])
        return tuple(out)

    def headers(self, s: Section) -> Any:
        s.known.add("headers")
        if "headers" not in s.table:
            return ()
        value = s.table["headers"]
        if not isinstance(value, Mapping):
            self.err(s.key("headers"), f"must be a table of header = \"value\", not {type_name(value)}")
            return MISSING
        out: list[tuple[str, str]] = []
        ok = True
        for name, val in value.items():
            key = f"{s.key('headers')}.{name}"
            if not TOKEN_RE.fullmatch(name):
                self.err(key, f"{name!r} is not a valid SIP header name (token)")
                ok = False
            elif name.lower() in _RESERVED_HEADERS:
                self.err(key, f"{name!r} is set by the SIP stack and cannot be configured")
                ok = False
            elif not isinstance(val, str):
                self.err(key, f"must be a string, not {type_name(val)}")
                ok = False
            elif CONTROL_RE.sub("", val.replace("\t", " ")) != val.replace("\t", " "):
                self.err(key, "value must not contain CR, LF or other control characters")
                ok = False
            else:
                out.append((name, val))
        return tuple(out) if ok else MISSING

    def routes(self, items: Any, trunks: list[TrunkConfig]) -> list[RouteConfig]:
        if not isinstance(items, list):
            self.err("route", "must be an array of tables ([[route]])")
            return []
        names = self.trunk_names  # including trunks that had other errors
        out: list[RouteConfig] = []
        defaults = RouteConfig(pattern="", trunk="")
        for i, item in enumerate(items):
            s = Section(self, f"route[{i}]", item, defaults)
            pattern = s.string("pattern", required=True)
            regex: Any = MISSING
            if isinstance(pattern, str):
                try:
                    regex = re.compile(pattern)
                except re.error as e:
                    self.err(s.key("pattern"), f"invalid regular expression {pattern!r}: {e}")
            trunk = s.string("trunk", required=True)
            if isinstance(trunk, str) and trunk not in names:
                self.err(s.key("trunk"), f"no trunk named {trunk!r}")
            rewrite = s.string("rewrite")
            if isinstance(rewrite, str) and regex is not MISSING:
                problem = _check_rewrite(rewrite, regex)
                if problem:
                    self.err(s.key("rewrite"), problem)
                    rewrite = MISSING
            values = dict(
                pattern=pattern,
                trunk=trunk,
                rewrite=rewrite,
                public=s.boolean("public"),
                max_duration_s=s.integer("max_duration_s", 0),
                transfer=s.boolean("transfer"),
                record=s.choice("record", RECORD_MODES),
                record_on_request=s.boolean("record_on_request"),
                regex=regex,
            )
            s.finish()
            r = self.build(RouteConfig, values)
            if r is not MISSING:
                out.append(r)
        return out


def _check_recording_path(path: str) -> str | None:
    """``[recording] path``: a relative template of {date}, {time}, {session_id}, with {session_id}."""
    try:
        names = {f for _l, f, _s, _c in string.Formatter().parse(path) if f is not None}
    except ValueError as e:
        return f"invalid format string {path!r}: {e}"
    if "session_id" not in names:
        return "must contain {session_id}"
    if names - {"date", "time", "session_id"}:
        return f"unknown field(s) {sorted(names - {'date', 'time', 'session_id'})} (use {{date}}, {{time}}, {{session_id}})"
    if path.startswith("/") or ".." in path.split("/") or "\\" in path or check_text(path):
        return "must be a relative path without '..', backslashes or control characters"
    return None


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


def _check_registrar(value: str) -> str | None:
    """``[cluster] registrar``: "" or a SIP URI of a host (no user part)."""
    if not value:
        return None
    try:
        uri = parse_sip_uri(value)
    except ValueError:
        return f"invalid SIP URI {value!r} (e.g. \"sip:10.0.0.5:5060\")"
    if uri.user:
        return f"{value!r}: the registrar's URI has no user part"
    return None

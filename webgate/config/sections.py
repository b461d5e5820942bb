"""The readers of the newer single-table sections: ``[tokens]``, ``[video]``, ``[api]``,
``[cdr]``, ``[recording]``, ``[shutdown]``, ``[cluster]`` and ``[codecs]``.

:class:`NewerSections` is a mixin of the validator of :mod:`webgate.config.validate`, which
calls each reader, in a fixed order, with the :class:`~webgate.config.fields.Section`
of its table; a reader returns the section's dataclass, or :data:`~webgate.config.fields.MISSING`
after reporting what is wrong. Internal to :mod:`webgate.config`.
"""

from __future__ import annotations

import string
from dataclasses import fields
from typing import Any

from webgate.config.fields import (
    MISSING,
    Collector,
    Section,
    check_admin_key,
    check_http_url,
    check_node_id,
    check_nonempty_text,
    check_redis_url,
    check_text,
    check_token_key,
    check_url,
    parse_sip_uri,
)
from webgate.config.model import (
    ON_REDIS_DOWN,
    ApiConfig,
    CdrConfig,
    ClusterConfig,
    CodecsConfig,
    RecordingConfig,
    ShutdownConfig,
    TokensConfig,
    TrunkConfig,
    VideoConfig,
)
from webgate.media.codecs import missing_message, probe, required_libraries


class NewerSections(Collector):
    """The readers of ``[tokens]`` to ``[codecs]``, and the check of the trunks' codec libraries."""

    def tokens(self, s: Section) -> Any:
        """``[tokens]``: the key, issuer, audience and leeway of the signed call tokens."""
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
        return tokens

    def video(self, s: Section) -> Any:
        """``[video]``: watchers, bitrate, transcoding and the data channel's limits."""
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
        return video

    def api(self, s: Section) -> Any:
        """``[api]``: the admin key of ``/api`` and whether ``/metrics`` is served."""
        api = self.build(ApiConfig, dict(admin_key=s.string("admin_key", check=check_admin_key), metrics=s.boolean("metrics")))
        s.finish()
        return api

    def cdr(self, s: Section) -> Any:
        """``[cdr]``: the call detail records' file and webhook."""
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
        return cdr

    def shutdown(self, s: Section) -> Any:
        """``[shutdown]``: how long a graceful shutdown waits for calls to end."""
        shutdown = self.build(ShutdownConfig, dict(timeout_s=s.integer("timeout_s", 1, 3600)))
        s.finish()
        return shutdown

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
                repair_days=s.integer("repair_days", 0, 366),
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

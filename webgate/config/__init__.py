"""webgate configuration: one TOML file, validated once, into frozen dataclasses.

Use :func:`load_config` (a file, or the embedded default when ``path`` is None, plus
command-line overrides) or :func:`parse_config` (an already-parsed mapping). Every
error names the key it is about (``sip.udp: invalid address 'x:99999'``); all errors
found are reported together in one :class:`ConfigError`. Unknown keys are errors.

Every key has a default (see :data:`DEFAULT_TOML`), so an empty file is a valid
configuration. Secrets (trunk passwords) are kept out of ``repr()``.

The package's parts: :mod:`~webgate.config.model` (the dataclasses), :mod:`~webgate.config.defaults`
(the embedded default TOML), :mod:`~webgate.config.fields` (reading and checking one table),
:mod:`~webgate.config.validate` (the sections' schema, loading and parsing), with the readers of
the newer sections in :mod:`~webgate.config.sections` and of ``[[trunk]]``/``[[route]]`` in
:mod:`~webgate.config.tables`. Matching a
destination against the ``[[route]]`` table is the dial plan's (:mod:`webgate.calls.dialplan`).
This module is the package's API.
"""

from __future__ import annotations

from webgate.config.defaults import DEFAULT_TOML
from webgate.config.fields import MIN_TOKEN_KEY_BYTES, parse_host_port, parse_sip_uri
from webgate.config.model import (
    KNOWN_CODECS,
    LOG_LEVELS,
    ON_REDIS_DOWN,
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
from webgate.config.validate import OVERRIDABLE, ConfigError, default_config, load_config, parse_config

__all__ = [
    "DEFAULT_TOML",
    "KNOWN_CODECS",
    "LOG_LEVELS",
    "ON_REDIS_DOWN",
    "MIN_TOKEN_KEY_BYTES",
    "OVERRIDABLE",
    "ApiConfig",
    "BuiltinConfig",
    "CdrConfig",
    "ClusterConfig",
    "CodecsConfig",
    "Config",
    "ConfigError",
    "HostPort",
    "HttpConfig",
    "IceServerConfig",
    "LimitsConfig",
    "LogConfig",
    "RecordingConfig",
    "RouteConfig",
    "RtmpConfig",
    "RtpConfig",
    "SessionIdConfig",
    "ShutdownConfig",
    "SipConfig",
    "SipUri",
    "TokensConfig",
    "TrunkConfig",
    "VideoConfig",
    "WebRtcConfig",
    "default_config",
    "load_config",
    "parse_config",
    "parse_host_port",
    "parse_sip_uri",
]

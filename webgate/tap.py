"""The ``twistd webgate`` plugin: command-line options and ``makeService``.

Importing this module installs Twisted's asyncio reactor when no reactor is installed
yet, so plain ``twistd -n webgate`` runs aiortc (asyncio) and Twisted on one loop:
twistd imports the plugin's tap module while it parses the ``webgate`` sub-command,
before it would install its default reactor.

The configuration is loaded and validated in :meth:`Options.postOptions`, so a bad
file or flag makes twistd print the message (naming the key) and exit 1 before
anything listens. This module imports nothing heavy at import time: ``twistd --help``
stays fast and the gateway's modules are imported in :func:`makeService`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)
from twisted.python import usage

from webgate import __version__
from webgate.config import Config, ConfigError, LogConfig, load_config
from webgate.logsafe import safe

log = Logger()


_log = Logger(namespace="webgate.tap")


def install_asyncio_reactor() -> bool:
    """Install the asyncio reactor on a fresh loop unless a reactor is installed already.

    Returns True if it installed it. Safe to call more than once.
    """
    if "twisted.internet.reactor" in sys.modules:
        return False
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    return True


install_asyncio_reactor()


def reactor_is_asyncio(reactor: Any) -> bool:
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    return isinstance(reactor, AsyncioSelectorReactor)


# flag -> dotted config key it overrides ("--rtp-ports" is handled separately)
FLAG_KEYS: dict[str, str] = {
    "http": "http.listen",
    "rtmp": "rtmp.listen",
    "sip-udp": "sip.udp",
    "sip-tcp": "sip.tcp",
    "sip-tls": "sip.tls",
    "sip-advertise": "sip.advertised_address",
    "rtp-advertise": "rtp.advertised_address",
    "log-format": "log.format",
    "log-level": "log.level",
}


class Options(usage.Options):
    synopsis = "[webgate options]"
    longdesc = (
        "Run the webgate WebRTC/RTMP to SIP gateway. With no --config it runs on the "
        "embedded default (HTTP on 127.0.0.1:8080, builtin echo/tone destinations, no "
        "trunk). Flags override the file. Listeners are \"HOST:PORT\" (IPv6 as "
        "\"[::1]:5060\"); an empty string turns a listener off. The asyncio reactor is "
        "installed automatically; do not pass another --reactor."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (see webgate.example.toml)."],
        ["http", None, None, 'HTTP listener "HOST:PORT" (http.listen; "" = off).'],
        ["rtmp", None, None, 'RTMP listener "HOST:PORT" (rtmp.listen; "" = off).'],
        ["sip-udp", None, None, 'SIP UDP listener "HOST:PORT" (sip.udp; "" = off).'],
        ["sip-tcp", None, None, 'SIP TCP listener "HOST:PORT" (sip.tcp; "" = off).'],
        ["sip-tls", None, None, 'SIP TLS listener "HOST:PORT" (sip.tls; "" = off; needs sip.tls_cert/tls_key).'],
        ["rtp-ports", None, None, "RTP port range MIN-MAX, MIN even (rtp.port_min, rtp.port_max)."],
        ["sip-advertise", None, None, "Host or IP put in Via/Contact (sip.advertised_address; \"\" = bind address)."],
        ["rtp-advertise", None, None, "Host or IP put in SDP (rtp.advertised_address; \"\" = rtp.bind)."],
        ["log-format", None, None, "Log format: text or json (log.format)."],
        ["log-level", None, None, "Log level: debug, info, warn, error, critical (log.level)."],
    ]

    config: Config

    def opt_version(self) -> None:
        """Print webgate's version and exit."""
        print(f"webgate {__version__}")
        sys.exit(0)

    def overrides(self) -> dict[str, Any]:
        """The config overrides given on the command line, as dotted keys."""
        out: dict[str, Any] = {}
        for flag, key in FLAG_KEYS.items():
            if self[flag] is not None:
                out[key] = self[flag]
        if self["rtp-ports"] is not None:
            lo, sep, hi = self["rtp-ports"].partition("-")
            if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
                raise usage.UsageError(
                    f"--rtp-ports: invalid range {self['rtp-ports']!r} (expected MIN-MAX, e.g. 20000-20999)"
                )
            out["rtp.port_min"] = int(lo)
            out["rtp.port_max"] = int(hi)
        return out

    def _load(self) -> None:
        overrides = self.overrides()
        try:
            self.config = load_config(self["config"], overrides)
        except ConfigError as e:
            raise usage.UsageError(_explain(e, overrides)) from None
        from twisted.internet import reactor

        if not reactor_is_asyncio(reactor):
            raise usage.UsageError(
                f"webgate needs the asyncio reactor, but {type(reactor).__name__} is installed: "
                "drop --reactor (or use --reactor=asyncio)"
            )

    def postOptions(self) -> None:
        parent = getattr(self, "parent", None)
        try:
            self._load()
        except usage.UsageError as e:
            if parent is not None:
                # twistd prints usage errors on stdout after the whole help text;
                # say it on stderr too, where an operator (and systemd) looks.
                print(f"twistd webgate: {e}", file=sys.stderr)
            raise
        if parent is not None:
            install_listen_error_hook()
        if parent is not None and not parent.get("logger") and not parent.get("syslog"):
            # Replace twistd's default observer through its own --logger mechanism
            # (twistd resolves the name after this method returns): same destination
            # rules (stdout with -n, else --logfile or twistd.log), our format and level.
            global _twistd_log_factory
            _twistd_log_factory = log_observer_factory(
                self.config.log, parent.get("logfile") or "", bool(parent.get("nodaemon"))
            )
            parent["logger"] = f"{__name__}.twistd_log_observer"


def install_listen_error_hook() -> None:
    """Under twistd: a listener that cannot bind (``webgate.listen.ListenError``, raised from
    ``privilegedStartService``) ends the process with its one line on stderr and in the log,
    ``http: cannot listen on 127.0.0.1:8080: address already in use``, and exit status 1,
    instead of a chained traceback. twistd itself still removes its PID file and, daemonizing,
    reports the failure to its parent first. Any other uncaught exception is left to the
    previous hook. Idempotent."""
    previous = sys.excepthook
    if getattr(previous, "webgate_listen_errors", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        listen = sys.modules.get("webgate.listen")  # not imported: no listener raised it
        if listen is None or not isinstance(exc, listen.ListenError):
            previous(exc_type, exc, tb)
            return
        try:
            log.critical("{error}", error=str(exc))
        finally:
            stderr = sys.__stderr__
            if stderr is not None:
                stderr.write(f"{exc}\n")
                stderr.flush()

    hook.webgate_listen_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _explain(e: ConfigError, overrides: dict[str, Any]) -> str:
    """The error text, each line saying which flag set the key if a flag did."""
    flag_of = {key: f"--{flag}" for flag, key in FLAG_KEYS.items()}
    flag_of["rtp.port_min"] = flag_of["rtp.port_max"] = "--rtp-ports"
    lines = []
    for err in e.errors:
        key = err.split(":", 1)[0]
        if key in overrides and key in flag_of:
            err += f" (from {flag_of[key]})"
        lines.append(err)
    where = f"{e.source}: " if e.source and e.source != "<default>" else ""
    return "invalid configuration\n" + "\n".join(where + line for line in lines)


_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}


def log_observer_factory(
    log_config: LogConfig, logfile: str = "", nodaemon: bool = True
) -> Callable[[], ILogObserver]:
    """A twistd ``--logger``-style factory: text or JSON lines, filtered at the level."""

    def factory() -> ILogObserver:
        out: Any
        if logfile == "-" or (not logfile and nodaemon):
            out = sys.stdout
        else:
            from twisted.python.logfile import LogFile

            out = LogFile.fromFullPath(logfile or "twistd.log")
        if log_config.format == "json":
            observer = FileLogObserver(out, event_as_json_line)
        else:
            observer = textFileLogObserver(out)
        predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[log_config.level])
        predicates: list[Any] = [predicate]
        if log_config.level != "debug":
            predicates.append(quiet_socket_noise)
        return FilteringLogObserver(observer, predicates)

    return factory


# Twisted logs every UDP socket's start and stop at info level; the RTP pool opens two per
# call leg, so at any level above debug those lines are dropped.
_SOCKET_NOISE = re.compile(r"(?:_Socket starting on \d+|\(UDP Port \d+ Closed\))")


def quiet_socket_noise(event: dict[str, Any]) -> PredicateResult:
    """A log filter predicate: no for Twisted's per-RTP-socket start/stop lines."""
    message = event.get("message")
    if isinstance(message, tuple) and len(message) == 1:
        if isinstance(message[0], str) and _SOCKET_NOISE.fullmatch(message[0]):
            return PredicateResult.no
    return PredicateResult.maybe


_twistd_log_factory: Callable[[], ILogObserver] | None = None


def twistd_log_observer() -> ILogObserver:
    """The observer twistd installs (via ``--logger``) when webgate runs under it."""
    factory = _twistd_log_factory or log_observer_factory(LogConfig())
    return factory()


def event_as_json_line(event: dict[str, Any]) -> str:
    """One log event as one JSON object on one line (for jq, Loki, Elasticsearch...).

    Keys: ``time`` (ISO 8601 UTC), ``level``, ``namespace``, ``message`` (the rendered
    text, with the traceback if the event carries a failure), then the event's own
    fields (``call_id``, ``session_id``, ...) as JSON where possible, else ``str()``.
    """
    level = event.get("log_level")
    line: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
        "level": level.name if level is not None else "info",
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        line["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in line or key in ("format", "message", "isError", "system"):
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            line[key] = value
        else:
            try:
                line[key] = json.loads(json.dumps(value))
            except (TypeError, ValueError):
                line[key] = str(value)
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


class _ToTwistedLogger(logging.Handler):
    """Forwards stdlib ``logging`` records (aiortc, aioice, av) into twisted.logger."""

    _levels = [
        (logging.CRITICAL, LogLevel.critical),
        (logging.ERROR, LogLevel.error),
        (logging.WARNING, LogLevel.warn),
        (logging.INFO, LogLevel.info),
    ]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = next((tw for lv, tw in self._levels if record.levelno >= lv), LogLevel.debug)
            # aiortc/aioice messages quote what the browser sent (candidates, SDP): escaped
            text = safe(record.getMessage(), 2000)
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            Logger(namespace=record.name).emit(level, "{stdlib_message}", stdlib_message=text)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def forward_stdlib_logging(level: str) -> None:
    """Route the stdlib root logger into twisted.logger (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(h, _ToTwistedLogger) for h in root.handlers):
        root.addHandler(_ToTwistedLogger())
    root.setLevel({"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}.get(level, logging.ERROR))


def makeService(options: Options) -> Any:
    """Build the gateway service from parsed options (twistd's IServiceMaker hook)."""
    from twisted.internet import reactor

    from webgate.gateway import build_gateway

    config = getattr(options, "config", None)
    if config is None:  # Options built without parseOptions()
        try:
            config = load_config(options["config"], options.overrides())
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
    if reactor_is_asyncio(reactor):
        # aiortc and friends ask asyncio for "the" loop: make it the reactor's.
        asyncio.set_event_loop(reactor._asyncioEventloop)
    forward_stdlib_logging(config.log.level)
    raise_open_files_limit(config)
    return build_gateway(config, reactor)


def open_files_needed(config: Config) -> int:
    """File descriptors the configured caps may use at once: every stream listener's connection cap
    (HTTP/WebSocket, RTMP, SIP TCP and TLS), an RTP/RTCP pair and a few ICE sockets per call, and
    a margin for listeners, logs and CDR files."""
    streams = config.http.max_connections + config.rtmp.max_connections + 2 * config.sip.max_connections
    return streams + 6 * config.limits.max_calls + 256


def raise_open_files_limit(config: Config, resource_module: Any = None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE toward what the caps need (Debian's default soft limit, 1024,
    is below the default caps' sum): a gateway at its caps must refuse with its own clear answers,
    not fail ``accept()`` with EMFILE. Never lowers it; warns when the hard limit is too low.
    Returns the (soft, hard) limits in effect."""
    if resource_module is None:
        import resource as resource_module
    need = open_files_needed(config)
    soft, hard = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    unlimited = resource_module.RLIM_INFINITY
    if soft != unlimited and soft < need:
        target = need if hard == unlimited else min(need, hard)
        try:
            resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            _log.warn("cannot raise the open-files limit to {need}: {error}", need=need, error=str(e))
    if soft != unlimited and soft < need:
        _log.warn(
            "open-files limit {soft} is below the {need} the configured caps may use: raise the hard limit "
            "(LimitNOFILE= in systemd, ulimit -Hn) or lower the max_connections/max_calls caps",
            soft=soft, need=need,
        )
    else:
        _log.info("open-files limit {soft} (the configured caps may use {need})", soft=soft, need=need)
    return soft, hard

"""The ``webgate`` command: small tools next to ``twistd webgate``.

- ``webgate --version``
- ``webgate check-config FILE`` — validate a configuration file; exit 0 if it is
  valid, 1 (with every error naming its key on stderr) if not.
- ``webgate token --dest 1234 [...]`` — mint a call token (JWT HS256) for testing and
  operations; the key comes from ``--key-file``, ``$WEBGATE_TOKEN_KEY`` or the ``--config``
  file's ``[tokens] key`` — never from the command line, where ``ps`` would show it.
  ``--watch SESSIONID`` (repeatable) or ``--watch '*'`` mints a token that may watch calls'
  video and data (docs/protocol.md "Who may watch").

Add a sub-command with :func:`build_parser`'s ``subparsers`` and a ``cmd_*`` function.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from webgate import __version__
from webgate.config import MIN_TOKEN_KEY_BYTES, Config, ConfigError, load_config


def _load_or_report(path: str) -> Config | None:
    """The configuration in ``path``, or None after printing every error on stderr."""
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"webgate: invalid configuration\n{e}", file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_report(args.file)
    if config is None:
        return 1
    print(f"{args.file}: OK")
    print(_summary(config))
    return 0


TOKEN_KEY_ENV = "WEBGATE_TOKEN_KEY"


def _token_key(args: argparse.Namespace, config: Config | None) -> tuple[str, str]:
    """(key, where it came from): --key-file, then $WEBGATE_TOKEN_KEY, then [tokens] key."""
    if args.key_file:
        with open(args.key_file, encoding="utf-8") as f:
            return f.read().strip(), args.key_file
    env = os.environ.get(TOKEN_KEY_ENV, "")
    if env:
        return env, f"${TOKEN_KEY_ENV}"
    if config is not None and config.tokens.key:
        return config.tokens.key, f"{args.config} [tokens] key"
    return "", ""


def cmd_token(args: argparse.Namespace) -> int:
    from webgate.security.tokens import TokenError, mint_token

    config = None
    if args.config:
        config = _load_or_report(args.config)
        if config is None:
            return 1
    try:
        key, source = _token_key(args, config)
    except OSError as e:
        print(f"webgate token: cannot read the key file: {e.strerror or e}", file=sys.stderr)
        return 1
    if not key:
        print(
            f"webgate token: no key: give --key-file FILE, set {TOKEN_KEY_ENV}, or --config FILE with [tokens] key",
            file=sys.stderr,
        )
        return 1
    if len(key.encode()) < MIN_TOKEN_KEY_BYTES:
        print(f"webgate token: the key from {source} is shorter than {MIN_TOKEN_KEY_BYTES} bytes", file=sys.stderr)
        return 1
    if not args.dest and not args.dest_pattern and not args.watch:
        print("webgate token: warning: no --dest or --dest-pattern: the token allows only public destinations", file=sys.stderr)
    issuer = args.issuer if args.issuer is not None else (config.tokens.issuer if config else "")
    audience = args.audience if args.audience is not None else (config.tokens.audience if config else "")
    try:
        token = mint_token(
            key,
            dest=(args.dest[0] if len(args.dest) == 1 else args.dest) if args.dest else None,
            dest_pattern=args.dest_pattern,
            ttl_s=args.ttl,
            max_duration=args.max_duration,
            sub=args.sub,
            display_name=args.display_name,
            caller_id=args.caller_id,
            session_id=args.session_id,
            watch=(args.watch[0] if len(args.watch) == 1 else args.watch) if args.watch else None,
            record=args.record,
            issuer=issuer,
            audience=audience,
        )
    except TokenError as e:
        print(f"webgate token: {e.message}", file=sys.stderr)
        return 1
    print(token)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _summary(config: Config) -> str:
    def onoff(value: object) -> str:
        return str(value) if value is not None else "off"

    lines = [
        f"  http   {onoff(config.http.listen)}",
        f"  rtmp   {onoff(config.rtmp.listen)}",
        f"  sip    udp {onoff(config.sip.udp)}, tcp {onoff(config.sip.tcp)}, tls {onoff(config.sip.tls)}",
        f"  rtp    {config.rtp.bind} ports {config.rtp.port_min}-{config.rtp.port_max}"
        f" ({config.rtp.port_pairs} pairs)",
        f"  trunks {', '.join(t.name for t in config.trunks) or 'none'}",
        f"  routes {len(config.routes)}"
        + ("" if config.routes else " (only the builtin destinations are callable)"),
    ]
    return "\n".join(lines)


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:  # type: ignore[type-arg]
    parser = argparse.ArgumentParser(
        prog="webgate",
        description="webgate tools. Run the gateway itself with: twistd -n webgate [--config FILE]",
    )
    parser.add_argument("--version", action="version", version=f"webgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("check-config", help="validate a TOML configuration file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_check_config)

    t = sub.add_parser(
        "token",
        allow_abbrev=False,  # "--key SECRET" must not be taken for "--key-file SECRET"
        help="mint a call token (JWT HS256) for testing and operations",
        description=(
            "Print a signed call token on stdout. The key is read from --key-file, else "
            f"${TOKEN_KEY_ENV}, else the --config file's [tokens] key (never a command-line argument)."
        ),
    )
    t.add_argument("--config", metavar="FILE", help="gateway configuration: [tokens] key, issuer, audience")
    t.add_argument("--key-file", metavar="FILE", help="file holding the shared key")
    t.add_argument("--dest", action="append", default=[], metavar="DEST", help="an allowed destination (repeatable)")
    t.add_argument("--dest-pattern", metavar="REGEX", help="regular expression an allowed destination fully matches")
    t.add_argument("--ttl", type=_positive_int, default=3600, metavar="SECONDS", help="validity (default 3600)")
    t.add_argument("--max-duration", type=_positive_int, metavar="SECONDS", help="longest call allowed")
    t.add_argument("--sub", metavar="ID", help="client identity (per-identity limits, logs, CDRs)")
    t.add_argument("--display-name", metavar="NAME", help="the From display name the call must use")
    t.add_argument("--caller-id", metavar="USER", help="the caller ID the call must use")
    t.add_argument("--session-id", metavar="ID", help="the session ID (8-10 digits) the call must use")
    t.add_argument(
        "--watch", action="append", default=[], metavar="ID",
        help="a session ID whose call's video and data the token may watch (repeatable), or '*' for any call",
    )
    t.add_argument("--record", choices=("off", "audio", "audio+video"),
                   help="call recording for the call: less than the route's, or more with record_on_request (docs/recording.md)")
    t.add_argument("--issuer", metavar="ISS", help="'iss' claim (default: the config's [tokens] issuer)")
    t.add_argument("--audience", metavar="AUD", help="'aud' claim (default: the config's [tokens] audience)")
    t.set_defaults(func=cmd_token)
    return parser, sub


def main(argv: Sequence[str] | None = None) -> int:
    parser, _sub = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``webgate`` command: small tools next to ``twistd webgate``.

- ``webgate --version``
- ``webgate check-config FILE`` — validate a configuration file; exit 0 if it is
  valid, 1 (with every error naming its key on stderr) if not.

Add a sub-command with :func:`build_parser`'s ``subparsers`` and a ``cmd_*`` function
(``webgate token`` is next).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from webgate import __version__
from webgate.config import Config, ConfigError, load_config


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"webgate: invalid configuration\n{e}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    print(_summary(config))
    return 0


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

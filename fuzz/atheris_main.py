"""The atheris (libFuzzer) runner of one target: ``python -m fuzz.atheris_main TARGET [libFuzzer args]``.

Started by ``python -m fuzz`` in a child process: webgate is imported under atheris'
instrumentation (coverage of webgate's bytecode drives the mutations), so that import must
happen here, before anything else imports webgate."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["webgate", "fuzz.targets", "pyamf", "jwt", "tomllib"]):
    from fuzz import targets

    targets.preload()


def main() -> None:
    name = sys.argv[1]
    fn = targets.TARGETS[name]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

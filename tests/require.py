"""The one way a test asks for a real peer: a program (sipp, baresip, ffmpeg, chromium,
kamailio...), a system library (libspeex) or an optional Python module (python-librtmp).

When it is missing the test is skipped, unless ``WEBGATE_REQUIRE_PEERS`` is on (CI and
``.ci/run`` set it to ``1``): then the test fails, so a CI machine without a peer can never
pass by skipping. Off means unset, empty, ``0``, ``false`` or ``no``; any other value is on.

Call these at the top of a synchronous test or fixture (``pytest.skip``/``pytest.fail`` raise
there; inside a coroutine test, ask for a fixture instead: ``require_program`` in
tests/conftest.py, or a fixture of your own that calls these). No ``skipif`` markers for
peers: they would skip under CI too.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

ENV = "WEBGATE_REQUIRE_PEERS"
_OFF = {"", "0", "false", "no"}


def peers_required() -> bool:
    """Whether a missing peer fails (``WEBGATE_REQUIRE_PEERS`` on) instead of skipping."""
    return os.environ.get(ENV, "").strip().lower() not in _OFF


def unavailable(message: str) -> NoReturn:
    """Fail (``WEBGATE_REQUIRE_PEERS`` on) or skip with ``message``: for what is not a program,
    library or module (a network namespace, a kernel feature)."""
    if peers_required():
        pytest.fail(f"{message} and {ENV} is set", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def missing(what: str, package: str) -> NoReturn:
    """Fail (``WEBGATE_REQUIRE_PEERS`` on) or skip: ``what`` is not installed."""
    unavailable(f"{what} is not installed (apt-get install {package}; see README.md, second command)")


def which(program: str) -> str | None:
    """``shutil.which``, also looking in /usr/sbin and /usr/bin (kamailio lives in sbin)."""
    return shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)), None)


def require_program(program: str, package: str | None = None) -> str:
    """Path of ``program``; skip, or fail under ``WEBGATE_REQUIRE_PEERS``, when it is missing.
    ``package`` is the Debian package to name (default: the program's name)."""
    path = which(program)
    if path is None:
        missing(program, package or program)
    return path


def require_library(name: str, available: bool, package: str) -> None:
    """A system library (``available`` is the caller's probe, e.g. ``_native.speex_available()``):
    skip, or fail under ``WEBGATE_REQUIRE_PEERS``, when it is missing."""
    if not available:
        missing(name, package)


def require_module(module: str, package: str) -> ModuleType:
    """Import ``module`` (a Python package from the test extras, e.g. librtmp from python-librtmp);
    skip, or fail under ``WEBGATE_REQUIRE_PEERS``, when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except ImportError:
        unavailable(f"Python module {module} is not installed (pip install {package}, in the test extras)")

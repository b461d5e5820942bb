"""Shared test fixtures.

The reactor: webgate runs on Twisted's asyncio reactor (webgate/tap.py installs it when
it is imported and no reactor is installed yet). The suite installs it before any test
module is imported, so every test sees the same reactor as production whatever order
tests are collected in. If pytest-twisted is installed, its ``--reactor`` option is
switched to ``asyncio`` (unless given) and it installs the reactor instead.
Most tests should not need the global reactor at all: inject ``task.Clock`` /
``MemoryReactor`` / ``StringTransport`` from ``twisted.internet.testing``.

Real peers (sipp, baresip, ffmpeg, chromium, kamailio): use ``require_program``; it
skips when the program is missing, unless WEBGATE_REQUIRE_PEERS=1 (set by .ci/run),
where a missing peer fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "reactor", None) == "default":  # pytest-twisted's option
        config.option.reactor = "asyncio"
    elif getattr(config.option, "reactor", None) is None:
        from webgate.tap import install_asyncio_reactor

        install_asyncio_reactor()


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[..., int]:
    """``free_port()`` -> a TCP port free on 127.0.0.1 now; ``free_port(socket.SOCK_DGRAM)`` for UDP."""
    return _free_port


@pytest.fixture
def require_program() -> Callable[[str], str]:
    """``require_program("sipp")`` -> its path; skip (or fail under WEBGATE_REQUIRE_PEERS=1) if missing."""

    def require(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            message = f"{name} is not installed (see README.md, second command)"
            if os.environ.get("WEBGATE_REQUIRE_PEERS") == "1":
                pytest.fail(message)
            pytest.skip(message)
        return path

    return require

"""Shared test fixtures.

The reactor: webgate runs on Twisted's asyncio reactor (webgate/tap.py installs it when
it is imported and no reactor is installed yet). The suite installs it before any test
module is imported, so every test sees the same reactor as production whatever order
tests are collected in. If pytest-twisted is installed, its ``--reactor`` option is
switched to ``asyncio`` (unless given) and it installs the reactor instead.
Most tests should not need the global reactor at all: inject ``task.Clock`` /
``MemoryReactor`` / ``StringTransport`` from ``twisted.internet.testing``.

Real peers (sipp, baresip, ffmpeg, chromium, kamailio, libspeex): use ``require_program``
(this fixture, or ``tests.require.require_program``/``require_library``/``require_module``,
the one helper); it skips when the peer is missing, unless WEBGATE_REQUIRE_PEERS=1 (set by
.ci/run), where a missing peer fails the test instead. No skipif markers for peers.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests import require


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "reactor", None) == "default":  # pytest-twisted's option
        config.option.reactor = "asyncio"
    elif getattr(config.option, "reactor", None) is None:
        from webgate.tap import install_asyncio_reactor

        install_asyncio_reactor()


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    # Below the kernel's ephemeral range, like the peers' ports: a port picked by binding to 0
    # can be handed to some client socket before the gateway under test binds it.
    from tests.interop.peers import free_port as _peer_port

    return _peer_port("tcp" if kind == socket.SOCK_STREAM else "udp")


@pytest.fixture
def free_port() -> Callable[..., int]:
    """``free_port()`` -> a TCP port free on 127.0.0.1 now; ``free_port(socket.SOCK_DGRAM)`` for UDP."""
    return _free_port


@pytest.fixture
def require_program() -> Callable[..., str]:
    """``require_program("sipp", "sip-tester")`` -> its path; skip (or fail under
    WEBGATE_REQUIRE_PEERS=1) if missing. The same function as ``tests.require.require_program``."""
    return require.require_program


@pytest.fixture
def ffmpeg_program() -> str:
    """The ffmpeg binary's path (skip, or fail under WEBGATE_REQUIRE_PEERS=1, if missing): for
    tests and modules (``pytestmark = pytest.mark.usefixtures("ffmpeg_program")``) that run it."""
    return require.require_program("ffmpeg")

"""Fixtures that run real peers (SIPp, baresip, Kamailio) on 127.0.0.1, see README.md in this directory.

A missing program skips the test, unless WEBGATE_REQUIRE_PEERS=1 (CI sets it): then it fails (tests/require.py).
Every process a fixture starts is stopped (by PID) at teardown, and its logs are kept in tmp_path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import require

from . import peers

# The one helper (tests/require.py), re-exported for the interop modules that import it from here.
require_program = require.require_program


@contextlib.contextmanager
def tone_baresip(workdir: Path, hz: float, seconds: float = 60.0, name: str = "bob",
                 audio_codecs: str = "pcmu") -> Iterator[peers.Baresip]:
    """A started baresip (auto-answer) whose microphone is a ``seconds`` long ``hz`` tone (48 kHz
    WAV, long enough for a whole test module: aufile restarts per call); stopped on exit."""
    require_program("baresip", "baresip-core")
    wav = peers.make_tone_wav(Path(workdir) / f"tone{hz:g}.wav", hz, 48000, seconds)
    b = peers.Baresip(workdir, name, wav=wav, audio_codecs=audio_codecs)
    try:
        yield b
    finally:
        b.stop()


def _report(request: pytest.FixtureRequest, started: list) -> None:
    """On failure, print what each peer did (flows, errors, log tails) into the test report."""
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    for p in started:
        if isinstance(p, peers.Sipp):
            print(p.describe())
        else:
            print(f"--- {p.name} log tail ({getattr(p, 'log_path', '?')}):\n{p.log_tail(3000)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def sipp_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., peers.Sipp]]:
    """``sipp_factory(scenario, remote=None, **kw) -> peers.Sipp`` (started).

    ``scenario``: a path, a name under tests/interop/scenarios (``"uas_answer"``, ``"selftest/uac_auth"``) or
    ``"builtin:uac"``. Keyword arguments are those of ``peers.Sipp`` (``keys``, ``rtp_echo``, ``service``,
    ``duration_ms``, ``auth``, ``calls``, ``extra``, ports). Logs go to ``tmp_path/sipp``."""
    require_program("sipp", "sip-tester")
    started: list[peers.Sipp] = []

    def make(scenario: str | Path, remote: str | None = None, **kw: object) -> peers.Sipp:
        if isinstance(scenario, str) and not scenario.startswith("builtin:") and not Path(scenario).is_file():
            scenario = peers.scenario(scenario)
        s = peers.Sipp(scenario, tmp_path / "sipp", remote=remote, **kw)  # type: ignore[arg-type]
        started.append(s)
        return s

    yield make
    _report(request, started)
    for s in started:
        s.stop()


@pytest.fixture
def baresip_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., peers.Baresip]]:
    """``baresip_factory(name="bob", **kw) -> peers.Baresip`` (started, ctrl_tcp connected).

    ``kw``: ``wav`` (audio source, default a 440 Hz 48 kHz tone), ``audio_codecs`` ("pcmu,pcma"),
    ``answermode`` ("auto"), ``registrar="127.0.0.1:PORT"`` + ``password`` (+ ``auth_user``, ``regint``) for a
    registering account, ``extra_account_params``."""
    require_program("baresip", "baresip-core")
    started: list[peers.Baresip] = []

    def make(name: str = "bob", **kw: object) -> peers.Baresip:
        b = peers.Baresip(tmp_path, name, **kw)  # type: ignore[arg-type]
        started.append(b)
        return b

    yield make
    _report(request, started)
    for b in started:
        b.stop()


@pytest.fixture
def kamailio_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., peers.Kamailio]]:
    """``kamailio_factory(users=None) -> peers.Kamailio`` (started). Default users: alice/alicepw, bob/bobpw,
    gateway/gwpw."""
    require_program("kamailio", "kamailio")
    require_program("kamcmd", "kamailio")
    started: list[peers.Kamailio] = []

    def make(users: dict[str, str] | None = None) -> peers.Kamailio:
        k = peers.Kamailio(tmp_path / f"k{len(started)}", users=users)
        started.append(k)
        return k

    yield make
    _report(request, started)
    for k in started:
        k.stop()


@pytest.fixture
def kamailio(kamailio_factory: Callable[..., peers.Kamailio]) -> peers.Kamailio:
    """A running Kamailio registrar/proxy with the default users (``.domain``, ``.uri(user)``,
    ``.registered_contacts(user)``)."""
    return kamailio_factory()

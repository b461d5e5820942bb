"""tests/require.py: a missing peer fails under WEBGATE_REQUIRE_PEERS=1 (CI) and skips otherwise;
no test skips a peer any other way."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests import require

MISSING = "webgate-no-such-program-4f1c"
TESTS = Path(__file__).parent


@pytest.mark.parametrize("value", ["1", "true", "yes", "2"])
def test_a_missing_program_library_or_module_fails_when_peers_are_required(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WEBGATE_REQUIRE_PEERS", value)
    assert require.peers_required()
    with pytest.raises(pytest.fail.Exception, match=f"{MISSING} is not installed.*WEBGATE_REQUIRE_PEERS"):
        require.require_program(MISSING, "some-package")
    with pytest.raises(pytest.fail.Exception, match="libnothing is not installed"):
        require.require_library("libnothing", False, "libnothing1")
    with pytest.raises(pytest.fail.Exception, match="webgate_no_such_module"):
        require.require_module("webgate_no_such_module", "nothing")


@pytest.mark.parametrize("value", [None, "", "0", "false", "no"])
def test_a_missing_peer_skips_otherwise(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("WEBGATE_REQUIRE_PEERS", raising=False)
    else:
        monkeypatch.setenv("WEBGATE_REQUIRE_PEERS", value)
    assert not require.peers_required()
    with pytest.raises(pytest.skip.Exception, match="apt-get install some-package"):
        require.require_program(MISSING, "some-package")
    with pytest.raises(pytest.skip.Exception):
        require.require_library("libnothing", False, "libnothing1")
    with pytest.raises(pytest.skip.Exception):
        require.require_module("webgate_no_such_module", "nothing")


def test_a_present_peer_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBGATE_REQUIRE_PEERS", "1")
    assert require.require_program("sh").endswith("/sh")
    require.require_library("libc", True, "libc6")
    assert require.require_module("json", "-") is sys.modules["json"]


def test_the_fixtures_use_the_one_helper() -> None:
    """Both spellings (the conftest fixture and tests.interop.conftest) are the same function."""
    from tests.interop import conftest as interop

    assert interop.require_program is require.require_program


def test_no_test_skips_a_peer_by_marker_or_reads_the_variable_itself() -> None:
    """Skip markers and private readings of the variable would let CI pass without the peer."""
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name in ("require.py", "test_require.py"):
            continue
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"skipif\(|WEBGATE_REQUIRE_PEERS\"\)|environ\.get\(\"WEBGATE_REQUIRE_PEERS", line):
                offenders.append(f"{path.relative_to(TESTS)}:{n}: {line.strip()}")
    assert offenders == []


def test_ci_turns_it_on() -> None:
    ci = (TESTS.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^export WEBGATE_REQUIRE_PEERS=1$", ci, re.MULTILINE)

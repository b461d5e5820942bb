"""The gateway raises its soft open-files limit toward what its caps may use (webgate/tap.py):
Debian's default soft limit (1024) is below the default caps' sum, so a gateway at its caps would
otherwise fail accept() with EMFILE instead of refusing with its own answers."""

from __future__ import annotations

import subprocess
import sys

from webgate.config import default_config
from webgate.tap import open_files_needed, raise_open_files_limit


class FakeResource:
    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft: int, hard: int, fail: bool = False) -> None:
        self.limits = (soft, hard)
        self.fail = fail

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == self.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        if self.fail:
            raise ValueError("not allowed")
        self.limits = limits


def test_default_caps_need_more_than_debians_default() -> None:
    assert open_files_needed(default_config()) > 1024


def test_soft_limit_raised_to_need_within_hard() -> None:
    config = default_config()
    need = open_files_needed(config)
    r = FakeResource(1024, 1 << 20)
    assert raise_open_files_limit(config, r) == (need, 1 << 20)
    r = FakeResource(1024, need - 100)  # the hard limit caps it
    assert raise_open_files_limit(config, r) == (need - 100, need - 100)
    r = FakeResource(need * 2, need * 4)  # never lowered
    assert raise_open_files_limit(config, r) == (need * 2, need * 4)
    r = FakeResource(1024, 1 << 20, fail=True)  # refused: kept, warned
    assert raise_open_files_limit(config, r) == (1024, 1 << 20)


def test_real_process_limit_is_raised() -> None:
    """In a fresh interpreter with soft limit 1024, starting the limit logic raises it."""
    code = (
        "import resource;"
        "s, h = resource.getrlimit(resource.RLIMIT_NOFILE);"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, h));"
        "from webgate.config import default_config;"
        "from webgate.tap import raise_open_files_limit, open_files_needed;"
        "soft, hard = raise_open_files_limit(default_config());"
        "print(soft, hard, open_files_needed(default_config()), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    soft, hard, need, now = map(int, out)
    expected = need if hard < 0 else min(need, hard)  # hard < 0: RLIM_INFINITY
    assert now == soft == expected

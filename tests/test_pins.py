"""setup.py pins aiortc and aioice to the tested minor versions (the WebRTC packet paths use
their private names): the installed versions are inside the pins, and the pins are minor ranges."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

SETUP = (Path(__file__).parent.parent / "setup.py").read_text(encoding="utf-8")


def _tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


@pytest.mark.parametrize("dist", ["aiortc", "aioice"])
def test_installed_version_is_inside_the_minor_pin(dist: str) -> None:
    m = re.search(rf'"{dist}>=(\d+)\.(\d+),<(\d+)\.(\d+)"', SETUP)
    assert m, f"setup.py does not pin {dist} to a minor range"
    lo, hi = (int(m[1]), int(m[2])), (int(m[3]), int(m[4]))
    assert hi == (lo[0], lo[1] + 1), f"{dist}: pin one minor version, not {lo}..{hi}"
    assert lo <= _tuple(version(dist))[:2] < hi, f"{dist} {version(dist)} is outside the pin {m[0]}"

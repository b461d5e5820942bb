"""The conventions in DESIGN.md that a tool can check: mypy --strict on the sans-IO cores
(webgate/proto) and the media code (webgate/media), and ruff's pyflakes rules (undefined
names, unused imports, ...) on everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_mypy_strict_on_proto_and_media() -> None:
    r = _run("mypy", "--strict", "--no-error-summary", "webgate/proto", "webgate/media")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_pyflakes_rules() -> None:
    r = _run("ruff", "check", "--no-cache", "--select", "F", "webgate", "tests", "twisted", "bench", "fuzz")
    assert r.returncode == 0, r.stdout + r.stderr

"""The conventions in DESIGN.md and docs/architecture.md that a tool can check: the import
layers and the absence of cycles (import-linter, contracts in pyproject.toml), mypy --strict on
the sans-IO cores (webgate/proto), the media code (webgate/media) and the call model with its
neighbours (calls, legs, security, config, cluster), and ruff's pyflakes rules (undefined names, unused
imports, ...) on everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


STRICT = ["webgate/proto", "webgate/media", "webgate/calls", "webgate/legs", "webgate/security", "webgate/config",
          "webgate/cluster", "webgate/syntax.py", "webgate/counters.py", "webgate/logsafe.py"]


def test_mypy_strict() -> None:
    r = _run("mypy", "--strict", "--no-error-summary", *STRICT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_contracts() -> None:
    """The layers, the forbidden imports and the no-cycles rule of pyproject.toml
    [tool.importlinter]; a violation fails with import-linter's own report."""
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" not in r.stdout.lower().replace("0 broken", ""), r.stdout


def test_import_contracts_catch_a_violation(tmp_path: Path) -> None:
    """The contracts are live: the same configuration fails on a tree where proto imports twisted."""
    import shutil

    shutil.copytree(ROOT / "webgate", tmp_path / "webgate", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "webgate" / "proto" / "_bad.py").write_text("import twisted.internet\nfrom webgate.calls import call\n")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0, r.stdout
    assert "webgate.proto._bad -> twisted" in r.stdout.replace("   ", " "), r.stdout


def test_ruff_pyflakes_rules() -> None:
    r = _run("ruff", "check", "--no-cache", "--select", "F", "webgate", "tests", "twisted", "bench", "fuzz")
    assert r.returncode == 0, r.stdout + r.stderr

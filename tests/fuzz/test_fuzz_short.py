"""A short run of every fuzz target (fuzz/targets.py) in the test suite: the seed corpus, the
crash regressions and a few thousand deterministic mutations each (fixed seed, no coverage
engine needed), under a minute in all. The long coverage-guided runs are ``python -m fuzz``
(fuzz/README.md); their results are in docs/security.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz import mutate
from fuzz.targets import MAX_LEN, TARGETS
from tests.fuzz.test_fuzz_regressions import REGRESSIONS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
SEED = 20261203
#: cases per target: slower targets (whole RTMP connections, config files) get fewer
RUNS = {"rtmp": 3000, "config": 2000, "ws": 4000, "sip": 4000, "stun": 3000}


@pytest.mark.parametrize("name", list(TARGETS))
def test_short_fuzz_run(name: str) -> None:
    corpus = mutate.load_corpus(CORPUS / name) + [data for target, _, data in REGRESSIONS if target == name]
    runs = RUNS.get(name, 5000)
    res = mutate.run(name, TARGETS[name], corpus, runs, seed=SEED, max_len=MAX_LEN.get(name, 4096), time_bound=5.0)
    assert not res.crashes, f"{name}: {res.crashes[0][1]!r} on input {res.crashes[0][0][:300]!r}"
    assert res.runs == runs


def test_every_target_has_seeds_and_the_corpus_is_small() -> None:
    total = 0
    for name in TARGETS:
        files = [p for p in (CORPUS / name).iterdir() if p.is_file()]
        assert files, f"no seeds for {name}"
        total += sum(p.stat().st_size for p in files)
    assert total < 2 * 1024 * 1024, total


def test_a_contract_violation_is_caught() -> None:
    """The loop reports an exception escaping a target (and an input beyond the time bound)."""

    def target(data: bytes) -> None:
        if data.startswith(b"boom"):
            raise ValueError("undocumented error")

    res = mutate.run("t", target, [b"ok", b"boom"], 10, seed=1, stop_on_crash=True)
    assert res.crashes and isinstance(res.crashes[0][1], ValueError)
    res = mutate.run("t", lambda d: __import__("time").sleep(0.05), [b"x"], 1, time_bound=0.01)
    assert res.crashes and isinstance(res.crashes[0][1], TimeoutError)

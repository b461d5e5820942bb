"""``python -m fuzz``: run the fuzz targets (see fuzz/README.md).

    .venv/bin/python -m fuzz list
    .venv/bin/python -m fuzz TARGET [--runs N] [--engine atheris|mutate] [--seed S]
    .venv/bin/python -m fuzz all --runs N [--jobs 2]
    .venv/bin/python -m fuzz replay TARGET FILE...

atheris (coverage-guided libFuzzer) is the default engine when installed (``pip install -e
'.[fuzz]'``); ``--engine mutate`` is the deterministic mutation loop without coverage feedback.
New interesting inputs and crash files go to ``--workdir`` (default /tmp/webgate-fuzz/TARGET/),
never into fuzz/corpus/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fuzz import mutate
from fuzz.targets import MAX_LEN, TARGETS

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_atheris(name: str, runs: int, seed: int, work: Path, timeout: int, rss_mb: int) -> dict:
    wd = work / name
    (wd / "corpus").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "fuzz.atheris_main", name,
        f"-runs={runs}", f"-seed={seed}", f"-max_len={MAX_LEN.get(name, 4096)}", f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}", f"-malloc_limit_mb={rss_mb}", f"-artifact_prefix={wd}/", "-print_final_stats=1",
        "-reload=0", str(wd / "corpus"), str(CORPUS / name),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    t0 = time.monotonic()
    with open(wd / "log.txt", "wb") as log:
        rc = subprocess.call(cmd, cwd=HERE.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    text = (wd / "log.txt").read_text(errors="replace")
    m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text) or re.findall(r"Done (\d+) runs", text) or \
        re.findall(r"#(\d+)\s", text)
    executed = int(m[-1]) if m else 0
    cov = re.findall(r"cov: (\d+)", text)
    crashes = sorted(str(p) for p in wd.glob("crash-*")) + sorted(str(p) for p in wd.glob("timeout-*")) + \
        sorted(str(p) for p in wd.glob("oom-*"))
    return {"target": name, "engine": "atheris", "runs": executed, "seconds": round(time.monotonic() - t0, 1),
            "rc": rc, "coverage": int(cov[-1]) if cov else None, "crashes": crashes, "log": str(wd / "log.txt")}


def run_mutate(name: str, runs: int, seed: int, work: Path, timeout: int) -> dict:
    corpus = mutate.load_corpus(CORPUS / name)
    res = mutate.run(name, TARGETS[name], corpus, runs, seed=seed, max_len=MAX_LEN.get(name, 4096),
                     time_bound=timeout, crash_dir=work / name, stop_on_crash=False)
    for data, e in res.crashes[:3]:
        print(f"{name}: crash on {data[:120]!r}: {type(e).__name__}: {e}", file=sys.stderr)
    return {"target": name, "engine": "mutate", "runs": res.runs, "seconds": round(res.seconds, 1), "rc": 1 if res.crashes else 0,
            "crashes": [f"crash-{__import__('hashlib').sha1(d).hexdigest()}" for d, _ in res.crashes], "slowest_s": round(res.slowest, 3)}


def replay(name: str, files: list[str]) -> int:
    bad = 0
    for f in files:
        data = Path(f).read_bytes()
        try:
            TARGETS[name](data)
            print(f"{f}: ok")
        except Exception:  # noqa: BLE001 - report every failure
            bad += 1
            print(f"{f}: CRASH")
            traceback.print_exc()
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="a target name, 'all', 'list' or 'replay'")
    ap.add_argument("files", nargs="*", help="replay: TARGET FILE...")
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--engine", choices=("atheris", "mutate"), default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="targets run at once (all)")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take (a hang beyond is a crash)")
    ap.add_argument("--rss-mb", type=int, default=1536, help="memory bound of a fuzzing process (atheris)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "webgate-fuzz")
    ap.add_argument("--results", type=Path, default=None, help="append one JSON line per target here")
    a = ap.parse_args(argv)
    if a.target == "list":
        print("\n".join(TARGETS))
        return 0
    if a.target == "replay":
        if not a.files or a.files[0] not in TARGETS:
            ap.error("replay TARGET FILE...")
        return replay(a.files[0], a.files[1:])
    names = list(TARGETS) if a.target == "all" else [a.target]
    for n in names:
        if n not in TARGETS:
            ap.error(f"unknown target {n!r}; one of: {', '.join(TARGETS)}")
    engine = a.engine or ("atheris" if _atheris_available() else "mutate")

    def one(n: str) -> dict:
        if engine == "atheris":
            r = run_atheris(n, a.runs, a.seed, a.workdir, a.timeout, a.rss_mb)
        else:
            r = run_mutate(n, a.runs, a.seed, a.workdir, a.timeout)
        print(json.dumps(r), flush=True)
        if a.results is not None:
            with open(a.results, "a") as fh:
                fh.write(json.dumps(r) + "\n")
        return r

    with ThreadPoolExecutor(max(1, a.jobs)) as ex:
        results = list(ex.map(one, names))
    return 1 if any(r["crashes"] or r["rc"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

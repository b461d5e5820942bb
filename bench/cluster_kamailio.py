"""Kamailio in front of the nodes: what it adds per call (issue 15; docs/cluster.md "Scaling").

Starts deploy/local-cluster.sh (Redis, Kamailio, two nodes), then SIPp places ``--calls`` calls
to ``echo`` at ``--rate`` per second (``tests/interop/scenarios/uac_echo.xml``: INVITE with an
SDP offer, 200, ACK, ``--hold-ms``, BYE): once straight to node1, once through Kamailio (the
dispatcher spreads them over both nodes). Reported: set-up time (INVITE to 200, SIPp's
``-trace_rtt``) median and p99 each way, and Kamailio's CPU per call (all its processes,
``/proc``), and the nodes' CPU per call.

    .venv/bin/python bench/cluster_kamailio.py [--calls 40] [--rate 4] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "local-cluster.sh"
UAC = ROOT / "tests" / "interop" / "scenarios" / "uac_echo.xml"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(match: str) -> float:
    """CPU seconds (user + system) of every process whose command line contains ``match``."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if match not in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                continue
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def sipp(target: str, calls: int, rate: int, hold_ms: int, work: Path, source: str) -> list[float]:
    """SIPp's INVITE -> 200 times (ms) of ``calls`` calls to ``echo`` at ``target``."""
    work.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["sipp", "-sf", str(UAC), target, "-s", "echo", "-m", str(calls), "-r", str(rate), "-l", str(calls),
         "-d", str(hold_ms), "-i", source, "-p", str(random.randrange(40000, 49000)),
         "-mp", str(2 * random.randrange(17000, 19000)), "-nostdin", "-timeout", "120s", "-trace_rtt",
         "-rtt_freq", "1"],
        cwd=work, capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0:
        raise SystemExit(f"sipp to {target} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    times: list[float] = []
    for f in work.glob("*_rtt.csv"):
        with f.open() as fh:
            for row in csv.reader(fh, delimiter=";"):
                # Date_ms;response_time_ms;rtd_no
                if len(row) >= 2 and row[1].replace(".", "", 1).isdigit():
                    times.append(float(row[1]))
    return times


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"n": len(times), "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # the nodes' per-source limits (60 attempts a minute, 10 calls at once by default) bound a
    # run: SIPp calls direct from 127.0.0.5, Kamailio (127.0.0.1) spreads its over both nodes
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--rate", type=int, default=4)
    ap.add_argument("--hold-ms", type=int, default=1000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wgkb", dir="/tmp"))
    env = {**os.environ, "CLUSTER_DIR": str(work / "c"), "REDIS_PORT": str(random.randrange(40000, 49000)),
           "KAMAILIO_PORT": str(random.randrange(40000, 49000)), "NODE_HTTP_PORT": str(random.randrange(40000, 49000)),
           "NODE_RTMP_PORT": str(random.randrange(40000, 49000)), "NODE_SIP_PORT": str(random.randrange(40000, 49000)),
           "RTP_PORT_MIN": str(2 * random.randrange(12000, 14000)), "DS_PING_INTERVAL": "2"}
    up = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=120, check=False)
    if up.returncode != 0:
        raise SystemExit(up.stderr)
    status = json.loads(up.stdout)
    out: dict[str, Any] = {"calls": args.calls, "rate": args.rate, "hold_ms": args.hold_ms}
    try:
        node1 = status["nodes"][0]["sip"]
        cfg = str(ROOT / "deploy" / "kamailio" / "kamailio.cfg")
        sipp(node1, 10, args.rate, 100, work / "warm", "127.0.0.6")
        n0 = cpu_of("webgate --config")
        out["direct"] = summary(sipp(node1, args.calls, args.rate, args.hold_ms, work / "direct", "127.0.0.5"))
        out["direct"]["nodes_cpu_ms_per_call"] = round(1000 * (cpu_of("webgate --config") - n0) / args.calls, 2)
        k0, n0 = cpu_of(cfg), cpu_of("webgate --config")
        out["kamailio"] = summary(sipp(status["kamailio"], args.calls, args.rate, args.hold_ms, work / "kamailio", "127.0.0.1"))
        out["kamailio"]["kamailio_cpu_ms_per_call"] = round(1000 * (cpu_of(cfg) - k0) / args.calls, 3)
        out["kamailio"]["nodes_cpu_ms_per_call"] = round(1000 * (cpu_of("webgate --config") - n0) / args.calls, 2)
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(out, indent=2, sort_keys=True)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()

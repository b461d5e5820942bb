"""Kamailio in front of the nodes: what it adds per call (issue 15; docs/cluster.md "Scaling").

Starts deploy/local-cluster.sh (Redis, Kamailio, two nodes; the nodes' per-source limits lifted:
every call comes from one address), then SIPp places ``--calls`` calls to ``echo`` (``--service``) at
``--rate`` per second (``tests/interop/scenarios/uac_echo.xml``: INVITE with an SDP offer, 200, ACK, hold,
BYE): once straight to node1 (one node), once through Kamailio (the dispatcher spreads them over
both nodes). Each call is held until every call of the run is up, plus ``--window-s``, so all
``--calls`` are up at once. Reported each way:

- ``calls_held``: calls answered and still alive at the end of the window (SIPp's successful
  calls: answered, held, and their BYE answered 200 - a call the gateway dropped, or never
  answered, fails), and ``peak_concurrent``: SIPp's most calls in progress at once (its
  ``-trace_stat`` ``CurrentCall``, each second);
- set-up time (INVITE to 200, SIPp's ``-trace_rtt``) median and p99;
- the nodes' CPU per call (all node processes, ``/proc``, over the whole SIPp run) and, through
  Kamailio, Kamailio's CPU per call (all its processes).

    .venv/bin/python bench/cluster_kamailio.py [--calls 40] [--rate 4] [--window-s 3] [--service echo|tone] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import socket
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
_issued: set[int] = set()


def _port() -> int:
    """A TCP+UDP port free on every address, below the kernel's ephemeral range (no client socket can
    take it before its listener binds it) and outside the nodes' RTP ports (24000-28999, below)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        top = min(int(f.read().split()[0]), 65536) - 64
    while True:
        port = random.randrange(12000, min(20000, top))
        if port in _issued:
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("0.0.0.0", port))
        except OSError:
            continue
        _issued.add(port)
        return port


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


def sipp(target: str, calls: int, rate: int, hold_ms: int, work: Path, source: str, service: str = "echo") -> dict[str, Any]:
    """SIPp's ``calls`` calls to ``service`` at ``target``: their INVITE -> 200 times (ms), how many
    completed (answered, held ``hold_ms``, BYE answered) or failed, and the most in progress at once."""
    work.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["sipp", "-sf", str(UAC), target, "-s", service, "-m", str(calls), "-r", str(rate), "-l", str(calls),
         "-d", str(hold_ms), "-i", source, "-p", str(_port()),
         "-mp", str(2 * random.randrange(17000, 19000)), "-nostdin", "-timeout", f"{120 + hold_ms // 1000}s",
         "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1", "-rtp_echo"],
        cwd=work, capture_output=True, text=True, timeout=300 + hold_ms / 1000, check=False)
    times: list[float] = []
    for f in work.glob("*_rtt.csv"):
        with f.open() as fh:
            for row in csv.reader(fh, delimiter=";"):
                # Date_ms;response_time_ms;rtd_no
                if len(row) >= 2 and row[1].replace(".", "", 1).isdigit():
                    times.append(float(row[1]))
    ok = failed = peak = 0
    for f in work.glob("*_.csv"):  # -trace_stat, a row a second: the last holds the cumulative counts
        with f.open() as fh:
            rows = list(csv.DictReader(fh, delimiter=";"))
        if rows:
            ok, failed = int(rows[-1]["SuccessfulCall(C)"]), int(rows[-1]["FailedCall(C)"])
            peak = max(int(row["CurrentCall"]) for row in rows)
    if not times:
        raise SystemExit(f"sipp to {target} set up no call (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return {"times": times, "completed": ok, "failed": failed, "peak": peak}


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"n": len(times), "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2)}


def phase(target: str, args: argparse.Namespace, work: Path, source: str, cpu: dict[str, str]) -> dict[str, Any]:
    """One SIPp run of ``--calls`` held calls at ``target``, with the CPU (ms per call) of each
    process group in ``cpu`` (name -> command-line match) over it."""
    ramp_s = args.calls / args.rate
    hold_ms = int(1000 * (ramp_s + args.setup_margin_s + args.window_s))
    before = {k: cpu_of(m) for k, m in cpu.items()}
    r = sipp(target, args.calls, args.rate, hold_ms, work, source, args.service)
    out: dict[str, Any] = summary(r["times"])
    out.update({"calls_held": r["completed"], "failed": r["failed"], "peak_concurrent": r["peak"], "hold_ms": hold_ms})
    for k, m in cpu.items():
        out[f"{k}_cpu_ms_per_call"] = round(1000 * (cpu_of(m) - before[k]) / args.calls, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=40, help="calls placed, and held at once (at most ~240: "
                    "each node has 500 RTP ports, and direct all go to node1)")
    ap.add_argument("--rate", type=int, default=4, help="new calls per second")
    ap.add_argument("--window-s", type=float, default=3.0, help="all calls up together this long")
    ap.add_argument("--setup-margin-s", type=float, default=2.0, help="after the last INVITE, before the window")
    ap.add_argument("--service", default="echo", help="echo: SIPp sends no RTP, so no media flows (signalling, "
                    "registry and timers only); tone: the node sends a tone, SIPp's -rtp_echo returns it")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wgkb", dir="/tmp"))
    env = {**os.environ, "CLUSTER_DIR": str(work / "c"), "REDIS_PORT": str(_port()),
           "KAMAILIO_PORT": str(_port()), "NODE_HTTP_PORT": str(_port()),
           "NODE_RTMP_PORT": str(_port()), "NODE_SIP_PORT": str(_port()),
           "RTP_PORT_MIN": str(2 * random.randrange(12000, 14000)), "DS_PING_INTERVAL": "2",
           # all calls of a phase come from one address (SIPp's, or Kamailio's): no per-source limits
           "NODE_EXTRA_TOML": "[limits]\nmax_calls = 10000\nmax_calls_per_ip = 0\n"
                              "max_attempts_per_ip_per_minute = 1000000\n"}
    up = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=120, check=False)
    if up.returncode != 0:
        raise SystemExit(up.stderr)
    status = json.loads(up.stdout)
    out: dict[str, Any] = {"calls": args.calls, "rate": args.rate, "window_s": args.window_s, "service": args.service}
    try:
        node1 = status["nodes"][0]["sip"]
        # this run's processes only (a test suite may run other clusters meanwhile)
        nodes, kamailio = f"--config {env['CLUSTER_DIR']}/node", f"-Y {env['CLUSTER_DIR']}/kamailio"
        subprocess.run(["sipp", "-sf", str(UAC), node1, "-s", "echo", "-m", "10", "-r", str(args.rate), "-d", "100",
                        "-i", "127.0.0.6", "-p", str(_port()), "-nostdin", "-timeout", "60s"],
                       cwd=work, capture_output=True, timeout=120, check=False)  # warm-up
        out["direct_one_node"] = phase(node1, args, work / "direct", "127.0.0.5", {"nodes": nodes})
        out["kamailio_two_nodes"] = phase(status["kamailio"], args, work / "kamailio", "127.0.0.1",
                                          {"nodes": nodes, "kamailio": kamailio})
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

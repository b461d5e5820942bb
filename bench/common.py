"""Small helpers shared by the benchmark scripts: process CPU and memory from /proc,
percentiles, JSON Lines, waiting for a port.  No third-party imports."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_rss_mb(pid: int) -> float:
    """Resident set size in MiB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def system_cpu_s(cpu: int) -> float:
    """Busy seconds of one CPU (everything but idle and iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v) - v[3] - v[4]) / TICK
    raise KeyError(cpu)


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    xs = sorted(v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1))
    return xs[k]


def median(values: Iterable[float | None]) -> float | None:
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def wait_http(url: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - not up yet
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s: {last}")


def port_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as twistd binds: TIME_WAIT is no owner
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` run on one CPU (taskset) when ``cpu`` is given and the machine has it."""
    if cpu is None or cpu >= (os.cpu_count() or 1):
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL; the whole process group when the process leads one."""
    if proc is None or proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
        kill = (lambda sig: os.killpg(pgid, sig)) if pgid == proc.pid else proc.send_signal
    except ProcessLookupError:
        return
    import signal

    try:
        kill(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def versions() -> dict[str, str]:
    """Versions of what is being measured (for the report)."""
    out: dict[str, str] = {}
    try:
        import aiortc
        import av

        out["aiortc"] = aiortc.__version__
        out["pyav"] = av.__version__
    except Exception:  # noqa: BLE001, S110 - not installed: no version to report
        pass
    import platform

    out["python"] = platform.python_version()
    for name, cmd in {"janus": ["janus", "--version"], "ffmpeg": ["ffmpeg", "-version"]}.items():
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            first = (r.stdout or r.stderr).splitlines()
            out[name] = next((ln for ln in first if ln.strip()), "?").strip()[:80]
        except Exception:  # noqa: BLE001
            out[name] = "missing"
    try:
        with open("/proc/cpuinfo") as f:
            out["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except Exception:  # noqa: BLE001, S110 - no model name: reported without it
        pass
    out["cores"] = str(os.cpu_count())
    return out

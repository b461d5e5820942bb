"""Start and stop Janus 1.1.2 (Debian package) for the benchmark, with the configs in bench/janus/.

    start_janus(workdir, cpu=None) -> Popen   # writes configs into workdir, runs `janus -F workdir -o`
    stop_janus(proc)

HTTP 127.0.0.1:18088 (/janus), WebSocket 127.0.0.1:18188, ICE/RTP 16000-17999, SIP-side RTP 26000-29999, only the SIP plugin.
Log: workdir/janus.log.  Manual use: python bench/janus_proc.py [--workdir DIR] [--cpu N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "janus"
HTTP_PORT = 18088
WS_PORT = 18188
JANUS = shutil.which("janus") or "/usr/bin/janus"


def info_url(http_port: int = HTTP_PORT) -> str:
    return f"http://127.0.0.1:{http_port}/janus/info"


def ws_url(ws_port: int = WS_PORT) -> str:
    return f"ws://127.0.0.1:{ws_port}/"


def write_configs(workdir: Path, debug_level: int = 3, http_port: int = HTTP_PORT, ws_port: int = WS_PORT) -> Path:
    """Fill the templates of bench/janus/ into ``workdir`` (created); returns it."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    subst = {"@DIR@": str(workdir), "@DEBUG_LEVEL@": str(debug_level),
             "@HTTP_PORT@": str(http_port), "@WS_PORT@": str(ws_port)}
    for tpl in sorted(TEMPLATES.glob("*.jcfg")):
        text = tpl.read_text()
        for k, v in subst.items():
            text = text.replace(k, v)
        (workdir / tpl.name).write_text(text)
    return workdir


def _info(http_port: int = HTTP_PORT, timeout: float = 1.0) -> dict | None:
    try:
        with urllib.request.urlopen(info_url(http_port), timeout=timeout) as r:
            data = json.loads(r.read())
            return data if data.get("janus") == "server_info" else None
    except (OSError, ValueError):
        return None


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_janus(workdir: Path, cpu: int | None = None, debug_level: int = 3, timeout: float = 20.0,
                http_port: int = HTTP_PORT, ws_port: int = WS_PORT) -> subprocess.Popen:
    """Write the configs into ``workdir`` and start Janus (pinned to ``cpu`` with taskset if given).

    Returns once GET /janus/info answers, the SIP plugin is loaded and the WebSocket port accepts;
    raises RuntimeError with the log tail otherwise (and stops the process).  The ports are
    parameters only so that a second Janus can run beside the benchmark's (tests); the
    benchmark uses the defaults.  ``proc.log_path`` is the log, ``proc.ws_url`` the WS address."""
    if _info(http_port, 0.5) is not None or _listening(ws_port):
        raise RuntimeError(f"port {http_port} or {ws_port} already in use (a Janus left running?)")
    workdir = write_configs(Path(workdir), debug_level, http_port, ws_port)
    log = workdir / "janus.log"
    cmd = [JANUS, "-F", str(workdir), "-o"]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(workdir), start_new_session=True)
    proc.log_path = log  # type: ignore[attr-defined]
    proc.ws_url = ws_url(ws_port)  # type: ignore[attr-defined]
    try:  # whatever interrupts the wait (an error, Ctrl-C, SIGTERM) stops what was started
        ready = _wait_ready(proc, log, http_port, ws_port, timeout)
    except BaseException:
        stop_janus(proc)
        raise
    if ready:
        return proc
    stop_janus(proc)
    raise RuntimeError(f"janus did not answer {info_url(http_port)} within {timeout} s:\n{_tail(log)}")


def _wait_ready(proc: subprocess.Popen, log: Path, http_port: int, ws_port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"janus exited with rc {proc.returncode}:\n{_tail(log)}")
        info = _info(http_port)
        if info is not None:
            if "janus.plugin.sip" not in info.get("plugins", {}):
                raise RuntimeError(f"janus is up but the SIP plugin is not loaded:\n{_tail(log)}")
            if _listening(ws_port):
                return True
        time.sleep(0.1)
    return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def stop_janus(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGINT (Janus's clean shutdown), then SIGKILL after ``timeout``.  Returns the exit code.

    When pinned, ``proc`` is taskset, which exec()s janus: same pid, so signalling it is enough."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def main() -> None:
    ap = argparse.ArgumentParser(description="Start Janus with the benchmark configs and wait (Ctrl-C stops it).")
    ap.add_argument("--workdir", default="/tmp/bench-janus")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (taskset -c)")
    ap.add_argument("--debug-level", type=int, default=3)
    ap.add_argument("--http-port", type=int, default=HTTP_PORT)
    ap.add_argument("--ws-port", type=int, default=WS_PORT)
    a = ap.parse_args()

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM too, and SIGINT explicitly (a background job of a non-interactive shell ignores it)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]
    try:  # a signal during start-up must stop Janus too
        proc = start_janus(Path(a.workdir), a.cpu, a.debug_level, http_port=a.http_port, ws_port=a.ws_port)
        info = _info(a.http_port) or {}
        print(f"janus pid {proc.pid} up: {info.get('version_string')} plugins={list(info.get('plugins', {}))} "
              f"transports={list(info.get('transports', {}))} http={info_url(a.http_port)} ws={ws_url(a.ws_port)} log={proc.log_path}")  # type: ignore[attr-defined]
        while proc.poll() is None:
            time.sleep(1)
        print(f"janus exited rc {proc.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None:
            print(f"stopped rc {stop_janus(proc)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

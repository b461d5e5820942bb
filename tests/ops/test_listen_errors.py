"""A listener that cannot bind: real ``twistd -n webgate`` against a port this test holds busy
prints one line (no traceback) and exits 1; with the ports free it starts normally."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.helpers import TWISTD, twistd_env

_REAL_TWISTD = Path(sys.executable).with_name("twistd")
TWISTD_CMD = [str(_REAL_TWISTD)] if _REAL_TWISTD.exists() else TWISTD

# every listener on an ephemeral port unless the case overrides it (never the defaults:
# 8080, 1935 and 5060 may be in use on the machine)
EPHEMERAL = {"http": "127.0.0.1:0", "rtmp": "127.0.0.1:0", "sip-udp": "127.0.0.1:0", "sip-tcp": "127.0.0.1:0"}


@contextlib.contextmanager
def busy_port(kind: int) -> Iterator[int]:
    """A port on 127.0.0.1 held by this process (TCP: listening; UDP: bound)."""
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
        yield int(s.getsockname()[1])
    finally:
        s.close()


def twistd_args(**flags: str) -> list[str]:
    args = [*TWISTD_CMD, "-n", "webgate"]
    for flag, value in {**EPHEMERAL, **flags}.items():
        args += [f"--{flag}", value]
    return args


@pytest.mark.parametrize(
    ("flag", "name", "kind"),
    [
        ("http", "http", socket.SOCK_STREAM),
        ("rtmp", "rtmp", socket.SOCK_STREAM),
        ("sip-udp", "sip.udp", socket.SOCK_DGRAM),
        ("sip-tcp", "sip.tcp", socket.SOCK_STREAM),
    ],
)
def test_a_busy_port_is_one_line_and_exit_status_1(flag: str, name: str, kind: int, tmp_path: Path) -> None:
    with busy_port(kind) as port:
        proc = subprocess.run(
            twistd_args(**{flag: f"127.0.0.1:{port}"}),
            cwd=tmp_path, env=twistd_env(), capture_output=True, text=True, timeout=60, check=False,
        )
    line = f"{name}: cannot listen on 127.0.0.1:{port}: address already in use"
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr == line + "\n", proc.stderr
    assert "Traceback" not in proc.stdout and "Traceback" not in proc.stderr, proc.stdout
    assert line in proc.stdout  # the log says it too (the log file, when daemonized)
    assert not (tmp_path / "twistd.pid").exists()  # twistd still cleans up its PID file


def test_with_free_ports_twistd_starts_answers_and_stops(tmp_path: Path) -> None:
    """The bind-error path leaves a normal start alone."""
    with busy_port(socket.SOCK_STREAM) as port:
        pass  # free again (a small race with the rest of the machine, retried below if lost)
    out = (tmp_path / "twistd.out").open("wb")
    proc = subprocess.Popen(
        twistd_args(http=f"127.0.0.1:{port}"), cwd=tmp_path, env=twistd_env(),
        stdout=out, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        health = None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.2)
        assert health is not None, (tmp_path / "twistd.out").read_text(errors="replace")
        assert (tmp_path / "twistd.pid").read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        # twistd stops cleanly, then re-raises the signal so its exit status says SIGTERM
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert proc.stderr is not None and proc.stderr.read() == b""
        log = (tmp_path / "twistd.out").read_text(errors="replace")
        assert "webgate stopped" in log and "cannot listen" not in log and "Traceback" not in log, log[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        out.close()
    assert not (tmp_path / "twistd.pid").exists()

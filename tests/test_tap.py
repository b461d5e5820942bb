"""The twistd plugin: options, errors before listening, a real ``twistd -n webgate``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.python import usage

from webgate import __version__
from webgate.config import HostPort
from webgate.tap import FLAG_KEYS, Options, event_as_json_line, makeService

ROOT = Path(__file__).resolve().parents[1]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


# -- options


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[http]\nlisten = '127.0.0.1:1111'\n[sip]\nudp = '127.0.0.1:2222'\ntcp = '127.0.0.1:3333'\n"
        "[rtp]\nport_min = 40000\nport_max = 40099\n"
    )
    options = parse(
        "--config", str(path),
        "--http", "[::1]:8081",
        "--sip-udp", "127.0.0.1:5070",
        "--sip-tls", "",
        "--rtmp", "",
        "--rtp-ports", "30000-30199",
        "--sip-advertise", "gw.example.com",
        "--rtp-advertise", "[2001:db8::1]",
        "--log-format", "json",
    )  # fmt: skip
    c = options.config
    assert c.http.listen == HostPort("::1", 8081)
    assert c.sip.udp == HostPort("127.0.0.1", 5070)
    assert c.sip.tcp == HostPort("127.0.0.1", 3333)  # not overridden: from the file
    assert c.sip.tls is None and c.rtmp.listen is None
    assert (c.rtp.port_min, c.rtp.port_max) == (30000, 30199)
    assert c.sip.advertised_address == "gw.example.com"
    assert c.rtp.advertised_address == "2001:db8::1"
    assert c.log.format == "json"


def test_no_config_is_the_embedded_default() -> None:
    from webgate.config import default_config

    assert parse().config == default_config()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sip-udp", "x:99999"], "sip.udp: invalid address 'x:99999'"),
        (["--http", "127.0.0.1"], "http.listen: invalid address"),
        (["--rtp-ports", "20001-20999"], "rtp.port_min: 20001 must be even"),
        (["--rtp-ports", "30000-20000"], "rtp.port_max: 20000 must be greater"),
        (["--rtp-ports", "lots"], "--rtp-ports: invalid range 'lots'"),
        (["--sip-advertise", "a b"], "sip.advertised_address: invalid host"),
        (["--log-level", "loud"], "log.level: must be one of"),
    ],
)
def test_bad_flag_names_the_key(args: list[str], expected: str) -> None:
    with pytest.raises(usage.UsageError) as info:
        parse(*args)
    assert expected in str(info.value)
    if args[0] != "--rtp-ports" or "lots" not in args:
        assert f"(from {args[0]})" in str(info.value)


def test_bad_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[trunk]]\nname = 'pbx'\ntarget = 'sip:pbx'\n[[route]]\npattern = '(9'\ntrunk = 'pbx'\n")
    with pytest.raises(usage.UsageError, match=r"bad.toml: route\[0\].pattern: invalid regular expression"):
        parse("--config", str(path))


def test_help_documents_every_flag() -> None:
    text = str(Options())
    for flag in [*FLAG_KEYS, "config", "rtp-ports"]:
        assert f"--{flag}=" in text


def test_make_service_builds_the_gateway(free_port: Callable[..., int]) -> None:
    from twisted.internet import reactor

    from webgate.gateway import Gateway

    port = free_port()
    gateway = makeService(parse("--http", f"127.0.0.1:{port}"))
    assert isinstance(gateway, Gateway)
    assert gateway.listeners["http"].address == HostPort("127.0.0.1", port)
    assert gateway.telephony is not None and len(gateway.registry) == 0
    health = gateway.health()
    assert health["reactor"] == type(reactor).__name__ == "AsyncioSelectorReactor"
    assert (health["status"], health["calls"], health["version"]) == ("ok", 0, __version__)
    gateway.shutting_down = True
    assert gateway.health()["status"] == "shutting_down"


def test_health_resource_status_codes() -> None:
    from twisted.web.test.requesthelper import DummyRequest

    from webgate.web.site import make_site

    class FakeGateway:
        status = "ok"

        def health(self) -> dict[str, Any]:
            return {"status": self.status, "calls": 0}

    gw = FakeGateway()
    site = make_site(gw)

    def get(path: bytes, method: bytes = b"GET") -> tuple[int, dict[str, Any]]:
        request = DummyRequest(path.strip(b"/").split(b"/"))
        request.method = method
        resource = site.getResourceFor(request)
        body = resource.render(request)
        return request.responseCode or 200, json.loads(body)

    assert get(b"/health") == (200, {"status": "ok", "calls": 0})
    gw.status = "shutting_down"
    assert get(b"/health")[0] == 503
    assert get(b"/nope") == (404, {"error": "not found"})
    assert get(b"/health/more")[0] == 404
    assert get(b"/health", b"POST")[0] == 405


def test_json_log_line() -> None:
    from twisted.logger import LogLevel

    line = event_as_json_line(
        {
            "log_format": "INVITE {call_id} -> {status}",
            "log_level": LogLevel.warn,
            "log_namespace": "webgate.sip",
            "log_time": 0.0,
            "call_id": "abc",
            "status": 486,
            "address": HostPort("::1", 5060),
        }
    )
    assert line.endswith("\n") and line.count("\n") == 1
    event = json.loads(line)
    assert event["message"] == "INVITE abc -> 486"
    assert (event["level"], event["namespace"], event["call_id"], event["status"]) == ("warn", "webgate.sip", "abc", 486)
    assert event["address"] == "[::1]:5060" and event["time"].startswith("1970-01-01T00:00:00")


# -- a real twistd


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # the checkout first: webgate and ./twisted/plugins/ (an editable install works too)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _get_health(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_twistd_runs_on_asyncio_and_stops_on_sigterm(
    tmp_path: Path, free_port: Callable[..., int], log_format: str
) -> None:
    http, sip = free_port(), free_port(socket.SOCK_DGRAM)
    cmd = [
        *TWISTD, "-n", "--pidfile=", "webgate",
        "--http", f"127.0.0.1:{http}",
        "--sip-udp", f"127.0.0.1:{sip}",
        "--sip-tcp", f"127.0.0.1:{free_port()}",
        "--rtmp", f"127.0.0.1:{free_port()}",
        "--rtp-ports", "40000-40099",
        "--log-format", log_format,
    ]  # fmt: skip
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=o, stderr=e)
        try:
            deadline = time.monotonic() + 30
            health = None
            while time.monotonic() < deadline and proc.poll() is None:
                health = _get_health(http)
                if health is not None:
                    break
                time.sleep(0.1)
            assert health is not None, f"no /health (rc={proc.poll()}): {out.read_text()} {err.read_text()}"
            status, body = health
            assert status == 200 and body["status"] == "ok"
            assert "Asyncio" in body["reactor"]
            assert body["listeners"]["http"] == f"127.0.0.1:{http}"
            proc.send_signal(signal.SIGTERM)
            # twistd stops cleanly, then re-raises the signal so its exit status says SIGTERM
            assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not _listening(http)
    log = out.read_text()
    assert "AsyncioSelectorReactor" in log and "Server Shut Down." in log
    if log_format == "json":
        events = [json.loads(line) for line in log.splitlines() if line.strip()]
        assert any("reactor class" in e["message"] for e in events)
        assert any(e["namespace"] == "webgate.gateway" for e in events)
    else:
        assert "webgate shutting down" in log


def test_twistd_bad_config_exits_before_listening(tmp_path: Path, free_port: Callable[..., int]) -> None:
    http = free_port()
    path = tmp_path / "bad.toml"
    path.write_text(f"[http]\nlisten = '127.0.0.1:{http}'\n[sip]\nudp = 'x:99999'\n")
    proc = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "webgate", "--config", str(path)],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # it must not listen at any moment, so look while it runs, too
        seen_listening = False
        while proc.poll() is None:
            seen_listening |= _listening(http)
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "sip.udp: invalid address 'x:99999'" in stderr.decode()
    assert not seen_listening and not _listening(http)


def test_twistd_help_lists_webgate_and_its_flags(tmp_path: Path) -> None:
    r = subprocess.run([*TWISTD, "webgate", "--help"], cwd=tmp_path, env=_env(), capture_output=True, timeout=60)
    assert r.returncode == 0
    for flag in ["--config", "--http", "--rtmp", "--sip-udp", "--sip-tcp", "--sip-tls", "--rtp-ports",
                 "--sip-advertise", "--rtp-advertise"]:  # fmt: skip
        assert flag.encode() in r.stdout


# -- packaging: twistd finds the plugin from a normal and from an editable install


def _copy_source(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "dropin.cache")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


@pytest.mark.timeout(600)
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_install_makes_twistd_webgate_work(tmp_path: Path, editable: bool) -> None:
    src = _copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # dependencies: borrow this interpreter's (installing them again would take minutes)
    (Path(purelib) / "zz_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    cmd = [python, "-m", "pip", "install", "-q", "--no-deps", *(["-e"] if editable else []), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    if r.returncode != 0 and re.search(r"No matching distribution found for setuptools|NewConnectionError", r.stderr):
        pytest.skip(f"no package index for the build backend: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    twistd = [python, "-c", "from twisted.scripts.twistd import run; run()", "webgate", "--version"]
    r = subprocess.run(twistd, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert r.returncode == 0 and f"webgate {__version__}" in r.stdout, r.stdout + r.stderr
    where = subprocess.run(
        [python, "-c", "import webgate; print(webgate.__file__)"], capture_output=True, text=True, env=env, cwd=tmp_path
    ).stdout
    assert where.startswith(str(src) if editable else purelib), where
    r = subprocess.run([venv / "bin" / "webgate", "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0 and __version__ in r.stdout


# -- the README, .ci/run and scripts/test.sh agree


def _apt_packages(text: str) -> set[str]:
    m = re.search(r"apt-get install -y --no-install-recommends ([^&\n]+?) &&", text)
    assert m, "no apt-get install line"
    return set(m[1].split())


def test_readme_and_ci_install_the_same_packages() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^```sh\n(.*?)\n```", readme, re.MULTILINE | re.DOTALL)
    setup, tests = commands[0], commands[1]
    assert "\n" not in setup and "\n" not in tests  # each one copy-pasteable line
    assert setup.endswith(".venv/bin/pip install -e . && .venv/bin/twistd -n webgate")
    assert tests.endswith("&& scripts/test.sh")
    ci = (ROOT / ".ci" / "run").read_text()
    ci_packages = set(re.search(r'^APT_PACKAGES="([^"]+)"', ci, re.MULTILINE)[1].split())  # type: ignore[index]
    assert _apt_packages(tests) == ci_packages
    assert {"sip-tester", "baresip-core", "kamailio", "chromium-driver", "librtmp-dev"} <= ci_packages
    assert "exec ./scripts/test.sh" in ci and "WEBGATE_REQUIRE_PEERS=1" in ci
    assert os.access(ROOT / ".ci" / "run", os.X_OK) and os.access(ROOT / "scripts" / "test.sh", os.X_OK)


def test_rtp_socket_start_stop_lines_are_dropped_unless_debug() -> None:
    """Twisted logs each UDP socket's start/stop; with two RTP sockets per call leg those lines
    are dropped above debug level, and nothing else is."""
    import io

    from twisted.python import log as legacy

    from webgate.config import LogConfig
    from webgate.tap import log_observer_factory

    def run(level: str) -> str:
        out = io.StringIO()
        old, sys.stdout = sys.stdout, out
        try:
            observer = log_observer_factory(LogConfig(level=level), logfile="-")()
        finally:
            sys.stdout = old
        legacy.addObserver(_legacy_bridge(observer))
        try:
            legacy.msg("_Socket starting on 20000")
            legacy.msg("(UDP Port 20001 Closed)")
            legacy.msg("Site starting on 8080")
        finally:
            legacy.theLogPublisher.observers.pop()
        return out.getvalue()

    text = run("info")
    assert "Site starting on 8080" in text
    assert "_Socket starting" not in text and "UDP Port 20001 Closed" not in text
    text = run("debug")
    assert "_Socket starting on 20000" in text and "UDP Port 20001 Closed" in text


def _legacy_bridge(observer):  # type: ignore[no-untyped-def]
    from twisted.logger._legacy import publishToNewObserver
    from twisted.python import log as legacy

    return lambda event: publishToNewObserver(observer, event, legacy.textFromEventDict)

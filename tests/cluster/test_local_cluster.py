"""deploy/local-cluster.sh with real processes: Redis, Kamailio with deploy/kamailio/kamailio.cfg
and two webgate nodes (127.0.0.2, 127.0.0.3). ``up`` and ``status`` print the documented JSON;
Kamailio answers OPTIONS and probes both nodes; SIPp's INVITEs to ``echo`` sent to Kamailio are
spread over the nodes by the dispatcher and answered there; only nodes may REGISTER, a call for
a registered user goes to its node, the newest registration wins; a killed node leaves the
dispatcher set and its users get 480; ``down`` stops everything. Also: the systemd unit passes
``systemd-analyze verify``."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.calls.gw import rtp_range
from tests.interop.peers import free_port, free_port_block
from tests.require import require_program

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "deploy" / "local-cluster.sh"
UAC_ECHO = ROOT / "tests" / "interop" / "scenarios" / "uac_echo.xml"
NODES = ("127.0.0.2", "127.0.0.3")
CRLF = "\r\n"


def _bindable(addr: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def _port(*addrs: str) -> int:
    """A TCP+UDP port free on every one of ``addrs``, from peers.free_port: below the kernel's
    ephemeral range (a client socket cannot take it before the listener binds it), outside the
    gateways' RTP spans and in this pytest-xdist worker's own slice."""
    for _ in range(200):
        port = free_port("both")
        if all(_bindable(a, port) for a in addrs):
            return port
    raise AssertionError(f"no port free on all of {addrs}")


class Cluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wgc", dir="/tmp"))  # short: Kamailio's ctl socket
        self.env = {
            **os.environ,
            "CLUSTER_DIR": str(self.dir),
            "REDIS_PORT": str(_port("127.0.0.1")),
            "KAMAILIO_PORT": str(_port("127.0.0.1")),
            "NODE_HTTP_PORT": str(_port(*NODES)),
            "NODE_RTMP_PORT": str(_port(*NODES)),
            "NODE_SIP_PORT": str(_port(*NODES)),
            # the script gives each node 500 ports: from the gateways' RTP span (this worker's slice),
            # not the peers' range, whose ports are never handed out twice in a process
            "RTP_PORT_MIN": str(rtp_range(1000)[0]),
            "DS_PING_INTERVAL": "1",
        }
        self.status: dict[str, Any] = {}

    def run(self, command: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    @property
    def kamailio(self) -> tuple[str, int]:
        host, port = self.status["kamailio"].rsplit(":", 1)
        return host, int(port)

    def kamcmd(self, *args: str) -> str:
        r = subprocess.run([require_program("kamcmd", "kamailio"), "-s", f"unix:{self.dir}/kamailio/ctl", *args],
                           capture_output=True, text=True, timeout=10, check=False)
        return r.stdout + r.stderr

    def log(self, name: str) -> str:
        return (self.dir / name).read_text(errors="replace")

    def describe(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.dir.glob("**/*.log")))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    for program, package in (("redis-server", "redis-server"), ("kamailio", "kamailio"), ("kamcmd", "kamailio"),
                             ("sipp", "sip-tester")):
        require_program(program, package)
    c = Cluster()
    try:
        r = c.run("up")
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{c.describe()}"
        c.status = json.loads(r.stdout)
        yield c
    finally:
        r = c.run("down", timeout=60)
        assert r.returncode == 0, r.stderr
        shutil.rmtree(c.dir, ignore_errors=True)


def sip_request(cluster: Cluster, method: str, ruri: str, *, source: str = "127.0.0.1", headers: str = "",
                timeout: float = 8.0) -> list[str]:
    """Send one request to Kamailio over UDP from ``source``; the status lines until a final one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        host, port = s.getsockname()
        branch = f"z9hG4bK{random.getrandbits(48):x}"
        call_id = f"{random.getrandbits(64):x}@test"
        msg = (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
               f"From: <sip:test@{host}>;tag=t{random.getrandbits(32):x}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n"
               f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{headers or f'Contact: <sip:test@{host}:{port}>{CRLF}'}"
               "Content-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), cluster.kamailio)
        statuses: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = s.recv(65535).decode(errors="replace")
            first = data.split("\r\n", 1)[0]
            statuses.append(first)
            if int(first.split()[1]) >= 200:
                if method == "INVITE":  # ACK the final answer (hop-by-hop for a non-2xx)
                    to = re.search(r"^To: (.*)$", data, re.MULTILINE | re.IGNORECASE)
                    ack = msg.replace(f"{method} ", "ACK ", 1).replace(f"CSeq: 1 {method}", "CSeq: 1 ACK")
                    if to:
                        ack = re.sub(r"^To: .*$", f"To: {to.group(1).strip()}", ack, flags=re.MULTILINE)
                    s.sendto(ack.encode(), cluster.kamailio)
                break
        return statuses


def _register(cluster: Cluster, user: str, node: str, port: str, expires: int) -> list[str]:
    host, kport = cluster.kamailio
    # To carries the AoR: build the request by hand so To is the user, not the registrar
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((node, 0))
        s.settimeout(5)
        lport = s.getsockname()[1]
        msg = (f"REGISTER sip:{host}:{kport} SIP/2.0\r\nVia: SIP/2.0/UDP {node}:{lport};branch=z9hG4bK{random.getrandbits(48):x}\r\n"
               f"From: <sip:{user}@{host}>;tag=r{random.getrandbits(32):x}\r\nTo: <sip:{user}@{host}>\r\n"
               f"Call-ID: {random.getrandbits(64):x}@{node}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
               f"Contact: <sip:{user}@{node}:{port}>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), (host, kport))
        return [s.recv(65535).decode(errors="replace").split("\r\n", 1)[0]]


def sipp_echo(cluster: Cluster, calls: int = 1) -> subprocess.CompletedProcess[str]:
    host, port = cluster.kamailio
    trace = cluster.dir / f"sipp{random.getrandbits(16)}"
    trace.mkdir()
    return subprocess.run(
        ["sipp", "-sf", str(UAC_ECHO), f"{host}:{port}", "-s", "echo", "-m", str(calls), "-l", "1", "-d", "300",
         "-i", "127.0.0.1", "-p", str(_port("127.0.0.1")), "-mp", str(free_port_block(4, "udp", align=2)),
         "-nostdin", "-timeout", "30s", "-timeout_error", "-trace_msg", "-message_file", str(trace / "msgs.log")],
        cwd=trace, capture_output=True, text=True, timeout=60, check=False)


def dispatcher_flags(cluster: Cluster) -> dict[str, str]:
    out = cluster.kamcmd("dispatcher.list")
    return dict(re.findall(r"URI: sip:([\d.]+):\d+\s+FLAGS: (\w+)", out))


def wait(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return bool(check())


def _health(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/health", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def test_status_json_and_everything_answers(cluster: Cluster) -> None:
    r = cluster.run("status")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status == cluster.status
    assert status["redis"] == f"redis://127.0.0.1:{cluster.env['REDIS_PORT']}"
    assert status["kamailio"] == f"127.0.0.1:{cluster.env['KAMAILIO_PORT']}"
    assert [n["id"] for n in status["nodes"]] == ["node1", "node2"]
    for node, addr in zip(status["nodes"], NODES):
        assert set(node) == {"id", "http", "rtmp", "sip"}
        assert node["sip"] == f"{addr}:{cluster.env['NODE_SIP_PORT']}"
        assert node["rtmp"] == f"rtmp://{addr}:{cluster.env['NODE_RTMP_PORT']}"
        with urllib.request.urlopen(node["http"] + "/health", timeout=5) as resp:
            assert resp.status == 200
            # the nodes share their state through the script's Redis (WITH_CLUSTER=1, the default)
            assert wait(lambda n=node: _health(n["http"])["cluster"]["redis"] == "up", 10), _health(node["http"])
            assert _health(node["http"])["cluster"]["node_id"] == node["id"]
    host, port = cluster.kamailio
    assert sip_request(cluster, "OPTIONS", f"sip:{host}:{port}")[-1].startswith("SIP/2.0 200")
    # the dispatcher probes both nodes with OPTIONS and has them active (A) and probed (P)
    assert wait(lambda: dispatcher_flags(cluster) == {NODES[0]: "AP", NODES[1]: "AP"}, 10), cluster.kamcmd("dispatcher.list")


def test_invites_to_echo_reach_both_nodes_through_the_dispatcher(cluster: Cluster) -> None:
    r = sipp_echo(cluster, calls=2)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}\n{cluster.describe()}"
    log = cluster.log("kamailio.log")
    port = cluster.env["NODE_SIP_PORT"]
    for addr in NODES:  # round robin: one call each
        assert f"INVITE sip:echo@{cluster.status['kamailio']} -> node sip:{addr}:{port}" in log, log[-3000:]
    msgs = next(cluster.dir.glob("sipp*/msgs.log")).read_text(errors="replace")
    # the answers' media addresses are the nodes' own: RTP bypasses Kamailio
    assert {f"c=IN IP4 {a}" for a in NODES} <= set(re.findall(r"c=IN IP4 [\d.]+", msgs))


def test_registrar_trusts_nodes_and_newest_registration_wins(cluster: Cluster) -> None:
    host, port = cluster.kamailio
    # only a node may register
    assert sip_request(cluster, "REGISTER", f"sip:{host}:{port}",
                       headers="Contact: <sip:mallory@127.0.0.1:5999>\r\n")[-1].startswith("SIP/2.0 403")
    assert _register(cluster, "alice", NODES[0], cluster.env["NODE_SIP_PORT"], 60)[0].startswith("SIP/2.0 200")
    # the call for alice goes to node1 (which has no such web user: its 404 comes back)
    final = sip_request(cluster, "INVITE", f"sip:alice@{host}:{port}")[-1]
    assert final.startswith("SIP/2.0 404"), final
    assert f"-> registered user sip:alice@{NODES[0]}" in cluster.log("kamailio.log")
    # alice connects to node2: the newest registration replaces the old one
    assert _register(cluster, "alice", NODES[1], cluster.env["NODE_SIP_PORT"], 60)[0].startswith("SIP/2.0 200")
    contacts = re.findall(r"Address:\s*(\S+)", cluster.kamcmd("ul.lookup", "location", "alice"))
    assert [c.strip("<>") for c in contacts] == [f"sip:alice@{NODES[1]}:{cluster.env['NODE_SIP_PORT']}"], contacts


def test_a_killed_node_leaves_the_dispatcher_set(cluster: Cluster) -> None:
    # alice is on node2 (previous test, or register her here when run alone)
    assert _register(cluster, "alice", NODES[1], cluster.env["NODE_SIP_PORT"], 60)[0].startswith("SIP/2.0 200")
    pid = int((cluster.dir / "pids" / "node2.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    # one failed probe (fr_timer 2 s) after at most DS_PING_INTERVAL (1 s) takes it out
    assert wait(lambda: dispatcher_flags(cluster).get(NODES[1], "").startswith("I"), 8), cluster.kamcmd("dispatcher.list")
    host, port = cluster.kamailio
    final = sip_request(cluster, "INVITE", f"sip:alice@{host}:{port}")[-1]
    assert final.startswith("SIP/2.0 480"), final
    r = sipp_echo(cluster, calls=2)  # new calls go to the survivor
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert cluster.run("status").returncode == 1  # status says a part is down


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = require_program("systemd-analyze", "systemd")
    twistd = Path(sys.executable).with_name("twistd")
    unit = (ROOT / "deploy" / "systemd" / "webgate@.service").read_text()
    assert "/opt/webgate/bin/twistd" in unit
    for option in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "AmbientCapabilities=\n"):
        assert option in unit
    (tmp_path / "webgate@.service").write_text(unit.replace("/opt/webgate/bin/twistd", str(twistd)))
    dropin = tmp_path / "webgate@node1.service.d"
    dropin.mkdir()
    shutil.copy(ROOT / "deploy" / "systemd" / "webgate-low-ports.conf", dropin / "low-ports.conf")
    r = subprocess.run([analyze, "verify", str(tmp_path / "webgate@node1.service")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and "webgate@" not in r.stderr, r.stderr

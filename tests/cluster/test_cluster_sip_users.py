"""Web users reach their node through Kamailio (issue 15, ``[cluster] registrar``): two whole
gateways, nodes "a" and "b" of one cluster on a private redis-server, and a real Kamailio with
deploy/kamailio/kamailio.cfg whose dispatcher set is the two nodes.

- alice (aiortc over /ws, a 700 Hz tone) registers on B: B REGISTERs ``sip:alice@B`` at Kamailio
  by itself; baresip (a 440 Hz tone) calls alice through Kamailio, the call rings at B (``invited``
  on B's WebSocket), alice accepts, and the audio is measured both ways (440 Hz at the browser,
  700 Hz in baresip's recording; the RTP flows between baresip and B, Kamailio relays the
  signalling); alice hangs up and baresip sees the call closed;
- alice registers again on A (her newest connection): A's REGISTER replaces the binding at
  Kamailio, B notices (the cluster's users) and stops refreshing its own, and SIPp's next call
  rings at A;
- alice's WebSocket on A closes: her binding at Kamailio is removed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.webrtc_client import Browser, WsClient, complete_call, connect
from tests.calls.gw import rtp_range, wait_for
from tests.cluster.conftest import RedisServer
from tests.cluster.test_local_cluster import UAC_ECHO, _port
from tests.interop import peers
from tests.interop.conftest import tone_baresip
from tests.ops.helpers import RunningGateway, gateway_config
from tests.require import require_program
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs
from webgate.security.tokens import mint_token

ROOT = Path(__file__).resolve().parent.parent.parent
KEY = "cluster-sip-users-token-key-0123456789ab"
BROWSER_HZ = 700.0
BARESIP_HZ = 440.0


class Kamailio:
    """Kamailio with the deploy kit's configuration on 127.0.0.1:``port``."""

    def __init__(self, port: int, nodes: list[int]) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="wgk", dir="/tmp"))  # short: the ctl socket
        (self.dir / "dispatcher.list").write_text("".join(f"1 sip:127.0.0.1:{p}\n" for p in nodes))
        modules = next(iter(sorted(Path("/usr/lib").glob("*/kamailio/modules"))), None)
        assert modules is not None, "no Kamailio modules under /usr/lib/*/kamailio/modules"
        self.log = self.dir / "kamailio.log"
        self.proc = subprocess.Popen(
            [require_program("kamailio", "kamailio"), "-DD", "-E", "-m", "64", "-M", "8",
             "-f", str(ROOT / "deploy" / "kamailio" / "kamailio.cfg"), "-Y", str(self.dir),
             "-A", f"SIP_UDP=udp:127.0.0.1:{port}", "-A", f"SIP_TCP=tcp:127.0.0.1:{port}",
             "-A", f'DS_LIST="{self.dir}/dispatcher.list"', "-A", "DS_PING_INTERVAL=1",
             "-A", f'CTL_SOCKET="unix:{self.dir}/ctl"', "-A", f'MODULES_DIR="{modules}/"'],
            stdin=subprocess.DEVNULL, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def rpc(self, *args: str) -> str:
        r = subprocess.run([require_program("kamcmd", "kamailio"), "-s", f"unix:{self.dir}/ctl", *args],
                           capture_output=True, text=True, timeout=10, check=False)
        return r.stdout + r.stderr

    def contacts(self, user: str) -> list[str]:
        return [c.strip("<>") for c in re.findall(r"Address:\s*(\S+)", self.rpc("ul.lookup", "location", user))]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def programs() -> None:
    for program, package in (("kamailio", "kamailio"), ("kamcmd", "kamailio"), ("sipp", "sip-tester"),
                             ("baresip", "baresip-core")):
        require_program(program, package)


@pytest.fixture
def bob(tmp_path: Path) -> Iterator[peers.Baresip]:
    """baresip (auto-answer, no registration) whose microphone is a 440 Hz tone."""
    with tone_baresip(tmp_path, BARESIP_HZ) as b:
        yield b


def node_config(server: RedisServer, node_id: str, kamailio_port: int) -> Any:
    lo, hi = rtp_range(100)
    return gateway_config({
        "cluster": {"enabled": True, "redis_url": server.url, "node_id": node_id, "heartbeat_s": 0.25,
                    "node_ttl_s": 1.5, "registrar": f"sip:127.0.0.1:{kamailio_port}"},
        "rtp": {"port_min": lo, "port_max": hi},
        "tokens": {"key": KEY},
        "sip": {"inbound_from": ["loopback"]},
    })


def sip_port(gw: RunningGateway) -> int:
    return int(gw.svc.bound["udp"][1])


def ws_url(gw: RunningGateway) -> str:
    return gw.url("/ws").replace("http://", "ws://")


def sipp_call(kamailio: Kamailio, user: str, trace: Path) -> subprocess.CompletedProcess[str]:
    """Blocking: SIPp calls ``user`` through Kamailio (an SDP offer, then BYE after 1 s)."""
    trace.mkdir(exist_ok=True)
    return subprocess.run(
        ["sipp", "-sf", str(UAC_ECHO), f"127.0.0.1:{kamailio.port}", "-s", user, "-m", "1", "-d", "1000",
         "-i", "127.0.0.1", "-p", str(_port("127.0.0.1")), "-mp", str(peers.free_port_block(4, "udp", align=2)),
         "-nostdin", "-timeout", "20s", "-timeout_error"],
        cwd=trace, capture_output=True, text=True, timeout=40, check=False)


async def register(gw: RunningGateway) -> WsClient:
    ws = await connect(ws_url(gw))
    await ws.next("welcome")
    ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice")})
    await ws.next("registered")
    return ws


async def call_rings_at(ws: WsClient, kamailio: Kamailio, trace: Path) -> None:
    """SIPp calls alice through Kamailio; the call must ring on ``ws``, which accepts it."""
    browser = Browser(tone_hz=1000.0)
    try:
        d = deferToThread(sipp_call, kamailio, "alice", trace)
        invited = await ws.next("invited", timeout=10)
        assert invited["to"] == "alice", invited
        await complete_call(ws, browser, {"type": "accept", "call": invited["call"]}, timeout=10)
        r = await d
        assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}\n{kamailio.log.read_text(errors='replace')[-3000:]}"
        await ws.next("ended", timeout=5)
    finally:
        await browser.close()


async def baresip_call_rings_at(ws: WsClient, kamailio: Kamailio, bob: peers.Baresip) -> None:
    """baresip calls alice through Kamailio; the call must ring on ``ws``, which accepts it with a
    700 Hz browser: the browser hears baresip's 440 Hz, baresip's recording holds the 700 Hz."""
    browser = Browser(tone_hz=BROWSER_HZ)
    try:
        before = set(bob.rec_dir.glob("dump-*-dec.wav"))
        await deferToThread(bob.dial, f"sip:alice@127.0.0.1:{kamailio.port}")
        invited = await ws.next("invited", timeout=10)
        assert invited["to"] == "alice" and invited["from"] == "bob", invited
        await complete_call(ws, browser, {"type": "accept", "call": invited["call"]}, timeout=10)
        await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 5)

        heard, level = await browser.heard(seconds=3, timeout=12, tail_s=1.5)
        print(f"\nbaresip (440 Hz, INVITE via Kamailio) -> node B -> browser heard {heard:.1f} Hz at {level:.1f} dBFS")
        assert abs(heard - BARESIP_HZ) < 20, heard
        assert level > -35, level

        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup", timeout=5)
        await deferToThread(bob.wait_event, "CALL_CLOSED", 10)
        wav = bob.recorded_wav("dec")
        assert wav is not None and wav not in before, "baresip recorded nothing new"
        x, rate = read_wav(wav)
        seg = x[int(rate * 1.0): int(rate * 2.5)]
        assert len(seg) > rate * 1.2, f"baresip recorded only {len(x) / rate:.2f} s"
        f, level = dominant_frequency(seg, rate), rms_dbfs(seg)
        print(f"browser (700 Hz) -> node B -> baresip heard {f:.1f} Hz at {level:.1f} dBFS")
        assert abs(f - BROWSER_HZ) < 20, f
        assert level > -35, level
    finally:
        await browser.close()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_web_users_are_registered_at_kamailio_and_the_newest_wins(
        redis_server: RedisServer, programs: None, bob: peers.Baresip, tmp_path: Path) -> None:
    kport = _port("127.0.0.1")
    a = RunningGateway(node_config(redis_server, "a", kport))
    b = RunningGateway(node_config(redis_server, "b", kport))
    kamailio = Kamailio(kport, [sip_port(a), sip_port(b)])
    clients: list[WsClient] = []
    try:
        assert await wait_for(lambda: a.gw.cluster.node.available and b.gw.cluster.node.available, 5)
        assert await wait_for(lambda: (kamailio.dir / "ctl").exists(), 15), kamailio.log.read_text(errors="replace")

        # alice on B: B registers her at Kamailio with its own contact; baresip's call rings at B,
        # audio measured both ways
        clients.append(await register(b))
        at_b = f"sip:alice@127.0.0.1:{sip_port(b)}"
        assert await wait_for(lambda: kamailio.contacts("alice") == [at_b], 5), kamailio.rpc("ul.dump")
        await baresip_call_rings_at(clients[-1], kamailio, bob)

        # alice's newest connection is on A: the route moves, B stops refreshing hers
        clients.append(await register(a))
        at_a = f"sip:alice@127.0.0.1:{sip_port(a)}"
        assert await wait_for(lambda: kamailio.contacts("alice") == [at_a], 5), kamailio.rpc("ul.dump")
        assert await wait_for(lambda: "alice" not in b.gw.cluster.sip_users.by_user, 5)
        assert kamailio.contacts("alice") == [at_a]  # B's removal did not take A's binding
        await call_rings_at(clients[-1], kamailio, tmp_path / "to_a")

        # alice leaves A: her binding at Kamailio goes
        clients.pop().close()
        assert await wait_for(lambda: kamailio.contacts("alice") == [], 5), kamailio.rpc("ul.dump")
    finally:
        for ws in clients:
            ws.close()
        await a.stop()
        await b.stop()
        kamailio.stop()

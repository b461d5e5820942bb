"""A cluster's failures end to end (issue 15, docs/cluster.md "Failure behaviour"): the local
cluster of deploy/local-cluster.sh with three nodes (127.0.0.2-4), real Redis, real Kamailio,
ffmpeg as the RTMP callers (a 1 kHz tone published to ``call/echo``, played back by
``session/ID`` and measured) and SIPp through Kamailio.

- **SIGKILL** of node3 while it and node2 carry calls: node2's call keeps its 1 kHz through the
  kill (recorded across it, every half second measured); node3's node hash, call index and
  counts leave Redis within ``node_ttl_s`` (2 s here) and the live nodes' set loses it; its
  session ID stays claimed (``sid:ID`` with a TTL: the reuse window), so a publish on node2 that
  asks for that ID is refused ``session_id_in_use``; Kamailio marks it inactive and SIPp's new
  calls through Kamailio are answered by the survivors.
- **Drain** (SIGTERM of node1 with a call): node1 answers the dispatcher's next OPTIONS probe
  503 *before* it ends its call (its log shows the order), Kamailio marks it inactive, the call
  ends (the player's stream stops), and SIPp's calls placed right after go to node2 only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor
from twisted.internet.threads import deferToThread

from tests.adapters.rtmp_helpers import Process, RtmpClient, ffmpeg
from tests.calls.gw import sleep, wait_for
from tests.cluster import test_local_cluster as lc
from tests.require import require_program
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs

NODES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
TONE_HZ = 1000.0
NODE_TTL_S = 2
P = "{webgate}:"


@pytest.fixture(scope="module")
def cluster() -> Iterator[lc.Cluster]:
    for program, package in (("redis-server", "redis-server"), ("kamailio", "kamailio"), ("kamcmd", "kamailio"),
                             ("sipp", "sip-tester"), ("ffmpeg", "ffmpeg")):
        require_program(program, package)
    c = lc.Cluster()
    c.env.update({"NODE_ADDRS": " ".join(NODES), "NODE_TTL_S": str(NODE_TTL_S), "HEARTBEAT_S": "0.5",
                  "NODE_HTTP_PORT": str(lc._port(*NODES)), "NODE_RTMP_PORT": str(lc._port(*NODES)),
                  "NODE_SIP_PORT": str(lc._port(*NODES))})
    try:
        r = c.run("up")
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{c.describe()}"
        c.status = json.loads(r.stdout)
        assert lc.wait(lambda: set(lc.dispatcher_flags(c).values()) == {"AP"} and len(lc.dispatcher_flags(c)) == 3, 15), \
            c.kamcmd("dispatcher.list")
        yield c
    finally:
        r = c.run("down", timeout=60)
        assert r.returncode == 0, r.stderr
        shutil.rmtree(c.dir, ignore_errors=True)


def redis(c: lc.Cluster) -> Any:
    import redis as redis_py

    return redis_py.Redis(host="127.0.0.1", port=int(c.env["REDIS_PORT"]), decode_responses=True)


def rtmp(c: lc.Cluster, node: int) -> str:
    return str(c.status["nodes"][node - 1]["rtmp"])


def pid(c: lc.Cluster, node: int) -> int:
    return int((c.dir / "pids" / f"node{node}.pid").read_text())


def publish_tone(c: lc.Cluster, node: int, seconds: float = 30.0) -> Process:
    """ffmpeg as an encoder: a 1 kHz tone to ``call/echo`` on ``node`` (G.711 in FLV)."""
    return ffmpeg("-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=8000:duration={seconds:g}",
                  "-c:a", "pcm_mulaw", "-ar", "8000", "-f", "flv", f"{rtmp(c, node)}/call/echo", timeout=seconds + 20)


async def session_of(c: lc.Cluster, node: int) -> str:
    """The session ID of ``node``'s answered call (from the cluster's index)."""
    r = redis(c)

    def fresh() -> list[str]:
        calls = r.hgetall(f"{P}node:node{node}:calls")
        return [sid for sid, entry in calls.items() if '"answered"' in entry]

    assert await wait_for(lambda: bool(fresh()), 10), r.hgetall(f"{P}node:node{node}:calls")
    return fresh()[0]


def record(c: lc.Cluster, node: int, sid: str, wav: Path, seconds: float) -> Process:
    """ffmpeg as a player of ``session/ID`` on ``node``: ``seconds`` of what echo sends back."""
    return ffmpeg("-i", f"{rtmp(c, node)}/session/{sid}", "-map", "0:a", "-t", f"{seconds:g}", "-ac", "1",
                  "-ar", "8000", "-y", str(wav), timeout=seconds + 20)


async def rtmp_client(host: str, port: int) -> RtmpClient:
    ep = endpoints.TCP4ClientEndpoint(reactor, host, port)
    client: RtmpClient = await endpoints.connectProtocol(ep, RtmpClient(True))
    return client


async def publish_status(c: lc.Cluster, node: int, name: str) -> dict[str, Any]:
    host, port = rtmp(c, node).removeprefix("rtmp://").rsplit(":", 1)
    client = await rtmp_client(host, int(port))
    try:
        await client.connect("call", port=int(port))
        stream = await client.create_stream()
        client.command("publish", name, "live", stream_id=stream)
        final = ("NetStream.Publish.Start", "NetStream.Publish.BadName", "NetStream.Publish.Failed")
        assert await wait_for(lambda: any(s.get("code") in final for s in client.statuses(stream)), 8)
        return next(s for s in client.statuses(stream) if s.get("code") in final)
    finally:
        client.transport.loseConnection()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kamailio_log_from(c: lc.Cluster, mark: int) -> str:
    return c.log("kamailio.log")[mark:]


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_sigkill_a_node_survivors_keep_their_calls_and_its_state_expires(cluster: lc.Cluster, tmp_path: Path) -> None:
    c, r = cluster, redis(cluster)
    pub2, pub3 = publish_tone(c, 2), publish_tone(c, 3)
    try:
        sid2 = await session_of(c, 2)
        sid3 = await session_of(c, 3)
        assert r.exists(f"{P}node:node3") and r.hexists(f"{P}node:node3:calls", sid3)
        # node2's call, recorded across the kill of node3
        wav = tmp_path / "node2.wav"
        player = record(c, 2, sid2, wav, 6.0)
        await sleep(2.0)
        os.kill(pid(c, 3), signal.SIGKILL)
        killed = time.monotonic()

        # within node_ttl_s its node hash, index and counts are gone, and the set forgets it
        gone = await wait_for(lambda: not any(r.exists(f"{P}node:node3{s}") for s in ("", ":calls", ":ip", ":identity")),
                              NODE_TTL_S + 1.5)
        assert gone, r.keys(f"{P}node:node3*")
        print(f"\nnode3's keys expired {time.monotonic() - killed:.1f} s after SIGKILL (node_ttl_s {NODE_TTL_S})")
        assert await wait_for(lambda: not r.sismember(f"{P}nodes", "node3"), 3)
        assert r.hexists(f"{P}node:node2:calls", sid2)
        # its session ID stays claimed for the reuse window: not handed out again
        assert r.get(f"{P}sid:{sid3}") == "node3" and r.pttl(f"{P}sid:{sid3}") > 60_000
        status = await publish_status(c, 2, f"echo?session={sid3}")
        assert status["code"] == "NetStream.Publish.BadName" and "session_id_in_use" in status["description"], status

        # node2's call kept its tone through the kill
        code, _out, err = await player.wait()
        assert code == 0, err.decode(errors="replace")
        pcm, rate = read_wav(wav)
        assert len(pcm) >= rate * 5.5, f"only {len(pcm) / rate:.1f} s recorded"
        windows = [pcm[i:i + rate // 2] for i in range(rate // 2, len(pcm) - rate // 2, rate // 2)]
        freqs = [round(dominant_frequency(w, rate)) for w in windows]
        assert all(abs(f - TONE_HZ) < 20 for f in freqs), freqs
        assert all(rms_dbfs(w) > -35 for w in windows), [round(rms_dbfs(w)) for w in windows]

        # Kamailio takes node3 out; SIPp's new calls are answered by the survivors
        assert lc.wait(lambda: lc.dispatcher_flags(c).get(NODES[2], "").startswith("I"), 8), c.kamcmd("dispatcher.list")
        mark = len(c.log("kamailio.log"))
        sipp = await deferToThread(lc.sipp_echo, c, 2)
        assert sipp.returncode == 0, f"{sipp.stdout[-2000:]}\n{sipp.stderr[-2000:]}"
        routed = re.findall(r"-> node sip:([\d.]+):", kamailio_log_from(c, mark))
        assert routed and set(routed) <= {NODES[0], NODES[1]}, routed
    finally:
        pub2.kill()
        pub3.kill()
        await pub2.wait()
        await pub3.wait()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_drain_leaves_the_dispatcher_before_ending_calls(cluster: lc.Cluster, tmp_path: Path) -> None:
    c = cluster
    pub = publish_tone(c, 1)
    try:
        sid = await session_of(c, 1)
        wav = tmp_path / "node1.wav"
        player = record(c, 1, sid, wav, 20.0)
        await sleep(3.0)  # ffmpeg's start (the machine may be loaded), then some tone
        os.kill(pid(c, 1), signal.SIGTERM)
        # the player's stream ends when node1 ends its call (after the 503 to a probe)
        _code, _out, _err = await player.wait()
        pcm, rate = read_wav(wav)
        assert rate // 2 < len(pcm) < 12 * rate, f"{len(pcm) / rate:.1f} s recorded"
        assert abs(dominant_frequency(pcm[rate // 4:], rate) - TONE_HZ) < 20
        # SIPp right after: Kamailio sends nothing to node1
        mark = len(c.log("kamailio.log"))
        sipp = await deferToThread(lc.sipp_echo, c, 2)
        assert sipp.returncode == 0, f"{sipp.stdout[-2000:]}\n{sipp.stderr[-2000:]}\n{c.describe()}"
        routed = re.findall(r"-> node sip:([\d.]+):", kamailio_log_from(c, mark))
        assert routed and NODES[0] not in routed, routed
        assert lc.dispatcher_flags(c).get(NODES[0], "").startswith("I"), c.kamcmd("dispatcher.list")
        # node1's own order: OPTIONS answered 503 first, then its call ended (cause shutdown)
        log = (c.dir / "node1" / "webgate.log").read_text(errors="replace")
        first_503 = log.find("shutdown: answering SIP OPTIONS 503")
        ended = log.find(f"call {sid}: ended (shutdown")
        assert 0 <= first_503 < ended, log[-3000:]
        assert lc.wait(lambda: not alive(pid(c, 1)), 10)
    finally:
        pub.kill()
        await pub.wait()

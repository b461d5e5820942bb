"""What the cluster's shared state costs per call (issue 15; docs/cluster.md "Scaling").

In-process, on the real code: a private redis-server and two cluster nodes ("a" and "b", whole
gateways with ``[cluster] enabled``) in this process, against one gateway without ``[cluster]``.
On node A, and on the single gateway, ``--calls`` calls to ``echo`` are placed the way an ingress
places them (``admit`` -> ``await reserve`` -> ``place_call``, a ``LocalLeg``), ``--batch`` at a
time, then hung up. Measured:

- Redis work per call: commands and Lua script runs (``INFO commandstats`` deltas over the run,
  set-up and teardown), Redis's own CPU per call (``INFO cpu``), and the round trips a call's
  set-up waits for (the awaited scripts: the attempt and the reservation);
- the gateway's CPU per call (this process, ``time.process_time``) with and without the cluster;
- set-up latency (``admit`` to ``place_call`` returning), median and p99, with and without: in
  the batches (which includes the CPU of the other calls of the batch on this one loop: a
  cluster node's set-ups interleave while they wait for Redis, one process's do not) and one
  call at a time (the pure wait for Redis).

The per-IP attempt rate is on (``max_attempts_per_ip_per_minute``), as by default, so the
attempt script runs. Nothing here is network-bound: Redis is on loopback.

    .venv/bin/python bench/cluster_cost.py [--calls 2000] [--batch 50] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import defer, task

from webgate.tap import install_asyncio_reactor

install_asyncio_reactor()  # before anything imports twisted.internet.reactor

from twisted.internet import reactor as _reactor

from webgate.adapters import aio
from webgate.config import parse_config
from webgate.gateway import build_gateway
from webgate.legs.local import LocalLeg

reactor: Any = _reactor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(redis_url: str | None, node_id: str, rtp: int) -> Any:
    data: dict[str, Any] = {
        "http": {"listen": ""}, "rtmp": {"listen": ""},
        "sip": {"udp": "127.0.0.1:0", "tcp": "127.0.0.1:0"},
        "rtp": {"port_min": rtp, "port_max": rtp + 998},
        "limits": {"max_calls": 10000, "max_calls_per_ip": 0, "max_calls_per_identity": 0,
                   "max_attempts_per_ip_per_minute": 1_000_000},
    }
    if redis_url:
        data["cluster"] = {"enabled": True, "redis_url": redis_url, "node_id": node_id, "heartbeat_s": 1,
                           "node_ttl_s": 5}
    return parse_config(data, "<bench>")


def redis_info(port: int) -> dict[str, Any]:
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    stats = r.info("commandstats")
    cpu = r.info("cpu")
    r.close()
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    return {"calls": calls, "cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])}


async def run_calls(gw: Any, n: int, batch: int) -> dict[str, Any]:
    manager = gw.telephony.manager
    setup: list[float] = []
    cpu0 = time.process_time()
    done = 0
    while done < n:
        k = min(batch, n - done)

        async def one() -> Any:
            leg = LocalLeg(tone_hz=None)
            t0 = time.perf_counter()
            admission = manager.admit(leg, "echo")
            admission = await aio.as_deferred(manager.reserve(leg, admission))
            call = manager.place_call(leg, "echo", admission=admission)
            setup.append(time.perf_counter() - t0)
            return call

        calls = await defer.gatherResults([defer.Deferred.fromCoroutine(one()) for _ in range(k)])
        for call in calls:
            call.hangup()
        done += k
        await task.deferLater(reactor, 0.0)
    await task.deferLater(reactor, 0.3)  # the queued index writes and releases go out
    cpu = time.process_time() - cpu0
    setup.sort()
    return {"calls": n, "cpu_ms_per_call": round(1000 * cpu / n, 3),
            "setup_ms_p50": round(1000 * statistics.median(setup), 3),
            "setup_ms_p99": round(1000 * setup[min(len(setup) - 1, int(0.99 * len(setup)))], 3)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # one process, no Redis
    single = build_gateway(config(None, "single", 30000), reactor)
    single.startService()
    await run_calls(single, min(200, args.calls), args.batch)  # warm-up
    out["single"] = await run_calls(single, args.calls, args.batch)
    out["single"]["one_at_a_time"] = await run_calls(single, 200, 1)
    await single.stopService()

    tmp = Path(tempfile.mkdtemp(prefix="wgbench"))
    port = free_port()
    redis_server = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measured part
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    try:
        await task.deferLater(reactor, 0.5)
        url = f"redis://127.0.0.1:{port}/0"
        a = build_gateway(config(url, "a", 32000), reactor)
        b = build_gateway(config(url, "b", 34000), reactor)
        a.startService()
        b.startService()
        while not (a.cluster.node.available and b.cluster.node.available and a.cluster.node.pooled):
            await task.deferLater(reactor, 0.1)
        await run_calls(a, min(200, args.calls), args.batch)  # warm-up
        before = redis_info(port)
        idle0 = time.monotonic()
        res = await run_calls(a, args.calls, args.batch)
        after = redis_info(port)
        wall = time.monotonic() - idle0
        # what the two heartbeats (and pool refills) cost meanwhile is in the deltas: subtract
        # an idle period of the same length
        idle_before = redis_info(port)
        await task.deferLater(reactor, wall)
        idle_after = redis_info(port)

        def delta(x: dict[str, Any], y: dict[str, Any]) -> dict[str, int]:
            return {k: y["calls"].get(k, 0) - x["calls"].get(k, 0) for k in set(x["calls"]) | set(y["calls"])}

        busy, idle = delta(before, after), delta(idle_before, idle_after)
        per = {k: round((busy.get(k, 0) - idle.get(k, 0)) / args.calls, 3) for k in busy
               if k not in ("info",) and busy.get(k, 0) - idle.get(k, 0) > 0}
        res["redis_commands_per_call"] = per
        res["redis_commands_total_per_call"] = round(sum(per.values()), 2)
        res["redis_scripts_per_call"] = round(sum(v for k, v in per.items() if k.startswith("eval")), 2)
        res["redis_cpu_ms_per_call"] = round(1000 * ((after["cpu"] - before["cpu"]) - (idle_after["cpu"] - idle_before["cpu"]))
                                             / args.calls, 4)
        res["awaited_round_trips_per_setup"] = 2  # the attempt script, the reservation script
        res["one_at_a_time"] = await run_calls(a, 200, 1)
        out["cluster"] = res
        await a.stopService()
        await b.stopService()
    finally:
        redis_server.terminate()
        redis_server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    s, c = out["single"], out["cluster"]
    out["cluster_extra_cpu_ms_per_call"] = round(c["cpu_ms_per_call"] - s["cpu_ms_per_call"], 3)
    return out


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result: dict[str, Any] = {}

    async def go() -> None:
        try:
            result.update(await main(args))
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()))
    reactor.run()
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    cli()

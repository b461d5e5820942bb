"""The SIP side of the relay alone: CPU per relayed RTP packet of each ``[rtp] media_io``.

    python bench/relay_cost.py [--calls 100] [--seconds 10] [--rounds 3] [--sync]

One process runs Twisted's asyncio reactor (as ``twistd`` runs webgate), pinned to CPU 0, with an
``RtpPortPool`` of ``--calls`` port pairs, each with an ``RtpAudioStream`` on the packet path that
sends every payload it receives straight back (what the built-in echo and, toward SIP, a relayed
call's stream do: receive, strict source, parse, statistics, rewrite, send).  A sender process on
CPU 1 sends each port a 172-byte G.711 RTP packet every 20 ms, on its own phase (a 1 ms slot of 20,
as ``loadgen.py``'s spread callers; ``--sync``: all in the same instant), and drains the echoes.
For each implementation in turn (``loop``, then ``twisted``, ``--rounds`` times, alternating), the
gateway's process CPU time over ``--seconds`` is divided by the packets its streams received:
µs per relayed packet (one receive and one send), wake-ups included.  One JSON line per round, then
the medians.  No aiortc, no SRTP: the WebRTC side's share is in docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import multiprocessing
import os
import random
import select
import socket
import statistics
import struct
import time
from typing import Any


def _sender(ports: list[int], seconds: float, sync: bool, cpu: int, ready: Any) -> None:
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass
    socks = []
    for _ in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    slots: dict[int, list[int]] = {}
    for i in range(len(ports)):
        slots.setdefault(0 if sync else random.randrange(20), []).append(i)
    seq = [random.randrange(65536) for _ in ports]
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): s for s in socks}
    ready.set()
    start = time.monotonic()
    tick = 0
    payload = b"\xff" * 160
    while True:
        due = start + tick * 0.001
        now = time.monotonic()
        if now - start > seconds:
            break
        if due > now:
            for fd, _ in ep.poll(due - now):
                s = by_fd[fd]
                while True:
                    try:
                        s.recv(2048)
                    except BlockingIOError:
                        break
            continue
        for i in slots.get(tick % 20, ()):
            seq[i] = (seq[i] + 1) & 0xFFFF
            pkt = struct.pack("!BBHII", 0x80, 0, seq[i], seq[i] * 160, 0x1000 + i) + payload
            try:
                socks[i].sendto(pkt, ("127.0.0.1", ports[i]))
            except BlockingIOError:
                pass
        tick += 1
    for s in socks:
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sync", action="store_true", help="every stream's packet in the same instant")
    ap.add_argument("--port", type=int, default=31000, help="first RTP port (even)")
    ap.add_argument("--modes", default="loop,twisted",
                    help="comma list of media_io values to compare; loop:N = loop with read_interval_ms N")
    ap.add_argument("--gateway-cpu", type=int, default=0)
    ap.add_argument("--sender-cpu", type=int, default=1)
    a = ap.parse_args()
    try:
        os.sched_setaffinity(0, {a.gateway_cpu})
    except OSError:
        pass
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor

    from webgate.adapters import media_loop
    from webgate.adapters.rtp import RtpPortPool
    from webgate.proto.sdp import Codec, NegotiatedMedia

    modes = a.modes.split(",")
    results: dict[str, list[float]] = {m: [] for m in modes}

    def one(spec: str) -> dict[str, Any]:
        mode, _, ms = spec.partition(":")
        media_loop.set_default_mode(mode, int(ms or 0))
        pool = RtpPortPool(reactor, "127.0.0.1", a.port, a.port + 2 * a.calls + 1, media_io=mode)
        eps = [pool.allocate() for _ in range(a.calls)]
        received = [0]
        for ep in eps:
            stream = ep.make_stream(label=str(ep.rtp_port))
            # the far end: where the sender's socket will be learnt from (strict source, probation)
            stream.configure(NegotiatedMedia("127.0.0.1", 9, "127.0.0.1", 10, Codec("PCMU", 8000, payload_type=0),
                                             None, 20, "sendrecv", False))

            def echo(payload: bytes, samples: int, pkt: Any, s: Any = stream) -> None:
                received[0] += 1
                s.send_payload(payload, samples)

            stream.on_payload = echo
        ready = multiprocessing.Event()
        warm = 2.0
        proc = multiprocessing.Process(target=_sender, args=([ep.rtp_port for ep in eps], warm + a.seconds + 1.0, a.sync,
                                                             a.sender_cpu, ready))
        proc.start()
        ready.wait(10)
        mark: dict[str, float] = {}

        def begin() -> None:
            mark["cpu"], mark["n"], mark["t"] = time.process_time(), received[0], time.monotonic()

        def end() -> None:
            mark["cpu"] = time.process_time() - mark["cpu"]
            mark["n"] = received[0] - mark["n"]
            mark["t"] = time.monotonic() - mark["t"]
            reactor.stop()

        reactor.callLater(warm, begin)
        reactor.callLater(warm + a.seconds, end)
        reactor.run(installSignalHandlers=False) if not reactor.running else None
        proc.join(5)
        wakeups = pool.reader.wakeups if pool.reader is not None else None
        for ep in eps:
            ep.release()
        pool.clock.stop()
        us = 1e6 * mark["cpu"] / mark["n"] if mark["n"] else float("nan")
        return {"media_io": spec, "calls": a.calls, "sync": a.sync, "packets": int(mark["n"]),
                "packets_per_s": round(mark["n"] / mark["t"]), "cpu_pct": round(100 * mark["cpu"] / mark["t"], 1),
                "us_per_packet": round(us, 2), "reader_wakeups": wakeups}

    # the reactor cannot be restarted: each round is a fresh process
    if os.environ.get("_RELAY_COST_MODE"):
        print(json.dumps(one(os.environ["_RELAY_COST_MODE"])), flush=True)
        return 0
    import subprocess

    for _ in range(a.rounds):
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:]], env={**os.environ, "_RELAY_COST_MODE": mode},
                                 capture_output=True, text=True, check=False)
            line = (out.stdout.strip().splitlines() or [""])[-1]
            if not line.startswith("{"):
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            print(line, flush=True)
            results[mode].append(json.loads(line)["us_per_packet"])
    print(json.dumps({"median_us_per_packet": {m: statistics.median(v) for m, v in results.items()},
                      "calls": a.calls, "sync": a.sync}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU per relayed RTP packet: the native relay (C, webgate/native) against MediaReader + a Python echo.

    python bench/native_relay_cost.py [--streams 60] [--seconds 8] [--modes python,native,python-srtp,native-srtp]

One process runs a plain asyncio loop with ``--streams`` relayed streams, each an input socket (read
by the reader under test) and an output socket sending to a sink socket (never read: the kernel drops
what overflows, at no cost to the relay). A forked sender process sends every input socket a 172-byte
G.711 RTP packet (``-srtp``: SRTP-protected, 182 bytes) every 20 ms, the streams spread over the
20 ms (50 pps each). Per mode, the relay process's CPU time (user + system: the system calls count)
over ``--seconds`` is divided by the packets relayed.

- ``python``: :class:`MediaReader`, a handler per datagram doing the least the Python relay does
  (``parse_payload``, a new 12-byte header, ``sendto``; ``-srtp``: pylibsrtp ``unprotect`` first):
  a lower bound of the Python path (the real one also checks the source and keeps statistics).
- ``native``: :class:`NativeMediaReader` with one rule per stream (source check, unprotect, rewrite,
  statistics and send in C; ``recvmmsg``/``sendmmsg`` per wake-up).

``core``/``core-srtp``: ``wg_relay_packet`` alone, called 100,000 times (the C work per packet,
without any I/O). ``--interval-ms``: both readers hold reads off after each (``[rtp] read_interval_ms``), so
that wake-ups carry several datagrams.

Prints one JSON line per mode: pps, packets, µs CPU per packet, wake-ups and datagrams per wake-up.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import socket
import struct
import time
from typing import Any

from pylibsrtp import Policy, Session

from webgate.adapters.media_loop import MediaReader
from webgate.adapters.native_reader import NativeMediaReader, available
from webgate.proto.rtp import parse_payload

KEY = bytes(range(30))
HDR = struct.Struct("!BBHII")


def _session(outbound: bool) -> Session:
    return Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND))


def _udp(rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _sender(far: list[socket.socket], targets: list[Any], seconds: float, srtp: bool, ready: Any) -> None:
    if os.sched_getaffinity(0) == {0}:  # --pin: the relay has CPU 0, the sender takes CPU 1
        os.sched_setaffinity(0, {1})
    tx = _session(True) if srtp else None
    n = len(far)
    payload = b"\xd5" * 160
    ready.set()
    start = time.monotonic()
    k = 0
    while True:
        now = time.monotonic() - start
        if now > seconds:
            return
        due = k * 0.02 / n  # stream k % n, in its slot of the 20 ms
        if due > now:
            time.sleep(min(due - now, 0.002))
            continue
        i, tick = k % n, k // n
        data = HDR.pack(0x80, 0, tick & 0xFFFF, (tick * 160) & 0xFFFFFFFF, 0x1000 + i) + payload
        if tx is not None:
            data = tx.protect(data)
        try:
            far[i].sendto(data, targets[i])
        except OSError:
            pass
        k += 1


def _python_handler(out: socket.socket, dst: Any, rx: Session | None, count: list[int]) -> Any:
    sendto = out.sendto

    def handler(data: bytes, addr: Any) -> None:
        if rx is not None:
            try:
                data = rx.unprotect(data)
            except Exception:  # noqa: BLE001 - pylibsrtp.Error
                return
        p = parse_payload(data)
        if p is None:
            return
        _pt, seq, ts, marker, payload = p
        try:
            sendto(HDR.pack(0x80, (0x80 if marker else 0) | 8, (seq + 7) & 0xFFFF, (ts + 99) & 0xFFFFFFFF, 0xABCD) + payload, dst)
        except OSError:
            pass
        count[0] += 1

    return handler


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def core_cost(srtp: bool, n: int = 100_000) -> dict[str, Any]:
    """The C work alone: ``wg_relay_packet`` on 172-byte packets (``srtp``: unprotect + protect), net
    of the same loop's calls that return at once (an fd without a rule)."""
    from tests.native.relay_helpers import CAP, IN_FD, SRC, Core, rtp, srtp_session
    from webgate.adapters.native_reader import sockaddr
    from webgate.native._relay import ffi, lib

    tx_peer = srtp_session(True)
    c = Core(rx=srtp_session(False), tx=srtp_session(True)) if srtp else Core()
    packets = [rtp(i, 160 * i) for i in range(n)]
    if srtp:
        packets = [tx_peer.protect(p) for p in packets]
    src, buf, relay, memmove = sockaddr(SRC), c.buf, lib.wg_relay_packet, ffi.memmove
    times = []
    for fd in (IN_FD, -1):
        t0 = time.perf_counter()
        for i, p in enumerate(packets):
            memmove(buf, p, len(p))
            relay(c.e, fd, src, len(src), buf, len(p), CAP, i * 0.02)
        times.append(time.perf_counter() - t0)
    assert c.stats()["packets"] == n
    return {"mode": "core-srtp" if srtp else "core", "calls": n, "us_per_packet": round((times[0] - times[1]) / n * 1e6, 3)}


def run(mode: str, streams: int, seconds: float, interval: float = 0.0) -> dict[str, Any]:
    if mode.startswith("core"):
        return core_cost(mode.endswith("srtp"))
    native, srtp = mode.startswith("native"), mode.endswith("srtp")
    loop = asyncio.new_event_loop()
    reader: Any = NativeMediaReader(loop, interval) if native else MediaReader(loop, interval)
    ins = [_udp(1 << 20) for _ in range(streams)]
    outs = [_udp() for _ in range(streams)]
    sinks = [_udp() for _ in range(streams)]
    far = [_udp() for _ in range(streams)]
    count = [0]
    rx = _session(False) if srtp else None
    for a, b, d, f in zip(ins, outs, sinks, far, strict=True):
        if native:
            reader.add(a, lambda data, addr: None)
            reader.set_rule(a, src=f.getsockname(), in_pt=0, out_sock=b, dst=d.getsockname(), out_pt=8, out_ssrc=0xABCD,
                            next_seq=1, next_ts=1, clock_rate=8000, rx=rx)
        else:
            reader.add(a, _python_handler(b, d.getsockname(), rx, count))
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_sender, args=(far, [a.getsockname() for a in ins], seconds + 1.0, srtp, ready))
    proc.start()
    ready.wait()
    loop.run_until_complete(asyncio.sleep(0.5))  # warm-up
    relayed0 = reader.relayed if native else count[0]
    wakeups0, datagrams0 = reader.wakeups, reader.datagrams
    cpu0, t0 = _cpu(), time.monotonic()
    loop.run_until_complete(asyncio.sleep(seconds))
    (user, system), elapsed = _cpu(), time.monotonic() - t0
    user, system = user - cpu0[0], system - cpu0[1]
    cpu = user + system
    relayed = (reader.relayed if native else count[0]) - relayed0
    wakeups, datagrams = reader.wakeups - wakeups0, reader.datagrams - datagrams0
    proc.join()
    reader.close()
    loop.close()
    for s in ins + outs + sinks + far:
        s.close()
    return {"mode": mode, "streams": streams, "interval_ms": interval * 1000, "seconds": round(elapsed, 2), "pps": round(relayed / elapsed),
            "packets": relayed, "cpu_s": round(cpu, 3), "user_s": round(user, 3), "system_s": round(system, 3), "us_per_packet": round(cpu / max(1, relayed) * 1e6, 2),
            "wakeups": wakeups, "datagrams_per_wakeup": round(datagrams / max(1, wakeups), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--modes", default="python,native,python-srtp,native-srtp,core,core-srtp")
    ap.add_argument("--interval-ms", type=float, default=0.0, help="the readers' read interval ([rtp] read_interval_ms)")
    ap.add_argument("--pin", action="store_true", help="the relay on CPU 0, the sender on CPU 1")
    args = ap.parse_args()
    if not available():
        sys.exit("webgate.native._relay is not built: pip install -e .")
    if args.pin:
        os.sched_setaffinity(0, {0})
    for mode in args.modes.split(","):
        print(json.dumps(run(mode.strip(), args.streams, args.seconds, args.interval_ms / 1000)), flush=True)


if __name__ == "__main__":
    main()

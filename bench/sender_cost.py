"""What the load generator's own sending costs: spread vs synchronised callers, without a gateway.

    python bench/sender_cost.py [--calls 100] [--seconds 10] [--repeat 2]

Runs ``loadgen.Sender`` with N calls whose ``send_frame`` is the real one (RTP header with the
header extensions webgate's answer negotiates, SRTP protect with pylibsrtp, ``sendto`` on a UDP
socket toward a local sink that drops everything), for each load shape in turn (synchronised, then
spread, ``--repeat`` times, interleaved), and prints one JSON line per shape: the process's CPU
(CLOCK_PROCESS_CPUTIME_ID, so other load on the machine does not count) per second and per frame,
the wake-ups per second and the worst lateness.  The receive side (the echo) is not included: it is
the same for both shapes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import os
import random
import socket
import time
from typing import Any

import pylibsrtp

from bench import audiosig as sig
from bench import loadgen as lg


class _An:
    def mark_sent(self, _t: float) -> None:
        return None


def fake_call(transport: Any, addr: tuple[str, int], shape: lg.AnswerShape) -> lg.Call:
    """A ``loadgen.Call`` with just what ``send_frame`` needs (no aiortc, no signalling)."""
    c = object.__new__(lg.Call)
    key = os.urandom(30)
    srtp = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    c.codec = "pcmu"
    c.frames = sig.make_frames("pcmu")
    c.an = _An()  # type: ignore[assignment]
    c.marks_sent = c.tx = c._tx_octets = c._fi = c._twcc_seq = 0
    c._sendto = transport.sendto
    c._addr = addr
    c._protect = srtp.protect
    c._ssrc = random.getrandbits(32)
    c._pt = 0
    c._seq = random.getrandbits(16)
    c._ts = random.getrandbits(32)
    c._spf = 160
    c.shape = shape
    c._ext = shape.ext_any
    c._ext_static = lg._ext_static(shape)
    c._mid = (shape.mid, b"0")
    c._send_mid = False   # after the first RTCP from the gateway
    c.slot = None
    return c


async def one(shape_sync: bool, calls: int, seconds: float, answer: lg.AnswerShape) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)   # overflows: the kernel drops, cheaply
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    sender = lg.Sender(sync=shape_sync)
    cs = [fake_call(transport, sink.getsockname(), answer) for _ in range(calls)]
    for c in cs:
        sender.add(c)
    await asyncio.sleep(1.0)   # settle
    c0, t0, f0, w0 = time.process_time(), time.monotonic(), sender.frames, sender.ticks
    await asyncio.sleep(seconds)
    c1, t1, f1, w1 = time.process_time(), time.monotonic(), sender.frames, sender.ticks
    for c in cs:
        sender.remove(c)
    transport.close()
    sink.close()
    return {"shape": "sync" if shape_sync else "spread", "calls": calls, "cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 2),
            "us_per_frame": round(1e6 * (c1 - c0) / max(1, f1 - f0), 2), "frames_per_s": round((f1 - f0) / (t1 - t0), 1),
            "wakeups_per_s": round((w1 - w0) / (t1 - t0), 1), "late_max_ms": round(1000 * sender.late_max, 2)}


async def amain(a: argparse.Namespace) -> None:
    sdp = ("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
           "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n")
    answer = lg.AnswerShape.parse(sdp, 0, plain=a.plain_rtp)   # webgate's answer (see docs/performance.md)
    for _ in range(a.repeat):
        for sync in (True, False):
            print(json.dumps(await one(sync, a.calls, a.seconds, answer)), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--plain-rtp", action="store_true", help="no header extensions")
    asyncio.run(amain(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

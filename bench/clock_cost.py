"""The fixed cost of webgate's 20 ms media clock: CPU per tick with nothing to tick.

    python bench/clock_cost.py [--seconds 20]

Runs Twisted's asyncio reactor (as ``twistd`` runs webgate) for ``--seconds`` idle, then as long
again with webgate's own ``MediaClock`` ticking one no-op ticker (its LoopingCall wake-up, the
reactor's timer bookkeeping and the tick's loop over the tickers and streams lists), and prints one
JSON line: ticks, µs per tick net of the idle reactor, and what 50 ticks a second cost in % of a
core; and, for reference, a bare asyncio timer at the same 50 Hz (the wake-up itself: on a
virtualised CPU most of the tick's cost).  A stream's own tick work is per call and stays in the per-call figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor

    from webgate.adapters.rtp import MediaClock

    res: dict[str, float] = {}
    ticks = [0]
    plain = [0]

    def cpu() -> float:
        return time.process_time()   # CLOCK_PROCESS_CPUTIME_ID: ns resolution, all threads

    def ticker(_now: float) -> None:
        ticks[0] += 1

    clock = MediaClock(reactor)

    def phase_idle() -> None:
        res["c0"], res["t0"] = cpu(), time.monotonic()
        reactor.callLater(a.seconds, phase_clock)  # type: ignore[attr-defined]

    def phase_clock() -> None:
        res["c1"], res["t1"] = cpu(), time.monotonic()
        clock.add_ticker(ticker)
        reactor.callLater(a.seconds, phase_plain)  # type: ignore[attr-defined]

    def phase_plain() -> None:
        """The same 50 Hz with a bare asyncio timer: the cost of the wake-up itself."""
        res["c2"], res["t2"] = cpu(), time.monotonic()
        clock.stop()
        loop = asyncio.get_event_loop()
        t_end = time.monotonic() + a.seconds

        def tick() -> None:
            plain[0] += 1
            if time.monotonic() < t_end:
                loop.call_later(0.02, tick)
            else:
                reactor.callLater(0, done)  # type: ignore[attr-defined]

        loop.call_later(0.02, tick)

    def done() -> None:
        res["c3"], res["t3"] = cpu(), time.monotonic()
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callLater(1.0, phase_idle)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    idle_rate = (res["c1"] - res["c0"]) / (res["t1"] - res["t0"])
    busy = (res["c2"] - res["c1"]) - idle_rate * (res["t2"] - res["t1"])
    n = max(1, ticks[0])
    us = 1e6 * max(0.0, busy) / n
    wake = (res["c3"] - res["c2"]) - idle_rate * (res["t3"] - res["t2"])
    wake_us = 1e6 * max(0.0, wake) / max(1, plain[0])
    print(json.dumps({"ticks": ticks[0], "seconds": round(res["t2"] - res["t1"], 2),
                      "reactor_idle_cpu_pct": round(100 * idle_rate, 3), "us_per_tick": round(us, 2),
                      "clock_cpu_pct": round(us * 50 / 1e4, 3),
                      "plain_asyncio_timer_us_per_tick": round(wake_us, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

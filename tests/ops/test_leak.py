"""200 calls set up and torn down in a loop (LocalLeg -> built-in echo over real SIP/RTP on
loopback, 10 at a time): afterwards no RTP port, registry entry, session ID, built-in call,
file descriptor or policy slot is left, and memory grew less than a small bound.
Run with ``-s`` to see the figures."""

from __future__ import annotations

import gc
import os

import pytest
import pytest_twisted

from tests.calls.gw import reactor
from tests.ops.helpers import sleep, start_gateway, wait_for
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg

CALLS = 200
BATCH = 10
RSS_BOUND_KB = 30 * 1024
FD_BOUND = 5

#: 200 calls set up against the clock: run alone (scripts/test.sh's serial phase)
pytestmark = pytest.mark.serial


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def run_batch(gw, n: int) -> None:  # type: ignore[no-untyped-def]
    legs = [LocalLeg(tone_hz=600) for _ in range(n)]
    calls = []
    for leg in legs:
        call = gw.manager.place_call(leg, "echo")
        leg.start_source(call)
        calls.append(call)
    assert await wait_for(lambda: all(c.state is CallState.ANSWERED for c in calls), 15), [c.state for c in calls]
    # audio made the round trip on every call
    assert await wait_for(lambda: all(c.stream.stats.packets_received >= 3 for c in calls), 5)
    for call, leg in zip(calls, legs):
        call.hangup()  # the leg hung up itself (not told): its tone must stop on its own
    assert await wait_for(lambda: not gw.manager.builtin_calls and not gw.svc.rtp_pool.in_use, 10), (
        len(gw.manager.builtin_calls), len(gw.svc.rtp_pool.in_use))


@pytest_twisted.ensureDeferred
async def test_200_calls_leave_nothing_behind() -> None:
    gw = start_gateway(
        {"limits": {"max_calls_per_ip": 0, "max_attempts_per_ip_per_minute": 0, "max_calls": 100}, "session_id": {"reuse_after_s": 0}}
    )
    try:
        svc, manager = gw.svc, gw.manager
        pool_capacity = svc.rtp_pool.capacity
        assert pool_capacity >= 2 * BATCH
        # warm-up: codecs, resamplers, lazy imports are loaded once
        await run_batch(gw, BATCH)
        await sleep(0.2)
        gc.collect()
        fd0, rss0, delayed0 = open_fds(), rss_kb(), len(reactor.getDelayedCalls())
        done = 0
        while done < CALLS:
            await run_batch(gw, BATCH)
            done += BATCH
        await sleep(0.3)
        gc.collect()
        fd1, rss1, delayed1 = open_fds(), rss_kb(), len(reactor.getDelayedCalls())
        ua = svc.ua
        ua._gc(reactor.seconds() + 60)  # sessions kept 32 s for late retransmissions: let that time pass
        policy = getattr(manager, "policy", None)
        slots = policy.live if policy is not None else 0
        figures = (
            f"{CALLS} calls: fds {fd0} -> {fd1}, RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
            f"(+{(rss1 - rss0) / 1024:.1f} MiB), RTP pairs in use {len(svc.rtp_pool.in_use)}/{pool_capacity}, "
            f"registry {len(svc.registry)}, live session IDs {len(manager.session_ids.live)}, "
            f"built-in calls {len(manager.builtin_calls)}, UA sessions after their linger {len(ua.sessions)}, "
            f"media clock streams/tickers {len(svc.rtp_pool.clock.streams)}/{len(svc.rtp_pool.clock.tickers)}, "
            f"delayed calls {delayed0} -> {delayed1}, policy slots {slots}"
        )
        print("\n" + figures)
        assert manager.counters["calls_placed"] == CALLS + BATCH, figures
        assert not svc.rtp_pool.in_use, figures
        assert len(svc.registry) == 0, figures
        assert not manager.session_ids.live, figures
        assert not manager.builtin_calls, figures
        assert not ua.sessions, figures
        assert not svc.rtp_pool.clock.streams and not svc.rtp_pool.clock.tickers, figures
        assert slots == 0, figures
        assert fd1 - fd0 <= FD_BOUND, figures
        assert rss1 - rss0 < RSS_BOUND_KB, figures
        assert delayed1 - delayed0 < 50, figures
    finally:
        await gw.stop()

"""Issue 3: the browser's network disappears (no WebSocket close, no DTLS close) -> the call
ends within ``[webrtc] ice_timeout_s`` and the SIP leg is released (BYE).

The "browser" is aiortc in a child process (tests/interop/webrtc_subprocess_client.py),
frozen with SIGSTOP once the call is answered and media flows. aiortc (the gateway's WebRTC
stack) has no "disconnected" state and its ICE consent checks only fail after ~30 s, so the
gateway's inbound-media watchdog must notice: nothing at all from the browser for
ice_timeout_s (3 s here) -> cause ``ice_failed``, BYE to SIPp. The WebSocket stays open (its
idle timeout is 60 s), so it cannot be what ends the call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.adapters.webrtc_client import Gateway
from tests.calls.gw import process_exit, sleep, wait_for
from tests.interop import peers

ICE_TIMEOUT_S = 3
ROOT = Path(__file__).resolve().parents[2]


def sipp_gateway(sipp: peers.Sipp) -> Gateway:
    return Gateway(
        {
            "trunk": [{"name": "sipp", "target": f"sip:127.0.0.1:{sipp.port}", "codecs": ["PCMU"]}],
            "route": [{"pattern": "1000", "trunk": "sipp", "public": True}],
            "webrtc": {"ice_timeout_s": ICE_TIMEOUT_S},
        }
    )


def start_client(url: str, log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.interop.webrtc_subprocess_client", url, "1000"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_frozen_browser_ends_the_call_within_ice_timeout(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path) -> None:
    sipp = sipp_factory("uas_answer", rtp_echo=True)
    gw = sipp_gateway(sipp)
    client = start_client(gw.url, tmp_path / "client.log")
    stopped = False

    def client_log() -> str:
        return (tmp_path / "client.log").read_text(errors="replace")

    try:
        assert await wait_for(lambda: len(gw.svc.registry) == 1, 30), client_log()
        (call,) = list(gw.svc.registry)
        leg: Any = call.leg
        assert await wait_for(lambda: "answered" in client_log() and leg.pc.connectionState == "connected", 20), client_log()
        assert await wait_for(lambda: leg.stats.frames_from_browser > 50, 10), (leg.stats, client_log())

        # a live browser is not mistaken for a lost one: the call stays up well past ice_timeout_s
        await sleep(2 * ICE_TIMEOUT_S)
        assert not call.ended and "BYE" not in sipp.received_requests(), (call.end_cause, sipp.describe())
        frames_before = leg.stats.frames_from_browser

        os.kill(client.pid, signal.SIGSTOP)
        stopped = True
        t0 = time.monotonic()
        assert await wait_for(lambda: "BYE" in sipp.received_requests(), ICE_TIMEOUT_S + 10), (call.end_cause, sipp.describe())
        elapsed = time.monotonic() - t0
        print(
            f"\n[SIGSTOP] BYE at SIPp {elapsed:.2f} s after the browser froze "
            f"(ice_timeout_s={ICE_TIMEOUT_S}, cause {call.end_cause}, {frames_before} frames from the browser before)"
        )
        assert call.end_cause == "ice_failed"
        assert ICE_TIMEOUT_S - 0.5 <= elapsed <= ICE_TIMEOUT_S + 3.0, elapsed  # far from aioice's ~30 s
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.svc.rtp_pool.in_use, 5)
        assert await wait_for(lambda: leg.pc.connectionState == "closed", 5)
    finally:
        if stopped:
            os.kill(client.pid, signal.SIGCONT)
        if client.poll() is None:
            client.kill()
        client.wait(10)
        await gw.stop()

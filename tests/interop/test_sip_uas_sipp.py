"""SIPp as a UAC toward the gateway's UAS: a call to the built-in ``echo`` and an OPTIONS ping.

The gateway runs in-process (pytest-twisted, asyncio reactor); SIPp is a child process, polled with
``proc.poll()`` so the reactor keeps serving while SIPp runs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest_twisted

from tests.calls.gw import make_config, process_exit, start_telephony, wait_for
from tests.interop import peers


async def until_exit(sipp: peers.Sipp, timeout: float = 15.0) -> int | None:
    return await process_exit(sipp.proc, timeout)


@pytest_twisted.ensureDeferred
async def test_sipp_calls_builtin_echo(sipp_factory: Callable[..., peers.Sipp]) -> None:
    svc = start_telephony(make_config())
    try:
        host, port = svc.bound["udp"]
        sipp = sipp_factory("uac_echo", f"{host}:{port}", service="echo", duration_ms=1000)
        assert await until_exit(sipp) == 0, sipp.describe()
        assert sipp.sent_requests() == ["INVITE", "ACK", "BYE"], sipp.describe()
        ok = [m for m in sipp.received() if m.status == 200 and m.cseq_method == "INVITE"]
        assert ok, sipp.describe()
        answer = ok[0]
        assert answer.header("Content-Type") == "application/sdp"
        assert "m=audio" in answer.body and "RTP/AVP" in answer.body
        assert answer.header("Contact")
        assert [m.status for m in sipp.received() if m.cseq_method == "BYE"] == [200]
        # the gateway cleaned up its side of the call
        assert await wait_for(lambda: not svc.manager.builtin_calls, 3)
        assert not svc.rtp_pool.in_use
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_sipp_options_gets_200(sipp_factory: Callable[..., peers.Sipp]) -> None:
    svc = start_telephony(make_config())
    try:
        host, port = svc.bound["udp"]
        sipp = sipp_factory("uac_options", f"{host}:{port}", service="echo")
        assert await until_exit(sipp) == 0, sipp.describe()
        assert sipp.received_responses() == [200], sipp.describe()
        resp = sipp.received()[0]
        assert resp.header("Allow") and "INVITE" in resp.header("Allow")
    finally:
        await svc.stopService()

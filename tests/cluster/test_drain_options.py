"""A draining node leaves a SIP dispatcher's set before its calls end (issue 15): SIP OPTIONS
(raw UDP requests, as Kamailio's dispatcher probes) are answered 200 while the node serves and
503 once it drains; a node that was being probed keeps its calls until the next probe has been
answered 503 (so the dispatcher sends new calls elsewhere first), one that was never probed
ends them at once. (With Kamailio itself: tests/cluster/test_cluster_failures.py.)"""

from __future__ import annotations

import random
import socket
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.calls.gw import sleep, wait_for
from tests.cluster.test_cluster_wiring import place
from tests.ops.helpers import RunningGateway, gateway_config


def options(port: int, timeout: float = 3.0) -> str:
    """Blocking: one OPTIONS to 127.0.0.1:``port`` over UDP; the status line of the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{random.getrandbits(48):x};rport\r\n"
               f"From: <sip:dispatcher@webgate.invalid>;tag={random.getrandbits(32):x}\r\n"
               f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {random.getrandbits(64):x}@probe\r\nCSeq: 1 OPTIONS\r\n"
               "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = s.recv(65535).decode(errors="replace").split("\r\n", 1)[0]
            if not line.startswith("SIP/2.0 1"):
                return line
        raise TimeoutError("no final answer to OPTIONS")


def sip_port(gw: RunningGateway) -> int:
    return int(gw.svc.bound["udp"][1])


def node() -> RunningGateway:
    return RunningGateway(gateway_config({"shutdown": {"timeout_s": 6}}))


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_probed_node_answers_503_then_ends_its_calls() -> None:
    gw = node()
    stopping: Any = None
    try:
        assert (await deferToThread(options, sip_port(gw))).startswith("SIP/2.0 200")
        call, _leg = await place(gw)
        stopping = gw.gw.stopService()
        await sleep(1.0)
        assert not call.ended, "a probed node ended its calls before the dispatcher could take it out"
        assert (await deferToThread(options, sip_port(gw))).startswith("SIP/2.0 503")
        assert gw.svc.ua.options_refused == 1
        assert await wait_for(lambda: call.ended, 3), "the calls did not end after the 503"
        await stopping
    finally:
        if stopping is None:
            await gw.stop()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_node_never_probed_ends_its_calls_at_once() -> None:
    gw = node()
    call, _leg = await place(gw)
    stopping = gw.gw.stopService()
    assert await wait_for(lambda: call.ended, 0.5)
    await stopping

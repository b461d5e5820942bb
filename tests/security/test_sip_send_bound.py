"""A SIP TCP peer that sends requests but never reads what the gateway answers cannot make it
hold an unbounded amount of SIP: past ``[sip] max_send_buffer`` bytes written while Twisted's
buffer is over its high-water mark, the connection is aborted (docs/security.md). The gateway
keeps serving others.

Fails on the code before the bound: the gateway then queues every answer for the stalled peer.
"""

from __future__ import annotations

import socket

import pytest_twisted

from tests.adapters.test_sip_garbage import Peer, tcp_connect, tcp_read
from tests.calls.gw import make_config, sleep, start_telephony, wait_for


def _stalled_peer(addr: tuple[str, int]) -> socket.socket:
    """A TCP connection whose receive buffer is tiny and never read."""
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(addr)
    c.setblocking(False)
    return c


@pytest_twisted.ensureDeferred
async def test_peer_that_never_reads_is_cut_off() -> None:
    svc = start_telephony(make_config())
    svc.transport.max_send_buffer = 32 * 1024
    udp = Peer(svc.bound["udp"])
    tcp_addr = svc.bound["tcp"]
    c = _stalled_peer(tcp_addr)
    reset = False
    try:
        # each OPTIONS gets a ~400-byte 200 OK that the peer never reads
        big = "X-Pad: " + "p" * 1000 + "\r\n"
        for batch in range(200):
            data = b"".join(udp.request("OPTIONS", extra=big)[0].replace(b"/UDP", b"/TCP") for _ in range(20))
            try:
                c.send(data)
            except BlockingIOError:
                pass  # our own send buffer is full: let the gateway read
            except (ConnectionResetError, BrokenPipeError):
                reset = True
                break
            await sleep(0.01)
            if svc.transport.stats.get("send_overflow"):
                break
        assert await wait_for(lambda: svc.transport.stats.get("send_overflow", 0) >= 1, timeout=10), svc.transport.stats
        # what the gateway still holds for the peer is bounded: its connection is gone
        mine = c.getsockname()[1]
        assert await wait_for(lambda: not any(p.peer[2] == mine for p in svc.transport.connections.values()), timeout=5)
        if not reset:
            _out, reset = tcp_read(c)
        # and the gateway serves a fresh connection
        d = tcp_connect(tcp_addr)
        req, _ = udp.request("OPTIONS")
        d.sendall(req.replace(b"/UDP", b"/TCP"))
        got = b""
        for _ in range(50):
            await sleep(0.05)
            out, _closed = tcp_read(d)
            got += out
            if b"\r\n\r\n" in got:
                break
        assert got.startswith(b"SIP/2.0 200"), got[:80]
        d.close()
    finally:
        c.close()
        udp.sock.close()
        await svc.stopService()

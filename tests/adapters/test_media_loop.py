"""The one event-loop reader for media sockets (webgate/adapters/media_loop.py, ``[rtp] media_io``)
and the RTP port pool on it and on Twisted's per-port readers: the same datagrams in, the same out."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.calls.gw import sleep, wait_for
from tests.interop.peers import free_port
from webgate.adapters import media_loop
from webgate.adapters.media_loop import (
    MediaReader,
    fast_sendto,
    reader_for,
    take_asyncio_socket,
)
from webgate.adapters.rtp import RtpPortPool


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.bind(("127.0.0.1", 0))
    return s


def _loop() -> Any:
    loop = media_loop.asyncio_loop_of(reactor)
    assert loop is not None, "the suite runs on Twisted's asyncio reactor"
    return loop


# the reader's own behaviour (draining, fairness, closed-socket numbers reused, the read interval) is
# tested on both readers, this one and the native one, in tests/native/test_native_reader.py


@pytest_twisted.ensureDeferred
async def test_an_asyncio_transport_socket_is_taken_and_given_back() -> None:
    loop = _loop()
    r = MediaReader(loop)
    got: list[bytes] = []

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.append(b"asyncio:" + data)

    transport, _ = await _as_deferred(loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0)))
    tx = _udp()
    try:
        give_back = take_asyncio_socket(r, transport, lambda data, addr: got.append(b"reader:" + data))
        assert give_back is not None
        tx.sendto(b"1", transport.get_extra_info("sockname"))
        assert await wait_for(lambda: got == [b"reader:1"], 2)
        give_back()
        tx.sendto(b"2", transport.get_extra_info("sockname"))
        assert await wait_for(lambda: got == [b"reader:1", b"asyncio:2"], 2)
        # sending: the plain socket's sendto, the transport's when the socket refuses
        send = fast_sendto(transport, transport.sendto)
        assert send is not transport.sendto
        send(b"out", tx.getsockname())
        assert await wait_for(lambda: _recv(tx) == b"out", 2)
        media_loop.set_default_mode("twisted")
        assert fast_sendto(transport, transport.sendto) == transport.sendto
        assert reader_for(loop) is None
    finally:
        media_loop.set_default_mode("loop")
        transport.close()
        tx.close()
        r.close()
    assert take_asyncio_socket(MediaReader(loop), transport, lambda d, a: None) is None  # closing: left alone


def _recv(s: socket.socket) -> bytes | None:
    try:
        return s.recv(100)
    except BlockingIOError:
        return None


async def _as_deferred(coro: Any) -> Any:
    from twisted.internet.defer import Deferred

    return await Deferred.fromFuture(asyncio.ensure_future(coro))


class _Stream:
    """What the pool's ports hand datagrams to (an RtpAudioStream's two entry points)."""

    def __init__(self) -> None:
        self.rtp: list[tuple[bytes, tuple[str, int]]] = []
        self.rtcp: list[tuple[bytes, tuple[str, int]]] = []

    def datagram_received(self, data: bytes, source: tuple[str, int], now: float) -> None:
        self.rtp.append((data, source))

    def rtcp_received(self, data: bytes, source: tuple[str, int], now: float) -> None:
        self.rtcp.append((data, source))


@pytest.mark.parametrize("media_io", ["loop", "twisted"])
@pytest_twisted.ensureDeferred
async def test_rtp_port_pool_receives_and_sends_alike_on_each_implementation(media_io: str) -> None:
    lo = free_port()
    lo -= lo % 2
    pool = RtpPortPool(reactor, "127.0.0.1", lo, lo + 7, media_io=media_io)
    assert (pool.reader is not None) == (media_io == "loop")
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = _udp()
    try:
        blocker.bind(("127.0.0.1", lo + 1))  # the first pair's RTCP port is taken: the pool skips the pair
        ep = pool.allocate()
        assert ep.rtp_port == lo + 2
        stream = _Stream()
        ep.stream = stream  # type: ignore[assignment]
        peer.sendto(b"\x80\x00rtp", ("127.0.0.1", ep.rtp_port))
        peer.sendto(b"\x81\xc8rtcp", ("127.0.0.1", ep.rtcp_port))
        assert await wait_for(lambda: stream.rtp and stream.rtcp, 2)
        assert stream.rtp == [(b"\x80\x00rtp", peer.getsockname())]
        assert stream.rtcp == [(b"\x81\xc8rtcp", peer.getsockname())]
        ep.send_rtp(b"out-rtp", peer.getsockname())
        assert await wait_for(lambda: _recv(peer) == b"out-rtp", 2)
        ep.send_rtcp(b"out-rtcp", peer.getsockname())
        assert await wait_for(lambda: _recv(peer) == b"out-rtcp", 2)
        if media_io == "loop":
            # a host name is never resolved (it would block the loop on every packet): nothing sent
            # (Twisted's Port.write raises InvalidAddressError for one)
            ep.send_rtp(b"name", ("localhost", peer.getsockname()[1]))
            ep.send_rtp(b"v6", ("::1", peer.getsockname()[1]))  # another family than the socket's
            await sleep(0.1)
            assert _recv(peer) is None
            socks = ep._socks
            assert socks is not None and all(s in pool.reader._fds for s in socks)  # type: ignore[union-attr]
        ep.stream = None
        ep.release()
        assert not pool.in_use and ep._socks is None
        if media_io == "loop":
            assert all(s.fileno() == -1 and s not in pool.reader._fds for s in socks)  # type: ignore[union-attr]
        # the ports are free again (Twisted closes its ports on the next turn of the loop)
        await sleep(0.1)
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        again.bind(("127.0.0.1", lo + 2))
        again.close()
    finally:
        blocker.close()
        peer.close()
        pool.clock.stop()

"""The RTMP connection's outbox (webgate.adapters.rtmp._Outbox): bytes go straight to the socket
only while Twisted holds nothing for the connection (so order is kept), whatever the kernel does not
take goes through ``transport.write`` and counts as waiting until Twisted reports its buffer empty
(``resumeProducing`` of the registered pull producer); TLS connections always go through Twisted.
Public Twisted API only: ``registerProducer`` and ``ISystemHandle.getHandle``.

Driven with stand-in transports, then once over a real TCP connection whose reader stalls."""

from __future__ import annotations

import socket
from typing import Any, ClassVar

import pytest
import pytest_twisted
from twisted.internet import endpoints, protocol
from twisted.internet.interfaces import (
    INegotiated,
    ISSLTransport,
    ISystemHandle,
    ITCPTransport,
    ITransport,
)
from zope.interface import implementer

from tests.calls.gw import reactor, wait_for
from webgate.adapters.outbox import Outbox as _Outbox
from webgate.legs.rtmp_audio import essential_tag as _essential


class _Sock(socket.socket):
    """A real (unconnected) socket object whose send() and setsockopt() are scripted."""

    made: ClassVar[list[_Sock]] = []

    def __init__(self, take: int | None = None, error: Exception | None = None) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.take, self.error = take, error
        _Sock.made.append(self)
        self.sent: list[bytes] = []
        self.options: dict[tuple[int, int], int] = {}

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        n = len(data) if self.take is None else min(self.take, len(data))
        self.sent.append(data[:n])
        return n

    def setsockopt(self, level: int, name: int, value: int) -> None:  # type: ignore[override]
        self.options[(level, name)] = value


@pytest.fixture(autouse=True)
def _close_fake_sockets() -> Any:
    yield
    for s in _Sock.made:
        s.close()
    _Sock.made.clear()


class _Transport:
    def __init__(self, sock: _Sock | None = None) -> None:
        self.sock = sock
        self.written: list[bytes] = []
        self.producer: Any = None
        self.streaming: bool | None = None

    def getHandle(self) -> Any:
        return self.sock

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("a producer is registered")
        self.producer, self.streaming = producer, streaming
        if not streaming:
            producer.resumeProducing()  # as Twisted does for a pull producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)


@implementer(ITCPTransport, ISystemHandle)
class _Tcp(_Transport):
    pass


@implementer(ITransport, ISystemHandle, INegotiated)
class _Tls(_Transport):
    """Like TLSMemoryBIOProtocol: a handle (the OpenSSL connection), not a TCP transport."""


@implementer(ITCPTransport, ISystemHandle, INegotiated)
class _TlsClaimingTcp(_Transport):
    """Twisted's TLS wrapper also claims the interfaces of the TCP transport it wraps."""


@implementer(ITCPTransport, ISystemHandle, ISSLTransport)
class _StartedTls(_Transport):
    """A TCP connection after startTLS."""


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _outbox(sock: _Sock, cls: type[_Transport] = _Tcp) -> tuple[_Outbox, _Transport, _Clock]:
    t = cls(sock)
    clock = _Clock()
    return _Outbox(t, clock), t, clock


def test_plain_tcp_registers_a_pull_producer_and_tls_a_push_producer() -> None:
    box, t, _ = _outbox(_Sock())
    assert t.producer is box and t.streaming is False and box.sock is not None
    for tls in (_Tls, _TlsClaimingTcp, _StartedTls):
        box, t, _ = _outbox(_Sock(), tls)
        assert t.producer is box and t.streaming is True and box.sock is None, tls
    box, t, _ = _outbox(object(), _Tcp)  # type: ignore[arg-type] - a handle that is no socket
    assert t.streaming is True and box.sock is None


def test_all_taken_by_the_socket() -> None:
    sock = _Sock()
    box, t, clock = _outbox(sock)
    box.write(b"abcdef")
    assert sock.sent == [b"abcdef"] and t.written == []
    assert box.waited(clock.now + 5) == 0.0 and box.queued_bytes == 0


def test_the_rest_goes_to_twisted_and_later_writes_follow_it_in_order() -> None:
    sock = _Sock(take=4)
    box, t, clock = _outbox(sock)
    box.write(b"abcdefgh")
    assert sock.sent == [b"abcd"] and t.written == [b"efgh"]
    clock.now += 0.5
    sock.take = None
    box.write(b"ijk")  # the socket could take it, but Twisted still holds bytes that go first
    assert sock.sent == [b"abcd"] and t.written == [b"efgh", b"ijk"]
    assert box.queued_bytes == 7 and box.waited(clock.now) == pytest.approx(0.5)
    # Twisted's buffer ran empty: straight to the socket again, nothing waits
    t.producer.resumeProducing()
    assert box.waited(clock.now) == 0.0 and box.queued_bytes == 0
    box.write(b"lmn")
    assert sock.sent == [b"abcd", b"lmn"] and t.written == [b"efgh", b"ijk"]


@pytest.mark.parametrize("error", [BlockingIOError(11, "EAGAIN"), ConnectionResetError(104, "reset")])
def test_socket_errors_leave_it_to_twisted(error: Exception) -> None:
    box, t, _ = _outbox(_Sock(error=error))
    box.write(b"abc")
    assert t.written == [b"abc"] and box.queued_bytes == 3


def test_tls_goes_through_twisted_and_waits_from_a_pause() -> None:
    sock = _Sock()
    box, t, clock = _outbox(sock, _Tls)
    box.write(b"abc")
    assert sock.sent == [] and t.written == [b"abc"] and box.waiting_since is None
    t.producer.pauseProducing()  # Twisted's buffer passed its high-water mark
    clock.now += 1.0
    box.write(b"de")
    assert box.waited(clock.now) == pytest.approx(1.0) and box.queued_bytes == 2
    t.producer.resumeProducing()
    assert box.waiting_since is None and box.queued_bytes == 0


def test_close_unregisters_and_stops_writing_through() -> None:
    sock = _Sock()
    box, t, _ = _outbox(sock)
    box.close()
    assert t.producer is None
    box.write(b"bye")
    assert sock.sent == [] and t.written == [b"bye"]
    box.close()  # twice is fine


def test_a_connection_that_is_gone_stops_writing_through() -> None:
    sock = _Sock()
    box, t, _ = _outbox(sock)
    box.stopProducing()
    box.write(b"x")
    assert sock.sent == [] and t.written == [b"x"]


def test_another_producer_already_registered_means_plain_writes() -> None:
    t = _Tcp(_Sock())
    t.registerProducer(object(), True)
    box = _Outbox(t, _Clock())
    box.write(b"abc")
    assert t.written == [b"abc"] and not box.registered
    box.close()
    assert t.producer is not None  # not ours to unregister


def test_kernel_buffer_limited_on_plain_tcp_only() -> None:
    sock = _Sock()
    box, _, _ = _outbox(sock)
    box.limit_kernel_buffer(16384)
    assert sock.options == {(socket.SOL_SOCKET, socket.SO_SNDBUF): 16384}
    sock = _Sock()
    box, _, _ = _outbox(sock)
    box.limit_kernel_buffer(0)
    assert sock.options == {}


def test_the_aac_sequence_header_is_essential() -> None:
    assert _essential(bytes([0xAF, 0x00, 0x14, 0x08]))
    assert not _essential(bytes([0xAF, 0x01, 0x21]))  # raw AAC
    assert not _essential(bytes([0x82, 0x00]))  # G.711 µ-law
    assert not _essential(b"")


class _Reader(protocol.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class _Writer(protocol.Protocol):
    def connectionMade(self) -> None:
        self.box = _Outbox(self.transport, reactor.seconds)


@pytest_twisted.ensureDeferred
async def test_a_real_connection_keeps_order_through_a_stalled_reader() -> None:
    writer = _Writer()
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(lambda: writer), interface="127.0.0.1")
    try:
        ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        reader: _Reader = await endpoints.connectProtocol(ep, _Reader())
        assert await wait_for(lambda: hasattr(writer, "box"), 5)
        reader.transport.pauseProducing()  # the reader stalls
        box = writer.box
        expected = bytearray()
        for i in range(2000):  # 8 MB: more than the kernel's buffers on loopback
            chunk = i.to_bytes(4, "big") * 1024
            box.write(chunk)
            expected += chunk
        assert box.waiting_since is not None and box.queued_bytes > 0
        reader.transport.resumeProducing()
        assert await wait_for(lambda: len(reader.data) == len(expected), 20), (len(reader.data), len(expected))
        assert reader.data == expected
        assert await wait_for(lambda: box.waiting_since is None, 5)  # Twisted said its buffer ran empty
        box.write(b"end")  # straight to the socket again
        assert await wait_for(lambda: reader.data.endswith(b"end"), 5)
        box.close()
        writer.transport.loseConnection()  # closes: no producer left to hold it open
        assert await wait_for(lambda: not writer.transport.connected, 5)
    finally:
        await port.stopListening()

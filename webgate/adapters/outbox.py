"""Write-through for a Twisted stream connection that sends small real-time messages: RTMP's.

:class:`Outbox` writes straight to a plain TCP socket while Twisted holds nothing for the
connection, and tells the connection how long its unsent data has waited (the players'
back-pressure of :mod:`webgate.adapters.rtmp`, docs/security.md).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import (
    INegotiated,
    IPullProducer,
    IPushProducer,
    ISSLTransport,
    ISystemHandle,
    ITCPTransport,
)
from zope.interface import implementer

__all__ = ["Outbox"]


def _plain_tcp(transport: Any) -> bool:
    """A TCP transport whose socket carries our bytes as they are. Twisted's TLS wrapper claims the
    interfaces of the transport it wraps (ITCPTransport too) but is INegotiated and its handle is the
    OpenSSL connection; a connection after startTLS provides ISSLTransport."""
    return (
        ITCPTransport.providedBy(transport)
        and ISystemHandle.providedBy(transport)
        and not ISSLTransport.providedBy(transport)
        and not INegotiated.providedBy(transport)
        and isinstance(transport.getHandle(), socket.socket)
    )


@implementer(IPullProducer, IPushProducer)
class Outbox:
    """What one connection has handed to Twisted that Twisted has not sent yet, followed through
    public API only (``IConsumer.registerProducer``, ``ISystemHandle.getHandle``).

    * **Plain TCP**: registered as a pull producer. Twisted calls :meth:`resumeProducing` each time
      its write buffer runs empty (IConsumer's contract), so from a write it had to queue until that
      call, bytes wait. While nothing waits, :meth:`write` first offers the bytes to the socket itself
      and hands Twisted only what the kernel did not take: Twisted queues every write and sends it on
      the next writable event, registering and unregistering the socket with the selector each time --
      for a player that gets one small audio message every 20 ms, two epoll_ctl calls and a loop turn
      per message (a quarter of an RTMP call's CPU, docs/performance.md). Order, flow control and error
      handling stay Twisted's.
    * **TLS** (the socket carries records, not our bytes): registered as a push producer. Twisted pauses
      it when its buffer passes its high-water mark and resumes it once the buffer is empty, so bytes
      count as waiting from the pause on (a coarser measure than plain TCP's).

    ``waited(now)`` (seconds the oldest unsent byte has waited, 0 when none) and ``queued_bytes`` (an
    upper bound of what Twisted holds for this connection) are what the players' back-pressure reads.
    """

    def __init__(self, transport: Any, clock: Callable[[], float]) -> None:
        self.transport = transport
        self.clock = clock
        self.sock: Any = None  # plain TCP: the socket, for writes while nothing waits
        self.waiting_since: float | None = None
        self.queued_bytes = 0
        self.peak_bytes = 0
        self.registered = False
        if _plain_tcp(transport):
            self.sock = transport.getHandle()
        plain_tcp = self.sock is not None
        try:
            transport.registerProducer(self, not plain_tcp)  # a pull producer is resumed at once
        except RuntimeError:  # a producer is already registered (not by this class): plain writes
            self.sock = None
            return
        self.registered = True

    def waited(self, now: float) -> float:
        return 0.0 if self.waiting_since is None else now - self.waiting_since

    def write(self, data: bytes) -> None:
        if self.waiting_since is None and self.sock is not None:
            try:
                n = self.sock.send(data)
            except OSError:  # EAGAIN, or an error Twisted's own write path will report
                n = 0
            if n >= len(data):
                return
            data = data[n:]
            self.waiting_since = self.clock()
        if self.waiting_since is not None:
            self.queued_bytes += len(data)
            self.peak_bytes = max(self.peak_bytes, self.queued_bytes)
        self.transport.write(data)

    def limit_kernel_buffer(self, size: int) -> None:
        """SO_SNDBUF of a plain TCP connection (0: leave the kernel's autotuning)."""
        if size and self.sock is not None:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError:
                pass

    def close(self) -> None:
        """Before ``loseConnection``/``abortConnection``: Twisted closes a connection only once no
        producer is registered."""
        self.sock = None
        if self.registered:
            self.registered = False
            self.transport.unregisterProducer()

    # IPullProducer / IPushProducer (called by Twisted)
    def resumeProducing(self) -> None:
        """Twisted's buffer is empty."""
        self.waiting_since = None
        self.queued_bytes = 0

    def pauseProducing(self) -> None:
        """(TLS) Twisted's buffer passed its high-water mark."""
        if self.waiting_since is None:
            self.waiting_since = self.clock()

    def stopProducing(self) -> None:
        """The connection is gone."""
        self.sock = None
        self.registered = False

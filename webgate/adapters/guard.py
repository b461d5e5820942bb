"""Twisted glue for the connection caps and deadlines of :mod:`webgate.security.connlimit`.

- :class:`DeadlineTimer`: one reactor timer that follows a connection's
  :class:`~webgate.security.connlimit.StreamDeadlines` (SIP TCP/TLS and RTMP connections). Reads
  only update the deadlines object; the timer is armed at the next deadline and, when it fires,
  asks what is due and re-arms. It is moved earlier only when a read starts a partial message.
- :func:`listen_tls`: ``reactor.listenSSL`` for a factory whose ``buildProtocol`` may return
  None to refuse a connection at accept (``listenSSL``'s TLS wrapper would wrap None and fail).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

from webgate.security.connlimit import StreamDeadlines

__all__ = ["DeadlineTimer", "listen_tls"]


class _RefusingTlsFactory(TLSMemoryBIOFactory):
    """A TLS server factory that refuses at accept when the wrapped factory returns None."""

    def buildProtocol(self, addr: Any) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]  # None refuses
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)


def listen_tls(reactor: Any, port: int, factory: Any, context_factory: Any, interface: str = "") -> Any:
    """Listen for TLS like ``reactor.listenSSL`` (the same TLS-over-TCP wrapping it does), but a
    ``None`` from ``factory.buildProtocol`` closes the connection at accept."""
    return reactor.listenTCP(port, _RefusingTlsFactory(context_factory, False, factory), interface=interface)


class DeadlineTimer:
    """``on_due(reason)`` is called with ``"idle"``, ``"partial"`` or ``"probe"``; after
    ``"idle"``/``"partial"`` the adapter closes the connection and calls :meth:`cancel`."""

    def __init__(self, reactor: Any, deadlines: StreamDeadlines, on_due: Callable[[str], None]) -> None:
        self.reactor = reactor
        self.deadlines = deadlines
        self.on_due = on_due
        self._call: Any = None
        self._stopped = False
        self._arm()

    def received(self, *, progress: bool, pending: bool) -> None:
        """Bytes were read: ``progress`` = a complete message came out of them, ``pending`` =
        bytes of an unfinished message remain buffered."""
        self.deadlines.received(self.reactor.seconds(), progress=progress, pending=pending)
        if pending:
            at = self.deadlines.deadline()
            call = self._call
            if at is not None and call is not None and call.active() and at < call.getTime():
                call.reset(max(0.0, at - self.reactor.seconds()))

    def cancel(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        at = self.deadlines.deadline()
        if at is None or self._stopped:
            self._call = None
            return
        self._call = self.reactor.callLater(max(0.0, at - self.reactor.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        reason = self.deadlines.due(self.reactor.seconds())
        if reason is not None:
            self.on_due(reason)
        self._arm()

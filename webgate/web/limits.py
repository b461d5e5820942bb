"""Connection caps and the request-header deadline of the HTTP listener(s) (``/``, ``/ws``, ``/api``,
``/metrics``, ``/health``; HTTP and HTTPS share one Site and so one count).

- At accept: :class:`~webgate.security.connlimit.ConnectionLimiter` (``[http] max_connections``,
  ``max_connections_per_ip``); past a cap the connection is closed before anything is read.
- A request's headers (the WebSocket upgrade included) must be complete within
  ``[http] request_timeout_s`` of the connection opening or of the previous response; else the
  connection is aborted. twisted.web's own timeout is an idle timeout reset by every byte, so a
  client dripping one header byte a minute would hold the connection for days.
- A connection upgraded to a WebSocket leaves this count (``/ws`` counts it under
  ``[webrtc] max_connections``) and has no request deadline any more (the WebSocket's own idle
  timeout applies).

The channel is twisted.web's HTTP/1.1 ``HTTPChannel`` (its HTTP/2 path needs the ``h2`` package,
which webgate does not install, so nothing is lost by naming the class).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

from webgate.security.connlimit import ConnectionLimiter

__all__ = ["REQUEST_TIMEOUT", "GuardedSite"]

log = Logger()

REQUEST_TIMEOUT = "request_timeout"  # the reason counted in webgate_connections_closed


class _GuardedChannel(http.HTTPChannel):
    """An HTTP/1.1 channel with a deadline for each request's headers."""

    site: GuardedSite
    slot: str | None = None  # the address holding a slot of the site's limiter
    _deadline: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def allHeadersReceived(self) -> None:
        self._cancel()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        # the next request's headers are due from now (arm first: a pipelined request buffered
        # meanwhile is parsed inside requestDone and cancels the deadline again)
        self._arm()
        super().requestDone(request)

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel()
        self._release()
        super().connectionLost(reason)

    def upgraded(self) -> None:
        """Called by ``/ws`` once the connection is a WebSocket: no request deadline any more, and
        the slot goes back (the WebSocket limiter counts it now). Also ``connectionLost`` is no
        longer this class's after twisted.web's upgrade, so the slot must be released here."""
        self._cancel()
        self._release()

    def _arm(self) -> None:
        self._cancel()
        self._deadline = self.callLater(self.site.request_timeout_s, self._request_timeout)

    def _cancel(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _release(self) -> None:
        if self.slot is not None:
            self.site.limiter.release(self.slot)
            self.slot = None

    def _request_timeout(self) -> None:
        self._deadline = None
        transport: Any = self.transport
        if transport is None:
            return
        log.info("HTTP {peer}: no complete request within {s} s, closing", peer=str(transport.getPeer()), s=self.site.request_timeout_s)
        self.site.limiter.note_closed(REQUEST_TIMEOUT)
        transport.abortConnection()


class GuardedSite(server.Site):
    """A twisted.web Site whose connections are capped and must send their headers in time."""

    protocol = _GuardedChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, *, limiter: ConnectionLimiter, request_timeout_s: float, reactor: Any = None) -> None:
        super().__init__(resource, reactor=reactor)
        self.limiter = limiter
        self.request_timeout_s = request_timeout_s

    def buildProtocol(self, addr: Any) -> Any:
        host = str(getattr(addr, "host", "?"))
        refused = self.limiter.admit(host)
        if refused is not None:
            log.info("HTTP connection from {host} refused: {reason} connection cap", host=host, reason=refused)
            return None  # closed at accept
        channel = super().buildProtocol(addr)
        channel.slot = host
        return channel

"""Connection caps and per-connection deadlines for the stream listeners (SIP TCP/TLS, HTTP and
WebSocket, RTMP/RTMPS). Sans-IO: no sockets, no reactor; time comes in as ``now``.

- :class:`ConnectionLimiter` admits a new connection or names why not (``"total"`` or
  ``"per_ip"``), and counts refusals and deadline closes by reason for ``/metrics``.
  IPv6 peers are counted per /64 (one subscriber's usual allocation), IPv4-mapped IPv6 as IPv4.
- :class:`StreamDeadlines` tracks the idle and partial-message deadlines of one connection; the
  adapter arms one timer at :meth:`StreamDeadlines.deadline` and asks :meth:`StreamDeadlines.due`
  when it fires (reads only update two numbers: no timer work per packet).

See docs/security.md ("Connection caps and timeouts") and docs/decisions.md.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

__all__ = ["IDLE", "PARTIAL", "PER_IP", "PROBE", "TOTAL", "ConnectionLimiter", "StreamDeadlines", "peer_key"]

TOTAL = "total"  # the listener's cap on open connections
PER_IP = "per_ip"  # the cap for one address (IPv6: one /64)
IDLE = "idle"  # nothing received for idle_s
PARTIAL = "partial"  # a message started and no message completed for partial_s
PROBE = "probe"  # idle for probe_s: the adapter may ask the peer for a sign of life (RTMP ping)


def peer_key(host: str) -> str:
    """What the per-IP cap counts: the IPv4 address, or the IPv6 /64 (``2001:db8:1:2::/64``).
    Anything that is not an IP address (a UNIX socket path, ``"?"``) counts as itself."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class ConnectionLimiter:
    """Open connections of one listener, capped in total and per address.

    ``admit(host)`` returns None and counts the connection, or the reason it is refused
    (:data:`TOTAL` or :data:`PER_IP`, also counted in :attr:`refused`); every admitted
    connection is given back with ``release(host)`` exactly once. ``max_total`` or
    ``max_per_ip`` of 0 means no cap."""

    def __init__(self, listener: str, max_total: int, max_per_ip: int) -> None:
        self.listener = listener
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.open = 0
        self.by_key: dict[str, int] = {}
        self.refused: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()  # closed by a deadline or bound, by reason

    def admit(self, host: str) -> str | None:
        key = peer_key(host)
        if self.max_total and self.open >= self.max_total:
            self.refused[TOTAL] += 1
            return TOTAL
        n = self.by_key.get(key, 0)
        if self.max_per_ip and n >= self.max_per_ip:
            self.refused[PER_IP] += 1
            return PER_IP
        self.open += 1
        self.by_key[key] = n + 1
        return None

    def release(self, host: str) -> None:
        key = peer_key(host)
        n = self.by_key.get(key, 0)
        if n <= 0:
            return  # never admitted (or released twice): nothing to give back
        self.open -= 1
        if n == 1:
            del self.by_key[key]
        else:
            self.by_key[key] = n - 1

    def count(self, host: str) -> int:
        """Open connections counted for ``host``'s key."""
        return self.by_key.get(peer_key(host), 0)

    def note_closed(self, reason: str) -> None:
        """Count a connection closed by a deadline or a buffer bound (``idle``, ``partial``, ...)."""
        self.closed[reason] += 1


class StreamDeadlines:
    """The idle and partial-message deadlines of one stream connection.

    - idle: nothing received for ``idle_s`` (0 = no idle limit);
    - partial: bytes of an unfinished message are buffered and no message completed for
      ``partial_s`` (a slow drip of one header, or one chunk, never completes);
    - probe (optional): nothing received for ``probe_s``, reported once per silence so the
      adapter can ask the peer for traffic (``probe_s`` < ``idle_s``; 0 = never).

    Call :meth:`received` after each read, with whether a complete message came out of it and
    whether bytes of an unfinished one remain buffered."""

    def __init__(self, now: float, idle_s: float, partial_s: float, probe_s: float = 0.0) -> None:
        self.idle_s = idle_s
        self.partial_s = partial_s
        self.probe_s = probe_s
        self.last_received = now
        self.partial_since: float | None = None
        self.probed = False

    def received(self, now: float, *, progress: bool, pending: bool) -> None:
        self.last_received = now
        self.probed = False
        if not pending:
            self.partial_since = None
        elif progress or self.partial_since is None:
            self.partial_since = now

    def deadline(self) -> float | None:
        """When :meth:`due` may next have something to report (None = never)."""
        times = []
        if self.idle_s:
            times.append(self.last_received + self.idle_s)
        if self.probe_s and not self.probed:
            times.append(self.last_received + self.probe_s)
        if self.partial_s and self.partial_since is not None:
            times.append(self.partial_since + self.partial_s)
        return min(times) if times else None

    def due(self, now: float) -> str | None:
        """:data:`PARTIAL` or :data:`IDLE` (close the connection), :data:`PROBE` (once per
        silence), or None (nothing yet: re-arm at :meth:`deadline`)."""
        if self.partial_s and self.partial_since is not None and now >= self.partial_since + self.partial_s:
            return PARTIAL
        if self.idle_s and now >= self.last_received + self.idle_s:
            return IDLE
        if self.probe_s and not self.probed and now >= self.last_received + self.probe_s:
            self.probed = True
            return PROBE
        return None

"""Call limits, sans-IO: concurrent calls per client IP and per token identity, and call
attempts per client IP in a sliding 60 s window. Time comes in as ``now`` (or the injected
clock); nothing here does I/O.

The :class:`~webgate.calls.manager.CallManager` asks :meth:`CallPolicy.attempt` first (every
attempt counts, also those refused later for another reason), :meth:`CallPolicy.check` before
it allocates anything, and :meth:`CallPolicy.acquire` once the call exists; the policy is a
call observer, so :meth:`call_ended` releases the call's slots. Memory stays bounded: counters
of IPs and identities without live calls are deleted, attempt windows older than 60 s are
pruned, and at most ``max_tracked_ips`` windows are kept.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from webgate.calls import errors
from webgate.calls.errors import CallRefused

__all__ = ["WINDOW_S", "CallPolicy", "client_ip"]

WINDOW_S = 60.0


def client_ip(client: object) -> str:
    """The IP address in a leg's ``client`` (``"1.2.3.4:5678"``, ``"[::1]:5678"``, ``"::1"``,
    ``"1.2.3.4"``); IPv4-mapped IPv6 addresses become IPv4. Anything else is returned as is."""
    text = str(client or "?")
    if text.startswith("["):
        host = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        host = text.split(":", 1)[0]
    else:
        host = text
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class CallPolicy:
    def __init__(
        self,
        *,
        max_calls_per_identity: int = 0,
        max_calls_per_ip: int = 0,
        max_attempts_per_ip_per_minute: int = 0,
        clock: Callable[[], float] = time.monotonic,
        max_tracked_ips: int = 100_000,
    ) -> None:
        self.max_calls_per_identity = max_calls_per_identity
        self.max_calls_per_ip = max_calls_per_ip
        self.max_attempts = max_attempts_per_ip_per_minute
        self.clock = clock
        self.max_tracked_ips = max_tracked_ips
        self.by_ip: dict[str, int] = {}
        self.by_identity: dict[str, int] = {}
        # id(call) -> (call, ip, identity); the call is referenced so its id is never reused while held
        self._held: dict[int, tuple[object, str, str | None]] = {}
        # ip -> timestamps of its recent attempts (at most max_attempts), least recently active first
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()

    @classmethod
    def from_config(cls, limits: Any, clock: Callable[[], float] = time.monotonic) -> CallPolicy:
        return cls(
            max_calls_per_identity=limits.max_calls_per_identity,
            max_calls_per_ip=limits.max_calls_per_ip,
            max_attempts_per_ip_per_minute=limits.max_attempts_per_ip_per_minute,
            clock=clock,
        )

    # -- attempts per minute ------------------------------------------------------------------
    def attempt(self, ip: str, now: float | None = None) -> None:
        """Count one call attempt from ``ip``; raise ``rate_limited`` (429) if ``ip`` already
        made ``max_attempts_per_ip_per_minute`` attempts in the last 60 s. A refused attempt is
        not counted, so a client regains one attempt each time its oldest one ages out."""
        if self.max_attempts <= 0:
            return
        now = self.clock() if now is None else now
        self._prune(now)
        window = self._attempts.get(ip)
        if window is None:
            window = self._attempts[ip] = deque(maxlen=self.max_attempts)
        self._attempts.move_to_end(ip)
        self._refuse_if_full(window, now)
        window.append(now)

    def check_attempts(self, ip: str, now: float | None = None) -> None:
        """Raise ``rate_limited`` (429) if ``ip`` is at its attempt limit, without counting an
        attempt: for requests that count only when they fail (RTMP ``play``), which a client at
        its limit must not make at all (a success would tell it what it guessed)."""
        window = self._attempts.get(ip) if self.max_attempts > 0 else None
        if window is not None:
            self._refuse_if_full(window, self.clock() if now is None else now)

    def _refuse_if_full(self, window: deque[float], now: float) -> None:
        while window and now - window[0] >= WINDOW_S:
            window.popleft()
        if len(window) >= self.max_attempts:
            retry = max(1, int(WINDOW_S - (now - window[0]) + 0.999))
            raise CallRefused(
                errors.RATE_LIMITED,
                f"too many call attempts from this address (limit {self.max_attempts} per minute); retry in {retry} s",
                429,
            )

    def _prune(self, now: float) -> None:
        # least recently active first: stop at the first IP with an attempt in the window
        while self._attempts:
            window = next(iter(self._attempts.values()))
            if window and now - window[-1] < WINDOW_S and len(self._attempts) <= self.max_tracked_ips:
                break
            self._attempts.popitem(last=False)

    @property
    def tracked_ips(self) -> int:
        return len(self._attempts)

    # -- concurrent calls -----------------------------------------------------------------------
    def check(self, ip: str, identity: str | None) -> None:
        """Raise ``too_many_calls_from_ip`` / ``too_many_calls_for_identity`` (429) if one more
        call from ``ip`` / for ``identity`` would exceed its limit."""
        if self.max_calls_per_ip > 0 and self.by_ip.get(ip, 0) >= self.max_calls_per_ip:
            raise CallRefused(
                errors.TOO_MANY_CALLS_FROM_IP,
                f"this address already has {self.max_calls_per_ip} calls (limits.max_calls_per_ip)",
                429,
            )
        if identity is not None and self.max_calls_per_identity > 0 and self.by_identity.get(identity, 0) >= self.max_calls_per_identity:
            raise CallRefused(
                errors.TOO_MANY_CALLS_FOR_IDENTITY,
                f"this identity already has {self.max_calls_per_identity} calls (limits.max_calls_per_identity)",
                429,
            )

    def acquire(self, call: object, ip: str, identity: str | None) -> None:
        key = id(call)
        if key in self._held:
            return
        self._held[key] = (call, ip, identity)
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        if identity is not None:
            self.by_identity[identity] = self.by_identity.get(identity, 0) + 1

    def release(self, call: object) -> None:
        held = self._held.pop(id(call), None)
        if held is None:
            return
        _call, ip, identity = held
        _decrement(self.by_ip, ip)
        if identity is not None:
            _decrement(self.by_identity, identity)

    # call observer (CallManager.observers)
    def call_ended(self, call: object) -> None:
        self.release(call)

    @property
    def live(self) -> int:
        return len(self._held)


def _decrement(counts: dict[str, int], key: str) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)

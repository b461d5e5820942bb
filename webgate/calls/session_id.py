"""Session IDs: 8-10 digit identifiers, unique among live calls, not reused within a period
(their syntax, :func:`webgate.syntax.is_valid_session_id`, is shared with security/)."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable

from webgate.syntax import SESSION_ID_RULE, is_valid_session_id


class SessionIdError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SessionIdAllocator:
    """Hands out session IDs.

    Generated IDs have exactly ``length`` digits and never start with 0 (so they survive
    being treated as numbers by a PBX or CRM). A client-supplied ID must be 8-10 digits and
    neither live nor released less than ``reuse_after_s`` ago.
    """

    def __init__(self, length: int = 10, reuse_after_s: float = 3600.0, clock: Callable[[], float] | None = None) -> None:
        if not 8 <= length <= 10:
            raise ValueError("session ID length must be 8..10")
        self.length = length
        self.reuse_after_s = reuse_after_s
        self._clock = clock
        self.live: set[str] = set()
        self._released: OrderedDict[str, float] = OrderedDict()

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        import time

        return time.monotonic()

    def _expire(self, now: float) -> None:
        while self._released:
            sid, at = next(iter(self._released.items()))
            if now - at < self.reuse_after_s:
                break
            self._released.popitem(last=False)

    def is_available(self, sid: str) -> bool:
        self._expire(self._now())
        return sid not in self.live and sid not in self._released

    def allocate(self, requested: str | None = None) -> str:
        now = self._now()
        self._expire(now)
        if requested is not None:
            if not is_valid_session_id(requested):
                raise SessionIdError("invalid_session_id", SESSION_ID_RULE)
            if requested in self.live or requested in self._released:
                raise SessionIdError("session_id_in_use", "session ID is in use or was used recently")
            self.live.add(requested)
            return requested
        low = 10 ** (self.length - 1)
        for _ in range(1000):
            sid = str(low + secrets.randbelow(9 * low))
            if sid not in self.live and sid not in self._released:
                self.live.add(sid)
                return sid
        raise SessionIdError("session_ids_exhausted", "no free session ID")

    def release(self, sid: str) -> None:
        if sid in self.live:
            self.live.discard(sid)
            self._released[sid] = self._now()
            self._released.move_to_end(sid)

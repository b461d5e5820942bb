"""How a media reader sits in the event loop (shared by webgate/adapters/media_loop.py's
``MediaReader`` and webgate/adapters/native_reader.py's ``NativeMediaReader``)."""

from __future__ import annotations

from typing import Any

__all__ = ["LoopEntry"]


class LoopEntry:
    """How a reader is in the event loop: its one pollable descriptor ``_poll_fd`` read on
    readiness (``interval`` 0), or every ``interval`` seconds on an absolute schedule; ``_ready``
    reads.  Shared by :class:`MediaReader` and the native reader."""

    loop: Any
    interval: float
    _poll_fd: int
    _timer: Any = None
    _due = 0.0
    _in_loop = False

    def _ready(self) -> None:
        raise NotImplementedError

    def _enter_loop(self) -> None:
        if self._in_loop:
            return
        if self.interval > 0:
            self._due = self.loop.time() + self.interval
            self._timer = self.loop.call_at(self._due, self._timed)
        else:
            self.loop.add_reader(self._poll_fd, self._ready)
        self._in_loop = True

    def _leave_loop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        else:
            self.loop.remove_reader(self._poll_fd)
        self._in_loop = False

    def _timed(self) -> None:
        """``interval`` > 0: read what arrived since the last time, on an absolute schedule (a
        late wake-up does not shift it; more than one interval late, it starts again from now)."""
        now = self.loop.time()
        self._due += self.interval
        if self._due <= now:
            self._due = now + self.interval
        self._timer = self.loop.call_at(self._due, self._timed)
        self._ready()

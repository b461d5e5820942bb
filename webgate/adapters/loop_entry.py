"""How a media reader sits in the event loop (shared by webgate/adapters/media_loop.py's
``MediaReader`` and webgate/adapters/native_reader.py's ``NativeMediaReader``)."""

from __future__ import annotations

from typing import Any

__all__ = ["LoopEntry"]


class LoopEntry:
    """How a reader is in the event loop: its one pollable descriptor ``_poll_fd``, read by
    ``_ready`` when readable.  With ``interval`` > 0 (``[rtp] read_interval_ms``) a read is
    followed by a hold-off: the descriptor is not watched again for ``interval`` seconds, so
    whatever arrives meanwhile is read in one wake-up at the end of it (at most one wake-up per
    interval under load, for up to ``interval`` of added delay; none at all while idle, and a
    packet arriving after a quiet spell is read at once).  Shared by :class:`MediaReader` and the
    native reader."""

    loop: Any
    interval: float
    _poll_fd: int
    _timer: Any = None  # the hold-off's end (interval > 0, while held off)
    _in_loop = False

    def _ready(self) -> None:
        raise NotImplementedError

    def set_interval(self, interval: float) -> None:
        """A new ``interval`` (a new configuration), taken at once, also while sockets are read."""
        if interval == self.interval:
            return
        if self._in_loop:
            self._leave_loop()
            self.interval = interval
            self._enter_loop()
        else:
            self.interval = interval

    def _enter_loop(self) -> None:
        if self._in_loop:
            return
        self.loop.add_reader(self._poll_fd, self._ready if self.interval <= 0 else self._wake)
        self._in_loop = True

    def _leave_loop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        else:
            self.loop.remove_reader(self._poll_fd)
        self._in_loop = False

    def _wake(self) -> None:
        """``interval`` > 0: read, then stop watching for ``interval`` seconds."""
        self.loop.remove_reader(self._poll_fd)
        self._timer = self.loop.call_later(self.interval, self._resume)
        self._ready()

    def _resume(self) -> None:
        self._timer = None
        if self._in_loop:
            self.loop.add_reader(self._poll_fd, self._wake)  # level-triggered: at once if anything came

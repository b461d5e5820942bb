"""What the media readers share (webgate/adapters/media_loop.py's ``MediaReader`` and
webgate/adapters/native_reader.py's ``NativeMediaReader``): their table of sockets and handlers,
and how they sit in the event loop."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

__all__ = ["Handler", "LoopEntry"]

Handler = Callable[[bytes, Any], None]


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
    closed: bool
    _poll_fd: int
    _timer: Any = None  # the hold-off's end (interval > 0, while held off)
    _in_loop = False
    #: fd -> (socket, handler), and socket -> fd (a closed socket's number may be another's next)
    _handlers: dict[int, tuple[socket.socket, Handler]]
    _fds: dict[socket.socket, int]

    def _ready(self) -> None:
        raise NotImplementedError

    # --- the reader's own part: watch and unwatch a descriptor -----------------------------
    def _watch(self, fd: int, sock: socket.socket) -> None:
        """Start polling ``fd`` (``sock``'s, which may reuse a closed socket's number)."""
        raise NotImplementedError

    def _unwatch(self, fd: int, sock: socket.socket) -> None:
        """Stop polling ``fd``, ``sock``'s (which may be closed already)."""
        raise NotImplementedError

    def _removing(self, sock: socket.socket) -> None:
        """``sock`` is being removed (before the table forgets it)."""

    # --- the table ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._handlers)

    def add(self, sock: socket.socket, handler: Handler) -> None:
        """Read ``sock`` (non-blocking UDP) here from now on: ``handler(data, addr)`` per datagram
        (the native reader: per datagram no rule relays)."""
        fd = sock.fileno()
        if fd < 0 or self.closed:
            raise ValueError("socket or reader is closed")
        self._watch(fd, sock)
        old = self._handlers.get(fd)
        if old is not None and old[0] is not sock:  # a closed socket's number, reused
            self._fds.pop(old[0], None)
        self._handlers[fd] = (sock, handler)
        self._fds[sock] = fd
        self._enter_loop()

    def remove(self, sock: socket.socket) -> None:
        """Stop reading ``sock`` (also after it was closed)."""
        self._removing(sock)
        fd = self._fds.pop(sock, None)
        if fd is None:
            return
        entry = self._handlers.get(fd)
        if entry is not None and entry[0] is sock:
            del self._handlers[fd]
            self._unwatch(fd, sock)
        if not self._handlers and self._in_loop:
            self._leave_loop()

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

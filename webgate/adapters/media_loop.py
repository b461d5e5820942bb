"""One event-loop reader for every media socket (the relay's pure-Python fast path, issue 18).

Twisted reads each UDP port through its own event-loop reader: one ``Handle`` per ready port,
``callWithLogger`` (a logging context pushed and popped per wake-up), ``_readOrWrite`` and
``Port.doRead``; its ``Port.write`` checks the address (``isIPAddress``) on every packet.  asyncio
reads an aioice socket one datagram per wake-up.  Under unsynchronised callers most wake-ups carry
one packet, so that dispatch is paid per packet (docs/performance.md, "Where the time goes").

:class:`MediaReader` registers **one** ``epoll`` descriptor with the asyncio loop that Twisted's
asyncio reactor runs on, and puts every media socket in it.  When any is readable the loop runs
one callback, which drains each ready socket until ``EAGAIN`` (at most :data:`MAX_PER_SOCKET`
datagrams per socket per wake-up, so one flooded port cannot starve the others) and hands each
datagram to that socket's handler.  Sockets are level-triggered: what is left is read on the
next wake-up.

Used for the SIP side's RTP/RTCP port pairs (:mod:`webgate.adapters.rtp`) and, while webgate
sends and receives a WebRTC call's audio itself, for that call's ICE socket
(:mod:`webgate.adapters.webrtc_direct`).  ``[rtp] media_io = "twisted"`` keeps Twisted's and
asyncio's own readers (the implementation before issue 18, which the suite also runs).
"""

from __future__ import annotations

import select
import socket
import weakref
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from webgate.adapters.loop_entry import Handler, LoopEntry

__all__ = ["MAX_PER_SOCKET", "MEDIA_IO", "MediaReader", "fast_sendto", "reader_for", "set_default_mode", "take_asyncio_socket"]

log = Logger()

#: the values of ``[rtp] media_io``: "native" is this module's reader with the relay's
#: per-packet work in C (webgate/adapters/native_reader.py), "loop" this module's in Python
MEDIA_IO = ("native", "loop", "twisted")
#: datagrams read from one socket per wake-up before the next ready socket's turn
MAX_PER_SOCKET = 64
#: the receive size: as Twisted's UDP port (RTP, RTCP, STUN and DTLS records all fit)
RECV_SIZE = 8192


#: the process's mode (``[rtp] media_io``), set from the configuration at start-up
_mode = {"value": "loop"}
#: ``[rtp] read_interval_ms`` / 1000: 0 = read when a socket is readable; > 0 = read every socket
#: this often instead (one wake-up per interval, however many packets arrived in it)
_interval = {"value": 0.0}
_READERS: weakref.WeakKeyDictionary[Any, MediaReader] = weakref.WeakKeyDictionary()


def set_default_mode(mode: str, read_interval_ms: int | None = None) -> None:
    """``[rtp] media_io``: ``"loop"`` (one reader, this module) or ``"twisted"`` (per-port); and
    ``[rtp] read_interval_ms`` for readers made from now on (None: unchanged)."""
    if mode not in MEDIA_IO:
        raise ValueError(f"media_io must be one of {MEDIA_IO}, not {mode!r}")
    _mode["value"] = mode
    if read_interval_ms is not None:
        _interval["value"] = max(0, read_interval_ms) / 1000.0


def default_mode() -> str:
    return _mode["value"]


def asyncio_loop_of(reactor: Any) -> Any:
    """The asyncio loop under a Twisted asyncio reactor, else None (another reactor, a test clock)."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    return loop if loop is not None and hasattr(loop, "add_reader") else None


_native_state: dict[str, Any] = {"cls": None, "checked": False}


def _native_class() -> Any:
    """:class:`~webgate.adapters.native_reader.NativeMediaReader`, or None (logged once) when the
    C module was not built."""
    st = _native_state
    if not st["checked"]:
        st["checked"] = True
        try:
            from webgate.adapters.native_reader import NativeMediaReader, available
        except ImportError as e:
            why = repr(e)
        else:
            if available():
                st["cls"] = NativeMediaReader
                return NativeMediaReader
            why = "webgate.native._relay not built"
        log.warn("[rtp] media_io = \"native\": the native relay is unavailable ({why}); the Python loop reader relays instead", why=why)
    return st["cls"]


def reader_for(loop: Any, mode: str | None = None) -> Any:
    """The loop's one reader (a :class:`MediaReader`, or with ``"native"`` the native one), or
    None when ``mode`` (default: the process's) is ``"twisted"``, the loop is None, or it has no
    ``add_reader`` (not a selector loop).  A loop has one reader at a time: a gateway of another
    mode made later in the same process (tests) gets its kind once the old one is idle."""
    m = mode or _mode["value"]
    if m == "twisted" or loop is None or not hasattr(loop, "add_reader"):
        return None
    cls = (_native_class() if m == "native" else None) or MediaReader
    r = _READERS.get(loop)
    if r is not None and not r.closed:
        if type(r) is cls or len(r):
            r.set_interval(_interval["value"])  # a new configuration (a test's gateway)
            return r  # the same kind, or busy with the other kind's sockets: shared
        r.close()
    r = _READERS[loop] = cls(loop, _interval["value"])
    return r


class MediaReader(LoopEntry):
    """One ``epoll`` in the event loop for many UDP sockets (see the module doc)."""

    def __init__(self, loop: Any, interval: float = 0.0) -> None:
        self.loop = loop
        #: 0: one wake-up when any socket is readable; > 0 s: every socket read this often
        #: (``[rtp] read_interval_ms``: fewer, fuller wake-ups for up to this much added delay)
        self.interval = interval
        self.closed = False
        self._ep = select.epoll()
        self._poll_fd = self._ep.fileno()
        self._handlers: dict[int, tuple[socket.socket, Handler]] = {}
        self._fds: dict[socket.socket, int] = {}
        #: wake-ups and datagrams read (bench and tests: datagrams per wake-up)
        self.wakeups = 0
        self.datagrams = 0
        self.errors = 0

    def _watch(self, fd: int, sock: socket.socket) -> None:
        try:
            self._ep.register(fd, select.EPOLLIN)
        except FileExistsError:  # a closed socket's number, reused: epoll forgot the old one
            self._ep.modify(fd, select.EPOLLIN)

    def _unwatch(self, fd: int, sock: socket.socket) -> None:
        if sock.fileno() == fd:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass

    def _ready(self) -> None:
        self.wakeups += 1
        handlers = self._handlers
        for fd, _ in self._ep.poll(0):
            entry = handlers.get(fd)
            if entry is None:
                continue
            sock, handler = entry
            recvfrom = sock.recvfrom
            for _ in range(MAX_PER_SOCKET):
                try:
                    data, addr = recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:  # an ICMP error from an earlier send: read on
                    continue
                except OSError as e:
                    self.errors += 1
                    if self.errors in (1, 100, 10000):
                        log.warn("media socket read failed: {error}", error=repr(e))  # noqa: G010 - twisted.logger
                    if sock.fileno() < 0:
                        self.remove(sock)
                    break
                self.datagrams += 1
                try:
                    handler(data, addr)
                except Exception:  # noqa: BLE001 - one bad datagram must not end the loop's reading
                    self.errors += 1
                    log.failure("media datagram handling failed")

    def close(self) -> None:
        if self._in_loop:
            self._leave_loop()
        self.closed = True
        self._handlers.clear()
        self._fds.clear()
        self._ep.close()


def take_asyncio_socket(reader: MediaReader, transport: Any, handler: Handler) -> Callable[[], None] | None:
    """Read an asyncio datagram transport's socket with ``reader`` instead of its own reader
    (``handler`` per datagram). Returns the function that gives it back, or None when the
    transport is not a selector datagram transport of ``reader``'s loop (then nothing changed).
    asyncio internals used: ``_sock``, ``_sock_fd``, ``_loop``, ``_read_ready`` and the loop's
    ``_remove_reader``/``_add_reader`` (a transport's fd cannot go through the public methods)."""
    try:
        sock = transport._sock
        fd = transport._sock_fd
        loop = transport._loop
        read_ready = transport._read_ready
        remove = loop._remove_reader
        add = loop._add_reader
    except AttributeError:
        return None
    if loop is not reader.loop or transport.is_closing() or sock.fileno() != fd:
        return None
    remove(fd)
    reader.add(sock, handler)

    def give_back() -> None:
        reader.remove(sock)
        if not transport.is_closing() and sock.fileno() == fd:
            add(fd, read_ready)

    return give_back


def fast_sendto(transport: Any, sendto: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
    """``sendto`` for an asyncio datagram transport: a plain ``socket.sendto`` when the process
    reads media with the loop reader (``[rtp] media_io = "loop"``), falling back to the transport's
    own ``sendto`` (which buffers a full socket, and reports errors to its protocol) when the
    socket refuses; the transport's own ``sendto`` otherwise.  ``"native"`` is a loop reader too."""
    sock = getattr(transport, "_sock", None)
    if _mode["value"] == "twisted" or not isinstance(sock, socket.socket):
        return sendto
    raw = sock.sendto

    def send(data: bytes, addr: Any) -> None:
        try:
            raw(data, addr)
        except OSError:
            sendto(data, addr)

    return send

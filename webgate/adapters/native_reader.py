"""The native media reader: :class:`~webgate.adapters.media_loop.MediaReader`'s interface on the C
relay engine of :mod:`webgate.native` (issue 18, ``[rtp] media_io = "native"``).

One ``epoll`` descriptor (the engine's) is registered with the asyncio loop; each wake-up makes
**one** call into C (``wg_drain``), which reads every ready socket with ``recvmmsg`` (at most
``MAX_PER_SOCKET`` datagrams per socket per wake-up), relays the datagrams a *rule* matches --
source check, SRTP unprotect, a plain RTP header with the output's payload type, SSRC, sequence
and timestamp, SRTP protect, ``sendmmsg`` -- and copies every other datagram out; those go to the
socket's handler as with :class:`MediaReader` (``handler(data, addr)``, ``addr`` as
``socket.recvfrom`` gives it). Everything runs on the loop's thread: the SRTP sessions are
aiortc's own pylibsrtp sessions, used through libsrtp's function pointers (see docs/decisions.md).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.logger import Logger

from webgate.adapters.loop_entry import Handler, LoopEntry

try:
    from webgate.native._relay import ffi, lib
except ImportError:  # a checkout whose module was not built (pip install builds it)
    ffi = lib = None

__all__ = ["NativeMediaReader", "available", "set_srtp", "sockaddr", "srtp_handles"]

log = Logger()


#: records and bytes handed back to Python per wake-up (the rest waits for the next wake-up)
RECORDS = 256
DATA_BYTES = 512 * 1024
#: the stats fields of a rule (``rule_stats``), all ints but ``jitter``, ``first_rx``, ``last_rx``
STATS_KEYS = (
    "packets", "octets", "srtp_errors", "send_errors", "dropped", "last_in_ssrc", "last_in_seq",
    "last_in_ts", "last_out_seq", "last_out_ts", "last_step", "base_seq", "max_seq", "cycles",
    "received", "received_octets", "jitter", "first_rx", "last_rx", "duplicates_or_late", "switches",
)
_FAM = struct.Struct("=H")


def available() -> bool:
    """Whether the C module was built and imports."""
    return lib is not None


def srtp_handles(session: Any) -> tuple[int, int, int]:
    """(context, ``srtp_protect``, ``srtp_unprotect``) of a ``pylibsrtp.Session``, as ints."""
    from pylibsrtp._binding import ffi as sffi  # type: ignore[import-not-found]
    from pylibsrtp._binding import lib as slib

    return (
        int(sffi.cast("uintptr_t", session._srtp[0])),
        int(sffi.cast("uintptr_t", sffi.addressof(slib, "srtp_protect"))),
        int(sffi.cast("uintptr_t", sffi.addressof(slib, "srtp_unprotect"))),
    )


def set_srtp(spec: Any, rx: Any, tx: Any) -> None:
    """Put the SRTP sessions (``pylibsrtp.Session`` or None) into a ``wg_rule_spec``: ``rx``
    unprotects what arrives, ``tx`` protects what is sent."""
    if rx is not None:
        ctx, _, unprotect = srtp_handles(rx)
        spec.rx_ctx, spec.rx_fn = ffi.cast("void *", ctx), ffi.cast("wg_srtp_fn", unprotect)
    if tx is not None:
        ctx, protect, _ = srtp_handles(tx)
        spec.tx_ctx, spec.tx_fn = ffi.cast("void *", ctx), ffi.cast("wg_srtp_fn", protect)


def sockaddr(addr: tuple[Any, ...], family: int = socket.AF_INET) -> bytes:
    """A ``struct sockaddr_in``/``_in6`` for a numeric ``(host, port[, flowinfo, scope_id])``; an
    IPv4 host on an IPv6 socket (``family``) is mapped (``::ffff:a.b.c.d``), as the kernel reports it."""
    host, port = str(addr[0]), int(addr[1])
    if ":" not in host and family == socket.AF_INET6:
        host = "::ffff:" + host
    if ":" in host:
        flow = int(addr[2]) if len(addr) > 2 else 0
        scope = int(addr[3]) if len(addr) > 3 else 0
        raw = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        return _FAM.pack(socket.AF_INET6) + struct.pack("!HI", port, flow) + raw + struct.pack("=I", scope)
    raw = socket.inet_pton(socket.AF_INET, host)
    return _FAM.pack(socket.AF_INET) + struct.pack("!H", port) + raw + bytes(8)


def address(raw: bytes) -> Any:
    """What ``socket.recvfrom`` returns as the address for these sockaddr bytes."""
    if len(raw) >= 16 and _FAM.unpack_from(raw)[0] == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if len(raw) >= 28 and _FAM.unpack_from(raw)[0] == socket.AF_INET6:
        flow, = struct.unpack_from("!I", raw, 4)
        scope, = struct.unpack_from("=I", raw, 24)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big"), flow, scope
    return None


def _stats(st: Any) -> dict[str, Any]:
    d: dict[str, Any] = {k: getattr(st, k) for k in STATS_KEYS}
    d["marker_seen"] = bool(st.marker_seen)
    d["bad_seq"] = st.bad_seq if st.has_bad_seq else None
    return d


class NativeMediaReader(LoopEntry):
    """:class:`~webgate.adapters.media_loop.MediaReader` on the C engine, plus relay rules."""

    def __init__(self, loop: Any, interval: float = 0.0) -> None:
        if lib is None:
            raise RuntimeError("webgate.native._relay is not built (pip install builds it)")
        self.loop = loop
        #: as MediaReader: 0 = read when readable; > 0 s = read every socket this often
        self.interval = interval
        self.closed = False
        engine = lib.wg_engine_new()
        if engine == ffi.NULL:
            raise OSError("wg_engine_new failed")
        self._e = engine
        self._poll_fd = int(lib.wg_engine_fd(engine))
        self._out = ffi.new("wg_dgram[]", RECORDS)
        self._data = ffi.new("unsigned char[]", DATA_BYTES)
        self._view = ffi.buffer(self._data)
        self._counts = ffi.new("wg_drain_counts *")
        self._stat = ffi.new("wg_rule_stats *")
        self._handlers: dict[int, tuple[socket.socket, Handler]] = {}
        self._fds: dict[socket.socket, int] = {}
        #: in fd -> (in socket, out socket, rx session, tx session): keeps the sessions alive
        self._rules: dict[int, tuple[socket.socket, socket.socket, Any, Any]] = {}
        self._addrs: dict[bytes, Any] = {}
        self.wakeups = 0
        self.datagrams = 0
        self.relayed = 0
        self.errors = 0
        self._handler_errors = 0

    def _watch(self, fd: int, sock: socket.socket) -> None:
        rule = self._rules.get(fd)
        if rule is not None and rule[0] is not sock:  # the closed socket's rule is not this one's
            self._drop_rule(fd)
        if lib.wg_add_socket(self._e, fd) != 0:
            raise OSError(ffi.errno, "epoll_ctl failed")

    def _unwatch(self, fd: int, sock: socket.socket) -> None:
        lib.wg_remove_socket(self._e, fd)
        self._rules.pop(fd, None)

    def _removing(self, sock: socket.socket) -> None:
        """Its rule goes too (``_unwatch``), and so do the rules that send through it (its number
        may be another socket's next)."""
        for in_fd in [k for k, rule in self._rules.items() if rule[1] is sock and rule[0] is not sock]:
            self._drop_rule(in_fd)

    def set_rule(
        self, in_sock: socket.socket, *, src: tuple[Any, ...], in_pt: int, out_sock: socket.socket,
        dst: tuple[Any, ...], out_pt: int, out_ssrc: int, next_seq: int, next_ts: int, clock_rate: int,
        rx: Any = None, tx: Any = None,
    ) -> None:
        """Relay RTP of payload type ``in_pt`` from ``src`` arriving on ``in_sock`` to ``dst`` through
        ``out_sock`` (replacing ``in_sock``'s rule; stats start again). ``rx``/``tx``: pylibsrtp
        sessions (SRTP in / out) or None (plain RTP). The first relayed packet gets ``next_seq`` and
        ``next_ts``. Raises ValueError on a bad value (a host name: numeric addresses only)."""
        fd, out_fd = in_sock.fileno(), out_sock.fileno()
        if fd < 0 or out_fd < 0 or self.closed:
            raise ValueError("socket or reader is closed")
        if not (0 <= in_pt <= 127 and 0 <= out_pt <= 127 and clock_rate > 0):
            raise ValueError("bad payload type or clock rate")
        try:
            src_raw, dst_raw = sockaddr(src, in_sock.family), sockaddr(dst, out_sock.family)
        except (OSError, TypeError, IndexError, struct.error) as e:
            raise ValueError(f"bad address: {e}") from None
        spec = ffi.new("wg_rule_spec *")
        spec.in_fd, spec.in_pt, spec.out_fd, spec.out_pt = fd, in_pt, out_fd, out_pt
        spec.src_len, spec.dst_len = len(src_raw), len(dst_raw)
        ffi.memmove(spec.src, src_raw, len(src_raw))
        ffi.memmove(spec.dst, dst_raw, len(dst_raw))
        spec.out_ssrc, spec.next_seq = out_ssrc & 0xFFFFFFFF, next_seq & 0xFFFF
        spec.next_ts, spec.clock_rate = next_ts & 0xFFFFFFFF, clock_rate
        set_srtp(spec, rx, tx)
        if lib.wg_rule_set(self._e, spec) != 0:
            raise ValueError("rule refused")
        self._rules[fd] = (in_sock, out_sock, rx, tx)

    def rule_stats(self, in_sock: socket.socket) -> dict[str, Any] | None:
        """The stats of ``in_sock``'s rule (:data:`STATS_KEYS`, ``marker_seen``, ``bad_seq``), or None."""
        fd = in_sock.fileno()
        rule = self._rules.get(fd)  # (empty once closed)
        if rule is None or rule[0] is not in_sock or lib.wg_rule_get(self._e, fd, self._stat) != 0:
            return None
        return _stats(self._stat)

    def clear_rule(self, in_sock: socket.socket) -> dict[str, Any] | None:
        """Stop relaying ``in_sock`` (its datagrams go to its handler again); its final stats, or None."""
        fd = in_sock.fileno()
        rule = self._rules.get(fd)
        if rule is None or rule[0] is not in_sock:
            return None
        return self._drop_rule(fd)

    def _drop_rule(self, fd: int) -> dict[str, Any] | None:
        self._rules.pop(fd, None)
        if lib.wg_rule_clear(self._e, fd, self._stat) != 0:
            return None
        return _stats(self._stat)

    def _ready(self) -> None:
        if self.closed:
            return
        self.wakeups += 1
        counts = self._counts
        n = lib.wg_drain(self._e, self._out, RECORDS, self._data, DATA_BYTES, counts)
        self.datagrams = counts.datagrams
        self.relayed = counts.relayed
        self.errors = counts.errors + self._handler_errors
        if n < 0:
            self.errors += 1
            log.warn("media epoll failed: errno {errno}", errno=ffi.errno)  # noqa: G010 - twisted.logger
            return
        out, view, handlers, addrs = self._out, self._view, self._handlers, self._addrs
        for i in range(n):
            d = out[i]
            entry = handlers.get(d.fd)
            if entry is None:
                continue
            raw = ffi.unpack(ffi.cast("char *", d.addr), d.addr_len)
            addr = addrs.get(raw)
            if addr is None:
                if len(addrs) > 4096:
                    addrs.clear()
                addr = addrs[raw] = address(raw)
            try:
                entry[1](view[d.offset : d.offset + d.len], addr)
            except Exception:  # noqa: BLE001 - one bad datagram must not end the loop's reading
                self._handler_errors += 1
                self.errors += 1
                log.failure("media datagram handling failed")
            if self.closed:
                return

    def close(self) -> None:
        if self.closed:
            return
        if self._in_loop:
            self._leave_loop()
        self.closed = True
        self._handlers.clear()
        self._fds.clear()
        self._rules.clear()
        lib.wg_engine_free(self._e)
        self._e = ffi.NULL

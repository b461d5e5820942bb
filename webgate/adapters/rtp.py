"""RTP/RTCP sockets: a port-pair pool and one shared 20 ms media clock."""

from __future__ import annotations

import socket
from typing import Any, Callable

from twisted.internet import protocol, task
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from webgate.adapters.media_loop import MediaReader, asyncio_loop_of, reader_for
from webgate.calls.errors import NoPortsAvailable
from webgate.media.stream import RtpAudioStream

log = Logger()
#: the RTP streams' own log lines (source locking, strict-source drops): same namespace as before
stream_log = Logger(namespace="webgate.media.stream")


class _Socket(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, endpoint: "RtpEndpoint", rtcp: bool) -> None:
        self.endpoint = endpoint
        self.rtcp = rtcp

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        ep = self.endpoint
        stream = ep.stream
        if stream is None:
            return
        try:
            now = ep.pool.reactor.seconds()
            if self.rtcp:
                stream.rtcp_received(data, (addr[0], addr[1]), now)
            else:
                stream.datagram_received(data, (addr[0], addr[1]), now)
        except Exception:
            log.failure("RTP packet handling failed on port {port}", port=ep.rtp_port)


def ip_literal(host: Any, family: int) -> bool:
    """Whether ``host`` is an IP address of ``family`` (never a name to resolve)."""
    try:
        socket.inet_pton(family, host)
    except (OSError, TypeError, ValueError):
        return False
    return True


class RtpEndpoint:
    """An even/odd UDP port pair bound for one call leg."""

    def __init__(self, pool: "RtpPortPool", rtp_port: int) -> None:
        self.pool = pool
        self.rtp_port = rtp_port
        self.rtcp_port = rtp_port + 1
        self.stream: RtpAudioStream | None = None
        self._rtp = _Socket(self, False)
        self._rtcp = _Socket(self, True)
        self._listeners: list[Any] = []
        #: ``[rtp] media_io = "loop"``: the (RTP, RTCP) sockets, read by the pool's MediaReader
        self._socks: tuple[socket.socket, socket.socket] | None = None
        self._dest_ok: tuple[Any, ...] = ((), ())  # the last (RTP, RTCP) destinations found to be IP literals
        self.released = False

    def bind(self) -> None:
        reader = self.pool.reader
        if reader is not None:
            self._bind_loop(reader)
            return
        r = self.pool.reactor
        a = r.listenUDP(self.rtp_port, self._rtp, interface=self.pool.bind_host)
        try:
            b = r.listenUDP(self.rtcp_port, self._rtcp, interface=self.pool.bind_host)
        except CannotListenError:
            a.stopListening()
            raise
        self._listeners = [a, b]

    def _bind_loop(self, reader: MediaReader) -> None:
        """Bind both ports as plain non-blocking sockets read by the pool's one MediaReader."""
        host = self.pool.bind_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socks: list[socket.socket] = []
        port = self.rtp_port
        try:
            for port in (self.rtp_port, self.rtcp_port):
                s = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(s)
                s.setblocking(False)
                s.bind((host, port))
        except OSError as e:
            for s in socks:
                s.close()
            raise CannotListenError(host, port, e) from None
        self._socks = (socks[0], socks[1])
        reader.add(socks[0], self._rtp_datagram)
        reader.add(socks[1], self._rtcp_datagram)

    def _rtp_datagram(self, data: bytes, addr: Any) -> None:
        stream = self.stream
        if stream is not None:
            try:
                stream.datagram_received(data, (addr[0], addr[1]), self.pool.reactor.seconds())
            except Exception:  # noqa: BLE001 - as _Socket: logged, the next packet is read
                log.failure("RTP packet handling failed on port {port}", port=self.rtp_port)

    def _rtcp_datagram(self, data: bytes, addr: Any) -> None:
        stream = self.stream
        if stream is not None:
            try:
                stream.rtcp_received(data, (addr[0], addr[1]), self.pool.reactor.seconds())
            except Exception:  # noqa: BLE001 - as _Socket: logged, the next packet is read
                log.failure("RTP packet handling failed on port {port}", port=self.rtp_port)

    @property
    def rtp_socket(self) -> socket.socket | None:
        """The RTP socket when the pool's loop reader reads it (``media_io`` "native"/"loop")."""
        return self._socks[0] if self._socks is not None else None

    @property
    def reader(self) -> Any:
        """The loop reader reading this endpoint's sockets (None: Twisted's ports)."""
        return self.pool.reader if self._socks is not None else None

    def _send_loop(self, i: int, data: bytes, dest: tuple[str, int]) -> None:
        assert self._socks is not None
        ok = self._dest_ok
        if dest != ok[i]:
            # an IP literal only (as Twisted's Port.write): a host name would be resolved,
            # blocking, on every packet
            if not ip_literal(dest[0] if dest else None, self._socks[i].family):
                log.debug("RTP send to {dest} refused: not an IP address of this socket's family", dest=dest)
                return
            self._dest_ok = (dest, ok[1]) if i == 0 else (ok[0], dest)
        try:
            self._socks[i].sendto(data, dest)
        except OSError as e:
            log.debug("RTP send to {dest} failed: {e}", dest=dest, e=e)

    def send_rtp(self, data: bytes, dest: tuple[str, int]) -> None:
        if self._socks is not None:
            self._send_loop(0, data, dest)
            return
        if self._rtp.transport is not None:
            try:
                self._rtp.transport.write(data, dest)
            except OSError as e:
                log.debug("RTP send to {dest} failed: {e}", dest=dest, e=e)

    def send_rtcp(self, data: bytes, dest: tuple[str, int]) -> None:
        if self._socks is not None:
            self._send_loop(1, data, dest)
            return
        if self._rtcp.transport is not None:
            try:
                self._rtcp.transport.write(data, dest)
            except OSError as e:
                log.debug("RTCP send to {dest} failed: {e}", dest=dest, e=e)

    def make_stream(self, **kwargs: Any) -> RtpAudioStream:
        kwargs.setdefault("strict_source", self.pool.strict_source)
        kwargs.setdefault("relearn_after_s", self.pool.relearn_after_s)
        kwargs.setdefault("log", stream_log)
        self.stream = RtpAudioStream(self.send_rtp, self.send_rtcp, **kwargs)
        self.stream.owner = self  # the native relay finds this endpoint's sockets through it
        self.pool.clock.add(self.stream)
        return self.stream

    def release(self) -> None:
        self.pool.release(self)


class MediaClock:
    """One LoopingCall ticking every live stream every 20 ms (not one timer per call)."""

    def __init__(self, reactor: Any, interval: float = 0.02) -> None:
        self.reactor = reactor
        self.interval = interval
        self.streams: list[RtpAudioStream] = []
        self.tickers: list[Callable[[float], None]] = []
        self._loop: task.LoopingCall | None = None

    def add(self, stream: RtpAudioStream) -> None:
        self.streams.append(stream)
        self._ensure()

    def remove(self, stream: RtpAudioStream) -> None:
        if stream in self.streams:
            self.streams.remove(stream)
        self._maybe_stop()

    def add_ticker(self, fn: Callable[[float], None]) -> None:
        self.tickers.append(fn)
        self._ensure()

    def remove_ticker(self, fn: Callable[[float], None]) -> None:
        if fn in self.tickers:
            self.tickers.remove(fn)
        self._maybe_stop()

    def _ensure(self) -> None:
        if self._loop is None:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=False)

    def _maybe_stop(self) -> None:
        if not self.streams and not self.tickers and self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def _tick(self) -> None:
        now = self.reactor.seconds()
        for fn in list(self.tickers):
            try:
                fn(now)
            except Exception:
                log.failure("media ticker failed")
        for s in list(self.streams):
            try:
                s.tick(now)
            except Exception:
                log.failure("media stream tick failed ({label})", label=s.label)

    def stop(self) -> None:
        self.streams.clear()
        self.tickers.clear()
        self._maybe_stop()


#: (kind, reason) of packets a stream's strict source dropped (webgate/proto/rtp_source.py)
SOURCE_DROPS = (("rtp", "foreign"), ("rtp", "learning"), ("rtcp", "foreign"))


def source_drops(stream: RtpAudioStream) -> tuple[int, int, int]:
    """A stream's packets dropped by its strict source, in :data:`SOURCE_DROPS` order."""
    g = stream.source_guard
    return g.dropped_foreign, g.dropped_learning, g.rtcp_dropped


class RtpPortPool:
    def __init__(self, reactor: Any, bind_host: str, port_min: int, port_max: int, *,
                 strict_source: bool = True, relearn_after_s: float = 0.0, media_io: str | None = None) -> None:
        if port_min % 2:
            port_min += 1
        self.reactor = reactor
        self.bind_host = bind_host
        self.port_min = port_min
        self.port_max = port_max
        self.in_use: dict[int, RtpEndpoint] = {}
        self._cursor = port_min
        self.clock = MediaClock(reactor)
        #: [rtp] strict_source / relearn_after_s for every stream made on this pool's ports
        self.strict_source = strict_source
        self.relearn_after_s = relearn_after_s
        #: packets dropped by the strict source of streams already released (SOURCE_DROPS order)
        self._drops_done = [0, 0, 0]
        #: ``[rtp] media_io``: "loop" reads every port through one MediaReader (when the reactor
        #: runs on an asyncio loop); "twisted": a Twisted UDP port each. None: the process default
        self.reader = reader_for(asyncio_loop_of(reactor), media_io)

    @property
    def capacity(self) -> int:
        return (self.port_max - self.port_min + 1) // 2

    def allocate(self) -> RtpEndpoint:
        n = self.capacity
        for _ in range(n):
            port = self._cursor
            self._cursor += 2
            if self._cursor + 1 > self.port_max:
                self._cursor = self.port_min
            if port in self.in_use or port + 1 > self.port_max:
                continue
            ep = RtpEndpoint(self, port)
            try:
                ep.bind()
            except CannotListenError:
                continue
            self.in_use[port] = ep
            return ep
        raise NoPortsAvailable(f"no free RTP port pair in {self.port_min}-{self.port_max}")

    def dropped_by_source(self) -> dict[tuple[str, str], int]:
        """Packets the strict source dropped on every stream of this pool, live and released
        (calls and built-in destinations alike), by (kind, reason)."""
        totals = list(self._drops_done)
        for ep in self.in_use.values():
            if ep.stream is not None:
                for i, n in enumerate(source_drops(ep.stream)):
                    totals[i] += n
        return dict(zip(SOURCE_DROPS, totals))

    def release(self, ep: RtpEndpoint) -> None:
        if ep.released:
            return
        ep.released = True
        if ep.stream is not None:
            for i, n in enumerate(source_drops(ep.stream)):
                self._drops_done[i] += n
            ep.stream.close()
            self.clock.remove(ep.stream)
            ep.stream = None
        for lp in ep._listeners:
            try:
                lp.stopListening()
            except Exception:
                log.failure("stopListening on RTP port failed")
        ep._listeners = []
        if ep._socks is not None:
            for s in ep._socks:
                if self.reader is not None:
                    self.reader.remove(s)
                s.close()
            ep._socks = None
        self.in_use.pop(ep.rtp_port, None)

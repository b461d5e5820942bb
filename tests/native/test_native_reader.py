"""NativeMediaReader (webgate/adapters/native_reader.py) on the real event loop: MediaReader's tests run
on both readers (the same interface), then the relay rules with real sockets on loopback."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
import pytest_twisted

from tests.adapters.test_media_loop import _loop, _recv, _udp
from tests.calls.gw import sleep, wait_for
from tests.native.relay_helpers import rtp, srtp_session
from webgate.adapters.media_loop import MAX_PER_SOCKET, MediaReader
from webgate.adapters.native_reader import NativeMediaReader, address, sockaddr
from webgate.proto.rtp import RtpPacket

READERS = [MediaReader, NativeMediaReader]


@pytest.mark.parametrize("cls", READERS)
@pytest_twisted.ensureDeferred
async def test_one_wake_up_drains_every_ready_socket(cls: Any) -> None:
    r = cls(_loop())
    a, b, tx = _udp(), _udp(), _udp()
    got: list[tuple[str, bytes, Any]] = []
    try:
        r.add(a, lambda data, addr: got.append(("a", data, addr)))
        r.add(b, lambda data, addr: got.append(("b", data, addr)))
        assert len(r) == 2
        for i in range(5):  # all queued before the loop runs: one wake-up reads them all
            tx.sendto(b"A%d" % i, a.getsockname())
            tx.sendto(b"B%d" % i, b.getsockname())
        assert await wait_for(lambda: len(got) == 10, 2)
        assert r.wakeups == 1 and r.datagrams == 10
        assert [d for k, d, _ in got if k == "a"] == [b"A%d" % i for i in range(5)]
        assert [d for k, d, _ in got if k == "b"] == [b"B%d" % i for i in range(5)]
        assert all(addr == tx.getsockname() for _, _, addr in got) and all(type(d) is bytes for _, d, _ in got)
        r.add(a, lambda data, addr: 1 / 0)  # a handler that raises: counted, the next one still read
        tx.sendto(b"x", a.getsockname())
        tx.sendto(b"y", a.getsockname())
        assert await wait_for(lambda: r.datagrams == 12, 2)
        assert r.errors == 2
        r.remove(a)
        r.remove(a)
        tx.sendto(b"late", a.getsockname())
        await sleep(0.1)
        assert r.datagrams == 12 and len(r) == 1
        r.remove(b)
        assert len(r) == 0 and not r._in_loop
    finally:
        r.close()
        for s in (a, b, tx):
            s.close()


@pytest.mark.parametrize("cls", READERS)
@pytest_twisted.ensureDeferred
async def test_a_flooded_socket_does_not_starve_the_others(cls: Any) -> None:
    r = cls(_loop())
    flood, quiet, tx = _udp(), _udp(), _udp()
    got: list[str] = []
    try:
        r.add(flood, lambda data, addr: got.append("f"))
        r.add(quiet, lambda data, addr: got.append("q"))
        for _ in range(3 * MAX_PER_SOCKET):
            tx.sendto(b"f", flood.getsockname())
        tx.sendto(b"q", quiet.getsockname())
        assert await wait_for(lambda: len(got) == 3 * MAX_PER_SOCKET + 1, 2)
        assert got.index("q") <= MAX_PER_SOCKET  # the quiet datagram within the first wake-up, not after the flood
        assert r.wakeups >= 3
    finally:
        r.close()
        for s in (flood, quiet, tx):
            s.close()


@pytest.mark.parametrize("cls", READERS)
@pytest_twisted.ensureDeferred
async def test_a_closed_socket_s_number_reused_is_not_unregistered_by_the_old_one(cls: Any) -> None:
    r = cls(_loop())
    tx, out = _udp(), _udp()
    got: list[bytes] = []
    try:
        old = _udp()
        r.add(old, lambda data, addr: got.append(b"old:" + data))
        if cls is NativeMediaReader:  # the old socket's rule must not relay the new socket's packets
            r.set_rule(old, src=tx.getsockname(), in_pt=0, out_sock=out, dst=out.getsockname(), out_pt=0,
                       out_ssrc=1, next_seq=1, next_ts=1, clock_rate=8000)
        fd = old.fileno()
        old.close()
        new = _udp()
        assert new.fileno() == fd
        r.add(new, lambda data, addr: got.append(b"new:" + data))
        r.remove(old)
        tx.sendto(b"1", new.getsockname())
        tx.sendto(rtp(1, 1, payload=b""), new.getsockname())
        assert await wait_for(lambda: got == [b"new:1", b"new:" + rtp(1, 1, payload=b"")], 2)
        if cls is NativeMediaReader:
            assert r.rule_stats(new) is None and r.rule_stats(old) is None and _recv(out) is None
        r.remove(new)
        new.close()
    finally:
        r.close()
        tx.close()
        out.close()


@pytest.mark.parametrize("cls", READERS)
@pytest_twisted.ensureDeferred
async def test_a_read_interval_holds_reads_off_after_each_wake_up(cls: Any) -> None:
    """[rtp] read_interval_ms: a packet after a quiet spell is read at once; what arrives in the
    interval after a read waits for one wake-up at its end; an idle reader has no timer."""
    r = cls(_loop(), interval=0.2)
    a, b, tx = _udp(), _udp(), _udp()
    got: list[bytes] = []
    try:
        r.add(a, lambda data, addr: got.append(data))
        r.add(b, lambda data, addr: got.append(data))
        assert r._timer is None and r._in_loop  # idle: the epoll is watched, no timer
        tx.sendto(b"0", b.getsockname())
        assert await wait_for(lambda: got == [b"0"], 1)  # read at once
        assert r.wakeups == 1 and r._timer is not None  # and held off
        for i in (1, 2):  # two arrivals 10 ms apart inside the hold-off: one read for both
            tx.sendto(b"%d" % i, (a if i % 2 else b).getsockname())
            await sleep(0.01)
        assert got == [b"0"] and r.wakeups == 1
        assert await wait_for(lambda: len(got) == 3, 1)
        assert r.wakeups == 2 and sorted(got) == [b"0", b"1", b"2"]
        await sleep(0.5)
        assert r.wakeups == 2 and r._timer is None  # idle again: no wake-ups, no timer
        # a new configuration while sockets are read (a second gateway in the process): at once
        r.set_interval(0.0)
        for i in (3, 4):  # no hold-off any more: each read as it comes
            tx.sendto(b"%d" % i, a.getsockname())
            assert await wait_for(lambda i=i: len(got) == i + 1, 1)
        assert r.wakeups == 4 and r._timer is None
        r.remove(a)
        r.remove(b)
        assert r._timer is None and not r._in_loop
    finally:
        r.close()
        for s in (a, b, tx):
            s.close()


def _udp6() -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.bind(("::1", 0))
    return s


@pytest_twisted.ensureDeferred
async def test_ipv6_addresses_are_what_recvfrom_gives() -> None:
    r = NativeMediaReader(_loop())
    a, tx = _udp6(), _udp6()
    got: list[tuple[bytes, Any]] = []
    try:
        r.add(a, lambda data, addr: got.append((data, addr)))
        tx.sendto(b"six", a.getsockname())
        assert await wait_for(lambda: got, 2)
        assert got == [(b"six", tx.getsockname())] and len(got[0][1]) == 4
    finally:
        r.close()
        a.close()
        tx.close()
    for addr, fam in ((("10.1.2.3", 5004), socket.AF_INET), (("::1", 9, 0, 0), socket.AF_INET6), (("fe80::1", 7, 3, 2), socket.AF_INET6)):
        assert address(sockaddr(addr, fam)) == addr
    assert address(sockaddr(("10.1.2.3", 5004), socket.AF_INET6)) == ("::ffff:10.1.2.3", 5004, 0, 0)
    assert address(b"\x00") is None


def _relay_setup(r: NativeMediaReader, **kw: Any) -> tuple[socket.socket, ...]:
    """far end (sender) -> a (read) ; b (send) -> dst"""
    far, a, b, dst = _udp(), _udp(), _udp(), _udp()
    r.add(a, kw.pop("handler"))
    args: dict[str, Any] = {"src": far.getsockname(), "in_pt": 0, "out_sock": b, "dst": dst.getsockname(), "out_pt": 8,
                            "out_ssrc": 0x1234, "next_seq": 500, "next_ts": 8000, "clock_rate": 8000}
    args.update(kw)
    r.set_rule(a, **args)
    return far, a, b, dst


def _drain(s: socket.socket) -> list[bytes]:
    out = []
    while (d := _recv_big(s)) is not None:
        out.append(d)
    return out


def _recv_big(s: socket.socket) -> bytes | None:
    try:
        return s.recv(9000)
    except BlockingIOError:
        return None


@pytest_twisted.ensureDeferred
async def test_rules_relay_rewritten_and_hand_the_rest_to_python() -> None:
    r = NativeMediaReader(_loop())
    got: list[tuple[bytes, Any]] = []
    far, a, b, dst = _relay_setup(r, handler=lambda data, addr: got.append((data, addr)))
    other = _udp()
    try:
        far.sendto(rtp(10, 1600, marker=True, payload=b"one", ext=b"\x10\x01\x00\x00"), a.getsockname())
        far.sendto(rtp(11, 1760, payload=b"two", pt=101), a.getsockname())  # another PT: Python's
        other.sendto(rtp(12, 1920, payload=b"three"), a.getsockname())  # another source: Python's
        far.sendto(b"\x81\xc9\x00\x01" + bytes(4), a.getsockname())  # RTCP: Python's
        assert await wait_for(lambda: len(got) == 3, 2)
        assert [addr for _, addr in got] == [far.getsockname(), other.getsockname(), far.getsockname()]
        out = _drain(dst)
        assert len(out) == 1
        p = RtpPacket.parse(out[0])
        assert (p.payload_type, p.sequence, p.timestamp, p.ssrc, p.marker, p.payload, p.extension_profile) == (
            8, 500, 8000, 0x1234, True, b"one", None)
        s = r.rule_stats(a)
        assert s is not None and s["packets"] == 1 and s["octets"] == 3 and s["last_in_seq"] == 10
        assert s["first_rx"] > 0 and r.relayed == 1 and r.datagrams == 4
        final = r.clear_rule(a)
        assert final == s and r.rule_stats(a) is None and r.clear_rule(a) is None
        far.sendto(rtp(13, 2080, payload=b"four"), a.getsockname())  # no rule: Python's now
        assert await wait_for(lambda: len(got) == 4, 2)
        with pytest.raises(ValueError):
            r.set_rule(a, src=("localhost", 5), in_pt=0, out_sock=b, dst=dst.getsockname(), out_pt=0, out_ssrc=1,
                       next_seq=1, next_ts=1, clock_rate=8000)
        with pytest.raises(ValueError):
            r.set_rule(a, src=far.getsockname(), in_pt=128, out_sock=b, dst=dst.getsockname(), out_pt=0,
                       out_ssrc=1, next_seq=1, next_ts=1, clock_rate=8000)
    finally:
        r.close()
        for s_ in (far, a, b, dst, other):
            s_.close()


@pytest_twisted.ensureDeferred
async def test_a_burst_of_200_srtp_packets_is_relayed_in_batches() -> None:
    r = NativeMediaReader(_loop())
    got: list[bytes] = []
    rx_peer, tx_peer = srtp_session(False, key=bytes(30)), srtp_session(True)
    far, a, b, dst = _relay_setup(r, handler=lambda data, addr: got.append(data), rx=srtp_session(False),
                                  tx=srtp_session(True, key=bytes(30)))
    for s_ in (a, dst):
        s_.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        for i in range(200):
            far.sendto(tx_peer.protect(rtp(1000 + i, 160 * i, payload=struct.pack("!H", i) * 80)), a.getsockname())
        assert await wait_for(lambda: r.relayed == 200, 3)
        await sleep(0.05)
        out = [RtpPacket.parse(rx_peer.unprotect(d)) for d in _drain(dst)]
        assert [p.sequence for p in out] == list(range(500, 700))
        assert [p.payload for p in out] == [struct.pack("!H", i) * 80 for i in range(200)]
        assert out[-1].timestamp == 8000 + 199 * 160 and got == []
        s = r.rule_stats(a)
        assert s is not None and (s["packets"], s["received"], s["srtp_errors"], s["send_errors"]) == (200, 200, 0, 0)
        assert r.wakeups < 200 and r.errors == 0
        # remove(): the socket and its rule go; the reader leaves the loop with its last socket;
        # removing (closing) the out socket ends the rules that send through it
        r.remove(b)
        assert r.rule_stats(a) is None and len(r) == 1
        r.set_rule(a, src=far.getsockname(), in_pt=0, out_sock=b, dst=dst.getsockname(), out_pt=8, out_ssrc=1,
                   next_seq=1, next_ts=1, clock_rate=8000)
        r.remove(a)
        assert r.rule_stats(a) is None and len(r) == 0 and not r._in_loop
    finally:
        r.close()
        assert r.closed and len(r) == 0
        r.close()  # twice: nothing
        assert r.rule_stats(a) is None and r.clear_rule(a) is None
        r.remove(a)
        with pytest.raises(ValueError):
            r.add(a, lambda d, addr: None)
        for s_ in (far, a, b, dst):
            s_.close()


@pytest_twisted.ensureDeferred
async def test_python_s_share_is_bounded_per_wake_up_and_nothing_is_lost(monkeypatch: Any) -> None:
    from webgate.adapters import native_reader

    monkeypatch.setattr(native_reader, "RECORDS", 8)
    r = NativeMediaReader(_loop())
    a, tx = _udp(), _udp()
    got: list[bytes] = []
    try:
        r.add(a, lambda data, addr: got.append(data))
        for i in range(50):
            tx.sendto(b"%d" % i, a.getsockname())
        assert await wait_for(lambda: len(got) == 50, 2)
        assert got == [b"%d" % i for i in range(50)] and r.wakeups >= 7  # 8 records per wake-up
        tx.sendto(b"z" * 9000, a.getsockname())  # longer than the receive size: truncated, as recvfrom(8192)
        assert await wait_for(lambda: len(got) == 51, 2)
        assert got[-1] == b"z" * 8192
    finally:
        r.close()
        a.close()
        tx.close()


@pytest_twisted.ensureDeferred
async def test_an_asyncio_transport_socket_is_taken_and_given_back() -> None:
    import asyncio

    from tests.adapters.test_media_loop import _as_deferred
    from webgate.adapters.media_loop import take_asyncio_socket

    loop = _loop()
    r = NativeMediaReader(loop)
    got: list[bytes] = []

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.append(b"asyncio:" + data)

    transport, _ = await _as_deferred(loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0)))
    tx = _udp()
    try:
        give_back = take_asyncio_socket(r, transport, lambda data, addr: got.append(b"reader:" + data))  # type: ignore[arg-type]
        assert give_back is not None
        tx.sendto(b"1", transport.get_extra_info("sockname"))
        assert await wait_for(lambda: got == [b"reader:1"], 2)
        give_back()
        tx.sendto(b"2", transport.get_extra_info("sockname"))
        assert await wait_for(lambda: got == [b"reader:1", b"asyncio:2"], 2)
    finally:
        transport.close()
        tx.close()
        r.close()

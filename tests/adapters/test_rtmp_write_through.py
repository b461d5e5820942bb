"""RtmpProtocol._write: bytes go straight to the socket only when Twisted has nothing queued before
them, so order is kept; whatever the kernel does not take, TLS connections and closing ones go
through Twisted's transport.write as before. Driven with a stand-in transport; the real sockets are
covered by every RTMP test (players over TCP and TLS)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from webgate.adapters.rtmp import RtmpProtocol


class _Sock:
    def __init__(self, take: int | None = None, error: Exception | None = None) -> None:
        self.take, self.error = take, error
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        n = len(data) if self.take is None else min(self.take, len(data))
        self.sent.append(data[:n])
        return n


def _conn(sock: _Sock, **over: Any) -> tuple[Any, list[bytes]]:
    written: list[bytes] = []
    t = SimpleNamespace(TLS=False, connected=1, disconnecting=0, _tempDataLen=0, dataBuffer=b"", offset=0,
                        socket=sock, write=written.append)
    for k, v in over.items():
        setattr(t, k, v)
    return SimpleNamespace(transport=t, _write_through=True), written


def test_all_taken_by_the_socket() -> None:
    sock = _Sock()
    conn, written = _conn(sock)
    RtmpProtocol._write(conn, b"abcdef")
    assert sock.sent == [b"abcdef"] and written == []


def test_the_rest_goes_to_twisted_in_order() -> None:
    sock = _Sock(take=4)
    conn, written = _conn(sock)
    RtmpProtocol._write(conn, b"abcdefgh")
    assert sock.sent == [b"abcd"] and written == [b"efgh"]


@pytest.mark.parametrize("error", [BlockingIOError(11, "EAGAIN"), ConnectionResetError(104, "reset")])
def test_socket_errors_leave_it_to_twisted(error: Exception) -> None:
    conn, written = _conn(_Sock(error=error))
    RtmpProtocol._write(conn, b"abc")
    assert written == [b"abc"]


@pytest.mark.parametrize(
    "over",
    [
        {"dataBuffer": b"queued", "offset": 0},  # Twisted still has bytes to send: ours go after them
        {"_tempDataLen": 3},
        {"TLS": True},  # the socket carries TLS records, not our bytes
        {"disconnecting": 1},
        {"connected": 0},
    ],
)
def test_twisted_writes_when_it_must(over: dict[str, Any]) -> None:
    sock = _Sock()
    conn, written = _conn(sock, **over)
    RtmpProtocol._write(conn, b"abc")
    assert sock.sent == [] and written == [b"abc"]


def test_off_for_transports_that_are_not_plain_tcp() -> None:
    sock = _Sock()
    conn, written = _conn(sock)
    conn._write_through = False
    RtmpProtocol._write(conn, b"abc")
    assert sock.sent == [] and written == [b"abc"]


def test_a_fully_sent_twisted_buffer_counts_as_empty() -> None:
    sock = _Sock()
    conn, written = _conn(sock, dataBuffer=b"old", offset=3)
    RtmpProtocol._write(conn, b"abc")
    assert sock.sent == [b"abc"] and written == []

"""A burst of garbage at the gateway's SIP ports: it keeps serving, answers 400 where an answer is possible,
never answers responses or ACKs, and a call placed afterwards works.

The gateway runs in-process (pytest-twisted, asyncio reactor); the garbage comes from plain non-blocking
sockets, with short ``sleep()``s so the reactor reads while we send. The garbage is seeded: a failure is
reproducible.
"""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest_twisted
from twisted.logger import globalLogPublisher

from tests.calls.gw import assert_tone, make_config, sleep, start_telephony, wait_for
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg

MAX_SIZE = 8000  # sip.max_message_size for these tests, so "huge" fits in a datagram


class Peer:
    """A UDP socket on 127.0.0.1 that sends requests to the gateway and collects what comes back."""

    def __init__(self, gw: tuple[str, int]) -> None:
        self.gw = gw
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.replies: list[bytes] = []
        self.n = 0

    def request(self, method: str = "OPTIONS", *, user: str = "echo", extra: str = "", body: bytes = b"",
                content_length: str | None = None, drop: tuple[str, ...] = (), tag: str | None = None) -> tuple[bytes, str]:
        """A SIP request (CRLF line ends) and its Call-ID."""
        self.n += 1
        call_id = f"garbage-{tag or self.n}-{random.getrandbits(32):08x}@127.0.0.1"
        host, port = self.gw
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-g{self.n}-{random.getrandbits(24)}"),
            ("From", f"<sip:fuzz@127.0.0.1:{self.port}>;tag=f{self.n}"),
            ("To", f"<sip:{user}@{host}:{port}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{self.n} {method}"),
            ("Max-Forwards", "70"),
        ]
        if method == "INVITE":
            headers.append(("Contact", f"<sip:fuzz@127.0.0.1:{self.port}>"))
        text = f"{method} sip:{user}@{host}:{port} SIP/2.0\r\n"
        text += "".join(f"{k}: {v}\r\n" for k, v in headers if k not in drop)
        text += extra
        text += f"Content-Length: {len(body) if content_length is None else content_length}\r\n\r\n"
        return text.encode("utf-8", "surrogateescape") + body, call_id

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.gw)
        except OSError:
            pass  # e.g. EMSGSIZE: the kernel refused it, nothing reached the gateway

    def read(self) -> list[bytes]:
        while True:
            try:
                self.replies.append(self.sock.recv(70000))
            except BlockingIOError:
                return self.replies

    def replies_for(self, call_id: str) -> list[bytes]:
        self.read()
        return [r for r in self.replies if f"Call-ID: {call_id}".encode() in r]

    def close(self) -> None:
        self.sock.close()


SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def garbage(peer: Peer, rng: random.Random, count: int = 500) -> list[bytes]:
    """``count`` bad datagrams of many kinds (see the list of generators)."""
    def valid() -> bytes:
        method = rng.choice(["OPTIONS", "INVITE", "BYE", "INFO", "CANCEL", "REGISTER"])
        body = SDP if method == "INVITE" else b""
        # "nobody" so a mutated INVITE that still parses is refused, not answered by echo
        return peer.request(method, user="nobody", body=body,
                            extra="Content-Type: application/sdp\r\n" if body else "")[0]

    def random_bytes() -> bytes:
        return rng.randbytes(rng.randint(1, 1400))

    def random_text() -> bytes:
        alphabet = "INVITE SIP/2.0\r\n:;<>@=,\"Via From To Call-ID CSeq 0123456789abc\t"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 600))).encode()

    def truncated() -> bytes:
        v = valid()
        return v[: rng.randint(1, len(v) - 1)]

    def bit_flips() -> bytes:
        v = bytearray(valid())
        for _ in range(rng.randint(1, 12)):
            i = rng.randrange(len(v))
            v[i] = rng.randrange(256)
        return bytes(v)

    def huge_header() -> bytes:
        return peer.request(user="nobody", extra=f"Subject: {'A' * rng.randint(MAX_SIZE, 60000)}\r\n")[0]

    def many_headers() -> bytes:
        return peer.request(user="nobody", extra="".join(f"X-H{i}: {i}\r\n" for i in range(rng.randint(50, 2000))))[0]

    def bad_content_length() -> bytes:
        cl = rng.choice(["abc", "-1", "99999999", "1e3", "", "0x10", str(rng.randint(100, 5000)), "5 5"])
        return peer.request(user="nobody", body=b"hello", content_length=cl)[0]

    def crlf_injection() -> bytes:
        inj = rng.choice(["a\rInjected: x", "a\nInjected: x", "a\x00b", "a\x7fb", "\x1b[31m", "a\r\n\r\nBYE x SIP/2.0"])
        return peer.request(user="nobody", extra=f"Subject: {inj}\r\n")[0]

    def missing_headers() -> bytes:
        drop = tuple(rng.sample(["Via", "From", "To", "Call-ID", "CSeq"], rng.randint(1, 3)))
        return peer.request(user="nobody", drop=drop)[0]

    def bad_start_line() -> bytes:
        v = valid().split(b"\r\n", 1)[1]
        first = rng.choice([b"INVITE SIP/2.0", b"INVITE sip:a@b SIP/3.0", b"sip:a@b INVITE SIP/2.0", b"GET / HTTP/1.1",
                            b"INVITE <sip:a@b> SIP/2.0", b"INVITE sip:@@@ SIP/2.0", b"SIP/2.0 abc OK", b"SIP/2.0 99999 X"])
        return first + b"\r\n" + v

    def bad_values() -> bytes:
        h, v = rng.choice([("CSeq", "abc OPTIONS"), ("CSeq", "1 INVITE"), ("CSeq", "99999999999 OPTIONS"),
                           ("Via", "garbage"), ("From", "<<<"), ("To", "sip:"), ("Max-Forwards", "-1"),
                           ("Contact", "<sip:x@[::1"), ("Expires", "never"), ("Content-Type", "/")])
        req = peer.request(user="nobody")[0]
        start = req.find(f"\r\n{h}:".encode())
        if start < 0:
            return req.replace(b"\r\nContent-Length", f"\r\n{h}: {v}\r\nContent-Length".encode())
        end = req.find(b"\r\n", start + 2)
        return req[: start + 2] + f"{h}: {v}".encode() + req[end:]

    def non_utf8() -> bytes:
        return peer.request(user="nobody", extra="Subject: \udcff\udcfe\udcc0\r\n")[0]

    def bad_sdp_invite() -> bytes:
        body = rng.choice([b"v=0\r\ngarbage", rng.randbytes(200), SDP.replace(b"m=audio 40000", b"m=audio 99999999"),
                           SDP.replace(b"RTP/AVP 0 101", b"RTP/AVP"), b""])
        return peer.request("INVITE", user="nobody", body=body, extra="Content-Type: application/sdp\r\n")[0]

    def response_garbage() -> bytes:
        return rng.choice([b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", b"SIP/2.0 180\r\n\r\n",
                           b"SIP/2.0 200 OK\r\n" + valid().split(b"\r\n", 1)[1]])

    def keepalive_like() -> bytes:
        return rng.choice([b"\r\n", b"\r\n\r\n", b"\x00", b"\r\n\r\n\r\n\r\nOPTIONS", b" ", b"\r\n" * 500])

    kinds = [random_bytes, random_text, truncated, bit_flips, huge_header, many_headers, bad_content_length,
             crlf_injection, missing_headers, bad_start_line, bad_values, non_utf8, bad_sdp_invite,
             response_garbage, keepalive_like]
    return [kinds[i % len(kinds)]() for i in range(count)]


class FailureWatch:
    """Collects logged failures (tracebacks) while active: an exception escaping the SIP core is a bug."""

    def __init__(self) -> None:
        self.failures: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            self.failures.append(event)

    def __enter__(self) -> "FailureWatch":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    def describe(self) -> str:
        return "\n".join(str(e.get("log_failure") or e.get("log_format")) for e in self.failures[:5])


async def options_ok(peer: Peer) -> bool:
    data, call_id = peer.request("OPTIONS")
    peer.send(data)
    return await wait_for(lambda: any(r.startswith(b"SIP/2.0 200") for r in peer.replies_for(call_id)), 3)


async def echo_call_works(svc: Any) -> None:
    leg = LocalLeg(tone_hz=1000.0)
    call = svc.manager.place_call(leg, "echo")
    leg.start_source(call)
    assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
    await sleep(1.2)
    assert_tone(leg.recording(), leg.received_rate or 8000, 1000.0, "echo")
    call.hangup()


@pytest_twisted.ensureDeferred
async def test_udp_garbage_burst() -> None:
    svc = start_telephony(make_config(max_message_size=MAX_SIZE))
    peer = Peer(svc.bound["udp"])
    rng = random.Random(20240613)
    try:
        with FailureWatch() as watch:
            burst = garbage(peer, rng, 500)
            for i, data in enumerate(burst):
                peer.send(data)
                if i % 20 == 19:
                    await sleep(0.01)  # let the reactor read; don't overflow the socket buffer
                    peer.read()
            await sleep(0.3)
            assert svc.transport.stats["bad"] >= 200, svc.transport.stats

            # still serving
            assert await options_ok(peer)

            # requests with Via/From/To/Call-ID/CSeq that are otherwise bad: a 400 echoing those headers
            bad_ones = {
                "bad Content-Length": dict(content_length="abc"),
                "Content-Length past the end": dict(body=b"x", content_length="500"),
                "control character": dict(extra="Subject: a\x00b\r\n"),
                "CR injection": dict(extra="Subject: a\rInjected: yes\r\n"),
                # (a bare LF is a line end to a lenient parser: "Subject: a\nX: y" is two good headers)
                "bad CSeq": dict(extra="X-Pad: 1\r\n"),
            }
            sent: dict[str, tuple[bytes, str]] = {}
            for what, kw in bad_ones.items():
                data, call_id = peer.request("OPTIONS", **kw)  # type: ignore[arg-type]
                if what == "bad CSeq":
                    data = data.replace(b" OPTIONS\r\nMax-Forwards", b" OPTIONS x\r\nMax-Forwards")
                sent[what] = (data, call_id)
                peer.send(data)
            for what, (data, call_id) in sent.items():
                assert await wait_for(lambda cid=call_id: peer.replies_for(cid), 2), f"no answer to a request with {what}"
                (reply,) = peer.replies_for(call_id)
                assert reply.startswith(b"SIP/2.0 400 "), (what, reply[:200])
                via = [ln for ln in data.split(b"\r\n") if ln.startswith(b"Via:")][0]
                assert via in reply.split(b"\r\n"), (what, reply)  # same branch: the sender can match it
                assert b"\nCSeq: " in reply and b"\nFrom: " in reply and b"\nTo: " in reply

            # an oversized request is answered 513, an ACK or a response never
            big, big_id = peer.request("OPTIONS", extra=f"Subject: {'A' * (MAX_SIZE + 100)}\r\n")
            ack, ack_id = peer.request("ACK", content_length="abc")
            resp = b"SIP/2.0 400 Bad\r\n" + peer.request("OPTIONS", content_length="abc")[0].split(b"\r\n", 1)[1]
            resp_id = resp.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
            for d in (big, ack, resp):
                peer.send(d)
            assert await wait_for(lambda: peer.replies_for(big_id), 2)
            assert peer.replies_for(big_id)[0].startswith(b"SIP/2.0 513 ")
            await sleep(0.3)
            assert peer.replies_for(ack_id) == [] and peer.replies_for(resp_id) == []

            # nothing escaped the core as an exception
            assert not watch.failures, watch.describe()

        # and a real call works afterwards
        await echo_call_works(svc)
    finally:
        peer.close()
        await svc.stopService()


def tcp_connect(addr: tuple[str, int]) -> socket.socket:
    c = socket.create_connection(addr, timeout=2)
    c.setblocking(False)
    return c


def tcp_read(c: socket.socket) -> tuple[bytes, bool]:
    """What arrived so far, and whether the gateway closed the connection."""
    out = b""
    while True:
        try:
            d = c.recv(65536)
        except BlockingIOError:
            return out, False
        except ConnectionResetError:
            return out, True
        if not d:
            return out, True
        out += d


@pytest_twisted.ensureDeferred
async def test_tcp_garbage_then_serving() -> None:
    svc = start_telephony(make_config(max_message_size=MAX_SIZE))
    udp = Peer(svc.bound["udp"])
    tcp_addr = svc.bound["tcp"]
    rng = random.Random(77)
    conns: list[socket.socket] = []
    try:
        with FailureWatch() as watch:
            chunks = [
                rng.randbytes(3000),
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(100),  # a TLS hello on TCP
                udp.request(content_length="abc")[0].replace(b"/UDP", b"/TCP"),
                udp.request(content_length="99999999")[0].replace(b"/UDP", b"/TCP"),
                udp.request(extra=f"Subject: {'A' * (MAX_SIZE * 2)}\r\n")[0].replace(b"/UDP", b"/TCP"),
                b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\n" + b"X: y\r\n" * 5000,  # never ends its head
                b"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1\r\n",  # truncated, then close
            ]
            for data in chunks:
                c = tcp_connect(tcp_addr)
                conns.append(c)
                c.sendall(data)
            await sleep(0.5)
            results = [tcp_read(c) for c in conns]
            # garbage that breaks the framing gets the connection closed (no 200 to anything)
            for (out, _closed), data in zip(results[:6], chunks[:6], strict=True):
                assert not out.startswith(b"SIP/2.0 200"), (data[:60], out[:100])
            assert sum(closed for _, closed in results[:6]) >= 4, [closed for _, closed in results]
            for c in conns:
                c.close()
            await sleep(0.2)

            # a new connection: two pipelined requests in one write are both answered, in order
            c = tcp_connect(tcp_addr)
            conns.append(c)
            a, a_id = udp.request("OPTIONS")
            b, b_id = udp.request("OPTIONS")
            c.sendall(a.replace(b"/UDP", b"/TCP") + b.replace(b"/UDP", b"/TCP"))
            got = b""

            def both() -> bool:
                nonlocal got
                got += tcp_read(c)[0]
                return got.count(b"SIP/2.0 200 ") == 2

            assert await wait_for(both, 3), got[:400]
            assert got.index(a_id.encode()) < got.index(b_id.encode())
            assert not watch.failures, watch.describe()

        # UDP is unaffected and a call works
        assert await options_ok(udp)
        await echo_call_works(svc)
    finally:
        for c in conns:
            c.close()
        udp.close()
        await svc.stopService()

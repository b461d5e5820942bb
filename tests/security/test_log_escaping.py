"""Client-supplied text reaches a log line escaped (webgate/logsafe.py): a CR/LF cannot forge a
line, an ESC sequence cannot drive the operator's terminal. Unit tests of the helper, then a log
observer watching real WebSocket, RTMP and SIP traffic that carries such names."""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import formatEvent, globalLogPublisher

from tests.adapters.rtmp_helpers import open_client
from tests.adapters.webrtc_client import connect
from tests.calls.gw import sleep, wait_for
from tests.security.secure_gw import DUMMY_SDP, SecureGateway
from webgate.calls.errors import CallRefused
from webgate.legs.local import LocalLeg
from webgate.logsafe import MAX_CHARS, safe

EVIL = "evil\r\nFAKE 2026-01-01 [webgate#critical] pwned\x1b[31m\x07\u202e"
ESCAPED = "evil\\r\\nFAKE 2026-01-01 [webgate#critical] pwned\\x1b[31m\\x07\\u202e"


def _unescape(text: str) -> str:
    named = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}

    def one(m: re.Match[str]) -> str:
        s = m.group(1)
        return named[s] if s in named else chr(int(s[1:], 16))

    return re.sub(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})", one, text)


# ------------------------------------------------------------------------------------- the helper

def test_safe_escapes_controls_and_keeps_plain_text() -> None:
    assert safe(EVIL) == ESCAPED
    assert safe("alice") == "alice"
    assert safe("Zoë 日本 +49 (0) 30") == "Zoë 日本 +49 (0) 30"
    assert safe("a\\nb") == "a\\\\nb"  # a literal backslash-n cannot pass for an escaped newline
    assert safe(b"x\xff\n\x00") == "x\\xff\\n\\x00"  # undecodable bytes as \xNN
    assert safe("\u2028\u2029\x85\x7f\ufeff") == "\\u2028\\u2029\\x85\\x7f\\ufeff"
    assert safe(None) == "None" and safe(42) == "42" and safe(("udp", "h", 5060)) == "('udp', 'h', 5060)"


def test_safe_cuts_long_text() -> None:
    assert safe("x" * (MAX_CHARS + 5)) == "x" * MAX_CHARS + "...(+5)"
    assert safe("\n" * 10, 3) == "\\n\\n\\n...(+7)"
    assert safe("y" * 5000, None) == "y" * 5000


@settings(max_examples=500, deadline=None)
@given(st.text() | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_safe_is_one_printable_line_and_reversible(text: str) -> None:
    out = safe(text, None)
    assert out.isprintable(), out  # no C0/C1/DEL, no line or paragraph separator, no bidi control
    assert "\r" not in out and "\n" not in out and "\x1b" not in out
    if not any(0xDC80 <= ord(c) <= 0xDCFF for c in text):  # those come back as the byte's \xNN
        assert _unescape(out) == text


# ------------------------------------------------------------------------------- on the wire

@contextmanager
def log_lines() -> Iterator[list[str]]:
    """Every log event published meanwhile, formatted as the text log writes it."""
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observer)


def _assert_escaped(lines: list[str], needle: str = "FAKE") -> list[str]:
    hits = [line for line in lines if needle in line]
    assert hits, "\n".join(lines[-30:])
    for line in lines:
        assert line.isprintable(), repr(line)  # no CR/LF/ESC, no U+2028, no bidi override
    return hits


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _sip_invite(gw_port: int, local_port: int, user: str, call_id: str) -> bytes:
    branch = f"z9hG4bK-log{random.getrandbits(32):08x}"
    return (
        f"INVITE sip:{user}@127.0.0.1:{gw_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch}\r\n"
        f"From: <sip:caller@127.0.0.1:{local_port}>;tag=t1\r\n"
        f"To: <sip:{user}@127.0.0.1:{gw_port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Max-Forwards: 70\r\n"
        f"Contact: <sip:caller@127.0.0.1:{local_port}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode("utf-8", "surrogateescape")


def _gateway() -> SecureGateway:
    return SecureGateway(limits={"max_attempts_per_ip_per_minute": 0})


@pytest_twisted.ensureDeferred
async def test_a_refused_destination_is_logged_escaped() -> None:
    """The call manager (where every ingress ends) and the WebSocket: a refused destination."""
    gw = _gateway()
    try:
        with log_lines() as lines, pytest.raises(CallRefused):
            gw.manager.place_call(LocalLeg(client="10.0.0.1:1"), EVIL)
        assert ESCAPED in _assert_escaped(lines)[0]
        with log_lines() as lines:
            ws = await connect(gw.url)
            await ws.next("welcome")
            n = len(ws.messages)
            ws.send({"type": "call", "sdp": DUMMY_SDP, "destination": EVIL})
            await ws.next("error", after=n)
            ws.close()
        assert any("-> " + ESCAPED in line for line in _assert_escaped(lines))
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_an_rtmp_stream_name_is_logged_escaped() -> None:
    """An encoder publishing to a stream name with CR/LF/ESC."""
    gw = _gateway()
    try:
        with log_lines() as lines:
            c = await open_client(gw.rtmp_port)
            await c.connect("call", port=gw.rtmp_port)
            sid = await c.create_stream()
            c.command("publish", EVIL, "live", stream_id=sid)
            assert await wait_for(lambda: any(s.get("level") == "error" for s in c.statuses(sid)), 5)
            assert await wait_for(lambda: c.lost, 5)
        hits = _assert_escaped(lines)
        assert any("publish to " + ESCAPED in line for line in hits), hits
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_flash_user_is_logged_escaped() -> None:
    """A Flash client's user (the RTMP app ``sip/USER``) may not hold whitespace, but may hold ESC
    and bidi controls: an xterm title change and a screen clear reached the log raw."""
    gw = _gateway()
    try:
        with log_lines() as lines:
            c = await open_client(gw.rtmp_port)
            res = await c.connect("sip/FAKE\x1b]0;pwned\x07\x1b[2J\u202e", port=gw.rtmp_port)
            c.transport.loseConnection()
            await sleep(0.05)
        hits = _assert_escaped(lines)
        assert res.name == "_result", res  # accepted: it is the log line that must be safe
        assert any("connected to sip/FAKE\\x1b]0;pwned\\x07\\x1b[2J\\u202e" in line for line in hits), hits
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_sip_names_are_logged_escaped() -> None:
    """The SIP parser refuses raw controls in a header (a Request-URI keeps its %0D%0A as written),
    but a Call-ID may carry Unicode line separators and bidi overrides."""
    gw = _gateway()
    try:
        host, port = gw.svc.bound["udp"]
        with log_lines() as lines, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            me = s.getsockname()[1]
            s.sendto(_sip_invite(port, me, "evil%0D%0AFAKE%1B%5B31m", "c1@h"), (host, port))
            s.sendto(_sip_invite(port, me, "echo", "FAKE\u2028\u202egnp.exe@h"), (host, port))
            got: list[bytes] = []

            def answered() -> bool:
                try:
                    while True:
                        got.append(s.recv(65536))
                except BlockingIOError:
                    pass
                return sum(b.startswith(b"SIP/2.0 ") and b" 1" not in b[7:11] for b in got) >= 2

            assert await wait_for(answered, 5), got
            await sleep(0.1)
        hits = _assert_escaped(lines)
        assert any("built-in echo answered FAKE\\u2028\\u202egnp.exe@h" in line for line in hits), hits
        assert any("to evil%0D%0AFAKE%1B%5B31m refused" in line for line in hits), hits
    finally:
        await gw.stop()

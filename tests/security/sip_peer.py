"""A hand-driven SIP UDP peer on the test reactor: it sends the exact bytes a test writes (a forged
Via, a flood of INVITEs) and keeps every message that reaches its socket, with its source.

The socket can be any bound UDP socket, also one opened inside another network namespace
(tests/interop/test_netns_edge.py): the reactor adopts it, so nothing blocks."""

from __future__ import annotations

import secrets
import socket
from typing import Any

from twisted.internet import protocol

from tests.calls.gw import reactor, wait_for
from webgate.proto.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
)

SDP_OFFER = (
    "v=0\r\n"
    "o=- 1 1 IN IP4 {host}\r\n"
    "s=-\r\n"
    "c=IN IP4 {host}\r\n"
    "t=0 0\r\n"
    "m=audio {rtp_port} RTP/AVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=sendrecv\r\n"
)


class _Collector(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, peer: SipPeer) -> None:
        self.peer = peer

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted API)
        self.peer.datagrams += 1
        try:
            msg = parse_message(data)
        except Exception:  # noqa: BLE001 - a test peer keeps whatever it can read
            self.peer.unparsed.append(data)
            return
        self.peer.messages.append((msg, (addr[0], addr[1])))


class SipPeer:
    """``SipPeer(sock)``: adopt a bound UDP socket (closed by :meth:`close`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.messages: list[tuple[SipMessage, tuple[str, int]]] = []
        self.sent: dict[str, tuple[bytes, tuple[str, int]]] = {}  # INVITEs by Call-ID (to retransmit)
        self.unparsed: list[bytes] = []
        self.datagrams = 0
        sock.setblocking(False)
        self.listening = reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET, _Collector(self))

    @classmethod
    def loopback(cls) -> SipPeer:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        return cls(s)

    def close(self) -> None:
        self.listening.stopListening()
        self.sock.close()

    # --- sending -------------------------------------------------------------------------
    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.listening.write(data, dest)

    def invite(
        self,
        dest: tuple[str, int],
        user: str,
        *,
        via: str | None = None,
        call_id: str | None = None,
        sdp: bool = True,
        rtp_port: int = 40000,
    ) -> str:
        """Send an INVITE for ``user`` to ``dest``; returns its Call-ID. ``via`` replaces the
        top Via's value (default: this socket's address with ``rport``)."""
        call_id = call_id or f"{secrets.token_hex(8)}@{self.host}"
        branch = "z9hG4bK" + secrets.token_hex(8)
        via_value = (via or f"SIP/2.0/UDP {self.host}:{self.port};rport;branch={{branch}}").format(branch=branch)
        body = SDP_OFFER.format(host=self.host, rtp_port=rtp_port).encode() if sdp else b""
        head = [
            f"INVITE sip:{user}@{dest[0]}:{dest[1]} SIP/2.0",
            f"Via: {via_value}",
            "Max-Forwards: 70",
            f"From: <sip:tester@{self.host}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{user}@{dest[0]}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:tester@{self.host}:{self.port}>",
        ]
        if body:
            head.append("Content-Type: application/sdp")
        head.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.sent[call_id] = (data, dest)
        self.send(data, dest)
        return call_id

    def retransmit_unanswered(self) -> int:
        """Send again (same branch: a retransmission) every INVITE with no response yet, as a
        UAC's Timer A would; returns how many."""
        answered = {m.call_id for m, _a in self.responses()}
        late = [(cid, sent) for cid, sent in self.sent.items() if cid not in answered]
        for _cid, (data, dest) in late:
            self.send(data, dest)
        return len(late)

    def ack(self, response: SipResponse, dest: tuple[str, int]) -> None:
        """ACK a final response to one of our INVITEs (for a 2xx: to ``dest``, the gateway)."""
        via = response.headers.get("Via") or ""
        if response.status < 300:
            via = f"SIP/2.0/UDP {self.host}:{self.port};rport;branch=z9hG4bK{secrets.token_hex(8)}"
        lines = [
            f"ACK sip:gw@{dest[0]}:{dest[1]} SIP/2.0",
            f"Via: {via}",
            "Max-Forwards: 70",
            f"From: {response.headers.get('From')}",
            f"To: {response.headers.get('To')}",
            f"Call-ID: {response.call_id}",
            f"CSeq: {response.cseq.number} ACK",
            "Content-Length: 0",
        ]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode(), dest)

    def answer_requests(self, status: int = 200) -> None:
        """Answer every request received so far that is not an ACK (a BYE from the gateway)."""
        for msg, addr in self.messages:
            if isinstance(msg, SipRequest) and msg.method != "ACK" and not getattr(msg, "_answered", False):
                msg._answered = True  # type: ignore[attr-defined]
                self.send(make_response(msg, status).serialize(), addr)

    # --- what came back ------------------------------------------------------------------
    def responses(self, call_id: str | None = None) -> list[tuple[SipResponse, tuple[str, int]]]:
        return [(m, a) for m, a in self.messages if isinstance(m, SipResponse) and (call_id is None or m.call_id == call_id)]

    def requests(self, method: str | None = None) -> list[SipRequest]:
        return [m for m, _a in self.messages if isinstance(m, SipRequest) and (method is None or m.method == method)]

    def final(self, call_id: str) -> SipResponse | None:
        return next((m for m, _a in self.responses(call_id) if m.status >= 200), None)

    async def wait_final(self, call_id: str, timeout: float = 5.0) -> SipResponse:
        assert await wait_for(lambda: self.final(call_id) is not None, timeout), (
            f"no final response to {call_id}; got {[(m.status, a) for m, a in self.responses(call_id)]}")
        final = self.final(call_id)
        assert final is not None
        return final

    def finals_by_call_id(self) -> dict[str, int]:
        """Call-ID -> the status of its first final response."""
        out: dict[str, int] = {}
        for m, _a in self.responses():
            if m.status >= 200:
                out.setdefault(m.call_id, m.status)
        return out

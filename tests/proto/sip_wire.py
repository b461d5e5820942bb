"""One sans-IO SIP user agent driven with raw bytes, as a foreign peer would send them: the
tests of 100rel, session timers, UPDATE and delayed offer (tests/proto/test_sip_*.py) write the
peer's messages by hand and read what the user agent put on the wire."""

from __future__ import annotations

from typing import Any

from webgate.proto.sip.message import SipMessage, SipRequest, SipResponse, SipURI, parse_message
from webgate.proto.sip.transaction import TimerConfig
from webgate.proto.sip.useragent import LocalEndpoint, UAConfig, UserAgent

US_PORT, PEER_PORT = 5060, 5099
PEER = ("udp", "127.0.0.1", PEER_PORT)
SDP_OFFER = b"v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
SDP_ANSWER = b"v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n"


class Wire:
    """The user agent under test at 127.0.0.1:5060 and a scripted peer at 127.0.0.1:5099."""

    def __init__(self, t1: float = 0.5, **config: Any) -> None:
        self.ua = UserAgent(UAConfig({"udp": LocalEndpoint("udp", "127.0.0.1", US_PORT)}, timers=TimerConfig(t1=t1), **config))
        self.now = 0.0
        self.events: list[Any] = []
        self.sent: list[SipMessage] = []  # everything the user agent sent, parsed again from its bytes
        self._taken = 0

    def _collect(self, events: list[Any]) -> list[Any]:
        for msg, _dest in self.ua.outgoing():
            self.sent.append(parse_message(msg.serialize()))
        self.events += events
        return events

    def feed(self, text: str | bytes, body: bytes = b"") -> list[Any]:
        """A message from the peer: ``text`` is its head (LF line ends are fine, Content-Length
        is added), ``body`` its body."""
        head = text if isinstance(text, bytes) else text.encode()
        head = b"\r\n".join(line.strip() for line in head.strip().splitlines())
        data = head + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        return self._collect(self.ua.receive(parse_message(data), PEER, self.now))

    def act(self) -> list[Any]:
        """Collect what an application call (ring, answer, hangup, ...) put on the wire."""
        return self._collect([])

    def advance(self, seconds: float, step: float = 0.1) -> list[Any]:
        out: list[Any] = []
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + step, 6)
            out += self._collect(self.ua.handle_timers(self.now))
        return out

    def take(self) -> list[SipMessage]:
        """What was sent since the last ``take()``."""
        out = self.sent[self._taken:]
        self._taken = len(self.sent)
        return out

    def requests(self, method: str) -> list[SipRequest]:
        return [m for m in self.sent if isinstance(m, SipRequest) and m.method == method]

    def responses(self, status: int | None = None, method: str | None = None) -> list[SipResponse]:
        return [m for m in self.sent if isinstance(m, SipResponse) and (status is None or m.status == status)
                and (method is None or m.cseq.method == method)]

    def invite(self, **kw: Any) -> Any:
        """Our INVITE toward the peer."""
        s = self.ua.invite(SipURI.parse(f"sip:2000@127.0.0.1:{PEER_PORT}"), SDP_OFFER, self.now, **kw)
        self.act()
        return s


def of(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def reply(request: SipRequest, status: int, reason: str, *extra: str, to_tag: str | None = "peer1",
          contact: bool = True) -> str:
    """The head of the peer's response to one of our requests."""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in request.headers.get_all("Via")]
    lines.append(f"From: {request.headers.get('From')}")
    to = request.headers.get("To") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {request.call_id}")
    lines.append(f"CSeq: {request.headers.get('CSeq')}")
    if contact:
        lines.append(f"Contact: <sip:peer@127.0.0.1:{PEER_PORT}>")
    lines += list(extra)
    return "\n".join(lines)


class Caller:
    """The peer as a UAC calling the user agent: its INVITE and in-dialog requests."""

    def __init__(self, call_id: str = "call-1@peer", user: str = "alice") -> None:
        self.call_id = call_id
        self.user = user
        self.cseq = 1
        self.branch = 0
        self.to_tag: str | None = None

    def _via(self) -> str:
        self.branch += 1
        return f"SIP/2.0/UDP 127.0.0.1:{PEER_PORT};branch=z9hG4bK-{self.call_id.split('@')[0]}-{self.branch}"

    def request(self, method: str, *extra: str, cseq: int | None = None, branch_via: str | None = None) -> str:
        if cseq is None:
            if method not in ("ACK", "CANCEL"):
                self.cseq += 1
            cseq = self.cseq
        to = f"<sip:{self.user}@127.0.0.1:{US_PORT}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [
            f"{method} sip:{self.user}@127.0.0.1:{US_PORT} SIP/2.0",
            f"Via: {branch_via or self._via()}",
            "Max-Forwards: 70",
            f"From: <sip:peer@127.0.0.1:{PEER_PORT}>;tag=caller1",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            *([] if any(e.lower().startswith("contact:") for e in extra) else [f"Contact: <sip:peer@127.0.0.1:{PEER_PORT}>"]),
            *extra,
        ]
        return "\n".join(lines)

    def invite(self, *extra: str) -> str:
        self.cseq = 1
        return self.request("INVITE", *extra, cseq=1)

    def ack(self, response: SipResponse, *extra: str) -> str:
        """The ACK of a 2xx (a transaction of its own)."""
        self.to_tag = response.to.tag
        return self.request("ACK", *extra, cseq=response.cseq.number)

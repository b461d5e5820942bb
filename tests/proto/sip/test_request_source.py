"""The source of a request is the transport's peer address (issue 12, item 1). Sans-IO, bytes in.

A sender writes its own top Via: whatever ``received``, ``rport`` or ``maddr`` it puts there must
neither change who the gateway thinks it is talking to nor where the responses go.
"""

from __future__ import annotations

import pytest

from webgate.proto.sip.message import SipResponse, parse_message
from webgate.proto.sip.transaction import (
    Addr,
    RequestReceived,
    TransactionManager,
    response_destination,
)
from webgate.proto.sip.useragent import IncomingCall, LocalEndpoint, UAConfig, UserAgent

ATTACKER: Addr = ("udp", "198.18.0.2", 40000)  # the packet's real source


def invite_bytes(via: str, user: str = "alice", cseq: str = "1 INVITE", method: str = "INVITE") -> bytes:
    lines = [
        f"{method} sip:{user}@198.18.0.1:5060 SIP/2.0",
        f"Via: {via}",
        "Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKsecond",  # a second Via is never the source either
        "Max-Forwards: 70",
        "From: <sip:mallory@198.18.0.2>;tag=f1",
        f"To: <sip:{user}@198.18.0.1>",
        "Call-ID: forged-via-1@198.18.0.2",
        f"CSeq: {cseq}",
        "Contact: <sip:mallory@198.18.0.2:5060>",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def receive(tm: TransactionManager, data: bytes, source: Addr = ATTACKER) -> RequestReceived:
    (ev,) = tm.receive(parse_message(data), source, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    return ev


@pytest.mark.parametrize(
    ("via", "dest", "received", "rport"),
    [
        # the bypass: sent-by equals the source, received= written by the sender
        ("SIP/2.0/UDP 198.18.0.2:5060;received=127.0.0.1;branch=z9hG4bKa1", ("udp", "198.18.0.2", 5060), "198.18.0.2", None),
        # sent-by elsewhere, forged received
        ("SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;branch=z9hG4bKa2", ("udp", "198.18.0.2", 5060), "198.18.0.2", None),
        # forged rport value and received: both ours, the response goes to the real source port
        ("SIP/2.0/UDP 127.0.0.1:5060;rport=5060;received=127.0.0.1;branch=z9hG4bKa3", ATTACKER, "198.18.0.2", "40000"),
        # rport asked for properly
        ("SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKa4", ATTACKER, "198.18.0.2", "40000"),
        # maddr (and a forged received next to it) ignored: the response goes to the source
        ("SIP/2.0/UDP 198.18.0.2:5060;maddr=127.0.0.1;received=127.0.0.1;branch=z9hG4bKa5", ("udp", "198.18.0.2", 5060), "198.18.0.2", None),
        ("SIP/2.0/UDP 198.18.0.2:5060;maddr=203.0.113.9;rport;branch=z9hG4bKa6", ATTACKER, "198.18.0.2", "40000"),
    ],
)
def test_forged_via_params_are_replaced_and_responses_go_to_the_real_source(
    via: str, dest: Addr, received: str, rport: str | None,
) -> None:
    tm = TransactionManager()
    ev = receive(tm, invite_bytes(via))
    top = ev.request.top_via
    assert top.params["received"] == received
    assert top.params.get("rport") == rport
    assert ev.txn.dest == dest
    assert ev.txn.source == ATTACKER


def test_no_received_added_when_the_sent_by_is_the_source() -> None:
    tm = TransactionManager()
    ev = receive(tm, invite_bytes("SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bKb1"))
    assert "received" not in ev.request.top_via.params
    assert ev.txn.dest == ("udp", "198.18.0.2", 5060)


def test_maddr_is_followed_only_when_honoured() -> None:
    via = "SIP/2.0/UDP 198.18.0.2:5070;maddr=239.1.1.1;branch=z9hG4bKc1"
    assert receive(TransactionManager(), invite_bytes(via)).txn.dest == ("udp", "198.18.0.2", 5070)
    assert receive(TransactionManager(honour_maddr=True), invite_bytes(via)).txn.dest == ("udp", "239.1.1.1", 5070)


def test_reliable_transport_answers_on_the_connection_whatever_the_via_says() -> None:
    tm = TransactionManager()
    source: Addr = ("tcp", "198.18.0.2", 41000)
    ev = receive(tm, invite_bytes("SIP/2.0/TCP 127.0.0.1:5060;received=127.0.0.1;maddr=127.0.0.1;branch=z9hG4bKd1"), source)
    assert ev.txn.dest == source
    assert ev.request.top_via.params["received"] == "198.18.0.2"


def test_response_destination_never_reads_received() -> None:
    from webgate.proto.sip.message import Via

    v = Via.parse("SIP/2.0/UDP 198.18.0.2:5060;received=127.0.0.1;branch=z9hG4bKx")
    assert response_destination(v, ATTACKER) == ("udp", "198.18.0.2", 5060)


def _ua(honour_maddr: bool = False, accept_incoming: bool = False) -> UserAgent:
    return UserAgent(UAConfig({"udp": LocalEndpoint("udp", "198.18.0.1", 5060)}, accept_incoming=accept_incoming,
                              honour_maddr=honour_maddr))


def test_user_agent_response_bytes_go_to_the_real_source_with_our_received() -> None:
    """The whole UAS path: bytes in, a final response (403 from a UA that takes no calls) out,
    addressed to the packet's source and carrying the real received/rport in its Via."""
    ua = _ua()
    ua.receive(parse_message(invite_bytes("SIP/2.0/UDP 127.0.0.1:5060;rport=5060;received=127.0.0.1;maddr=127.0.0.1;branch=z9hG4bKe1")),
               ATTACKER, 0.0)
    ((msg, dest),) = ua.outgoing()
    assert isinstance(msg, SipResponse) and msg.status == 403
    assert dest == ATTACKER
    wire = parse_message(msg.serialize())
    top = wire.top_via
    assert (top.params["received"], top.params["rport"]) == ("198.18.0.2", "40000")
    top_line = next(line for line in msg.serialize().split(b"\r\n") if line.lower().startswith(b"via:"))
    assert b"received=127.0.0.1" not in top_line and b"rport=5060" not in top_line, top_line


def test_incoming_call_carries_the_transport_source() -> None:
    ua = _ua(accept_incoming=True)
    data = invite_bytes("SIP/2.0/UDP 198.18.0.2:5060;received=127.0.0.1;branch=z9hG4bKf1")
    events = ua.receive(parse_message(data), ATTACKER, 0.0)
    (ev,) = [e for e in events if isinstance(e, IncomingCall)]
    assert ev.source == ATTACKER
    assert ev.request.top_via.params["received"] == "198.18.0.2"


def test_stateless_rejection_goes_to_the_real_source() -> None:
    """A request refused before a transaction exists (CSeq method mismatch -> 400) is answered
    at the real source too, not at its forged received."""
    tm = TransactionManager()
    data = invite_bytes("SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;branch=z9hG4bKg1", cseq="1 BYE")
    tm.receive(parse_message(data), ATTACKER, 0.0)
    ((msg, dest),) = tm.outgoing()
    assert isinstance(msg, SipResponse) and msg.status == 400
    assert dest == ("udp", "198.18.0.2", 5060)
    assert msg.top_via.params["received"] == "198.18.0.2"

"""RFC 3261 §17 transaction state machines, driven with a fake clock (plain floats)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    SipURI,
    make_response,
    parse_message,
)
from webgate.proto.sip.transaction import (
    AckTimeout,
    Addr,
    ClientTransaction,
    Event,
    MessageDropped,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    Transaction,
    TransactionManager,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    make_cancel,
    new_branch,
    response_destination,
)

UDP: Addr = ("udp", "192.0.2.10", 5060)
TCP: Addr = ("tcp", "192.0.2.10", 5060)
PEER_UDP: Addr = ("udp", "198.51.100.7", 5062)
PEER_TCP: Addr = ("tcp", "198.51.100.7", 40000)
S = TransactionState


def state_of(txn: Transaction) -> TransactionState:
    """Read the state without mypy narrowing it from an earlier assert."""
    return txn.state


def make_request(
    method: str = "INVITE",
    branch: str | None = None,
    cseq: int = 1,
    via_host: str = "198.51.100.7:5062",
    transport: str = "UDP",
    to_tag: str | None = None,
    routes: tuple[str, ...] = (),
) -> SipRequest:
    h = Headers()
    h.add("Via", f"SIP/2.0/{transport} {via_host};branch={branch or new_branch()}")
    for r in routes:
        h.add("Route", r)
    h.add("Max-Forwards", "70")
    h.add("From", "\"Alice\" <sip:alice@example.org>;tag=a1")
    h.add("To", "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", "call-1@198.51.100.7")
    h.add("CSeq", f"{cseq} {method}")
    h.add("Contact", "<sip:alice@198.51.100.7:5062>")
    return SipRequest(headers=h, method=method, uri=SipURI.parse("sip:bob@example.com"))


def resp(req: SipRequest, status: int, tag: str | None = "b2") -> SipResponse:
    return make_response(req, status, to_tag=tag)


def sent(mgr: TransactionManager) -> list[tuple[SipMessage, Addr]]:
    return mgr.outgoing()


def run_until(mgr: TransactionManager, end: float) -> list[tuple[float, list[Event], list[tuple[SipMessage, Addr]]]]:
    """Fire every timer up to ``end`` at its exact time; record (time, events, sent)."""
    out: list[tuple[float, list[Event], list[tuple[SipMessage, Addr]]]] = []
    while True:
        t = mgr.next_timer()
        if t is None or t > end:
            return out
        ev = mgr.handle_timers(t)
        out.append((t, ev, mgr.outgoing()))


def retransmit_times(log: list[tuple[float, list[Event], list[tuple[SipMessage, Addr]]]], method: str) -> list[float]:
    return [
        t for t, _, msgs in log for m, _ in msgs if isinstance(m, SipRequest) and m.method == method
    ]


# ---------------------------------------------------------------------------------------
# client INVITE


def test_invite_client_udp_retransmits_timer_a_doubling_until_b() -> None:
    mgr = TransactionManager()
    inv = make_request()
    txn = mgr.send_request(inv, UDP, 0.0)
    assert sent(mgr) == [(inv, UDP)]
    assert txn.state is S.CALLING and txn.is_invite and txn.dest == UDP
    log = run_until(mgr, 100.0)
    assert retransmit_times(log, "INVITE") == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    last_t, last_ev, _ = log[-1]
    assert last_t == 32.0
    assert last_ev == [TransactionTimeout(txn), TransactionTerminated(txn)]
    assert state_of(txn) is S.TERMINATED
    assert mgr.next_timer() is None
    # after termination a late final matches nothing and is dropped
    ev = mgr.receive(resp(inv, 486), UDP, 33.0)
    assert isinstance(ev[0], MessageDropped)


def test_invite_client_tcp_never_retransmits_but_times_out() -> None:
    mgr = TransactionManager()
    inv = make_request(transport="TCP")
    txn = mgr.send_request(inv, TCP, 10.0)
    assert len(sent(mgr)) == 1
    assert mgr.next_timer() == 42.0  # only Timer B
    log = run_until(mgr, 100.0)
    assert retransmit_times(log, "INVITE") == []
    assert log[0][1][0] == TransactionTimeout(txn)


def test_custom_t1_scales_every_timer() -> None:
    mgr = TransactionManager(TimerConfig(t1=0.1))
    mgr.send_request(make_request(), UDP, 0.0)
    sent(mgr)
    log = run_until(mgr, 100.0)
    assert retransmit_times(log, "INVITE") == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1, 6.3])
    assert log[-1][0] == pytest.approx(6.4)


def test_invite_client_provisional_stops_a_and_b() -> None:
    mgr = TransactionManager()
    inv = make_request()
    txn = mgr.send_request(inv, UDP, 0.0)
    sent(mgr)
    mgr.handle_timers(0.5)
    assert len(sent(mgr)) == 1
    r180 = resp(inv, 180)
    ev = mgr.receive(r180, UDP, 0.7)
    assert ev == [ResponseReceived(txn, r180)]
    assert txn.state is S.PROCEEDING and txn.last_response is r180
    # neither A nor B run in Proceeding; only the Timer C safety net (180 s)
    assert mgr.next_timer() == pytest.approx(180.7)
    assert mgr.handle_timers(100.0) == []
    assert sent(mgr) == []
    # every provisional restarts Timer C
    mgr.receive(resp(inv, 183), UDP, 100.0)
    assert mgr.next_timer() == pytest.approx(280.0)
    assert mgr.handle_timers(279.0) == []
    assert mgr.handle_timers(280.0) == [TransactionTimeout(txn), TransactionTerminated(txn)]
    assert sent(mgr) == []
    # a 2xx after that has no transaction: delivered with txn None so the TU can ACK + BYE
    late = resp(inv, 200)
    assert mgr.receive(late, UDP, 281.0) == [ResponseReceived(None, late)]


def test_timer_c_can_be_disabled() -> None:
    mgr = TransactionManager(TimerConfig(timer_c=None))
    inv = make_request()
    mgr.send_request(inv, UDP, 0.0)
    mgr.receive(resp(inv, 180), UDP, 0.1)
    assert mgr.next_timer() is None


def test_invite_client_2xx_and_retransmitted_2xx_are_delivered() -> None:
    mgr = TransactionManager()
    inv = make_request()
    txn = mgr.send_request(inv, UDP, 0.0)
    sent(mgr)
    ok = resp(inv, 200)
    assert mgr.receive(ok, UDP, 1.0) == [ResponseReceived(txn, ok)]
    assert txn.state is S.ACCEPTED
    assert sent(mgr) == []  # the transaction does not ACK a 2xx: the TU does
    ok2 = parse_message(ok.serialize())
    assert isinstance(ok2, SipResponse)
    assert mgr.receive(ok2, UDP, 2.0) == [ResponseReceived(txn, ok2)]
    # forked 2xx with another tag is delivered too
    ok3 = resp(inv, 200, tag="other")
    assert mgr.receive(ok3, UDP, 2.5) == [ResponseReceived(txn, ok3)]
    # a late 180 or 486 is absorbed
    assert mgr.receive(resp(inv, 180), UDP, 3.0) == []
    assert mgr.receive(resp(inv, 486), UDP, 3.0) == []
    assert sent(mgr) == []
    # Timer M ends it at 64*T1 after the 2xx; a later 2xx is a stray delivered with txn None
    assert mgr.handle_timers(33.0) == [TransactionTerminated(txn)]
    ev = mgr.receive(ok2, UDP, 34.0)
    assert ev == [ResponseReceived(None, ok2)]


def test_invite_client_486_builds_ack_and_resends_it() -> None:
    mgr = TransactionManager()
    route = "<sip:proxy.example.com;lr>"
    inv = make_request(routes=(route,), cseq=7)
    txn = mgr.send_request(inv, UDP, 0.0)
    sent(mgr)
    mgr.receive(resp(inv, 100, tag=None), UDP, 0.1)
    busy = resp(inv, 486, tag="xyz")
    ev = mgr.receive(busy, UDP, 1.0)
    assert ev == [ResponseReceived(txn, busy)]
    assert txn.state is S.COMPLETED
    out = sent(mgr)
    assert len(out) == 1
    ack, dest = out[0]
    assert dest == UDP
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert str(ack.uri) == str(inv.uri)
    assert ack.headers.get_all("Via") == inv.headers.get_all("Via")
    assert ack.top_via.branch == inv.top_via.branch
    assert ack.call_id == inv.call_id
    assert ack.headers.get("From") == inv.headers.get("From")
    assert ack.to.tag == "xyz"
    assert ack.cseq.number == 7 and ack.cseq.method == "ACK"
    assert ack.headers.get_all("Route") == [route]
    assert ack.body == b""
    # the ACK round-trips through the parser
    assert isinstance(parse_message(ack.serialize()), SipRequest)
    # retransmitted 486 -> same ACK again, not delivered
    assert mgr.receive(busy, UDP, 2.0) == []
    assert sent(mgr) == [(ack, UDP)]
    # Timer D: 32 s over UDP
    assert mgr.next_timer() == 33.0
    assert mgr.handle_timers(32.9) == []
    assert mgr.handle_timers(33.0) == [TransactionTerminated(txn)]


def test_invite_client_486_over_tcp_terminates_at_once() -> None:
    mgr = TransactionManager()
    inv = make_request(transport="TCP")
    txn = mgr.send_request(inv, TCP, 0.0)
    mgr.receive(resp(inv, 486), TCP, 1.0)
    assert mgr.next_timer() == 1.0  # Timer D = 0 on reliable transports
    assert mgr.handle_timers(1.0) == [TransactionTerminated(txn)]


# ---------------------------------------------------------------------------------------
# client non-INVITE


def test_non_invite_client_timer_e_capped_at_t2_then_f() -> None:
    mgr = TransactionManager()
    req = make_request("OPTIONS")
    txn = mgr.send_request(req, UDP, 0.0)
    assert txn.state is S.TRYING and not txn.is_invite
    sent(mgr)
    log = run_until(mgr, 100.0)
    times = retransmit_times(log, "OPTIONS")
    assert times[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    gaps = [b - a for a, b in pairwise(times)]
    assert max(gaps) == 4.0
    assert times[-1] == 31.5
    assert log[-1][0] == 32.0
    assert log[-1][1] == [TransactionTimeout(txn), TransactionTerminated(txn)]


def test_non_invite_client_provisional_moves_e_to_t2() -> None:
    mgr = TransactionManager()
    req = make_request("BYE")
    txn = mgr.send_request(req, UDP, 0.0)
    sent(mgr)
    mgr.handle_timers(0.5)  # E: next at 1.5
    r100 = resp(req, 100, tag=None)
    assert mgr.receive(r100, UDP, 0.6) == [ResponseReceived(txn, r100)]
    assert txn.state is S.PROCEEDING
    assert len(sent(mgr)) == 1  # the retransmission at 0.5
    log = run_until(mgr, 20.0)
    # E keeps firing in Proceeding, every T2 after the first one
    assert retransmit_times(log, "BYE") == [1.5, 5.5, 9.5, 13.5, 17.5]


def test_non_invite_client_final_then_timer_k() -> None:
    mgr = TransactionManager()
    req = make_request("BYE")
    txn = mgr.send_request(req, UDP, 0.0)
    sent(mgr)
    ok = resp(req, 200)
    assert mgr.receive(ok, UDP, 0.2) == [ResponseReceived(txn, ok)]
    assert txn.state is S.COMPLETED
    assert mgr.receive(ok, UDP, 0.3) == []  # retransmission absorbed
    assert sent(mgr) == []
    assert mgr.next_timer() == pytest.approx(5.2)  # K = T4
    assert mgr.handle_timers(5.2) == [TransactionTerminated(txn)]


def test_non_invite_client_tcp_k_zero_and_no_e() -> None:
    mgr = TransactionManager()
    req = make_request("BYE", transport="TCP")
    txn = mgr.send_request(req, TCP, 0.0)
    assert mgr.next_timer() == 32.0  # only F
    mgr.receive(resp(req, 200), TCP, 0.2)
    assert mgr.handle_timers(0.2) == [TransactionTerminated(txn)]


def test_send_request_refuses_ack_and_missing_branch_and_duplicates() -> None:
    mgr = TransactionManager()
    with pytest.raises(LocalProtocolError):
        mgr.send_request(make_request("ACK"), UDP, 0.0)
    bad = make_request()
    bad.headers.set("Via", "SIP/2.0/UDP 198.51.100.7;branch=1234")
    with pytest.raises(LocalProtocolError):
        mgr.send_request(bad, UDP, 0.0)
    novia = make_request()
    novia.headers.remove("Via")
    with pytest.raises(LocalProtocolError):
        mgr.send_request(novia, UDP, 0.0)
    inv = make_request()
    mgr.send_request(inv, UDP, 0.0)
    with pytest.raises(LocalProtocolError):
        mgr.send_request(inv, UDP, 0.0)


def test_cancel_is_its_own_client_transaction() -> None:
    mgr = TransactionManager()
    inv = make_request()
    itxn = mgr.send_request(inv, UDP, 0.0)
    mgr.receive(resp(inv, 180), UDP, 0.1)
    cancel = make_cancel(inv)
    assert cancel.top_via.branch == inv.top_via.branch
    assert cancel.cseq.method == "CANCEL" and cancel.cseq.number == inv.cseq.number
    assert str(cancel.uri) == str(inv.uri)
    ctxn = mgr.send_request(cancel, UDP, 1.0)
    assert ctxn is not itxn and not ctxn.is_invite
    ok = resp(cancel, 200)
    assert mgr.receive(ok, UDP, 1.1) == [ResponseReceived(ctxn, ok)]
    r487 = resp(inv, 487)
    assert mgr.receive(r487, UDP, 1.2) == [ResponseReceived(itxn, r487)]


def test_stateless_send_and_unmatched_responses() -> None:
    mgr = TransactionManager()
    ack = make_request("ACK")
    mgr.send_stateless(ack, UDP)
    assert sent(mgr) == [(ack, UDP)]
    stray = resp(make_request("OPTIONS"), 200)
    ev = mgr.receive(stray, UDP, 0.0)
    assert len(ev) == 1 and isinstance(ev[0], MessageDropped)
    assert mgr.stats.dropped == 1


# ---------------------------------------------------------------------------------------
# server INVITE


def test_server_invite_auto_100_after_200ms() -> None:
    mgr = TransactionManager()
    inv = make_request()
    ev = mgr.receive(inv, PEER_UDP, 0.0)
    assert len(ev) == 1 and isinstance(ev[0], RequestReceived)
    txn = ev[0].txn
    assert isinstance(txn, ServerTransaction) and txn.state is S.PROCEEDING
    assert txn.dest == ("udp", "198.51.100.7", 5062)
    assert sent(mgr) == []
    assert mgr.next_timer() == pytest.approx(0.2)
    assert mgr.handle_timers(0.2) == []
    out = sent(mgr)
    assert len(out) == 1
    trying, dest = out[0]
    assert isinstance(trying, SipResponse) and trying.status == 100
    assert dest == txn.dest
    assert trying.to.tag is None


def test_server_invite_no_100_when_tu_answers_quickly() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    mgr.send_response(ev.txn, resp(inv, 180), 0.05)
    mgr.handle_timers(1.0)
    statuses = [m.status for m, _ in sent(mgr) if isinstance(m, SipResponse)]
    assert statuses == [180]


def test_server_invite_immediate_100_option() -> None:
    mgr = TransactionManager(TimerConfig(trying_delay=0))
    mgr.receive(make_request(), PEER_UDP, 0.0)
    out = sent(mgr)
    assert [m.status for m, _ in out if isinstance(m, SipResponse)] == [100]


def test_server_invite_retransmission_resends_last_response() -> None:
    mgr = TransactionManager()
    inv = make_request()
    raw = inv.serialize()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    # retransmission before any response: absorbed, answered with 100 at once
    again = parse_message(raw)
    assert mgr.receive(again, PEER_UDP, 0.1) == []
    assert [m.status for m, _ in sent(mgr) if isinstance(m, SipResponse)] == [100]
    ringing = resp(inv, 180)
    mgr.send_response(txn, ringing, 0.3)
    assert sent(mgr) == [(ringing, txn.dest)]
    assert mgr.receive(parse_message(raw), PEER_UDP, 0.5) == []
    assert sent(mgr) == [(ringing, txn.dest)]


def test_server_invite_non2xx_timer_g_until_ack_then_i() -> None:
    mgr = TransactionManager()
    inv = make_request()
    raw = inv.serialize()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    busy = resp(inv, 486)
    mgr.send_response(txn, busy, 0.1)
    assert txn.state is S.COMPLETED
    sent(mgr)
    log = run_until(mgr, 8.0)
    times = [t for t, _, msgs in log for m, _ in msgs if m is busy]
    assert times == pytest.approx([0.6, 1.6, 3.6, 7.6])
    # retransmitted INVITE in Completed -> final again
    assert mgr.receive(parse_message(raw), PEER_UDP, 8.1) == []
    assert sent(mgr) == [(busy, txn.dest)]
    # ACK (same branch) -> Confirmed, not delivered to the TU, G stops
    ack = make_request("ACK", branch=inv.top_via.branch, to_tag="b2")
    assert mgr.receive(ack, PEER_UDP, 9.0) == []
    assert state_of(txn) is S.CONFIRMED
    assert mgr.receive(ack, PEER_UDP, 9.5) == []  # retransmitted ACK absorbed
    log = run_until(mgr, 100.0)
    assert all(not msgs for _, _, msgs in log)
    assert log[-1][0] == pytest.approx(14.0)  # Timer I = T4
    assert log[-1][1] == [TransactionTerminated(txn)]


def test_server_invite_non2xx_timer_g_caps_at_t2() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    mgr.send_response(ev.txn, resp(inv, 603), 0.0)
    sent(mgr)
    log = run_until(mgr, 31.0)
    times = [t for t, _, msgs in log for _ in msgs]
    gaps = [b - a for a, b in pairwise(times)]
    assert times[:4] == [0.5, 1.5, 3.5, 7.5]
    assert max(gaps) == 4.0 and gaps[-1] == 4.0


def test_server_invite_timer_h_without_ack() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    mgr.send_response(txn, resp(inv, 486), 1.0)
    log = run_until(mgr, 100.0)
    assert log[-1][0] == 33.0
    assert log[-1][1] == [AckTimeout(txn), TransactionTerminated(txn)]


def test_server_invite_over_tcp_no_g_and_i_zero() -> None:
    mgr = TransactionManager()
    inv = make_request(transport="TCP")
    (ev,) = mgr.receive(inv, PEER_TCP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    assert txn.dest == PEER_TCP
    mgr.send_response(txn, resp(inv, 486), 0.0)
    sent(mgr)
    assert mgr.next_timer() == 32.0  # only H
    ack = make_request("ACK", branch=inv.top_via.branch, transport="TCP", to_tag="b2")
    mgr.receive(ack, PEER_TCP, 1.0)
    assert mgr.handle_timers(1.0) == [TransactionTerminated(txn)]
    assert sent(mgr) == []


def test_server_invite_2xx_retransmitted_until_tu_sees_ack() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    ok = resp(inv, 200)
    mgr.send_response(txn, ok, 0.0)
    assert txn.state is S.ACCEPTED
    sent(mgr)
    log = run_until(mgr, 4.0)
    assert [t for t, _, msgs in log for m, _ in msgs if m is ok] == [0.5, 1.5, 3.5]
    # the ACK for a 2xx has a new branch: delivered with txn None, retransmission stops
    ack = make_request("ACK", to_tag="b2")
    assert mgr.receive(ack, PEER_UDP, 4.0) == [RequestReceived(None, ack)]
    assert txn.acked
    log = run_until(mgr, 100.0)
    assert all(not msgs for _, _, msgs in log)
    assert log[-1][1] == [TransactionTerminated(txn)]  # no AckTimeout


def test_server_invite_2xx_ack_timeout() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    mgr.send_response(txn, resp(inv, 200), 0.0)
    log = run_until(mgr, 100.0)
    times = [t for t, _, msgs in log for _ in msgs]
    assert max(b - a for a, b in pairwise(times)) == 4.0
    assert log[-1][0] == 32.0
    assert log[-1][1] == [AckTimeout(txn), TransactionTerminated(txn)]


def test_server_invite_2xx_tu_ack_received_stops_retransmission() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    mgr.send_response(txn, resp(inv, 200), 0.0)
    sent(mgr)
    txn.ack_received()
    txn.ack_received()
    log = run_until(mgr, 100.0)
    assert all(not msgs for _, _, msgs in log)
    assert [e for _, evs, _ in log for e in evs] == [TransactionTerminated(txn)]


def test_server_invite_2xx_ack_with_unrelated_tag_does_not_stop() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    mgr.send_response(txn, resp(inv, 200), 0.0)
    other = make_request("ACK", to_tag="not-ours")
    assert mgr.receive(other, PEER_UDP, 0.1) == [RequestReceived(None, other)]
    assert not txn.acked


def test_server_invite_send_response_in_wrong_state() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    mgr.send_response(ev.txn, resp(inv, 486), 0.0)
    with pytest.raises(LocalProtocolError):
        mgr.send_response(ev.txn, resp(inv, 200), 0.1)


# ---------------------------------------------------------------------------------------
# server non-INVITE


def test_server_non_invite_j_over_udp() -> None:
    mgr = TransactionManager()
    req = make_request("OPTIONS")
    raw = req.serialize()
    (ev,) = mgr.receive(req, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    assert txn.state is S.TRYING
    assert mgr.next_timer() is None  # no automatic 100 for non-INVITE
    assert mgr.receive(parse_message(raw), PEER_UDP, 0.1) == []  # absorbed in Trying
    assert sent(mgr) == []
    r100 = resp(req, 100, tag=None)
    mgr.send_response(txn, r100, 0.2)
    assert state_of(txn) is S.PROCEEDING
    assert mgr.receive(parse_message(raw), PEER_UDP, 0.3) == []
    assert [m for m, _ in sent(mgr)] == [r100, r100]
    ok = resp(req, 200)
    mgr.send_response(txn, ok, 1.0)
    assert state_of(txn) is S.COMPLETED
    sent(mgr)
    assert mgr.receive(parse_message(raw), PEER_UDP, 2.0) == []
    assert [m for m, _ in sent(mgr)] == [ok]
    assert mgr.next_timer() == 33.0
    assert mgr.handle_timers(33.0) == [TransactionTerminated(txn)]
    # a new copy after J is a new transaction
    (ev2,) = mgr.receive(parse_message(raw), PEER_UDP, 34.0)
    assert isinstance(ev2, RequestReceived) and ev2.txn is not txn


def test_server_non_invite_j_zero_over_tcp() -> None:
    mgr = TransactionManager()
    req = make_request("BYE", transport="TCP")
    (ev,) = mgr.receive(req, PEER_TCP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    mgr.send_response(ev.txn, resp(req, 200), 5.0)
    assert mgr.handle_timers(5.0) == [TransactionTerminated(ev.txn)]
    with pytest.raises(LocalProtocolError):
        mgr.send_response(ev.txn, resp(req, 200), 5.0)


# ---------------------------------------------------------------------------------------
# matching


def test_cancel_matches_its_invite_server_transaction() -> None:
    mgr = TransactionManager()
    inv = make_request()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived)
    itxn = ev.txn
    cancel = make_cancel(inv)
    (cev,) = mgr.receive(cancel, PEER_UDP, 1.0)
    assert isinstance(cev, RequestReceived)
    assert cev.txn is not None and cev.txn is not itxn and not cev.txn.is_invite
    assert mgr.find_server_invite(cancel) is itxn
    # a CANCEL with another branch, or from another sent-by, matches nothing
    other = make_cancel(inv)
    other.headers.set("Via", f"SIP/2.0/UDP 198.51.100.7:5062;branch={new_branch()}")
    assert mgr.find_server_invite(other) is None
    moved = make_cancel(inv)
    moved.headers.set("Via", f"SIP/2.0/UDP 203.0.113.9:5062;branch={inv.top_via.branch}")
    assert mgr.find_server_invite(moved) is None
    assert mgr.find_server_invite(make_request("CANCEL").__class__()) is None


def test_same_branch_different_sent_by_is_a_different_transaction() -> None:
    mgr = TransactionManager()
    branch = new_branch()
    a = make_request("OPTIONS", branch=branch)
    b = make_request("OPTIONS", branch=branch, via_host="203.0.113.9:5060")
    (ea,) = mgr.receive(a, PEER_UDP, 0.0)
    (eb,) = mgr.receive(b, ("udp", "203.0.113.9", 5060), 0.0)
    assert isinstance(ea, RequestReceived) and isinstance(eb, RequestReceived)
    assert ea.txn is not None and eb.txn is not None and ea.txn is not eb.txn


def test_rfc2543_request_without_cookie_matches_retransmission_and_ack() -> None:
    mgr = TransactionManager()
    inv = make_request(branch="oldstyle1")
    raw = inv.serialize()
    (ev,) = mgr.receive(inv, PEER_UDP, 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    txn = ev.txn
    assert mgr.receive(parse_message(raw), PEER_UDP, 0.1) == []
    mgr.send_response(txn, resp(inv, 486), 0.2)
    ack = make_request("ACK", branch="oldstyle1", to_tag="b2")
    assert mgr.receive(ack, PEER_UDP, 0.3) == []
    assert txn.state is S.CONFIRMED


def test_ack_for_2xx_with_no_transaction_goes_to_tu() -> None:
    mgr = TransactionManager()
    ack = make_request("ACK", to_tag="b2")
    assert mgr.receive(ack, PEER_UDP, 0.0) == [RequestReceived(None, ack)]
    assert mgr.server_transactions == []


def test_received_and_rport_are_stamped_and_used() -> None:
    mgr = TransactionManager()
    inv = make_request(via_host="alice.example.org:5070")
    inv.headers.set("Via", f"SIP/2.0/UDP alice.example.org:5070;rport;branch={new_branch()}")
    (ev,) = mgr.receive(inv, ("udp", "203.0.113.5", 34567), 0.0)
    assert isinstance(ev, RequestReceived) and ev.txn is not None
    assert ev.txn.dest == ("udp", "203.0.113.5", 34567)
    via = inv.top_via
    assert via.params["received"] == "203.0.113.5"
    assert via.params["rport"] == "34567"
    r = resp(inv, 180)
    assert r.top_via.params["rport"] == "34567"
    assert next(iter(inv.headers))[0] == "Via"  # kept at the top


def test_response_destination_rules() -> None:
    from webgate.proto.sip.message import Via

    v = Via.parse("SIP/2.0/UDP host.example:5070;branch=z9hG4bKx")
    assert response_destination(v, ("udp", "192.0.2.1", 1234)) == ("udp", "192.0.2.1", 5070)
    v = Via.parse("SIP/2.0/UDP host.example;branch=z9hG4bKx")
    assert response_destination(v, ("udp", "192.0.2.1", 1234)) == ("udp", "192.0.2.1", 5060)
    v = Via.parse("SIP/2.0/UDP host.example:5070;rport;branch=z9hG4bKx")
    assert response_destination(v, ("udp", "192.0.2.1", 1234)) == ("udp", "192.0.2.1", 1234)
    v = Via.parse("SIP/2.0/UDP host.example:5070;maddr=239.1.1.1;branch=z9hG4bKx")
    assert response_destination(v, ("udp", "192.0.2.1", 1234)) == ("udp", "192.0.2.1", 5070)  # [sip] honour_maddr off
    assert response_destination(v, ("udp", "192.0.2.1", 1234), honour_maddr=True) == ("udp", "239.1.1.1", 5070)
    v = Via.parse("SIP/2.0/TCP host.example:5070;branch=z9hG4bKx")
    assert response_destination(v, ("TCP", "192.0.2.1", 1234)) == ("tcp", "192.0.2.1", 1234)
    v = Via.parse("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKx")
    assert response_destination(v, ("udp", "2001:db8::9", 1)) == ("udp", "2001:db8::9", 5070)


def test_new_branch_is_unique_and_has_cookie() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 16 for b in branches)


# ---------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.headers.remove("Via"),
        lambda r: r.headers.set("Via", "garbage"),
        lambda r: r.headers.set("Via", "SIP/2.0/UDP 198.51.100.7:5062"),  # no branch
        lambda r: r.headers.remove("CSeq"),
        lambda r: r.headers.set("CSeq", "1 BYE"),  # method mismatch
        lambda r: r.headers.remove("Call-ID"),
        lambda r: r.headers.set("From", "<<<"),
    ],
)
def test_bad_requests_do_not_crash(mutate: object) -> None:
    mgr = TransactionManager()
    req = make_request()
    mutate(req)  # type: ignore[operator]
    ev = mgr.receive(req, PEER_UDP, 0.0)
    # either dropped (and answered 400 when routable) or, for a branch-less Via, matched the
    # RFC 2543 way
    assert len(ev) == 1
    if isinstance(ev[0], MessageDropped):
        for m, dest in sent(mgr):
            assert isinstance(m, SipResponse) and m.status == 400
            assert "\r" not in m.reason and "\n" not in m.reason
            parse_message(m.serialize())
    else:
        assert isinstance(ev[0], RequestReceived)
    mgr.handle_timers(100.0)


def test_bad_cseq_request_is_answered_400() -> None:
    mgr = TransactionManager()
    req = make_request("OPTIONS")
    req.headers.set("CSeq", "1 BYE")
    (ev,) = mgr.receive(req, PEER_UDP, 0.0)
    assert isinstance(ev, MessageDropped)
    ((m, dest),) = sent(mgr)
    assert isinstance(m, SipResponse) and m.status == 400 and dest == ("udp", "198.51.100.7", 5062)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.headers.remove("Via"),
        lambda r: r.headers.set("Via", "nonsense"),
        lambda r: r.headers.set("Via", "SIP/2.0/UDP 192.0.2.1"),
        lambda r: r.headers.remove("CSeq"),
        lambda r: r.headers.set("CSeq", "x INVITE"),
    ],
)
def test_bad_responses_do_not_crash(mutate: object) -> None:
    mgr = TransactionManager()
    inv = make_request()
    txn = mgr.send_request(inv, UDP, 0.0)
    r = resp(inv, 200)
    mutate(r)  # type: ignore[operator]
    (ev,) = mgr.receive(r, UDP, 0.1)
    assert isinstance(ev, MessageDropped)
    assert txn.state is S.CALLING


def test_transport_error_ends_transactions() -> None:
    mgr = TransactionManager()
    inv = make_request(transport="TCP")
    txn = mgr.send_request(inv, TCP, 0.0)
    other = mgr.send_request(make_request("OPTIONS"), UDP, 0.0)
    ev = mgr.transport_failed(TCP, 0.1)
    assert ev == [TransportError(txn), TransactionTerminated(txn)]
    assert txn.state is S.TERMINATED and other.state is S.TRYING
    assert mgr.transport_error(txn, 0.2) == []
    assert mgr.client_transactions == [other]


def test_many_transactions_interleave_on_one_clock() -> None:
    mgr = TransactionManager()
    txns: list[ClientTransaction] = [mgr.send_request(make_request("OPTIONS"), UDP, i * 0.1) for i in range(50)]
    for i, t in enumerate(txns[:25]):
        mgr.receive(resp(t.request, 200), UDP, 1.0 + i * 0.01)
    log = run_until(mgr, 1000.0)
    events = [e for _, evs, _ in log for e in evs]
    timeouts = [e for e in events if isinstance(e, TransactionTimeout)]
    terms = [e for e in events if isinstance(e, TransactionTerminated)]
    assert len(timeouts) == 25 and len(terms) == 50
    assert {e.txn for e in timeouts} == set(txns[25:])
    assert mgr.client_transactions == [] and mgr.next_timer() is None


# ---------------------------------------------------------------------------------------
# back-to-back over a lossy "network", and a random-input fuzz


from hypothesis import given, settings
from hypothesis import strategies as st

A_ADDR: Addr = ("udp", "198.51.100.7", 5062)
B_ADDR: Addr = ("udp", "192.0.2.10", 5060)


@settings(max_examples=150, deadline=None)
@given(
    drops=st.lists(st.booleans(), min_size=0, max_size=40),
    final=st.sampled_from([200, 486, 603]),
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    answer_delay=st.sampled_from([0.0, 0.1, 1.0, 5.0]),
)
def test_back_to_back_lossy_link(drops: list[bool], final: int, method: str, answer_delay: float) -> None:
    """Client and server managers wired through serialize/parse with some datagrams lost:
    the client sees exactly one copy of a non-2xx final (or >= 1 of a 2xx) unless the loss
    outlasts Timer B/F, and both sides end with no transaction and no timer left."""
    a, b = TransactionManager(), TransactionManager()
    drop_iter = iter(drops)
    now = 0.0
    request = make_request(method)
    ctxn = a.send_request(request, B_ADDR, now)
    finals: list[int] = []
    timeouts = 0
    strays = 0  # 2xx delivered with txn None (arrived after Timer B/C ended the transaction)
    answer_at: float | None = None
    stxn: ServerTransaction | None = None
    for _ in range(2000):
        # wire: deliver what each side sent unless the drop pattern eats it
        for src, dst, dst_addr in ((a, b, A_ADDR), (b, a, B_ADDR)):
            for msg, _dest in src.outgoing():
                if next(drop_iter, False):
                    continue
                for ev in dst.receive(parse_message(msg.serialize()), dst_addr, now):
                    if isinstance(ev, RequestReceived) and ev.txn is not None:
                        assert stxn is None or ev.txn is stxn  # retransmissions never reach the TU
                        stxn = ev.txn
                        answer_at = now + answer_delay
                    elif isinstance(ev, ResponseReceived) and ev.response.status >= 200:
                        finals.append(ev.response.status)
                        if ev.txn is None:
                            strays += 1
                        if ev.response.status < 300 and method == "INVITE":
                            # the UAC core ACKs every 2xx copy, statelessly, on a new branch
                            a.send_stateless(make_request("ACK", to_tag="b2"), B_ADDR)
                    elif isinstance(ev, RequestReceived) and ev.txn is None:
                        assert ev.request.method == "ACK"
                    elif isinstance(ev, TransactionTimeout):
                        timeouts += 1
        if stxn is not None and answer_at is not None and now >= answer_at:
            b.send_response(stxn, resp(stxn.request, final), now)
            answer_at = None
        nxt = [t for t in (a.next_timer(), b.next_timer(), answer_at) if t is not None]
        if not nxt and not any((a._out, b._out)):
            break
        if not any((a._out, b._out)):
            now = max(now, min(nxt))
        for mgr in (a, b):
            for ev in mgr.handle_timers(now):
                if isinstance(ev, TransactionTimeout):
                    timeouts += 1
    assert a.client_transactions == [] and b.server_transactions == []
    assert a.next_timer() is None and b.next_timer() is None
    assert ctxn.state is S.TERMINATED
    if timeouts:
        # only a 2xx can still come after the timeout, as a stray
        assert len(finals) == strays and set(finals) <= {200}
    elif final == 200 and method == "INVITE":
        assert finals and set(finals) == {200}
    else:
        assert finals == [final]


_STATUSES = st.sampled_from([100, 180, 183, 200, 202, 401, 486, 487, 500, 603])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["req", "resp", "answer", "tick", "ack_received"]),
            st.sampled_from(["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]),
            st.integers(0, 3),  # branch index
            _STATUSES,
            st.sampled_from([0.0, 0.1, 0.5, 4.0, 40.0]),
            st.sampled_from(["udp", "tcp"]),
        ),
        max_size=40,
    )
)
def test_fuzz_random_event_sequences(steps: list[tuple[str, str, int, int, float, str]]) -> None:
    """Random requests, responses, TU answers and clock jumps: only LocalProtocolError for
    TU misuse, timers never go backwards, terminated transactions are forgotten."""
    mgr = TransactionManager()
    branches = [new_branch() for _ in range(4)]
    sent_reqs: list[SipRequest] = []
    for method, br in (("INVITE", 0), ("OPTIONS", 1)):
        r = make_request(method, branch=branches[br])
        mgr.send_request(r, UDP, 0.0)
        sent_reqs.append(r)
    now = 0.0
    for kind, method, bi, status, dt, transport in steps:
        src: Addr = (transport, "198.51.100.7", 5062)
        if kind == "req":
            r = make_request(method, branch=branches[bi], transport=transport.upper(),
                             to_tag="b2" if method == "ACK" else None)
            for ev in mgr.receive(r, src, now):
                assert not isinstance(ev, ResponseReceived)
        elif kind == "resp":
            base = sent_reqs[bi % len(sent_reqs)]
            mgr.receive(resp(base, status), UDP, now)
        elif kind == "answer":
            for stx in mgr.server_transactions:
                try:
                    mgr.send_response(stx, resp(stx.request, status), now)
                except LocalProtocolError:
                    assert stx.state is not S.TRYING
        elif kind == "ack_received":
            for stx in mgr.server_transactions:
                stx.ack_received()
        else:
            now += dt
            mgr.handle_timers(now)
            nt = mgr.next_timer()
            assert nt is None or nt > now
        for txn in [*mgr.client_transactions, *mgr.server_transactions]:
            assert txn.state is not S.TERMINATED
        mgr.outgoing()
    mgr.handle_timers(now + 1000.0)
    # every transaction ends once time passes, save server ones still waiting for their TU
    for stx in mgr.server_transactions:
        assert stx.state in (S.TRYING, S.PROCEEDING) and stx.last_response is None or (
            stx.last_response is not None and stx.last_response.status < 200
        )
    assert mgr.client_transactions == []

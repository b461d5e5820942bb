"""RFC 3263 server location, sans-IO: the lookups a URI needs, NAPTR service selection, the
RFC 2782 SRV order, and the user agent's failover to the next server on 503 or no answer."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tests.proto.sip_wire import SDP_ANSWER, Wire, of, reply
from webgate.proto.sip.locate import Naptr, Srv, naptr_choices, plan_for, srv_order
from webgate.proto.sip.message import SipRequest, SipURI
from webgate.proto.sip.useragent import Answered, EndCause, Ended

SDP = "Content-Type: application/sdp"


def test_plan_for_each_kind_of_uri() -> None:
    p = plan_for(SipURI.parse("sip:2000@192.0.2.1"))
    assert (p.kind, p.host, p.transport, p.port) == ("ip", "192.0.2.1", "udp", 5060)
    p = plan_for(SipURI.parse("sips:2000@[2001:db8::1]"))
    assert (p.kind, p.transport, p.port) == ("ip", "tls", 5061)
    p = plan_for(SipURI.parse("sip:pbx.example.com:5080"))
    assert (p.kind, p.host, p.transport, p.port) == ("a", "pbx.example.com", "udp", 5080)
    p = plan_for(SipURI.parse("sip:pbx.example.com;transport=tcp"))
    assert (p.kind, p.transport, p.port) == ("srv", "tcp", None)
    assert plan_for(SipURI.parse("sip:PBX.example.com."), "tcp") == plan_for(SipURI.parse("sip:pbx.example.com;transport=tcp"))
    p = plan_for(SipURI.parse("sip:pbx.example.com"))
    assert (p.kind, p.host, p.transport) == ("naptr", "pbx.example.com", None)
    p = plan_for(SipURI.parse("sip:x@pbx.example.com;maddr=192.0.2.9"))
    assert (p.kind, p.host) == ("ip", "192.0.2.9")


def test_naptr_choices_keep_sip_services_we_can_use_in_order() -> None:
    records = [
        Naptr(50, 50, "s", "SIPS+D2T", "_sips._tcp.example.com."),
        Naptr(90, 50, "s", "SIP+D2T", "_sip._tcp.example.com."),
        Naptr(90, 40, "s", "SIP+D2U", "_sip._udp.example.com."),
        Naptr(10, 10, "u", "E2U+sip", "!^.*$!sip:x@example.com!"),  # not a SIP service record
        Naptr(20, 10, "s", "SIP+D2U", "."),
    ]
    assert naptr_choices(records, {"udp", "tcp"}) == [("udp", "_sip._udp.example.com"), ("tcp", "_sip._tcp.example.com")]
    assert naptr_choices(records, {"udp", "tcp", "tls"})[0] == ("tls", "_sips._tcp.example.com")
    assert naptr_choices(records, set()) == []


def test_srv_order_by_priority_then_weight() -> None:
    records = [Srv(20, 0, 5062, "c.example.com."), Srv(10, 60, 5060, "a.example.com."), Srv(10, 40, 5061, "b.example.com."),
               Srv(5, 0, 5060, ".")]
    firsts: dict[str, int] = {}
    rng = random.Random(1)
    for _ in range(2000):
        order = srv_order(records, rng.randrange)
        assert [r.priority for r in order] == [10, 10, 20]
        firsts[order[0].target] = firsts.get(order[0].target, 0) + 1
    # weight 60 vs 40: picked first about 60 % of the time
    assert 0.54 < firsts["a.example.com."] / 2000 < 0.66


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(1, 65535)), max_size=12))
def test_srv_order_is_a_permutation(items: list[tuple[int, int, int]]) -> None:
    records = [Srv(p, w, port, f"h{i}.example.com") for i, (p, w, port) in enumerate(items)]
    order = srv_order(records, random.Random(7).randrange)
    assert sorted(order, key=id) == sorted(records, key=id)
    assert [r.priority for r in order] == sorted(r.priority for r in records)


# --- failover in the user agent ---------------------------------------------------------------

DESTS = [("udp", "127.0.0.1", 5099), ("udp", "127.0.0.1", 5098)]


def test_503_fails_over_to_the_next_server_with_a_new_branch() -> None:
    w = Wire()
    s = w.invite(destinations=DESTS)
    (inv,) = w.take()
    assert s.dest == DESTS[0]
    w.feed(reply(inv, 503, "Service Unavailable", to_tag="busy1"))
    msgs = w.take()
    inv2 = next(m for m in msgs if isinstance(m, SipRequest) and m.method == "INVITE")
    assert s.dest == DESTS[1]
    assert inv2.call_id == inv.call_id and inv2.cseq.number == inv.cseq.number
    assert inv2.top_via.branch != inv.top_via.branch
    evs = w.feed(reply(inv2, 200, "OK", SDP), SDP_ANSWER)
    assert of(evs, Answered) and not of(w.events, Ended)


def test_no_answer_fails_over_and_the_last_failure_ends_the_call() -> None:
    w = Wire(t1=0.1)
    s = w.invite(destinations=DESTS)
    w.advance(6.5)  # Timer B (64*T1): the first server never answered
    assert s.dest == DESTS[1] and not of(w.events, Ended)
    invites = {m.top_via.branch for m in w.requests("INVITE")}
    assert len(invites) == 2
    inv2 = [m for m in w.requests("INVITE") if m.top_via.branch != w.requests("INVITE")[0].top_via.branch][0]
    (end,) = of(w.feed(reply(inv2, 503, "Service Unavailable")), Ended)
    assert (end.end.cause, end.end.status) == (EndCause.REJECTED, 503)


def test_no_failover_once_the_server_rang() -> None:
    w = Wire()
    w.invite(destinations=DESTS)
    (inv,) = w.take()
    w.feed(reply(inv, 180, "Ringing"))
    (end,) = of(w.feed(reply(inv, 503, "Service Unavailable")), Ended)
    assert end.end.status == 503
    assert len(w.requests("INVITE")) == 1

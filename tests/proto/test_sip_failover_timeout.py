"""RFC 3263 §4.3 failover, sans-IO, beyond 503 and Timer B: ``failover_timeout`` (a located
server that sends nothing back within it is given up, its transaction abandoned, and the INVITE
or REGISTER goes to the next one), and REGISTER toward located registrars (503, no answer)."""

from __future__ import annotations

from tests.proto.sip_wire import SDP_ANSWER, Wire, of, reply
from webgate.proto.sip.message import SipURI
from webgate.proto.sip.useragent import Answered, Ended, Registered, RegistrationFailed

SDP = "Content-Type: application/sdp"
DESTS = [("udp", "127.0.0.1", 5099), ("udp", "127.0.0.1", 5098)]


def branches(w: Wire, method: str) -> list[str]:
    out: list[str] = []
    for m in w.requests(method):
        b = m.top_via.branch or ""
        if b not in out:
            out.append(b)
    return out


def test_a_silent_server_is_given_up_after_the_failover_timeout() -> None:
    w = Wire(failover_timeout=2.0)  # T1 = 500 ms: Timer B would be 32 s
    s = w.invite(destinations=DESTS)
    w.advance(1.9)
    assert s.dest == DESTS[0] and len(branches(w, "INVITE")) == 1
    w.advance(0.2)
    assert s.dest == DESTS[1]
    first, second = branches(w, "INVITE")
    sent_to_first = sum(1 for m in w.requests("INVITE") if m.top_via.branch == first)
    w.advance(3.0)
    assert sum(1 for m in w.requests("INVITE") if m.top_via.branch == first) == sent_to_first  # abandoned
    assert not w.requests("CANCEL")  # nothing provisional came back: no CANCEL (RFC 3261 §9.1)
    inv2 = next(m for m in w.requests("INVITE") if m.top_via.branch == second)
    evs = w.feed(reply(inv2, 200, "OK", SDP), SDP_ANSWER)
    assert of(evs, Answered) and not of(w.events, Ended)


def test_a_server_that_sent_100_is_not_given_up() -> None:
    w = Wire(failover_timeout=2.0)
    s = w.invite(destinations=DESTS)
    (inv,) = w.take()
    w.feed(reply(inv, 100, "Trying", to_tag=None, contact=False))
    w.advance(5.0)
    assert s.dest == DESTS[0] and len(branches(w, "INVITE")) == 1


def test_zero_waits_for_timer_b() -> None:
    w = Wire(failover_timeout=0.0)
    s = w.invite(destinations=DESTS)
    w.advance(10.0)
    assert s.dest == DESTS[0] and len(branches(w, "INVITE")) == 1


def test_the_last_server_is_not_given_up_early() -> None:
    w = Wire(t1=0.1, failover_timeout=1.0)
    s = w.invite(destinations=DESTS)
    w.advance(1.1)
    assert s.dest == DESTS[1]
    w.advance(3.0)  # no third server: the second keeps its whole Timer B (6.4 s)
    assert not of(w.events, Ended)
    w.advance(4.0)
    assert of(w.events, Ended)


def test_a_late_2xx_from_the_abandoned_server_is_acked_and_ended() -> None:
    w = Wire(failover_timeout=1.0)
    s = w.invite(destinations=DESTS)
    (inv,) = w.take()
    w.advance(1.1)
    assert s.dest == DESTS[1]
    w.feed(reply(inv, 200, "OK", SDP, to_tag="late1"), SDP_ANSWER)
    (ack,) = w.requests("ACK")
    (bye,) = w.requests("BYE")
    assert ";tag=late1" in (ack.headers.get("To") or "") and ";tag=late1" in (bye.headers.get("To") or "")
    assert not of(w.events, Answered) and not of(w.events, Ended)
    assert s.dialog is None and s.ack is None  # the session's own dialog is still to come
    inv2 = w.requests("INVITE")[-1]  # the next server still rings and answers: the call is its
    w.feed(reply(inv2, 180, "Ringing", to_tag="second"))
    evs = w.feed(reply(inv2, 200, "OK", SDP, to_tag="second"), SDP_ANSWER)
    assert of(evs, Answered) and s.dialog is not None and s.dialog.remote_tag == "second"
    assert ";tag=second" in (w.requests("ACK")[-1].headers.get("To") or "")


# --- REGISTER toward located registrars --------------------------------------------------------

def register(w: Wire, **kw: object) -> object:
    reg = w.ua.register(SipURI.parse("sip:gw@pbx.test"), SipURI.parse("sip:pbx.test"), w.now, destinations=DESTS, **kw)  # type: ignore[arg-type]
    w.act()
    return reg


def test_register_fails_over_on_503() -> None:
    w = Wire()
    reg = register(w)
    (r1,) = w.take()
    assert reg.destinations[reg.dest_index] == DESTS[0]  # type: ignore[attr-defined]
    w.feed(reply(r1, 503, "Service Unavailable"))
    (r2,) = w.take()
    assert r2.method == "REGISTER" and reg.dest_index == 1  # type: ignore[attr-defined]
    assert r2.call_id == r1.call_id and r2.cseq.number == r1.cseq.number + 1
    evs = w.feed(reply(r2, 200, "OK", "Expires: 60"))
    assert of(evs, Registered) and not of(w.events, RegistrationFailed)
    w.advance(50.0)  # the refresh stays on the server that answered
    assert reg.dest_index == 1 and len(branches(w, "REGISTER")) == 3  # type: ignore[attr-defined]


def test_register_fails_over_on_no_answer_and_starts_again_after_the_last() -> None:
    w = Wire(t1=0.1, failover_timeout=1.0)
    reg = register(w)
    w.advance(1.1)  # the failover timeout: the second server
    assert reg.dest_index == 1 and len(branches(w, "REGISTER")) == 2  # type: ignore[attr-defined]
    w.advance(6.5)  # the last one waits for Timer F
    (failed,) = of(w.events, RegistrationFailed)
    assert failed.status == 408 and reg.dest_index == 0  # type: ignore[attr-defined]


def test_new_destinations_keep_the_server_in_use() -> None:
    w = Wire()
    reg = register(w)
    (r1,) = w.take()
    w.feed(reply(r1, 503, "Service Unavailable"))
    assert reg.dest_index == 1  # type: ignore[attr-defined]
    w.ua.set_register_destinations(reg, [("udp", "127.0.0.1", 5097), DESTS[1]])  # type: ignore[arg-type]
    assert reg.destinations[reg.dest_index] == DESTS[1]  # type: ignore[attr-defined]
    w.ua.set_register_destinations(reg, [("udp", "127.0.0.1", 5097), ("tls", "127.0.0.1", 5061)])  # type: ignore[arg-type]
    assert reg.destinations == [("udp", "127.0.0.1", 5097)] and reg.dest_index == 0  # type: ignore[attr-defined]

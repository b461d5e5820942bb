"""Session timers (RFC 4028) in the sans-IO user agent: both refresher roles, refresh by UPDATE
and by re-INVITE, 422 and its retry, a failed refresh and a missing one ending the call."""

from __future__ import annotations

from typing import Any

from tests.proto.sip.test_useragent import Net, of as of_side
from tests.proto.sip_wire import SDP_ANSWER, SDP_OFFER, Caller, Wire, of, reply
from webgate.proto.sip.extensions import option_tags, session_expires_of
from webgate.proto.sip.message import SipRequest, SipResponse, SipURI
from webgate.proto.sip.useragent import Answered, EndCause, Ended, IncomingCall, OfferReceived

SDP = "Content-Type: application/sdp"


def responses(msgs: list[Any], status: int | None = None) -> list[SipResponse]:
    return [m for m in msgs if isinstance(m, SipResponse) and (status is None or m.status == status)]


def requests(msgs: list[Any], method: str | None = None) -> list[SipRequest]:
    """The requests among ``msgs`` (UDP retransmissions left out)."""
    out: list[SipRequest] = []
    for m in msgs:
        if isinstance(m, SipRequest) and (method is None or m.method == method):
            if not any(o.method == m.method and o.top_via.branch == m.top_via.branch for o in out):
                out.append(m)
    return out


# --- two of our own cores: we ask, the far end (also us) answers, the caller refreshes ------

def test_both_cores_negotiate_and_the_caller_refreshes_by_update() -> None:
    net = Net()
    a = net.a.invite(SipURI.parse("sip:x@127.0.0.1:5070"), b"v=0\r\n", net.now, session_expires=120)
    inc = of_side(net.pump(), IncomingCall, "B")[0]
    se = session_expires_of(inc.request)
    assert se is not None and se.interval == 120 and "timer" in option_tags(inc.request, "Supported")
    assert inc.request.headers.get("Min-SE") == "90"
    inc.session.answer(b"v=0\r\n")
    net.pump()
    b = inc.session
    assert a.timer.running and a.timer.local_refresher and a.timer.interval == 120
    assert b.timer.running and not b.timer.local_refresher
    updates_before = [line for line in net.log if line.startswith("UPDATE ")]
    net.advance(61.0, 0.5)
    updates = [line for line in net.log if line.startswith("UPDATE ")]
    assert len(updates) == len(updates_before) + 1, net.log[-6:]
    # refreshed at 60 s: both timers restarted then; the callee would hang up at 60 + 88 s without it
    assert abs(a.timer.started_at - 60.0) < 0.6 and abs(b.timer.started_at - 60.0) < 0.6
    net.advance(200.0, 0.5)
    assert not of_side(net.events, Ended)
    assert len([line for line in net.log if line.startswith("UPDATE ")]) >= 4


def test_without_session_expires_no_timer_header_and_none_runs() -> None:
    net = Net()
    net.a.invite(SipURI.parse("sip:x@127.0.0.1:5070"), b"v=0\r\n", net.now)
    inc = of_side(net.pump(), IncomingCall, "B")[0]
    assert inc.request.headers.get("Session-Expires") is None
    assert "timer" not in option_tags(inc.request, "Supported")
    inc.session.answer(b"v=0\r\n")
    net.pump()
    assert not inc.session.timer.running
    net.advance(100.0, 1.0)
    assert not [line for line in net.log if line.startswith(("UPDATE", "BYE"))]


# --- we are the UAC ---------------------------------------------------------------------------

def test_uac_422_retries_with_the_far_ends_min_se() -> None:
    w = Wire()
    w.invite(session_expires=100)
    (inv,) = w.take()
    assert inv.headers.get("Session-Expires") == "100"
    w.feed(reply(inv, 422, "Session Interval Too Small", "Min-SE: 600"))
    ack, inv2 = w.take()
    assert ack.method == "ACK" and inv2.method == "INVITE"  # type: ignore[union-attr]
    assert inv2.cseq.number == 2 and inv2.call_id == inv.call_id
    assert inv2.headers.get("Session-Expires") == "600" and inv2.headers.get("Min-SE") == "600"
    evs = w.feed(reply(inv2, 200, "OK", "Session-Expires: 600;refresher=uac", "Require: timer", SDP), SDP_ANSWER)
    assert of(evs, Answered)
    s = of(evs, Answered)[0].session
    assert s.timer.interval == 600 and s.timer.local_refresher


def test_uac_second_422_ends_the_call() -> None:
    w = Wire()
    w.invite(session_expires=100)
    (inv,) = w.take()
    w.feed(reply(inv, 422, "Session Interval Too Small", "Min-SE: 200"))
    inv2 = requests(w.take(), "INVITE")[0]
    w.feed(reply(inv2, 422, "Session Interval Too Small", "Min-SE: 400"))
    inv3 = requests(w.take(), "INVITE")[0]
    evs = w.feed(reply(inv3, 422, "Session Interval Too Small", "Min-SE: 800"))
    (end,) = of(evs, Ended)
    assert (end.end.cause, end.end.status) == (EndCause.REJECTED, 422)


def answered_uac(w: Wire, se: str, *extra: str) -> Any:
    w.invite(session_expires=1800)
    (inv,) = w.take()
    evs = w.feed(reply(inv, 200, "OK", f"Session-Expires: {se}", *extra, SDP), SDP_ANSWER)
    w.take()  # the ACK
    return of(evs, Answered)[0].session


def test_uac_refreshes_by_reinvite_when_update_is_not_allowed_and_a_failed_refresh_ends_the_call() -> None:
    w = Wire()
    s = answered_uac(w, "300;refresher=uac", "Allow: INVITE, ACK, BYE, CANCEL")
    w.advance(150.5, 0.5)
    (ref,) = requests(w.take(), "INVITE")
    assert ref.to.tag == "peer1" and ref.body == s.local_sdp
    assert ref.headers.get("Session-Expires") == "300;refresher=uac"
    w.feed(reply(ref, 200, "OK", "Session-Expires: 300;refresher=uac", SDP), SDP_ANSWER)
    assert [m.method for m in requests(w.take())] == ["ACK"]
    assert abs(s.timer.started_at - 150.0) < 0.6
    w.advance(150.5, 0.5)
    (ref2,) = requests(w.take(), "INVITE")
    evs = w.feed(reply(ref2, 503, "Service Unavailable"))
    (end,) = of(evs, Ended)
    assert end.end.cause is EndCause.SESSION_TIMER
    assert [m.method for m in requests(w.take())] == ["ACK", "BYE"]


def test_uac_refresh_that_times_out_ends_the_call_with_bye() -> None:
    w = Wire()
    answered_uac(w, "120;refresher=uac", "Allow: INVITE, ACK, BYE, UPDATE")
    w.advance(60.5, 0.5)
    (upd,) = requests(w.take(), "UPDATE")
    assert not upd.body and upd.headers.get("Session-Expires") == "120;refresher=uac"
    evs = w.advance(40.0, 0.5)  # nobody answers: Timer F (32 s)
    (end,) = of(evs, Ended)
    assert end.end.cause is EndCause.SESSION_TIMER
    assert requests(w.take(), "BYE")


def test_uac_update_refused_with_501_falls_back_to_reinvite() -> None:
    w = Wire()
    answered_uac(w, "120;refresher=uac", "Allow: INVITE, ACK, BYE, UPDATE")
    w.advance(60.5, 0.5)
    (upd,) = requests(w.take(), "UPDATE")
    w.feed(reply(upd, 501, "Not Implemented"))
    (ref,) = requests(w.take(), "INVITE")
    evs = w.feed(reply(ref, 200, "OK", "Session-Expires: 120;refresher=uac", SDP), SDP_ANSWER)
    assert not of(evs, Ended)


def test_uac_refresh_422_raises_the_interval_and_491_retries_later() -> None:
    w = Wire()
    s = answered_uac(w, "120;refresher=uac", "Allow: INVITE, ACK, BYE, UPDATE")
    w.advance(60.5, 0.5)
    (upd,) = requests(w.take(), "UPDATE")
    w.feed(reply(upd, 422, "Session Interval Too Small", "Min-SE: 240"))
    (upd2,) = requests(w.take(), "UPDATE")
    assert upd2.headers.get("Session-Expires") == "240;refresher=uac" and upd2.headers.get("Min-SE") == "240"
    w.feed(reply(upd2, 491, "Request Pending"))
    assert not requests(w.take(), "UPDATE")
    w.advance(4.5, 0.5)
    (upd3,) = requests(w.take(), "UPDATE")
    w.feed(reply(upd3, 200, "OK", "Session-Expires: 240;refresher=uac"))
    assert s.timer.interval == 240 and not of(w.events, Ended)


def test_uac_when_the_far_end_refreshes_and_stops_we_hang_up() -> None:
    w = Wire()
    s = answered_uac(w, "150;refresher=uas")
    assert s.timer.running and not s.timer.local_refresher
    # the far end refreshes at 70 s with an UPDATE: the deadline moves
    w.advance(70.0, 0.5)
    upd = "\n".join([
        "UPDATE sip:x@127.0.0.1:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-upd-1",
        "From: <sip:2000@127.0.0.1:5099>;tag=peer1",
        f"To: {s.dialog.local_uri};tag={s.local_tag}",
        f"Call-ID: {s.call_id}",
        "CSeq: 10 UPDATE",
        "Contact: <sip:peer@127.0.0.1:5099>",
        "Supported: timer",
        "Session-Expires: 150;refresher=uac",
    ])
    assert not of(w.feed(upd), OfferReceived)  # no offer: answered by the user agent itself
    (ok,) = responses(w.take(), 200)
    assert ok.headers.get("Session-Expires") == "150;refresher=uac" and "timer" in option_tags(ok, "Require")
    assert abs(s.timer.started_at - 70.0) < 0.01
    # nothing more: the BYE goes at 70 + 150 - 32 = 188 s
    evs = w.advance(117.0, 0.5)
    assert not of(evs, Ended)
    evs = w.advance(2.0, 0.5)
    (end,) = of(evs, Ended)
    assert end.end.cause is EndCause.SESSION_TIMER
    assert requests(w.take(), "BYE")


def test_uac_2xx_without_session_expires_runs_no_timer() -> None:
    w = Wire()
    w.invite(session_expires=1800)
    (inv,) = w.take()
    evs = w.feed(reply(inv, 200, "OK", SDP), SDP_ANSWER)
    assert not of(evs, Answered)[0].session.timer.running
    w.advance(2000.0, 5.0)
    assert not requests(w.take(), "BYE") and not of(w.events, Ended)


# --- we are the UAS ---------------------------------------------------------------------------

def incoming(w: Wire, c: Caller, *extra: str) -> Any:
    evs = w.feed(c.invite(*extra, SDP), SDP_OFFER)
    return of(evs, IncomingCall)


def test_uas_too_small_session_expires_gets_422_with_our_min_se() -> None:
    w = Wire(min_se=120)
    c = Caller()
    assert not incoming(w, c, "Supported: timer", "Session-Expires: 100")
    (r,) = [m for m in responses(w.take()) if m.status != 100]
    assert r.status == 422 and r.headers.get("Min-SE") == "120"


def test_uas_refresher_uas_refreshes_by_reinvite_without_update() -> None:
    w = Wire()
    c = Caller()
    (inc,) = incoming(w, c, "Session-Expires: 100;refresher=uas", "Allow: INVITE, ACK, BYE")
    inc.session.answer(SDP_ANSWER)
    w.act()
    (ok,) = responses(w.take(), 200)
    assert ok.headers.get("Session-Expires") == "100;refresher=uas"
    assert "timer" not in option_tags(ok, "Require")
    w.feed(c.ack(ok))
    w.advance(50.5, 0.5)
    (ref,) = requests(w.take(), "INVITE")
    assert ref.body == SDP_ANSWER and ref.headers.get("Session-Expires") == "100;refresher=uac"
    w.feed(reply(ref, 200, "OK", "Session-Expires: 100;refresher=uac", SDP, to_tag=None), SDP_OFFER)
    assert [m.method for m in requests(w.take())] == ["ACK"]
    assert not of(w.events, Ended)


def test_uas_without_timer_support_at_the_caller_we_refresh() -> None:
    w = Wire()
    c = Caller()
    (inc,) = incoming(w, c, "Session-Expires: 200")  # a proxy added it; the caller has no Supported: timer
    inc.session.answer(SDP_ANSWER)
    w.act()
    (ok,) = responses(w.take(), 200)
    assert ok.headers.get("Session-Expires") == "200;refresher=uas"
    assert inc.session.timer.local_refresher


def test_uas_caller_refreshes_by_reinvite_and_stops_then_we_hang_up() -> None:
    w = Wire()
    c = Caller()
    (inc,) = incoming(w, c, "Supported: timer", "Session-Expires: 90")
    s = inc.session
    s.answer(SDP_ANSWER)
    w.act()
    (ok,) = responses(w.take(), 200)
    assert ok.headers.get("Session-Expires") == "90;refresher=uac" and "timer" in option_tags(ok, "Require")
    w.feed(c.ack(ok))
    # a refresh re-INVITE with the same SDP at 40 s
    w.advance(40.0, 0.5)
    evs = w.feed(c.request("INVITE", "Supported: timer", "Session-Expires: 90;refresher=uac", SDP), SDP_OFFER)
    (offer,) = of(evs, OfferReceived)
    offer.session.answer_offer(SDP_ANSWER)
    w.act()
    (ok2,) = responses(w.take(), 200)
    assert ok2.headers.get("Session-Expires") == "90;refresher=uac"
    w.feed(c.ack(ok2))
    # no further refresh: BYE at 40 + 90 - 30 = 100 s
    assert not of(w.advance(59.0, 0.5), Ended)
    (end,) = of(w.advance(1.5, 0.5), Ended)
    assert end.end.cause is EndCause.SESSION_TIMER


def test_uas_refresh_without_session_expires_stops_the_timer() -> None:
    w = Wire()
    c = Caller()
    (inc,) = incoming(w, c, "Supported: timer", "Session-Expires: 90")
    inc.session.answer(SDP_ANSWER)
    w.act()
    (ok,) = responses(w.take(), 200)
    w.feed(c.ack(ok))
    w.advance(30.0, 0.5)
    w.feed(c.request("UPDATE"))
    (ok2,) = responses(w.take(), 200)
    assert ok2.headers.get("Session-Expires") is None
    assert not inc.session.timer.running
    w.advance(200.0, 1.0)
    assert not of(w.events, Ended)


def test_uas_refresh_request_below_min_se_gets_422() -> None:
    w = Wire()
    c = Caller()
    (inc,) = incoming(w, c, "Supported: timer", "Session-Expires: 300")
    inc.session.answer(SDP_ANSWER)
    w.act()
    (ok,) = responses(w.take(), 200)
    w.feed(c.ack(ok))
    w.feed(c.request("UPDATE", "Session-Expires: 30"))
    (r,) = responses(w.take())
    assert r.status == 422 and r.headers.get("Min-SE") == "90"
    assert inc.session.timer.interval == 300

"""UPDATE mid-dialog (RFC 3311), both directions, and delayed offer (an INVITE or re-INVITE
without SDP: our offer goes in the 2xx, the answer comes in the ACK) in the sans-IO user agent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.proto.sip.test_reinvite import HELD, HOLD, up
from tests.proto.sip.test_useragent import Net, of as of_side
from tests.proto.sip_wire import SDP_ANSWER, SDP_OFFER, Caller, Wire, of
from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.message import SipRequest, SipResponse
from webgate.proto.sip.useragent import (
    AckAnswer,
    Confirmed,
    IncomingCall,
    OfferReceived,
    ReofferAnswered,
    ReofferFailed,
    SessionState,
)

SDP = "Content-Type: application/sdp"


def responses(msgs: list[Any], status: int | None = None) -> list[SipResponse]:
    return [m for m in msgs if isinstance(m, SipResponse) and (status is None or m.status == status)]


@pytest.mark.parametrize("sender", ["caller", "callee"])
def test_update_offer_is_answered_without_ack(sender: str) -> None:
    net = Net()
    a, b = up(net)
    us, side, our_side = (a, "B", "A") if sender == "caller" else (b, "A", "B")
    us.update(HOLD)
    assert us.reinvite_pending
    offer = of_side(net.pump(), OfferReceived, side)[0]
    assert (offer.method, offer.offer) == ("UPDATE", HOLD)
    offer.session.answer_offer(HELD)
    evs = net.pump()
    (ans,) = of_side(evs, ReofferAnswered, our_side)
    assert (ans.sdp, ans.method) == (HELD, "UPDATE")
    assert not us.reinvite_pending and us.remote_sdp == HELD and us.local_sdp == HOLD
    assert any(line.startswith("UPDATE ") for line in net.log)
    assert not [line for line in net.log if line.startswith("ACK ")][1:]  # only the INVITE's ACK


def test_update_refused_keeps_the_call_and_glare_gets_491() -> None:
    net = Net()
    a, b = up(net)
    a.update(HOLD)
    of_side(net.pump(), OfferReceived, "B")[0].session.answer_offer(None, 488)
    (f,) = of_side(net.pump(), ReofferFailed, "A")
    assert (f.status, f.method) == (488, "UPDATE")
    assert a.state is SessionState.CONFIRMED
    a.update(HOLD)
    b.update(HOLD)
    evs = net.pump()
    assert [x.status for x in of_side(evs, ReofferFailed)] == [491, 491]
    assert not a.reinvite_pending and not b.reinvite_pending
    a.update(HOLD)
    with pytest.raises(LocalProtocolError):
        a.reinvite(HOLD)  # one offer of ours at a time


def test_incoming_update_without_sdp_is_answered_by_the_user_agent() -> None:
    w = Wire()
    c = Caller()
    (inc,) = of(w.feed(c.invite(SDP), SDP_OFFER), IncomingCall)
    inc.session.answer(SDP_ANSWER)
    w.act()
    (ok,) = responses(w.take(), 200)
    w.feed(c.ack(ok))
    evs = w.feed(c.request("UPDATE", "Contact: <sip:peer@127.0.0.1:5099;moved>"))
    assert not of(evs, OfferReceived)
    (r,) = responses(w.take())
    assert r.status == 200 and not r.body
    # a target refresh: the next request goes to the new Contact
    assert inc.session.dialog.remote_target.params.get("moved", "") is None


def test_early_update_with_an_offer_before_our_answer_gets_500() -> None:
    w = Wire()
    c = Caller()
    (inc,) = of(w.feed(c.invite(SDP), SDP_OFFER), IncomingCall)
    inc.session.ring()
    w.act()
    (r180,) = responses(w.take(), 180)
    c.to_tag = r180.to.tag
    evs = w.feed(c.request("UPDATE", SDP), SDP_OFFER)
    assert not of(evs, OfferReceived)
    (r,) = responses(w.take())
    assert r.status == 500 and r.headers.get("Retry-After")


# --- delayed offer --------------------------------------------------------------------------

def test_invite_without_sdp_gets_our_offer_in_the_200_and_the_answer_from_the_ack() -> None:
    w = Wire()
    c = Caller()
    (inc,) = of(w.feed(c.invite()), IncomingCall)
    assert inc.offer is None
    inc.session.ring()
    inc.session.answer(SDP_OFFER)  # our offer
    w.act()
    (ok,) = responses(w.take(), 200)
    assert ok.body == SDP_OFFER and ok.headers.get("Content-Type") == "application/sdp"
    evs = w.feed(c.ack(ok, SDP), SDP_ANSWER)
    (conf,) = of(evs, Confirmed)
    assert conf.sdp == SDP_ANSWER and inc.session.remote_sdp == SDP_ANSWER


def test_invite_with_sdp_confirmed_carries_no_answer() -> None:
    w = Wire()
    c = Caller()
    (inc,) = of(w.feed(c.invite(SDP), SDP_OFFER), IncomingCall)
    inc.session.answer(SDP_ANSWER)
    w.act()
    (ok,) = responses(w.take(), 200)
    assert of(w.feed(c.ack(ok)), Confirmed)[0].sdp is None


def test_reinvite_without_sdp_our_offer_in_200_answer_in_ack() -> None:
    w = Wire()
    c = Caller()
    (inc,) = of(w.feed(c.invite(SDP), SDP_OFFER), IncomingCall)
    inc.session.answer(SDP_ANSWER)
    w.act()
    (ok,) = responses(w.take(), 200)
    w.feed(c.ack(ok))
    evs = w.feed(c.request("INVITE"))
    (offer,) = of(evs, OfferReceived)
    assert offer.offer is None and offer.method == "INVITE"
    reoffer = SDP_ANSWER.replace(b"1 1 IN", b"1 2 IN")
    offer.session.answer_offer(reoffer)
    w.act()
    (ok2,) = responses(w.take(), 200)
    assert ok2.body == reoffer
    # a retransmitted 200 is not a second answer; the ACK's SDP is
    evs = w.feed(c.ack(ok2, SDP), SDP_OFFER)
    (ack_answer,) = of(evs, AckAnswer)
    assert ack_answer.sdp == SDP_OFFER
    assert not of(w.feed(c.ack(ok2, SDP), SDP_OFFER), AckAnswer)  # a retransmitted ACK


def test_two_cores_reinvite_without_sdp() -> None:
    net = Net()
    a, b = up(net)
    # b sends a re-INVITE without an offer, by hand through the dialog
    d = b.dialog
    req: SipRequest = d.create_request("INVITE", net.b._via("udp"), net.b._contact("udp"))
    _, _, target = d.next_request_target()
    net.b.tm.send_request(req, net.b._in_dialog_dest(b, target), net.now)
    offer = of_side(net.pump(), OfferReceived, "A")[0]
    assert offer.offer is None
    offer.session.answer_offer(b"v=0\r\nfresh offer\r\n")
    net.pump()
    assert any(line.startswith("SIP/2.0 200") for line in net.log)

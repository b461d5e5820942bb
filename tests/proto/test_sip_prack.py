"""Reliable provisional responses (RFC 3262, 100rel/PRACK) in the sans-IO user agent, both
roles, driven with the bytes a foreign peer sends."""

from __future__ import annotations

from tests.proto.sip_wire import SDP_ANSWER, SDP_OFFER, Caller, Wire, of, reply
from webgate.proto.sip.extensions import option_tags
from webgate.proto.sip.message import SipResponse
from webgate.proto.sip.useragent import Answered, Confirmed, EndCause, Ended, IncomingCall, Progress

SDP = "Content-Type: application/sdp"


# --- UAC: we call, the far end sends reliable 18x ----------------------------------------

def test_uac_offers_100rel_and_pracks_a_reliable_183_with_its_answer() -> None:
    w = Wire()
    s = w.invite()
    (inv,) = w.take()
    assert "100rel" in option_tags(inv, "Supported")
    evs = w.feed(reply(inv, 183, "Session Progress", "Require: 100rel", "RSeq: 7", SDP), SDP_ANSWER)
    (p,) = of(evs, Progress)
    assert (p.status, p.sdp) == (183, SDP_ANSWER)
    (prack,) = w.take()
    assert prack.method == "PRACK"
    assert prack.headers.get("RAck") == "7 1 INVITE"
    assert prack.cseq.number == 2 and prack.to.tag == "peer1"
    # the peer did not see the PRACK yet: its retransmission is neither reported nor PRACKed again
    assert not of(w.feed(reply(inv, 183, "Session Progress", "Require: 100rel", "RSeq: 7", SDP), SDP_ANSWER), Progress)
    w.feed(reply(prack, 200, "OK"))
    # a second reliable provisional (RSeq + 1) is PRACKed in turn; one out of order is not
    assert of(w.feed(reply(inv, 180, "Ringing", "Require: 100rel", "RSeq: 8")), Progress)
    (prack2,) = w.take()
    assert prack2.headers.get("RAck") == "8 1 INVITE" and prack2.cseq.number == 3
    assert not of(w.feed(reply(inv, 180, "Ringing", "Require: 100rel", "RSeq: 10")), Progress)
    assert not w.take()
    w.feed(reply(prack2, 200, "OK"))
    evs = w.feed(reply(inv, 200, "OK", SDP), SDP_ANSWER)
    assert of(evs, Answered)[0].sdp == SDP_ANSWER
    (ack,) = w.take()
    assert ack.method == "ACK" and ack.cseq.number == 1
    # the confirmed dialog's CSeq continues after the PRACKs
    w.ua.set_time(w.now)
    s.hangup()
    w.act()
    (bye,) = w.take()
    assert bye.method == "BYE" and bye.cseq.number == 4


def test_uac_reliable_183_answer_is_kept_when_the_200_has_no_sdp() -> None:
    w = Wire()
    w.invite()
    (inv,) = w.take()
    w.feed(reply(inv, 183, "Session Progress", "Require: 100rel", "RSeq: 1", SDP), SDP_ANSWER)
    (prack,) = w.take()
    w.feed(reply(prack, 200, "OK"))
    assert of(w.feed(reply(inv, 200, "OK")), Answered)[0].sdp == SDP_ANSWER


def test_uac_without_100rel_support_still_pracks_what_the_far_end_requires() -> None:
    w = Wire(support_100rel=False)
    w.invite()
    (inv,) = w.take()
    assert "100rel" not in option_tags(inv, "Supported")
    w.feed(reply(inv, 180, "Ringing", "Require: 100rel", "RSeq: 1"))
    assert [m.method for m in w.take() if not isinstance(m, SipResponse)] == ["PRACK"]


def test_uac_unreliable_provisionals_get_no_prack() -> None:
    w = Wire()
    w.invite()
    (inv,) = w.take()
    assert of(w.feed(reply(inv, 180, "Ringing")), Progress)
    assert of(w.feed(reply(inv, 183, "Session Progress", SDP), SDP_ANSWER), Progress)
    assert not w.take()


# --- UAS: the far end calls us and requires 100rel -----------------------------------------

def incoming(w: Wire, c: Caller, *extra: str, body: bytes = SDP_OFFER) -> IncomingCall:
    (inc,) = of(w.feed(c.invite(*extra, SDP), body), IncomingCall)
    return inc  # type: ignore[no-any-return]


def test_uas_sends_reliable_180_retransmits_until_prack_then_answers() -> None:
    w = Wire()
    c = Caller()
    inc = incoming(w, c, "Require: 100rel", "Supported: 100rel")
    inc.session.ring()
    w.act()
    (r180,) = [m for m in w.take() if isinstance(m, SipResponse)]
    assert r180.status == 180 and "100rel" in option_tags(r180, "Require")
    rseq = int(r180.headers.get("RSeq") or 0)
    assert rseq > 0
    w.advance(1.6)  # T1 = 0.5: again at 0.5 and 1.5
    assert [m.status for m in w.take() if isinstance(m, SipResponse)] == [180, 180]
    c.to_tag = r180.to.tag
    w.feed(c.request("PRACK", f"RAck: {rseq} 1 INVITE"))
    assert [(m.status, m.cseq.method) for m in w.take() if isinstance(m, SipResponse)] == [(200, "PRACK")]
    w.advance(5.0)
    assert not [m for m in w.take() if isinstance(m, SipResponse) and m.status == 180]
    inc.session.answer(SDP_ANSWER)
    w.act()
    (ok,) = [m for m in w.take() if isinstance(m, SipResponse)]
    assert ok.status == 200 and ok.cseq.method == "INVITE" and ok.body == SDP_ANSWER
    assert of(w.feed(c.ack(ok)), Confirmed)


def test_uas_second_reliable_provisional_waits_for_the_first_prack() -> None:
    w = Wire()
    c = Caller()
    inc = incoming(w, c, "Require: 100rel")
    inc.session.ring()
    inc.session.ring(SDP_ANSWER)  # a 183 with early media: queued behind the unacknowledged 180
    w.act()
    sent = [m for m in w.take() if isinstance(m, SipResponse)]
    assert [m.status for m in sent] == [180]
    rseq = int(sent[0].headers.get("RSeq") or 0)
    c.to_tag = sent[0].to.tag
    w.feed(c.request("PRACK", f"RAck: {rseq} 1 INVITE"))
    sent = [m for m in w.take() if isinstance(m, SipResponse)]
    assert [(m.status, m.cseq.method) for m in sent] == [(200, "PRACK"), (183, "INVITE")]
    assert sent[1].headers.get("RSeq") == str(rseq + 1) and sent[1].body == SDP_ANSWER
    # the 2xx waits for the PRACK of the 183 that carried SDP (RFC 3262 §3)
    inc.session.answer(SDP_ANSWER)
    w.act()
    assert not [m for m in w.take() if isinstance(m, SipResponse) and m.status == 200]
    w.feed(c.request("PRACK", f"RAck: {rseq + 1} 1 INVITE"))
    sent = [m for m in w.take() if isinstance(m, SipResponse)]
    assert [(m.status, m.cseq.method) for m in sent] == [(200, "PRACK"), (200, "INVITE")]


def test_uas_prack_that_matches_nothing_gets_481() -> None:
    w = Wire()
    c = Caller()
    inc = incoming(w, c, "Require: 100rel")
    inc.session.ring()
    w.act()
    (r180,) = [m for m in w.take() if isinstance(m, SipResponse)]
    c.to_tag = r180.to.tag
    rseq = int(r180.headers.get("RSeq") or 0)
    w.feed(c.request("PRACK", f"RAck: {rseq + 5} 1 INVITE"))
    assert [m.status for m in w.take() if isinstance(m, SipResponse)] == [481]
    w.feed(c.request("PRACK", "RAck: garbage"))
    assert [m.status for m in w.take() if isinstance(m, SipResponse)] == [400]


def test_uas_no_prack_within_64_t1_refuses_the_invite_with_500() -> None:
    w = Wire()
    c = Caller()
    inc = incoming(w, c, "Require: 100rel")
    inc.session.ring()
    w.act()
    evs = w.advance(33.0)
    (end,) = of(evs, Ended)
    assert (end.end.cause, end.end.status) == (EndCause.NO_ACK, 500)
    statuses = [m.status for m in w.take() if isinstance(m, SipResponse)]
    assert statuses[-1] == 500 and 5 <= statuses.count(180) <= 8


def test_uas_only_supported_100rel_keeps_unreliable_provisionals() -> None:
    w = Wire()
    c = Caller()
    inc = incoming(w, c, "Supported: 100rel")
    inc.session.ring()
    w.act()
    (r180,) = [m for m in w.take() if isinstance(m, SipResponse)]
    assert r180.headers.get("RSeq") is None and "100rel" not in option_tags(r180, "Require")
    w.advance(3.0)
    assert not w.take()


def test_a_required_extension_we_do_not_know_gets_420() -> None:
    w = Wire()
    c = Caller()
    evs = w.feed(c.invite("Require: 100rel, precondition", SDP), SDP_OFFER)
    assert not of(evs, IncomingCall)
    (r,) = [m for m in w.take() if isinstance(m, SipResponse) and m.status != 100]
    assert r.status == 420 and r.headers.get("Unsupported") == "precondition"

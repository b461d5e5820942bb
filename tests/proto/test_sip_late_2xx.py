"""A 2xx for a dialog the calling session does not keep, sans-IO, driven with bytes: another
fork's 2xx (RFC 3261 §13.2.2.4), a given-up server's 2xx (RFC 3263 failover) or a 2xx after
the call ended. Each such dialog is ACKed and gets exactly one BYE; retransmissions of its 2xx
get the same ACK again; its BYE's challenge is answered in that dialog; the session's own
dialog and state are left alone; and the number of such dialogs per session is capped."""

from __future__ import annotations

from typing import Any

from tests.proto.sip_wire import SDP_ANSWER, Wire, of, reply
from webgate.proto.sip import auth, ua_session
from webgate.proto.sip.message import SipRequest
from webgate.proto.sip.useragent import Answered, Credentials, Ended, SessionState

SDP = "Content-Type: application/sdp"
DESTS = [("udp", "127.0.0.1", 5099), ("udp", "127.0.0.1", 5098)]
MAX_LATE_DIALOGS = 16  # the cap the brief asked for (ua_session.MAX_LATE_DIALOGS)


def to_tag(m: SipRequest) -> str | None:
    return m.to.tag


def answered_call(w: Wire, **kw: Any) -> tuple[Any, SipRequest]:
    """Our INVITE, answered by fork "a": the session's dialog."""
    s = w.invite(**kw)
    w.take()
    (inv,) = w.requests("INVITE")
    w.feed(reply(inv, 180, "Ringing", to_tag="a"))
    evs = w.feed(reply(inv, 200, "OK", SDP, to_tag="a"), SDP_ANSWER)
    assert of(evs, Answered) and s.state is SessionState.CONFIRMED
    w.take()
    return s, inv


def test_a_forked_2xx_is_acked_and_byed_once_even_when_retransmitted() -> None:
    w = Wire()
    s, inv = answered_call(w)
    own = s.dialog
    own_ack = s.ack
    w.feed(reply(inv, 200, "OK", SDP, to_tag="b"), SDP_ANSWER)
    sent = w.take()
    assert [m.method for m in sent if isinstance(m, SipRequest)] == ["ACK", "BYE"]
    ack, bye = sent
    assert isinstance(ack, SipRequest) and isinstance(bye, SipRequest)
    assert to_tag(ack) == "b" and to_tag(bye) == "b" and ack.cseq.number == inv.cseq.number
    assert bye.call_id == inv.call_id and bye.from_.tag == s.local_tag
    for _ in range(3):  # the fork keeps retransmitting its 2xx: the same ACK each time, no new BYE
        w.feed(reply(inv, 200, "OK", SDP, to_tag="b"), SDP_ANSWER)
    again = w.take()
    assert [m.method for m in again if isinstance(m, SipRequest)] == ["ACK"] * 3
    assert all(m.serialize() == ack.serialize() for m in again)
    assert len(w.requests("BYE")) == 1
    # the session's own call is untouched: same dialog, same ACK, no second Answered, no Ended
    assert s.dialog is own and s.dialog.remote_tag == "a" and s.ack is own_ack
    assert s.state is SessionState.CONFIRMED
    assert len(of(w.events, Answered)) == 1 and not of(w.events, Ended)
    w.feed(reply(bye, 200, "OK", to_tag=None, contact=False))
    assert s.late_dialogs["b"].bye_status == 200
    assert s.state is SessionState.CONFIRMED and not of(w.events, Ended)


def test_the_own_2xx_retransmitted_gets_its_ack_again_and_nothing_else() -> None:
    w = Wire()
    s, inv = answered_call(w)
    for _ in range(2):
        w.feed(reply(inv, 200, "OK", SDP, to_tag="a"), SDP_ANSWER)
    again = w.take()
    assert [m.method for m in again if isinstance(m, SipRequest)] == ["ACK", "ACK"]
    assert all(to_tag(m) == "a" for m in again if isinstance(m, SipRequest))
    assert not w.requests("BYE") and len(of(w.events, Answered)) == 1 and not s.late_dialogs


def test_a_challenge_to_the_late_bye_is_answered_in_the_late_dialog() -> None:
    w = Wire()
    s, inv = answered_call(w, credentials=Credentials("alice", "s3cret"))
    own = s.dialog
    own_cseq = own.local_cseq
    w.feed(reply(inv, 200, "OK", SDP, to_tag="b"), SDP_ANSWER)
    (bye,) = w.requests("BYE")
    w.take()
    w.feed(reply(bye, 401, "Unauthorized", f"WWW-Authenticate: {auth.make_challenge('pbx')}", to_tag=None,
                 contact=False))
    (bye2,) = [m for m in w.take() if isinstance(m, SipRequest)]
    assert bye2.method == "BYE" and bye2.call_id == bye.call_id
    assert to_tag(bye2) == "b" and bye2.from_.tag == bye.from_.tag and bye2.cseq.number == bye.cseq.number + 1
    assert bye2.uri == bye.uri and bye2.top_via.branch != bye.top_via.branch
    value = bye2.headers.get("Authorization") or ""
    assert auth.verify_authorization(value, "BYE", "s3cret", "pbx", username="alice", uri=str(bye2.uri))
    # the session's own dialog and call: untouched (no request in it, its CSeq unchanged)
    assert s.dialog is own and own.remote_tag == "a" and own.local_cseq == own_cseq
    assert s.state is SessionState.CONFIRMED and not of(w.events, Ended)
    # a second challenge is not answered again
    w.feed(reply(bye2, 401, "Unauthorized", f"WWW-Authenticate: {auth.make_challenge('pbx')}", to_tag=None,
                 contact=False))
    assert not [m for m in w.take() if isinstance(m, SipRequest)]
    assert s.late_dialogs["b"].bye_status == 401 and len(w.requests("BYE")) == 2


def test_a_challenge_to_the_late_bye_of_a_ringing_call_leaves_the_session_waiting() -> None:
    """A given-up server's 2xx while the next server rings (the session's early dialog): the
    BYE's challenge is answered in the late dialog, never in the ringing one."""
    w = Wire(failover_timeout=1.0)
    s = w.invite(destinations=DESTS, credentials=Credentials("alice", "pw"))
    w.take()
    (inv,) = w.requests("INVITE")
    w.advance(1.1)  # the first server is given up; the INVITE goes to the second, which rings
    assert s.dest == DESTS[1]
    inv2 = w.requests("INVITE")[-1]
    w.feed(reply(inv2, 180, "Ringing", to_tag="second"))
    assert s.state is SessionState.EARLY and s.dialog is not None and s.dialog.remote_tag == "second"
    ringing = s.dialog
    w.take()
    w.feed(reply(inv, 200, "OK", SDP, to_tag="late1"), SDP_ANSWER)
    sent = [m for m in w.take() if isinstance(m, SipRequest)]
    assert [m.method for m in sent] == ["ACK", "BYE"] and all(to_tag(m) == "late1" for m in sent)
    bye = sent[1]
    w.feed(reply(bye, 407, "Proxy Authentication Required",
                 f"Proxy-Authenticate: {auth.make_challenge('px', algorithm='SHA-256')}", to_tag=None, contact=False))
    sent = [m for m in w.take() if isinstance(m, SipRequest)]
    assert [(m.method, to_tag(m)) for m in sent] == [("BYE", "late1")]
    bye2 = sent[0]
    assert bye2.call_id == inv.call_id and bye2.cseq.number == bye.cseq.number + 1
    assert auth.verify_authorization(bye2.headers.get("Proxy-Authorization") or "", "BYE", "pw", "px", username="alice")
    for _ in range(3):
        w.feed(reply(inv, 200, "OK", SDP, to_tag="late1"), SDP_ANSWER)
    assert [(m.method, to_tag(m)) for m in w.take() if isinstance(m, SipRequest)] == [("ACK", "late1")] * 3
    assert s.state is SessionState.EARLY and s.dialog is ringing and s.ack is None
    assert not of(w.events, Answered) and not of(w.events, Ended)
    w.feed(reply(bye2, 200, "OK", to_tag=None, contact=False))
    assert s.state is SessionState.EARLY and not of(w.events, Ended)
    evs = w.feed(reply(inv2, 200, "OK", SDP, to_tag="second"), SDP_ANSWER)  # the next server answers: the call
    assert of(evs, Answered) and s.dialog is not None and s.dialog.remote_tag == "second"
    assert to_tag(w.requests("ACK")[-1]) == "second" and len(w.requests("BYE")) == 2
    assert s.late_dialogs["late1"].bye_status == 200


def test_a_late_2xx_after_the_call_ended_is_byed_once() -> None:
    w = Wire()
    s, inv = answered_call(w)
    s.hangup()
    w.act()
    (own_bye,) = w.requests("BYE")
    w.take()
    for _ in range(3):
        w.feed(reply(inv, 200, "OK", SDP, to_tag="c"), SDP_ANSWER)
    sent = [m for m in w.take() if isinstance(m, SipRequest)]
    assert [m.method for m in sent] == ["ACK", "BYE", "ACK", "ACK"] and all(to_tag(m) == "c" for m in sent)
    assert s.dialog is not None and s.dialog.remote_tag == "a"  # the ended call's dialog stays its own
    assert to_tag(own_bye) == "a"


def test_late_dialogs_are_capped_per_session() -> None:
    w = Wire()
    s, inv = answered_call(w)
    for i in range(MAX_LATE_DIALOGS + 4):
        w.feed(reply(inv, 200, "OK", SDP, to_tag=f"f{i}"), SDP_ANSWER)
    assert len(w.requests("BYE")) == MAX_LATE_DIALOGS
    assert len(w.requests("ACK")) == 1 + MAX_LATE_DIALOGS  # beyond the cap: not even ACKed
    w.feed(reply(inv, 200, "OK", SDP, to_tag="f0"), SDP_ANSWER)  # a kept one still gets its ACK
    assert len(w.requests("ACK")) == 2 + MAX_LATE_DIALOGS and len(w.requests("BYE")) == MAX_LATE_DIALOGS
    assert s.state is SessionState.CONFIRMED and s.dialog is not None and s.dialog.remote_tag == "a"
    assert len(s.late_dialogs) == MAX_LATE_DIALOGS
    assert ua_session.MAX_LATE_DIALOGS == MAX_LATE_DIALOGS
    notices = w.ua.take_notices()  # one line each for the adapter's log
    assert len(notices) == 4 and all("ignored" in n and s.call_id in n for n in notices)
    assert not w.ua.take_notices()


def test_a_forked_2xx_after_the_invite_transaction_is_gone_keeps_the_call() -> None:
    """After Timer M the transaction no longer matches: the 2xx comes as a stray one."""
    w = Wire()
    s, inv = answered_call(w)
    w.advance(33.0)  # 64*T1 = 32 s
    w.take()
    for _ in range(2):
        w.feed(reply(inv, 200, "OK", SDP, to_tag="d"), SDP_ANSWER)
    sent = [m for m in w.take() if isinstance(m, SipRequest)]
    assert [(m.method, to_tag(m)) for m in sent] == [("ACK", "d"), ("BYE", "d"), ("ACK", "d")]
    assert s.state is SessionState.CONFIRMED and s.dialog is not None and s.dialog.remote_tag == "a"
    s.hangup()  # the call's own BYE goes in its own dialog
    w.act()
    assert to_tag(w.requests("BYE")[-1]) == "a"


def test_a_given_up_servers_2xx_retransmitted_gets_acks_and_one_bye() -> None:
    w = Wire(failover_timeout=1.0)
    s = w.invite(destinations=DESTS)
    w.take()
    (inv,) = w.requests("INVITE")
    w.advance(1.1)
    assert s.dest == DESTS[1]
    w.take()
    for _ in range(4):
        w.feed(reply(inv, 200, "OK", SDP, to_tag="gone"), SDP_ANSWER)
    sent = [m for m in w.take() if isinstance(m, SipRequest)]
    assert [m.method for m in sent] == ["ACK", "BYE", "ACK", "ACK", "ACK"]
    assert all(to_tag(m) == "gone" for m in sent)
    assert s.state is SessionState.CALLING and s.dialog is None and s.ack is None
    assert not of(w.events, Answered) and not of(w.events, Ended)

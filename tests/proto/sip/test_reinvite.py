"""Our own re-INVITE (UAC within a confirmed dialog): hold/resume, glare, refusal, 2xx
retransmission, auth, and the CSeq of the requests that follow. Two cores on a fake wire."""

from __future__ import annotations

from typing import Any

import pytest

from tests.proto.sip.test_useragent import Net, call, of
from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip import auth
from webgate.proto.sip.message import SipRequest, make_response, parse_message
from webgate.proto.sip.useragent import (
    Credentials,
    DtmfInfo,
    EndCause,
    Ended,
    OfferReceived,
    ReofferAnswered,
    ReofferFailed,
    SessionState,
)

HOLD = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=sendonly\r\n"
HELD = b"v=0\r\no=- 7 8 IN IP4 127.0.0.1\r\na=recvonly\r\n"


def up(net: Net, **kw: Any) -> tuple[Any, Any]:
    s, inc = call(net, **kw)
    inc.session.answer(b"v=0\r\nanswer\r\n")
    net.pump()
    assert s.state is SessionState.CONFIRMED and inc.session.state is SessionState.CONFIRMED
    return s, inc.session


def requests(net: Net, method: str) -> list[SipRequest]:
    return [m for m in net.wire if isinstance(m, SipRequest) and m.method == method]


def wired(net: Net) -> Net:
    """Also keep every parsed message that crossed the wire (dropped ones included)."""
    net.wire = []  # type: ignore[attr-defined]
    orig = net.drop

    def drop(first: str, msg: Any) -> bool:
        net.wire.append(parse_message(msg.serialize()))  # type: ignore[attr-defined]
        return bool(net.extra_drop(first, msg)) if net.extra_drop else False  # type: ignore[attr-defined]

    net.extra_drop = orig  # type: ignore[attr-defined]
    net.drop = drop
    return net


@pytest.mark.parametrize("holder", ["caller", "callee"])
def test_hold_then_resume_is_answered_and_acked(holder: str) -> None:
    net = wired(Net())
    a, b = up(net)
    us, them, their_side, our_side = (a, b, "B", "A") if holder == "caller" else (b, a, "A", "B")
    us.reinvite(HOLD)
    assert us.reinvite_pending
    evs = net.pump()
    offer = of(evs, OfferReceived, their_side)[0]
    assert offer.method == "INVITE" and offer.offer == HOLD
    offer.session.answer_offer(HELD)
    evs = net.pump()
    ans = of(evs, ReofferAnswered, our_side)
    assert [x.sdp for x in ans] == [HELD]
    assert not us.reinvite_pending and us.state is SessionState.CONFIRMED
    assert us.remote_sdp == HELD and us.local_sdp == HOLD
    reinv = [r for r in requests(net, "INVITE") if r.to.tag]
    assert len(reinv) == 1 and reinv[0].body == HOLD and reinv[0].headers.get("Content-Type") == "application/sdp"
    acks = [r for r in requests(net, "ACK") if r.cseq.number == reinv[0].cseq.number]
    assert len(acks) == 1 and acks[0].from_.tag == us.local_tag
    # resume
    us.reinvite(HOLD.replace(b"sendonly", b"sendrecv"))
    evs = net.pump()
    of(evs, OfferReceived, their_side)[0].session.answer_offer(b"v=0\r\na=sendrecv\r\n")
    evs = net.pump()
    assert [x.sdp for x in of(evs, ReofferAnswered, our_side)] == [b"v=0\r\na=sendrecv\r\n"]
    reinv = [r for r in requests(net, "INVITE") if r.to.tag]
    assert reinv[1].cseq.number == reinv[0].cseq.number + 1
    assert not of(net.events, Ended)


def test_second_concurrent_reinvite_and_early_call_are_refused() -> None:
    net = Net()
    s, inc = call(net)
    with pytest.raises(LocalProtocolError):
        s.reinvite(HOLD)  # not answered yet
    inc.session.answer(b"v=0\r\n")
    net.pump()
    s.reinvite(HOLD)
    with pytest.raises(LocalProtocolError):
        s.reinvite(HOLD)
    net.pump()
    # while the far end's answer is pending it can't send its own either
    with pytest.raises(LocalProtocolError):
        inc.session.reinvite(HOLD)


def test_glare_gets_491_both_ways_and_the_call_stays_up() -> None:
    net = Net()
    a, b = up(net)
    a.reinvite(HOLD)
    b.reinvite(HOLD)
    evs = net.pump()
    fa, fb = of(evs, ReofferFailed, "A"), of(evs, ReofferFailed, "B")
    assert [f.status for f in fa] == [491] and [f.status for f in fb] == [491]
    assert not of(evs, OfferReceived)
    assert not a.reinvite_pending and not b.reinvite_pending
    assert a.state is SessionState.CONFIRMED and b.state is SessionState.CONFIRMED
    # a retry after the glare works
    a.reinvite(HOLD)
    of(net.pump(), OfferReceived, "B")[0].session.answer_offer(HELD)
    assert of(net.pump(), ReofferAnswered, "A")


def test_488_keeps_the_call_up() -> None:
    net = Net()
    a, b = up(net)
    a.reinvite(HOLD)
    of(net.pump(), OfferReceived, "B")[0].session.answer_offer(None, 488)
    evs = net.pump()
    f = of(evs, ReofferFailed, "A")
    assert [(x.status, x.reason) for x in f] == [(488, "Not Acceptable Here")]
    assert not of(evs, Ended)
    assert any(line.startswith("ACK ") for line in net.log[-2:])  # the transaction ACKs the 488
    net.advance(40.0, 0.5)  # no timers left to end it
    assert a.state is SessionState.CONFIRMED and not of(net.events, Ended)
    b.send_info_dtmf("7")
    assert of(net.pump(), DtmfInfo, "A")[0].digit == "7"


def test_retransmitted_2xx_is_acked_again_and_reported_once() -> None:
    net = wired(Net())
    a, b = up(net)
    dropped = {"n": 0}

    def drop_first_reinvite_ack(first: str, msg: Any) -> bool:
        if first.startswith("ACK") and msg.cseq.number == 2 and dropped["n"] == 0:
            dropped["n"] += 1
            return True
        return False

    net.extra_drop = drop_first_reinvite_ack  # type: ignore[attr-defined]
    a.reinvite(HOLD)
    of(net.pump(), OfferReceived, "B")[0].session.answer_offer(HELD)
    net.pump()
    assert dropped["n"] == 1
    net.advance(2.0)
    oks = [m for m in net.wire if not isinstance(m, SipRequest) and m.cseq.number == 2 and m.status == 200]
    acks = [r for r in requests(net, "ACK") if r.cseq.number == 2]
    assert len(oks) == 2 and len(acks) == 2  # the 2xx came again, and was ACKed again
    assert len(of(net.events, ReofferAnswered, "A")) == 1
    net.advance(40.0, 0.5)  # B got its ACK: no more 2xx, no BYE for a missing ACK
    assert len([m for m in net.wire if not isinstance(m, SipRequest) and m.cseq.number == 2]) == 2
    assert not of(net.events, Ended)


def test_bye_after_reinvite_uses_the_next_cseq() -> None:
    net = wired(Net())
    a, b = up(net)
    a.reinvite(HOLD)
    of(net.pump(), OfferReceived, "B")[0].session.answer_offer(HELD)
    net.pump()
    a.hangup()
    evs = net.pump()
    bye = requests(net, "BYE")
    assert [r.cseq.number for r in bye] == [3]
    assert of(evs, Ended, "B")[0].end.cause is EndCause.REMOTE_HANGUP
    assert "SIP/2.0 500 Server Internal Error" not in net.log


def test_reinvite_timeout_ends_the_dialog_with_bye() -> None:
    net = Net()
    a, b = up(net)
    net.drop = lambda first, msg: first.startswith("INVITE")
    a.reinvite(HOLD)
    net.pump()
    evs = net.advance(33.0, 0.25)
    assert [f.status for f in of(evs, ReofferFailed, "A")] == [408]
    assert of(evs, Ended, "A")[0].end.cause is EndCause.TIMEOUT
    assert of(evs, Ended, "B")[0].end.cause is EndCause.REMOTE_HANGUP


def test_reinvite_challenged_with_407_is_resent_with_credentials() -> None:
    net = wired(Net())
    realm = "pbx"
    b_ua = net.b
    orig = b_ua.receive
    seen: list[int] = []

    def receive(msg: Any, source: Any, now: float) -> Any:
        if isinstance(msg, SipRequest) and msg.method == "INVITE" and msg.to.tag:
            value = msg.headers.get("Proxy-Authorization")
            seen.append(msg.cseq.number)
            if value is None:
                resp = make_response(msg, 407)
                resp.headers.add("Proxy-Authenticate", auth.make_challenge(realm, algorithm="MD5"))
                b_ua.tm.send_stateless(resp, source)
                return []
            assert auth.verify_authorization(value, "INVITE", "pw", realm, username="alice")
        return orig(msg, source, now)

    b_ua.receive = receive  # type: ignore[method-assign]
    a, b = up(net, credentials=Credentials("alice", "pw"))
    a.reinvite(HOLD)
    evs = net.pump()
    assert seen == [2, 3]
    of(evs, OfferReceived, "B")[0].session.answer_offer(HELD)
    evs = net.pump()
    assert [x.sdp for x in of(evs, ReofferAnswered, "A")] == [HELD]
    ack = [r for r in requests(net, "ACK") if r.cseq.number == 3]
    assert len(ack) == 1 and ack[0].headers.get("Proxy-Authorization")
    assert not of(net.events, ReofferFailed)

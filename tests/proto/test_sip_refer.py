"""REFER as the transferee (RFC 3515) in the sans-IO user agent: refused unless the session
allows transfer, ReferReceived, 202 and the NOTIFY sipfrags, one transfer at a time."""

from __future__ import annotations

from typing import Any

from tests.proto.sip_wire import SDP_ANSWER, Wire, of, reply
from webgate.proto.sip.message import SipRequest, SipResponse
from webgate.proto.sip.useragent import Answered, ReferReceived

SDP = "Content-Type: application/sdp"


def answered(w: Wire, **kw: Any) -> tuple[Any, SipRequest]:
    w.invite(**kw)
    (inv,) = w.take()
    evs = w.feed(reply(inv, 200, "OK", SDP), SDP_ANSWER)
    w.take()
    return of(evs, Answered)[0].session, inv


def refer(inv: SipRequest, session: Any, cseq: int, *extra: str) -> str:
    return "\n".join([
        "REFER sip:webgate@127.0.0.1:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-refer-{cseq}",
        "From: <sip:2000@127.0.0.1:5099>;tag=peer1",
        f"To: {inv.headers.get('From')}",
        f"Call-ID: {session.call_id}",
        f"CSeq: {cseq} REFER",
        "Contact: <sip:peer@127.0.0.1:5099>",
        *extra,
    ])


def test_refer_is_refused_with_403_unless_the_session_allows_transfer() -> None:
    w = Wire()
    s, inv = answered(w)
    assert "REFER" not in inv.headers.get_all("Allow")
    evs = w.feed(refer(inv, s, 5, "Refer-To: <sip:3000@127.0.0.1>"))
    assert not of(evs, ReferReceived)
    assert [m.status for m in w.take() if isinstance(m, SipResponse)] == [403]


def test_accepted_refer_gets_202_and_notify_100_then_the_final_sipfrag() -> None:
    w = Wire()
    s, inv = answered(w, allow_refer=True)
    assert "REFER" in inv.headers.get_all("Allow")
    evs = w.feed(refer(inv, s, 5, "Refer-To: <sip:3000@pbx.example.com>", "Referred-By: <sip:2000@pbx.example.com>"))
    (ev,) = of(evs, ReferReceived)
    assert ev.refer_to.user == "3000" and ev.referred_by == "<sip:2000@pbx.example.com>"
    assert not w.take()  # nothing before the application decides
    s.accept_refer()
    w.act()
    accepted, notify = w.take()
    assert isinstance(accepted, SipResponse) and accepted.status == 202
    assert isinstance(notify, SipRequest) and notify.method == "NOTIFY"
    assert notify.headers.get("Event") == "refer" and notify.headers.get("Subscription-State", "").startswith("active")
    assert notify.headers.get("Content-Type") == "message/sipfrag;version=2.0"
    assert notify.body == b"SIP/2.0 100 Trying\r\n"
    w.feed(reply(notify, 200, "OK", to_tag=None, contact=False))
    # a second REFER while this one runs: 491
    w.feed(refer(inv, s, 6, "Refer-To: <sip:4000@pbx.example.com>"))
    assert [m.status for m in w.take() if isinstance(m, SipResponse)] == [491]
    s.notify_refer(200, "OK", final=True)
    w.act()
    (final,) = w.take()
    assert final.body == b"SIP/2.0 200 OK\r\n"  # type: ignore[union-attr]
    assert final.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert final.cseq.number == notify.cseq.number + 1
    s.notify_refer(180, "Ringing", final=False)  # after the final one: nothing
    assert not w.act() and not w.take()


def test_rejected_refer_and_a_refer_without_refer_to() -> None:
    w = Wire()
    s, inv = answered(w, allow_refer=True)
    (ev,) = of(w.feed(refer(inv, s, 5, "Refer-To: <sip:9999@pbx.example.com>")), ReferReceived)
    ev.session.reject_refer(403)
    w.act()
    assert [m.status for m in w.take() if isinstance(m, SipResponse)] == [403]
    assert not of(w.feed(refer(inv, s, 6)), ReferReceived)
    assert [m.status for m in w.take() if isinstance(m, SipResponse)] == [400]

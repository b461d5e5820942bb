"""Back-to-back tests of the sans-IO user agent: two cores exchanging bytes, a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip import auth
from webgate.proto.sip.message import (
    SipRequest,
    SipURI,
    make_response,
    parse_message,
)
from webgate.proto.sip.transaction import TimerConfig
from webgate.proto.sip.useragent import (
    Answered,
    Confirmed,
    Credentials,
    DtmfInfo,
    EndCause,
    Ended,
    IncomingCall,
    LocalEndpoint,
    OfferReceived,
    Progress,
    Registered,
    UAConfig,
    UserAgent,
    parse_dtmf_info,
)

A_PORT, B_PORT = 5060, 5070


class Net:
    """Two user agents on one fake wire. ``tap`` may drop or rewrite messages."""

    def __init__(self) -> None:
        self.now = 0.0
        self.a = UserAgent(UAConfig({"udp": LocalEndpoint("udp", "127.0.0.1", A_PORT)}, timers=TimerConfig(t1=0.5)))
        self.b = UserAgent(UAConfig({"udp": LocalEndpoint("udp", "127.0.0.1", B_PORT)}, timers=TimerConfig(t1=0.5)))
        self.log: list[str] = []
        self.drop: Any = None
        self.events: list[tuple[str, Any]] = []

    def pump(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for _ in range(50):
            moved = False
            for src, dst, port, name in ((self.a, self.b, A_PORT, "B"), (self.b, self.a, B_PORT, "A")):
                for msg, dest in src.outgoing():
                    moved = True
                    data = msg.serialize()
                    first = data.split(b"\r\n")[0].decode()
                    if self.drop is not None and self.drop(first, msg):
                        self.log.append("X " + first)
                        continue
                    self.log.append(first)
                    m = parse_message(data)
                    out += [(name, e) for e in dst.receive(m, ("udp", "127.0.0.1", port), self.now)]
            if not moved:
                break
        self.events += out
        return out

    def advance(self, seconds: float, step: float = 0.1) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + step, 6)
            out += [("A", e) for e in self.a.handle_timers(self.now)]
            out += [("B", e) for e in self.b.handle_timers(self.now)]
            out += self.pump()
        self.events += [e for e in out if e not in self.events]
        return out


def of(events: list[tuple[str, Any]], cls: type, side: str | None = None) -> list[Any]:
    return [e for s, e in events if isinstance(e, cls) and (side is None or s == side)]


def call(net: Net, **kw: Any) -> tuple[Any, Any]:
    s = net.a.invite(SipURI.parse(f"sip:echo@127.0.0.1:{B_PORT}"), b"v=0\r\n", net.now, **kw)
    evs = net.pump()
    inc = of(evs, IncomingCall, "B")
    assert inc, net.log
    return s, inc[0]


def test_basic_call_with_ringing_answer_info_and_bye() -> None:
    net = Net()
    s, inc = call(net, from_display='Ann "the" Caller', headers=[("X-Session-ID", "1234567890")])
    req = inc.request
    assert req.headers.get("X-Session-ID") == "1234567890"
    assert req.from_.display_name == 'Ann "the" Caller'
    inc.session.ring()
    assert of(net.pump(), Progress, "A")[0].status == 180
    inc.session.answer(b"v=0\r\nanswer\r\n")
    evs = net.pump()
    assert of(evs, Answered, "A")[0].sdp == b"v=0\r\nanswer\r\n"
    assert of(evs, Confirmed, "B")
    inc.session.send_info_dtmf("#", 250)
    d = of(net.pump(), DtmfInfo, "A")
    assert (d[0].digit, d[0].duration_ms) == ("#", 250)
    s.hangup()
    evs = net.pump()
    assert of(evs, Ended, "A")[0].end.cause is EndCause.LOCAL_HANGUP
    assert of(evs, Ended, "B")[0].end.cause is EndCause.REMOTE_HANGUP
    assert any(line.startswith("BYE ") for line in net.log)


def test_busy_is_acked_and_ends_with_status() -> None:
    net = Net()
    s, inc = call(net)
    inc.session.reject(486)
    evs = net.pump()
    end = of(evs, Ended, "A")[0].end
    assert (end.cause, end.status) == (EndCause.REJECTED, 486)
    assert any(line.startswith("ACK ") for line in net.log)


def test_cancel_before_provisional_waits_then_cancels() -> None:
    net = Net()
    net.drop = lambda first, msg: first.startswith("SIP/2.0 100")
    s = net.a.invite(SipURI.parse(f"sip:echo@127.0.0.1:{B_PORT}"), b"v=0\r\n", net.now)
    inc = of(net.pump(), IncomingCall, "B")[0]
    s.hangup()  # no provisional yet: CANCEL must wait (RFC 3261 §9.1)
    net.pump()
    assert not any(line.startswith("CANCEL") for line in net.log)
    inc.session.ring()
    evs = net.pump()
    assert any(line.startswith("CANCEL") for line in net.log)
    assert any("487" in line for line in net.log)
    assert of(evs, Ended, "A")[0].end.cause is EndCause.CANCELLED
    assert of(evs, Ended, "B")[0].end.cause is EndCause.REMOTE_CANCELLED


def test_invite_timeout_timer_b() -> None:
    net = Net()
    net.drop = lambda first, msg: first.startswith("INVITE")
    net.a.invite(SipURI.parse(f"sip:x@127.0.0.1:{B_PORT}"), b"v=0\r\n", net.now)
    net.pump()
    evs = net.advance(33.0, 0.25)
    end = of(evs, Ended, "A")[0].end
    assert end.cause is EndCause.TIMEOUT
    # A retransmitted: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert sum(1 for line in net.log if line.startswith("X INVITE")) == 7


def test_digest_auth_on_407_then_bye_challenged_with_401() -> None:
    net = Net()
    realm = "example.org"
    state = {"challenged_invite": False, "challenged_bye": False}
    b = net.b
    orig = b.receive

    def receive(msg: Any, source: Any, now: float) -> Any:
        if isinstance(msg, SipRequest) and msg.method in ("INVITE", "BYE"):
            hname = "Proxy-Authorization" if msg.method == "INVITE" else "Authorization"
            value = msg.headers.get(hname)
            if value is None:
                status = 407 if msg.method == "INVITE" else 401
                resp = make_response(msg, status, to_tag="abc" if msg.method == "INVITE" else None)
                resp.headers.add("Proxy-Authenticate" if status == 407 else "WWW-Authenticate", auth.make_challenge(realm, algorithm="SHA-256" if status == 407 else "MD5"))
                b.tm.send_stateless(resp, source)
                state["challenged_invite" if msg.method == "INVITE" else "challenged_bye"] = True
                return []
            assert auth.verify_authorization(value, msg.method, "s3cret", realm, username="alice")
        return orig(msg, source, now)

    b.receive = receive  # type: ignore[method-assign]
    s = net.a.invite(SipURI.parse(f"sip:echo@127.0.0.1:{B_PORT}"), b"v=0\r\n", net.now, credentials=Credentials("alice", "s3cret"))
    evs = net.pump()
    assert state["challenged_invite"]
    inc = of(evs, IncomingCall, "B")[0]
    assert "CSeq" in inc.request.headers and inc.request.cseq.number == 2
    inc.session.answer(b"v=0\r\n")
    net.pump()
    s.hangup()
    net.pump()
    assert state["challenged_bye"]
    assert sum(1 for line in net.log if line.startswith("BYE")) == 2


def test_auth_failure_without_credentials() -> None:
    net = Net()
    b = net.b

    def receive(msg: Any, source: Any, now: float) -> Any:
        if isinstance(msg, SipRequest) and msg.method == "INVITE":
            resp = make_response(msg, 401, to_tag="t")
            resp.headers.add("WWW-Authenticate", auth.make_challenge("r"))
            b.tm.send_stateless(resp, source)
        return []

    b.receive = receive  # type: ignore[method-assign]
    net.a.invite(SipURI.parse(f"sip:echo@127.0.0.1:{B_PORT}"), b"v=0\r\n", net.now)
    evs = net.pump()
    end = of(evs, Ended, "A")[0].end
    assert (end.cause, end.status) == (EndCause.AUTH_FAILED, 401)


def test_reinvite_from_far_end_is_offered_to_the_application() -> None:
    net = Net()
    s, inc = call(net)
    inc.session.answer(b"v=0\r\n")
    net.pump()
    # B (the far end) sends a re-INVITE: build it from its dialog
    uas = inc.session
    req = uas.dialog.create_request("INVITE", net.b._via("udp"), net.b._contact("udp"))
    req.headers.add("Content-Type", "application/sdp")
    req.body = b"v=0\r\na=sendonly\r\n"
    net.b.tm.send_request(req, ("udp", "127.0.0.1", A_PORT), net.now)
    evs = net.pump()
    offer = of(evs, OfferReceived, "A")[0]
    assert offer.offer == b"v=0\r\na=sendonly\r\n"
    offer.session.answer_offer(b"v=0\r\na=recvonly\r\n")
    net.pump()
    assert any(line == "SIP/2.0 200 OK" for line in net.log[-3:])


def test_in_dialog_request_for_unknown_dialog_gets_481_and_options_200() -> None:
    net = Net()
    s, inc = call(net)
    inc.session.answer(b"v=0\r\n")
    net.pump()
    bye = s.dialog.create_request("BYE", net.a._via("udp"), None)
    bye.headers.set("To", bye.headers.get("To").replace(s.dialog.remote_tag, "nope"))
    net.a.tm.send_request(bye, ("udp", "127.0.0.1", B_PORT), net.now)
    net.pump()
    assert "SIP/2.0 481 Call/Transaction Does Not Exist" in net.log
    opt = SipRequest(method="OPTIONS", uri=SipURI.parse(f"sip:127.0.0.1:{B_PORT}"))
    from webgate.proto.sip.message import Headers

    h = Headers()
    h.add("Via", net.a._via("udp"))
    h.add("From", "<sip:a@127.0.0.1>;tag=1")
    h.add("To", f"<sip:127.0.0.1:{B_PORT}>")
    h.add("Call-ID", "opt1")
    h.add("CSeq", "1 OPTIONS")
    opt.headers = h
    net.a.tm.send_request(opt, ("udp", "127.0.0.1", B_PORT), net.now)
    net.pump()
    assert net.log[-1] == "SIP/2.0 200 OK"


@pytest.mark.parametrize(
    "kw",
    [
        {"from_display": "Evil\r\nVia: x"},
        {"from_user": "a;b"},
        {"headers": [("X-Bad", "a\nb")]},
        {"headers": [("X Bad", "v")]},
        {"asserted_identity": "<sip:a@b>\r\nX: y"},
    ],
)
def test_injection_is_refused(kw: dict[str, Any]) -> None:
    net = Net()
    with pytest.raises(LocalProtocolError):
        net.a.invite(SipURI.parse(f"sip:echo@127.0.0.1:{B_PORT}"), b"v=0\r\n", net.now, **kw)
    assert net.a.outgoing() == []


def test_register_with_auth_and_refresh() -> None:
    net = Net()
    b = net.b
    seen: list[str] = []

    def receive(msg: Any, source: Any, now: float) -> Any:
        if isinstance(msg, SipRequest) and msg.method == "REGISTER":
            value = msg.headers.get("Authorization")
            if value is None:
                resp = make_response(msg, 401, to_tag="r")
                resp.headers.add("WWW-Authenticate", auth.make_challenge("reg", algorithm="MD5"))
            else:
                assert auth.verify_authorization(value, "REGISTER", "pw", "reg")
                resp = make_response(msg, 200, to_tag="r")
                resp.headers.add("Contact", msg.headers.get("Contact") + ";expires=60")
            seen.append(f"{msg.cseq.number}:{'auth' if value else 'noauth'}")
            b.tm.send_stateless(resp, source)
        return []

    b.receive = receive  # type: ignore[method-assign]
    net.a.register(SipURI.parse("sip:alice@127.0.0.1"), SipURI.parse(f"sip:127.0.0.1:{B_PORT}"), net.now, credentials=Credentials("alice", "pw"), expires=60)
    evs = net.pump()
    assert of(evs, Registered, "A")[0].expires == 60
    assert seen == ["1:noauth", "2:auth"]
    evs = net.advance(50.0, 1.0)  # refresh at 0.8 * 60 = 48 s
    assert len(of(evs, Registered, "A")) == 1
    assert seen[2] == "3:noauth" and seen[3] == "4:auth"


def test_parse_dtmf_info_bodies() -> None:
    assert parse_dtmf_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n") == ("5", 160)
    assert parse_dtmf_info("application/dtmf-relay", b"Signal=11\r\n") == ("#", 160)
    assert parse_dtmf_info("application/dtmf", b"10") == ("*", 160)
    assert parse_dtmf_info("application/dtmf-relay", b"Signal=X\r\n") is None
    assert parse_dtmf_info("application/dtmf-relay", b"\xff\xfe") is None


def test_bye_after_a_quiet_hour_starts_its_timers_at_set_time() -> None:
    """A BYE sent long after the last SIP message (no event handler running) is stamped with
    the time the application gives; it neither bursts retransmissions nor fires Timer F."""
    net = Net()
    s, inc = call(net)
    inc.session.answer(b"v=0\r\nanswer\r\n")
    net.pump()
    net.now = 3600.0
    net.drop = lambda first, msg: first.startswith("BYE")  # the far end went away
    net.a.set_time(net.now)
    s.hangup()
    net.pump()
    assert sum(1 for line in net.log if line.startswith("X BYE")) == 1
    timed_out = [e for e in net.a.handle_timers(net.now) if isinstance(e, Ended) and e.end.cause is EndCause.TIMEOUT]
    assert not timed_out  # no instant Timer F
    net.pump()
    assert sum(1 for line in net.log if line.startswith("X BYE")) == 1  # no burst of retransmissions
    net.advance(0.6)
    assert sum(1 for line in net.log if line.startswith("X BYE")) == 2  # first retransmit after T1

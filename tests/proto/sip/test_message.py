"""SIP message parsing, framing, building and the injection validators."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import (
    CSeq,
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    SipURI,
    StreamFramer,
    Via,
    check_display_name,
    check_header_value,
    check_host,
    check_token,
    check_user,
    make_response,
    parse_message,
    quote_display_name,
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)

RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"To: <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def req(data: bytes) -> SipRequest:
    m = parse_message(data)
    assert isinstance(m, SipRequest)
    return m


# ---------------------------------------------------------------------------------------
# parsing


def test_parse_request_fields() -> None:
    m = req(INVITE)
    assert m.method == "INVITE"
    assert str(m.uri) == "sip:bob@biloxi.example.com"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.cseq == CSeq(314159, "INVITE")
    assert m.from_.tag == "1928301774" and m.from_.display_name == "Alice"
    assert m.to.tag is None and m.to.uri.user == "bob"
    assert m.top_via.branch == "z9hG4bK776asdhds"
    assert m.top_via.transport == "UDP" and m.top_via.port is None
    assert m.content_type == "application/sdp"
    assert m.body == b"v=0\n"
    m.validate_basic()


def test_parse_response_fields() -> None:
    m = parse_message(RESPONSE)
    assert isinstance(m, SipResponse)
    assert m.status == 180 and m.reason == "Ringing"
    assert m.to.tag == "a6c85cf"
    assert m.top_via.params["received"] == "192.0.2.1"


def test_round_trip_serialize() -> None:
    m = req(INVITE)
    again = req(m.serialize())
    assert again.serialize() == m.serialize()
    assert list(again.headers) == list(m.headers)


def test_compact_forms_expand() -> None:
    data = (
        b"INVITE sip:bob@b.example SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example;branch=z9hG4bK1\r\n"
        b"f: <sip:alice@a.example>;tag=1\r\n"
        b"t: <sip:bob@b.example>\r\n"
        b"i: abc@a.example\r\n"
        b"m: <sip:alice@192.0.2.1>\r\n"
        b"c: application/sdp\r\n"
        b"k: 100rel, timer\r\n"
        b"l: 3\r\n"
        b"\r\nabc"
    )
    m = req(data)
    assert m.call_id == "abc@a.example"
    assert m.from_.tag == "1"
    assert m.contacts[0].uri.host == "192.0.2.1"
    assert m.content_type == "application/sdp"
    assert m.headers.get_all("Supported") == ["100rel", "timer"]
    assert m.body == b"abc"
    names = [n for n, _ in m.headers]
    assert "Via" in names and "Call-ID" in names and "v" not in names
    assert b"Call-ID: abc@a.example\r\n" in m.serialize()


def test_comma_joined_and_repeated_headers_are_equivalent() -> None:
    joined = INVITE.replace(
        b"Max-Forwards",
        b"Via: SIP/2.0/UDP p1.example;branch=z9hG4bKa, SIP/2.0/UDP p2.example;branch=z9hG4bKb\r\n"
        b"Route: <sip:r1.example;lr>,<sip:r2.example;lr>\r\nMax-Forwards",
        1,
    )
    repeated = INVITE.replace(
        b"Max-Forwards",
        b"Via: SIP/2.0/UDP p1.example;branch=z9hG4bKa\r\nVia: SIP/2.0/UDP p2.example;branch=z9hG4bKb\r\n"
        b"Route: <sip:r1.example;lr>\r\nRoute: <sip:r2.example;lr>\r\nMax-Forwards",
        1,
    )
    a, b = req(joined), req(repeated)
    assert [str(v) for v in a.vias] == [str(v) for v in b.vias]
    assert len(a.vias) == 3
    assert a.headers.get_all("Route") == b.headers.get_all("Route") == ["<sip:r1.example;lr>", "<sip:r2.example;lr>"]


def test_commas_inside_quotes_and_brackets_do_not_split() -> None:
    data = INVITE.replace(
        b"Contact: <sip:alice@pc33.atlanta.example.com>",
        b'Contact: "Smith, John" <sip:j@a.example;x=1,2>;expires=60, <sip:k@b.example>',
    )
    m = req(data)
    cs = m.contacts
    assert len(cs) == 2
    assert cs[0].display_name == "Smith, John" and cs[0].params["expires"] == "60"
    assert cs[1].uri.user == "k"


def test_non_list_headers_keep_their_commas() -> None:
    data = INVITE.replace(
        b"Max-Forwards: 70",
        b'Max-Forwards: 70\r\nWWW-Authenticate: Digest realm="a", nonce="b"\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT',
    )
    m = req(data)
    assert m.headers.get("WWW-Authenticate") == 'Digest realm="a", nonce="b"'
    assert m.headers.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"


def test_header_names_are_case_insensitive() -> None:
    m = req(INVITE.replace(b"Call-ID:", b"cAlL-iD:").replace(b"CSeq:", b"cseq :"))
    assert m.call_id.startswith("a84b")
    assert m.cseq.number == 314159


def test_header_folding_is_unfolded() -> None:
    data = INVITE.replace(
        b'To: "Bob" <sip:bob@biloxi.example.com>\r\n',
        b'To: "Bob"\r\n   <sip:bob@biloxi.example.com>\r\n\t;x=y\r\n',
    )
    m = req(data)
    assert m.to.uri.user == "bob"
    assert m.to.params["x"] == "y"
    assert "\r" not in (m.headers.get("To") or "") and "\n" not in (m.headers.get("To") or "")


def test_lf_only_line_ends_are_accepted() -> None:
    m = req(INVITE.replace(b"\r\n", b"\n"))
    assert m.cseq.number == 314159
    assert m.body == b"v=0\n"


def test_utf8_body_and_headers_counted_in_bytes() -> None:
    body = "a=tool:Jürgen’s phone ☎\r\n".encode()
    assert len(body) != len(body.decode())
    m = req(INVITE)
    m.body = body
    m.headers.set("Subject", "Grüße")
    raw = m.serialize()
    assert f"Content-Length: {len(body)}\r\n".encode() in raw
    back = req(raw)
    assert back.body == body
    assert back.headers.get("Subject") == "Grüße"
    framer = StreamFramer()
    (one,) = framer.feed(raw)
    assert isinstance(one, SipRequest) and one.body == body


def test_content_length_truncates_datagram_body_and_short_body_is_an_error() -> None:
    m = req(INVITE + b"trailing junk")
    assert m.body == b"v=0\n"
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(INVITE[:-2])
    assert e.value.status_hint == 400


def test_missing_content_length() -> None:
    data = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert req(data).body == b"v=0\n"  # datagram: body is the rest
    with pytest.raises(RemoteProtocolError):
        parse_message(data, datagram=False)
    f = StreamFramer()
    (err,) = f.feed(data)
    assert isinstance(err, RemoteProtocolError) and f.broken


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1e3", b"\xc2\xb2", b"\xd9\xa1", b"9999999999", b""])
def test_bad_content_length(value: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_message(INVITE.replace(b"Content-Length: 4", b"Content-Length: " + value))


def test_conflicting_content_lengths() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_message(INVITE.replace(b"Content-Length: 4\r\n", b"Content-Length: 4\r\nl: 5\r\n"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0",  # no blank line
        b"INVITE sip:a@b SIP/3.0\r\n\r\n",
        b"INVITE  SIP/2.0\r\n\r\n",
        b"SIP/2.0 99 Too Low\r\n\r\n",
        b"SIP/2.0 700 Too High\r\n\r\n",
        b"SIP/2.0 200 OK\rInjected: yes\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nX: a\x00b\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nX: \xff\xfe\r\n\r\n",
        b"INVITE http://a SIP/2.0\r\n\r\n",
        b"INVITE sip:a@b:99999 SIP/2.0\r\n\r\n",
        b"INVITE sip:a@b:\xc2\xb2 SIP/2.0\r\n\r\n",
    ],
)
def test_malformed_messages_raise_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_message(data)


def test_bad_typed_headers_raise_remote_protocol_error() -> None:
    m = req(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: \xd9\xa1 INVITE"))
    with pytest.raises(RemoteProtocolError):
        _ = m.cseq
    m = req(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 4294967296 INVITE"))
    with pytest.raises(RemoteProtocolError):
        _ = m.cseq
    m = req(INVITE.replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b""))
    with pytest.raises(RemoteProtocolError):
        m.validate_basic()


def test_size_limit() -> None:
    big = INVITE.replace(b"Content-Length: 4", b"Content-Length: 2000") .replace(b"v=0\n", b"x" * 2000)
    assert len(req(big).body) == 2000
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(big, max_size=1000)
    assert e.value.status_hint == 513


def test_keepalive_crlf_before_message() -> None:
    assert req(b"\r\n\r\n" + INVITE).method == "INVITE"
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(b"\r\n\r\n")
    assert e.value.status_hint is None  # a keepalive, not an error to answer


# ---------------------------------------------------------------------------------------
# stream framing


def test_framer_split_at_every_byte_boundary() -> None:
    stream = INVITE + b"\r\n\r\n" + RESPONSE + b"\r\n" + INVITE
    for cut in range(len(stream) + 1):
        for cut2 in (cut, min(len(stream), cut + 7)):
            f = StreamFramer()
            out = f.feed(stream[:cut]) + f.feed(stream[cut:cut2]) + f.feed(stream[cut2:])
            assert [type(m) for m in out] == [SipRequest, SipResponse, SipRequest], cut
            assert not f.broken


def test_framer_byte_by_byte() -> None:
    stream = b"\r\n" + INVITE + b"\r\n\r\n" + RESPONSE
    f = StreamFramer()
    out = []
    for i in range(len(stream)):
        out.extend(f.feed(stream[i : i + 1]))
    assert [type(m) for m in out] == [SipRequest, SipResponse]
    first = out[0]
    assert isinstance(first, SipRequest) and first.body == b"v=0\n"


def test_framer_waits_for_the_whole_body() -> None:
    f = StreamFramer()
    assert f.feed(INVITE[:-1]) == []
    (m,) = f.feed(INVITE[-1:])
    assert isinstance(m, SipRequest) and m.body == b"v=0\n"


def test_framer_size_limits_break_the_stream() -> None:
    f = StreamFramer(max_size=200)
    (err,) = f.feed(INVITE)
    assert isinstance(err, RemoteProtocolError) and err.status_hint == 513 and f.broken
    f = StreamFramer(max_size=100)
    (err,) = f.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: " + b"y" * 200)
    assert isinstance(err, RemoteProtocolError) and f.broken


def test_framer_bad_start_line_is_reported_but_framing_continues() -> None:
    bad = INVITE.replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"INVITE http://x SIP/2.0")
    f = StreamFramer()
    out = f.feed(bad + RESPONSE)
    assert isinstance(out[0], RemoteProtocolError)
    assert isinstance(out[1], SipResponse)
    assert not f.broken


# ---------------------------------------------------------------------------------------
# URIs, name-addr, Via, CSeq


@pytest.mark.parametrize(
    "text,host,port",
    [
        ("sip:alice@[2001:db8::10]:5070;transport=tcp", "2001:db8::10", 5070),
        ("sip:[::1]", "::1", None),
        ("sips:bob@[2001:db8::ffff:192.0.2.1]", "2001:db8::ffff:192.0.2.1", None),
    ],
)
def test_ipv6_uris(text: str, host: str, port: int | None) -> None:
    u = SipURI.parse(text)
    assert u.host == host and u.port == port
    assert str(u) == text
    assert SipURI.parse(str(u)) == u


def test_ipv6_via_and_message() -> None:
    v = Via.parse("SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKx;rport")
    assert v.host == "2001:db8::1" and v.port == 5060 and v.params["rport"] is None
    assert str(v) == "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKx;rport"
    m = req(INVITE.replace(b"sip:bob@biloxi.example.com SIP/2.0", b"sip:bob@[2001:db8::2]:5062 SIP/2.0"))
    assert m.uri.host == "2001:db8::2" and m.uri.port == 5062
    with pytest.raises(RemoteProtocolError):
        SipURI.parse("sip:[2001:db8::zz]")
    with pytest.raises(RemoteProtocolError):
        SipURI.parse("sip:[2001:db8::1")


def test_sip_sips_tel_uris() -> None:
    u = SipURI.parse("sip:alice:secret@example.com:5080;transport=TCP;lr?Subject=hi")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sip", "alice", "secret", "example.com", 5080)
    assert u.params == {"transport": "TCP", "lr": None} and u.headers == "Subject=hi"
    assert u.transport == "tcp"
    assert str(u) == "sip:alice:secret@example.com:5080;transport=TCP;lr?Subject=hi"
    s = SipURI.parse("SIPS:bob@example.com")
    assert s.scheme == "sips" and s.transport == "tls"
    t = SipURI.parse("tel:+1-212-555-0101;phone-context=example.com")
    assert t.scheme == "tel" and t.user == "+1-212-555-0101" and t.params["phone-context"] == "example.com"
    assert str(t) == "tel:+1-212-555-0101;phone-context=example.com"
    with pytest.raises(RemoteProtocolError):
        SipURI.parse("tel:call-me")
    with pytest.raises(RemoteProtocolError) as e:
        SipURI.parse("mailto:a@b")
    assert e.value.status_hint == 416
    assert SipURI.parse("sip:example.com").user is None


def test_user_part_may_hold_semicolons() -> None:
    u = SipURI.parse("sip:+4930123;npdi;rn=+4930999@carrier.example.com;user=phone")
    assert u.user == "+4930123;npdi;rn=+4930999"
    assert u.host == "carrier.example.com" and u.params == {"user": "phone"}
    assert str(u) == "sip:+4930123;npdi;rn=+4930999@carrier.example.com;user=phone"
    na = NameAddr.parse("<sip:+4930123;cpc=ordinary@carrier.example.com>;tag=9")
    assert na.uri.host == "carrier.example.com" and na.tag == "9"
    # a URI with headers and no user keeps '@' inside the headers
    h = SipURI.parse("sip:example.com?Replaces=abc%40host")
    assert h.user is None and h.headers == "Replaces=abc%40host"


def test_uri_copy() -> None:
    u = SipURI.parse("sip:a@b;lr")
    c = u.copy(user="z")
    assert str(c) == "sip:z@b;lr" and str(u) == "sip:a@b;lr"
    c.params["x"] = "1"
    assert "x" not in u.params


def test_name_addr_forms() -> None:
    a = NameAddr.parse('"A \\"quoted\\" name" <sip:a@b.example>;tag=xy')
    assert a.display_name == 'A "quoted" name' and a.tag == "xy"
    assert NameAddr.parse(str(a)) == a
    b = NameAddr.parse("Bob <sip:b@b.example;transport=tcp>")
    assert b.display_name == "Bob" and b.uri.params["transport"] == "tcp" and b.params == {}
    c = NameAddr.parse("sip:c@c.example;tag=77")
    assert c.tag == "77" and c.uri.params == {}
    star = NameAddr.parse("*")
    assert star.wildcard and str(star) == "*"
    with pytest.raises(RemoteProtocolError):
        NameAddr.parse("<sip:a@b")


def test_cseq() -> None:
    assert CSeq.parse("  42   invite ") == CSeq(42, "INVITE")
    for bad in ("", "1", "x INVITE", "1 INVITE extra", "-1 INVITE", "1 IN<VITE", "99999999999 A"):
        with pytest.raises(RemoteProtocolError):
            CSeq.parse(bad)


# ---------------------------------------------------------------------------------------
# building


def test_make_response_copies_headers_and_adds_tag() -> None:
    data = INVITE.replace(
        b"Max-Forwards",
        b"Via: SIP/2.0/UDP proxy.example;branch=z9hG4bKp\r\n"
        b"Record-Route: <sip:proxy.example;lr>\r\nMax-Forwards",
    )
    r = req(data)
    ok = make_response(r, 200, to_tag="t1")
    assert ok.status == 200 and ok.reason == "OK"
    assert ok.headers.get_all("Via") == r.headers.get_all("Via")
    assert ok.headers.get_all("Record-Route") == ["<sip:proxy.example;lr>"]
    assert ok.to.tag == "t1" and ok.to.display_name == "Bob"
    assert ok.from_.tag == "1928301774"
    assert ok.call_id == r.call_id and ok.cseq == r.cseq
    assert ok.headers.get("Contact") is None and ok.body == b""
    trying = make_response(r, 100, to_tag="t1")
    assert trying.to.tag is None and trying.reason == "Trying"
    assert trying.headers.get("Record-Route") is None
    busy = make_response(r, 486, to_tag="t1")
    assert busy.headers.get("Record-Route") is None and busy.reason == "Busy Here"
    assert make_response(r, 299).reason == "Unknown"
    assert make_response(r, 480, reason="Gone fishing").reason == "Gone fishing"
    # an existing To tag is kept
    tagged = req(data.replace(b"<sip:bob@biloxi.example.com>\r\n", b"<sip:bob@biloxi.example.com>;tag=old\r\n", 1))
    assert make_response(tagged, 200, to_tag="new").to.tag == "old"
    assert isinstance(parse_message(ok.serialize()), SipResponse)


def test_headers_container() -> None:
    h = Headers([("v", "a"), ("Call-ID", "x"), ("via", "b")])
    assert h.get_all("VIA") == ["a", "b"]
    h.set("Via", "c")
    assert h.get_all("Via") == ["c"] and next(iter(h)) == ("Via", "c")
    h.prepend("Route", "<sip:r>")
    assert next(iter(h)) == ("Route", "<sip:r>")
    h.remove("route")
    assert "Route" not in h and len(h) == 2
    c = h.copy()
    c.add("X-A", "1")
    assert "X-A" not in h
    with pytest.raises(LocalProtocolError):
        h.add_checked("X-Evil", "a\r\nVia: injected")
    with pytest.raises(LocalProtocolError):
        h.add_checked("X Evil", "ok")
    h.add_checked("X-Fine", "a;b=<c>")
    assert h.get("x-fine") == "a;b=<c>"


# ---------------------------------------------------------------------------------------
# validators


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x00b", "a\x7fb", "x" * 1025, "a\x1bb"])
def test_check_header_value_refuses_controls(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        check_header_value(bad)


def test_check_header_value_accepts_normal_values() -> None:
    for ok in ("", "plain", "tab\there", 'Digest realm="x", nonce="y"', "<sip:a@b>;tag=1", "Grüße"):
        assert check_header_value(ok) == ok


@pytest.mark.parametrize(
    "bad", ["alice\n", "alice\r\n", "", "a;b", "a<b", "a>b", "a\rb", "a\nb", "a\x00b", "a@b", "a b", "a:b", "a?b", "%", "%4", "%0a", "%zz", "x" * 129, 'a"b']
)
def test_check_user_refuses_dangerous(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        check_user(bad)


def test_check_user_accepts_dial_strings() -> None:
    for ok in ("+4930123456", "alice", "*97", "1001", "john.doe_1", "%2B49"):
        assert check_user(ok) == ok


@pytest.mark.parametrize("bad", ["INVITE\n", "", "IN VITE", "A;B", "A<B", "A\r", "A\n", "A\x00", "A,B", 'A"', "A:B", "Ä"])
def test_check_token_refuses(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        check_token(bad)


def test_check_token_accepts() -> None:
    for ok in ("INVITE", "X-Custom-Header", "z9hG4bK.a!%*_+`'~"):
        assert check_token(ok) == ok


def test_check_host_and_display_name() -> None:
    assert check_host("example.com") == "example.com"
    assert check_host("[2001:db8::1]") == "[2001:db8::1]"
    for bad in ("", "a b", "a;b", "a\r\n", "a.example\n", "a@b", "a/b"):
        with pytest.raises(LocalProtocolError):
            check_host(bad)
    assert check_display_name("Alice \"A\" Smith") == 'Alice "A" Smith'
    assert quote_display_name('A "B" \\C') == '"A \\"B\\" \\\\C"'
    assert NameAddr.parse(quote_display_name('A "B" \\C') + " <sip:a@b>").display_name == 'A "B" \\C'
    with pytest.raises(LocalProtocolError):
        check_display_name("a\r\nb")
    with pytest.raises(LocalProtocolError):
        quote_display_name("x" * 129)


# ---------------------------------------------------------------------------------------
# fuzzing: a message or RemoteProtocolError, nothing else


def _exercise(m: SipRequest | SipResponse) -> None:
    """Touch the typed accessors: they may raise RemoteProtocolError, nothing else."""
    for attr in ("call_id", "cseq", "from_", "to", "vias", "top_via", "contacts", "record_routes"):
        try:
            getattr(m, attr)
        except RemoteProtocolError:
            pass
    m.serialize()


def _parse_or_error(data: bytes) -> None:
    try:
        m = parse_message(data)
    except RemoteProtocolError:
        return
    assert isinstance(m, (SipRequest, SipResponse))
    _exercise(m)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_error(data)
    _parse_or_error(b"INVITE sip:a@b SIP/2.0\r\n" + data)
    f = StreamFramer(max_size=300)
    for item in f.feed(data):
        assert isinstance(item, (SipRequest, SipResponse, RemoteProtocolError))


_SIP_ALPHABET = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"@", b"[", b"]",
     b"=", b"?", b"%", b"0", b"9", b"\xc2\xb2", b"\xd9\xa1", b"\xff", b"\x00", b"SIP/2.0", b"z9hG4bK",
     b"Content-Length: ", b"l:", b"v:", b"Via:", b"CSeq:", b"INVITE", b"sip:", b"tel:", b"a"]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from([INVITE, RESPONSE])))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(base)))
        if op == 0:
            base[pos:pos] = draw(_SIP_ALPHABET)
        elif op == 1 and base:
            end = min(len(base), pos + draw(st.integers(1, 12)))
            del base[pos:end]
        else:
            base[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(base)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutated_messages(data: bytes) -> None:
    _parse_or_error(data)
    f = StreamFramer()
    out = f.feed(data) + f.feed(INVITE)
    for item in out:
        assert isinstance(item, (SipRequest, SipResponse, RemoteProtocolError))
        if not isinstance(item, RemoteProtocolError):
            _exercise(item)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, len(INVITE) * 2), max_size=6))
def test_fuzz_framer_chunking(cuts: list[int]) -> None:
    stream = INVITE + RESPONSE
    points = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    f = StreamFramer()
    out = []
    for a, b in pairwise(points):
        out.extend(f.feed(stream[a:b]))
    assert [type(m) for m in out] == [SipRequest, SipResponse]

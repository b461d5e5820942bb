"""URI user parts on the wire (issue 12, item 9): '#' and every other character a SIP user part
may not carry unescaped are percent-escaped; ``check_user`` refuses control characters that an
escape would smuggle in. Sans-IO, bytes out."""

from __future__ import annotations

import pytest

from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.message import (
    SipRequest,
    SipURI,
    check_user,
    parse_message,
)
from webgate.proto.sip.useragent import LocalEndpoint, UAConfig, UserAgent


@pytest.mark.parametrize(
    ("user", "wire"),
    [
        ("*123#", "*123%23"),
        ("#", "%23"),
        ("a?b", "a%3Fb"),  # our parser (and others) would take '?' for the start of URI headers
        ("a:b", "a%3Ab"),  # ... and ':' for the password
        ("a b", "a%20b"),
        ("a@b", "a%40b"),
        ("a<b>\"", "a%3Cb%3E%22"),
        ("é", "%C3%A9"),
        ("50%", "50%25"),  # a lone '%' is not an escape
        ("100%23", "100%23"),  # an escape already there stays (idempotent)
        ("+4930123;npdi", "+4930123;npdi"),  # user-unreserved stays
        ("alice-_.!~*'()&=+$,/", "alice-_.!~*'()&=+$,/"),
    ],
)
def test_user_part_is_escaped_on_the_wire(user: str, wire: str) -> None:
    from webgate.proto.sip.message import escape_uri_part, unescape_uri_part

    assert escape_uri_part(user) == wire
    assert escape_uri_part(wire) == wire
    uri = SipURI(user=user, host="192.0.2.1")
    assert str(uri) == f"sip:{wire}@192.0.2.1"
    back = SipURI.parse(str(uri))
    assert back.host == "192.0.2.1" and back.port is None and not back.headers
    assert unescape_uri_part(back.user or "") == unescape_uri_part(wire)


def test_invite_request_uri_bytes_escape_the_hash() -> None:
    """A dial string with '#' (a DTMF-style code the dial plan passes through) reaches the wire
    as %23 in the Request-URI and the To URI: a raw '#' there is not a valid SIP URI."""
    ua = UserAgent(UAConfig({"udp": LocalEndpoint("udp", "127.0.0.1", 5060)}))
    ua.invite(SipURI(user="*21#", host="192.0.2.1"), b"v=0\r\n", 0.0, from_user="55#")
    ((msg, dest),) = ua.outgoing()
    assert isinstance(msg, SipRequest) and dest == ("udp", "192.0.2.1", 5060)
    data = msg.serialize()
    request_line = data.split(b"\r\n", 1)[0]
    assert request_line == b"INVITE sip:*21%23@192.0.2.1 SIP/2.0"
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"#" not in head, head
    parsed = parse_message(data)
    assert isinstance(parsed, SipRequest)
    assert parsed.uri.user == "*21%23"


@pytest.mark.parametrize(
    "value",
    [
        "a%7F", "a%7f",  # DEL
        "a%00", "a%0A", "a%0d", "a%1F",  # C0
        "a%C2%85", "a%C2%9F",  # C1 (NEL, APC) in UTF-8
        "a%E2%80%AE",  # RIGHT-TO-LEFT OVERRIDE (format control)
        "a%E2%80%A8",  # LINE SEPARATOR
        "a%FF", "a%C2",  # not UTF-8
        "a%2", "a%", "a%G1",  # malformed escapes
    ],
)
def test_check_user_refuses_escaped_controls_and_bad_escapes(value: str) -> None:
    with pytest.raises(LocalProtocolError):
        check_user(value)


@pytest.mark.parametrize("value", ["alice", "*123#", "+4930%2A1", "a%41", "%C3%A9t%C3%A9", "100%25"])
def test_check_user_accepts_clean_users(value: str) -> None:
    assert check_user(value) == value

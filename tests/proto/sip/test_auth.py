"""Digest authentication: RFC 2617 / RFC 7616 vectors, quoting, selection, verification."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webgate.proto.errors import RemoteProtocolError
from webgate.proto.sip.auth import (
    SUPPORTED_ALGORITHMS,
    Challenge,
    build_authorization,
    make_challenge,
    parse_authorization,
    parse_challenge,
    select_challenge,
    verify_authorization,
)

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

RFC7616_MD5 = """Digest
       realm="http-auth@example.org",
       qop="auth, auth-int",
       algorithm=MD5,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""""

RFC7616_SHA256 = RFC7616_MD5.replace("algorithm=MD5", "algorithm=SHA-256")
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def params_of(value: str) -> dict[str, str]:
    return dict(parse_authorization(value).params)


def test_rfc2617_example() -> None:
    ch = parse_challenge(RFC2617_CHALLENGE)
    assert ch.realm == "testrealm@host.com"
    assert ch.qop == ("auth", "auth-int")
    assert ch.algorithm == "MD5" and not ch.algorithm_given
    value = build_authorization(ch, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b")
    p = params_of(value)
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert p["nc"] == "00000001" and p["qop"] == "auth" and p["cnonce"] == "0a4f113b"
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert "algorithm" not in p  # not named in the challenge: not echoed
    assert value.startswith("Digest ")
    # qop and nc are tokens, the others quoted strings (RFC 2617 §3.2.2)
    assert 'qop=auth,' in value and "nc=00000001" in value
    assert 'username="Mufasa"' in value and 'uri="/dir/index.html"' in value
    assert verify_authorization(value, "GET", "Circle Of Life", "testrealm@host.com")
    assert not verify_authorization(value, "GET", "circle of life", "testrealm@host.com")
    assert not verify_authorization(value, "POST", "Circle Of Life", "testrealm@host.com")
    assert not verify_authorization(value, "GET", "Circle Of Life", "other realm")


def test_rfc7616_md5_example() -> None:
    ch = parse_challenge(RFC7616_MD5)
    assert ch.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    value = build_authorization(ch, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC7616_CNONCE)
    p = params_of(value)
    assert p["response"] == "8ca523f5e9506fed4657c9700eebdbec"
    assert p["algorithm"] == "MD5"
    assert verify_authorization(value, "GET", "Circle of Life", "http-auth@example.org", username="Mufasa")
    assert not verify_authorization(value, "GET", "Circle of Life", "http-auth@example.org", username="Simba")


def test_rfc7616_sha256_example() -> None:
    ch = parse_challenge(RFC7616_SHA256)
    assert ch.algorithm == "SHA-256"
    value = build_authorization(ch, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC7616_CNONCE)
    p = params_of(value)
    assert p["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert p["algorithm"] == "SHA-256"
    assert verify_authorization(value, "GET", "Circle of Life", "http-auth@example.org", uri="/dir/index.html")
    assert not verify_authorization(value, "GET", "Circle of Life", "http-auth@example.org", uri="/other")


def test_rfc7616_verify_authorization_header_as_printed() -> None:
    printed = (
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
        'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
        'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert verify_authorization(printed, "GET", "Circle of Life", "http-auth@example.org")
    assert not verify_authorization(printed.replace("nc=00000001", "nc=00000002"), "GET", "Circle of Life", "http-auth@example.org")


def test_no_qop_rfc2069_style() -> None:
    ch = parse_challenge('Digest realm="asterisk", nonce="4a3b2c1d"')
    assert ch.qop == ()
    value = build_authorization(ch, "REGISTER", "sip:pbx.example.com", "1001", "secret")
    p = params_of(value)
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    import hashlib

    ha1 = hashlib.md5(b"1001:asterisk:secret").hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:pbx.example.com").hexdigest()
    assert p["response"] == hashlib.md5(f"{ha1}:4a3b2c1d:{ha2}".encode()).hexdigest()
    assert verify_authorization(value, "REGISTER", "secret", "asterisk")


def test_auth_int_only_hashes_body() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    v1 = build_authorization(ch, "INVITE", "sip:b@x", "u", "p", body=b"v=0\r\n", cnonce="c")
    v2 = build_authorization(ch, "INVITE", "sip:b@x", "u", "p", body=b"v=1\r\n", cnonce="c")
    assert params_of(v1)["qop"] == "auth-int"
    assert params_of(v1)["response"] != params_of(v2)["response"]
    assert verify_authorization(v1, "INVITE", "p", "r", body=b"v=0\r\n")
    assert not verify_authorization(v1, "INVITE", "p", "r", body=b"v=1\r\n")


def test_unknown_qop_only_is_refused() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"')
    assert not ch.supported
    with pytest.raises(RemoteProtocolError):
        build_authorization(ch, "INVITE", "sip:b@x", "u", "p")


@pytest.mark.parametrize("alg", ["MD5-sess", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"])
def test_other_algorithms_round_trip(alg: str) -> None:
    if alg not in SUPPORTED_ALGORITHMS:
        pytest.skip(f"{alg} not offered by this OpenSSL build")
    ch = parse_challenge(make_challenge("realm", "nonce123", algorithm=alg))
    assert ch.algorithm == alg
    value = build_authorization(ch, "BYE", "sip:b@x", "alice", "pw", nc=3)
    p = params_of(value)
    assert p["algorithm"] == alg and p["nc"] == "00000003"
    assert verify_authorization(value, "BYE", "pw", "realm")
    assert not verify_authorization(value, "BYE", "pw2", "realm")


def test_session_algorithm_uses_cnonce() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth"')
    a = params_of(build_authorization(ch, "INVITE", "sip:x", "u", "p", cnonce="c1"))
    b = params_of(build_authorization(ch, "INVITE", "sip:x", "u", "p", cnonce="c2"))
    assert a["response"] != b["response"]


def test_quoting_of_awkward_values() -> None:
    ch = parse_challenge(r'Digest realm="a \"quoted\" realm, with comma", nonce="x\\y"')
    assert ch.realm == 'a "quoted" realm, with comma'
    assert ch.nonce == "x\\y"
    value = build_authorization(ch, "INVITE", "sip:b@x;transport=tcp", 'we"ird\\user', "p")
    cred = parse_authorization(value)
    assert cred.username == 'we"ird\\user'
    assert cred.realm == ch.realm and cred.nonce == ch.nonce
    assert cred.uri == "sip:b@x;transport=tcp"
    assert verify_authorization(value, "INVITE", "p", ch.realm)


def test_non_ascii_username_uses_username_star() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256')
    value = build_authorization(ch, "INVITE", "sip:b@x", "Jäsøn Doe", "pw")
    assert "username*=UTF-8''J%C3%A4s%C3%B8n%20Doe" in value
    assert parse_authorization(value).username == "Jäsøn Doe"
    assert verify_authorization(value, "INVITE", "pw", "r", username="Jäsøn Doe")


def test_userhash() -> None:
    import hashlib

    ch = parse_challenge('Digest realm="api@example.org", nonce="n", qop="auth", algorithm=SHA-256, userhash=true')
    assert ch.userhash
    value = build_authorization(ch, "GET", "/doe.json", "Jäsøn Doe", "Secret, or not?")
    p = params_of(value)
    assert p["userhash"] == "true"
    assert p["username"] == hashlib.sha256("Jäsøn Doe:api@example.org".encode()).hexdigest()
    assert verify_authorization(value, "GET", "Secret, or not?", "api@example.org", username="Jäsøn Doe")
    assert not verify_authorization(value, "GET", "Secret, or not?", "api@example.org")  # needs the name
    assert not verify_authorization(value, "GET", "Secret, or not?", "api@example.org", username="Other")


def test_parse_challenge_fields_and_leniency() -> None:
    ch = parse_challenge(
        'digest  realm = "r" ,nonce=abc/def==,  stale=TRUE, algorithm="sha-256", '
        'opaque="", domain="sip:a sip:b", qop=auth,'
    )
    assert ch.realm == "r" and ch.nonce == "abc/def=="
    assert ch.stale and ch.algorithm == "SHA-256" and ch.opaque == ""
    assert ch.domain == "sip:a sip:b"
    assert ch.qop == ("auth",)
    assert not parse_challenge('Digest realm="r", nonce="n", stale=false').stale


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Digest",
        'Basic realm="r"',
        'Digest realm="r"',  # no nonce
        'Digest nonce="n"',  # no realm
        'Digest realm="r", nonce=""',
        'Digest realm="r, nonce="n"',  # unterminated quote
        'Digest realm="r" nonce="n"',  # missing comma
        'Digest realm="r", nonce="n", realm="s"',  # duplicate
        'Digest realm="r", nonce="n", =x',
        'Digest realm="r", nonce="n", bogus',
        'Digest realm="r", nonce=',
        'Digest realm="r", nonce="n\\',
        'Digest realm="r\x00", nonce="n"',
        'Digest realm="r", nonce="n", Digest realm="s", nonce="m"',
        '"Digest" realm="r", nonce="n"',
        'Digest,realm="r", nonce="n"',
    ],
)
def test_parse_challenge_garbage(bad: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_challenge(bad)


def test_select_challenge_prefers_sha256() -> None:
    md5 = 'Digest realm="r", nonce="1", algorithm=MD5, qop="auth"'
    sha = 'Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth"'
    assert select_challenge([md5, sha]).nonce == "2"
    assert select_challenge([sha, md5]).nonce == "2"
    assert select_challenge([parse_challenge(md5)]).nonce == "1"
    # unsupported or broken ones are skipped
    weird = 'Digest realm="r", nonce="3", algorithm=SHA3-999'
    assert select_challenge([weird, "garbage", md5]).nonce == "1"
    with pytest.raises(RemoteProtocolError):
        select_challenge([weird])
    with pytest.raises(RemoteProtocolError):
        select_challenge([])
    # first offered wins a tie
    md5b = md5.replace('nonce="1"', 'nonce="9"')
    assert select_challenge([md5b, md5]).nonce == "9"


def test_verify_rejects_garbage_and_tampering() -> None:
    assert not verify_authorization("", "INVITE", "p", "r")
    assert not verify_authorization("Basic dXNlcjpwYXNz", "INVITE", "p", "r")
    assert not verify_authorization('Digest username="u"', "INVITE", "p", "r")
    ch = parse_challenge(make_challenge("r", "n"))
    good = build_authorization(ch, "INVITE", "sip:x", "u", "p", cnonce="c")
    assert verify_authorization(good, "INVITE", "p", "r")
    assert not verify_authorization(good.replace('nonce="n"', 'nonce="m"'), "INVITE", "p", "r")
    assert not verify_authorization(good.replace('cnonce="c"', 'cnonce="d"'), "INVITE", "p", "r")
    assert not verify_authorization(good.replace("qop=auth", "qop=auth-conf"), "INVITE", "p", "r")
    assert not verify_authorization(good.replace("nc=00000001", "nc=1"), "INVITE", "p", "r")
    assert not verify_authorization(good.replace("algorithm=MD5", "algorithm=SHA-256"), "INVITE", "p", "r")


def test_make_challenge_defaults() -> None:
    ch = parse_challenge(make_challenge("gw.example.org", opaque="o", stale=True))
    assert isinstance(ch, Challenge)
    assert ch.realm == "gw.example.org" and ch.qop == ("auth",) and ch.stale and ch.opaque == "o"
    assert len(ch.nonce) >= 16
    assert parse_challenge(make_challenge("r")).nonce != ch.nonce


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_parsers_only_raise_remote_protocol_error(text: str) -> None:
    for fn in (parse_challenge, parse_authorization):
        try:
            fn(text)
        except RemoteProtocolError:
            pass
    assert verify_authorization(text, "INVITE", "p", "r") in (True, False)
    select_challenge_safe([text])


def select_challenge_safe(values: list[str]) -> None:
    try:
        select_challenge(values)
    except RemoteProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    realm=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_categories=("Cc", "Cs")), max_size=30),
    user=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_categories=("Cc", "Cs")), min_size=1, max_size=30),
    password=st.text(max_size=30),
    alg=st.sampled_from(["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"]),
    qop=st.sampled_from([(), ("auth",), ("auth-int",), ("auth", "auth-int")]),
)
def test_round_trip_property(realm: str, user: str, password: str, alg: str, qop: tuple[str, ...]) -> None:
    ch = parse_challenge(make_challenge(realm, "nonce", algorithm=alg, qop=qop))
    assert ch.realm == realm
    value = build_authorization(ch, "INVITE", "sip:b@x", user, password, body=b"sdp")
    assert verify_authorization(value, "INVITE", password, realm, username=user, body=b"sdp")
    assert not verify_authorization(value, "INVITE", password + "x", realm, username=user, body=b"sdp")

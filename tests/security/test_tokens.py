"""Call tokens, sans-IO: mint/verify round trip and every way a token must be refused."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import jwt
import pytest

from webgate.calls.errors import CallRefused
from webgate.security.tokens import (
    MAX_TOKEN_LENGTH,
    TokenError,
    call_access_allowed,
    looks_like_jwt,
    mint_token,
    verify_token,
)

KEY = "k" * 16 + "0123456789abcdef"  # 32 bytes
NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Cfg:
    key: str = KEY
    issuer: str = ""
    audience: str = ""
    leeway_s: int = 30


def raw(claims: dict, key: str = KEY, alg: str = "HS256", headers: dict | None = None) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def code_of(token: object, cfg: Cfg = Cfg(), now: float = NOW) -> str:
    with pytest.raises(TokenError) as ei:
        verify_token(token, cfg, now=now)
    assert ei.value.sip_status == 401
    assert isinstance(ei.value, CallRefused)
    # messages never echo the token or the key
    assert KEY not in ei.value.message and (not isinstance(token, str) or token not in ei.value.message or not token)
    return ei.value.code


def test_round_trip_with_every_claim() -> None:
    t = mint_token(
        KEY, dest=["1234", "+4930123"], dest_pattern=r"9\d{3}", ttl_s=600, max_duration=120, sub="alice@shop",
        display_name="Alice Smith", caller_id="4930999", session_id="12345678", now=NOW,
    )
    assert looks_like_jwt(t)
    g = verify_token(t, Cfg(), now=NOW + 10)
    assert g.sub == "alice@shop" and g.dests == ("1234", "+4930123")
    assert g.max_duration_s == 120 and g.display_name == "Alice Smith" and g.caller_id == "4930999"
    assert g.session_id == "12345678" and g.expires == NOW + 600
    assert g.allows("1234") and g.allows("+4930123") and g.allows("9000") and g.allows("9999")
    assert not g.allows("12345") and not g.allows("99999") and not g.allows("x9000") and not g.allows("123")


def test_single_dest_string_and_no_dest() -> None:
    g = verify_token(mint_token(KEY, dest="echo2", now=NOW), Cfg(), now=NOW)
    assert g.allows("echo2") and not g.allows("echo")
    g = verify_token(mint_token(KEY, sub="x", now=NOW), Cfg(), now=NOW)
    assert not g.allows("1234")  # a token without dest claims allows no destination


def test_pattern_is_a_full_match() -> None:
    g = verify_token(mint_token(KEY, dest_pattern="12|34", now=NOW), Cfg(), now=NOW)
    assert g.allows("12") and g.allows("34") and not g.allows("1234") and not g.allows("123")


def test_forged_with_another_key() -> None:
    assert code_of(mint_token("z" * 32, dest="1234", now=NOW)) == "invalid_token"


def test_tampered_payload() -> None:
    t = mint_token(KEY, dest="1234", now=NOW)
    head, payload, sig = t.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["dest"] = "9999"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert code_of(f"{head}.{forged}.{sig}") == "invalid_token"


def test_alg_none_and_other_algorithms() -> None:
    # an unsigned token, built by hand
    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps({"exp": NOW + 60, "dest": "1234"}).encode()).rstrip(b"=").decode()
    unsigned = f"{head}.{body}."
    assert code_of(unsigned) == "invalid_token"
    long_key = KEY * 2  # long enough for HS512 (no InsecureKeyLengthWarning)
    assert code_of(raw({"exp": NOW + 60, "dest": "1234"}, key=long_key, alg="HS512"), Cfg(key=long_key)) == "invalid_token"
    assert code_of(raw({"exp": NOW + 60, "dest": "1234"}, key=long_key, alg="HS384"), Cfg(key=long_key)) == "invalid_token"


def test_expired_and_leeway() -> None:
    t = mint_token(KEY, dest="1234", ttl_s=60, now=NOW)
    verify_token(t, Cfg(), now=NOW + 60 + 29)  # within the leeway
    assert code_of(t, now=NOW + 60 + 31) == "token_expired"
    assert code_of(t, Cfg(leeway_s=0), now=NOW + 61) == "token_expired"


def test_missing_exp() -> None:
    assert code_of(raw({"dest": "1234"})) == "invalid_token"
    assert code_of(raw({"dest": "1234", "exp": "tomorrow"})) == "invalid_token"


def test_nbf_and_iat_in_the_future() -> None:
    assert code_of(raw({"exp": NOW + 600, "nbf": NOW + 120, "dest": "1"})) == "invalid_token"
    verify_token(raw({"exp": NOW + 600, "nbf": NOW + 20, "dest": "1"}), Cfg(), now=NOW)  # leeway
    assert code_of(raw({"exp": NOW + 600, "iat": NOW + 120, "dest": "1"})) == "invalid_token"


def test_issuer_and_audience() -> None:
    cfg = Cfg(issuer="shop", audience="webgate")
    good = mint_token(KEY, dest="1", issuer="shop", audience="webgate", now=NOW)
    verify_token(good, cfg, now=NOW)
    assert code_of(mint_token(KEY, dest="1", issuer="evil", audience="webgate", now=NOW), cfg) == "invalid_token"
    assert code_of(mint_token(KEY, dest="1", issuer="shop", audience="other", now=NOW), cfg) == "invalid_token"
    assert code_of(mint_token(KEY, dest="1", now=NOW), cfg) == "invalid_token"  # iss/aud missing
    verify_token(good, Cfg(), now=NOW)  # not configured: not checked


def test_no_key_configured_means_no_valid_token() -> None:
    assert code_of(mint_token(KEY, dest="1", now=NOW), Cfg(key="")) == "invalid_token"
    assert code_of(mint_token(KEY, dest="1", now=NOW), None) == "invalid_token"  # type: ignore[arg-type]


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * (MAX_TOKEN_LENGTH + 1), 12, None, ["a"], "a.b", "é.é.é"])
def test_malformed(token: object) -> None:
    assert code_of(token) == "invalid_token"


INJECTIONS = [
    "1234\r\nX-Evil: 1",
    "1234\n",
    "sip:1234@evil.example",
    "1234@evil.example",
    "<sip:1234@evil>",
    "1234;transport=tcp",
    '12"34',
    "12 34",
    "1234>",
    "\x00",
]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_claims_with_injection_are_refused(bad: str) -> None:
    for claims in ({"dest": bad}, {"dest": ["1234", bad]}, {"caller_id": bad}, {"session_id": bad}):
        assert code_of(raw({"exp": NOW + 60, **claims})) == "invalid_token", claims
    if "\r" in bad or "\n" in bad or "\x00" in bad:
        for name in ("display_name", "sub", "dest_pattern"):
            assert code_of(raw({"exp": NOW + 60, "dest": "1", name: bad})) == "invalid_token", name
    # mint refuses the same claims (the ops tool cannot make a token the gateway would refuse)
    with pytest.raises(TokenError):
        mint_token(KEY, dest=bad, now=NOW)


@pytest.mark.parametrize(
    "claims",
    [
        {"dest_pattern": "(12"},
        {"dest_pattern": "x" * 300},
        {"dest_pattern": ""},
        {"dest": []},
        {"dest": 1234},
        {"dest": ["1"] * 65},
        {"max_duration": 0},
        {"max_duration": "60"},
        {"max_duration": True},
        {"max_duration": 10**9},
        {"session_id": "1234567"},
        {"session_id": 12345678},
        {"display_name": "x" * 129},
        {"sub": 5},
        {"sub": "x" * 200},
    ],
)
def test_bad_claims(claims: dict) -> None:
    assert code_of(raw({"exp": NOW + 60, **claims})) == "invalid_token"


def test_unknown_claims_are_ignored() -> None:
    g = verify_token(raw({"exp": NOW + 60, "dest": "1", "jti": "x", "custom": {"a": 1}}), Cfg(), now=NOW)
    assert g.allows("1")


@dataclass
class FakeCall:
    session_id: str
    grant: object
    source_ip: str = "192.0.2.1"


def test_call_access() -> None:
    placed = verify_token(mint_token(KEY, dest="1234", sub="alice", now=NOW), Cfg(), now=NOW)
    call = FakeCall("1234567890", placed)
    same_sub = mint_token(KEY, sub="alice", now=NOW)
    other_sub = mint_token(KEY, sub="bob", now=NOW)
    by_session = mint_token(KEY, session_id="1234567890", now=NOW)
    other_session = mint_token(KEY, session_id="1234567891", now=NOW)
    assert call_access_allowed(call, same_sub, Cfg(), now=NOW)
    assert call_access_allowed(call, by_session, Cfg(), now=NOW)
    assert not call_access_allowed(call, other_sub, Cfg(), now=NOW)
    assert not call_access_allowed(call, other_session, Cfg(), now=NOW)
    assert not call_access_allowed(call, None, Cfg(), now=NOW)
    with pytest.raises(TokenError):
        call_access_allowed(call, mint_token("y" * 32, sub="alice", now=NOW), Cfg(), now=NOW)
    # a call placed without a token (public destination): the session ID is enough
    assert call_access_allowed(FakeCall("1234567890", None), None, Cfg(), now=NOW)


def test_call_access_by_destination() -> None:
    """``call/DESTINATION`` names no secret: a call placed without a token is open only to the
    address that placed it; everyone else needs a token naming the call (its session ID)."""
    public = FakeCall("1234567890", None, "192.0.2.1")
    by_session = mint_token(KEY, session_id="1234567890", now=NOW)

    def allowed(call: FakeCall, tok: str | None, ip: str | None) -> bool:
        return call_access_allowed(call, tok, Cfg(), now=NOW, by_destination=True, client_ip=ip)

    assert allowed(public, None, "192.0.2.1")
    assert not allowed(public, None, "192.0.2.2")
    assert not allowed(public, None, None)
    assert allowed(public, by_session, "192.0.2.2")
    assert not allowed(public, mint_token(KEY, sub="alice", now=NOW), "192.0.2.2")  # the call has no sub to match
    assert not allowed(public, mint_token(KEY, session_id="1234567891", now=NOW), "192.0.2.2")
    # a call placed with a token: the same rule as by session ID, whatever the address
    placed = verify_token(mint_token(KEY, dest="1234", sub="alice", now=NOW), Cfg(), now=NOW)
    private = FakeCall("1234567890", placed, "192.0.2.1")
    assert not allowed(private, None, "192.0.2.1")
    assert allowed(private, mint_token(KEY, sub="alice", now=NOW), "192.0.2.2")
    assert allowed(private, by_session, "192.0.2.2")


def test_looks_like_jwt() -> None:
    assert not looks_like_jwt("secret") and not looks_like_jwt("") and not looks_like_jwt(None)
    assert looks_like_jwt(mint_token(KEY, dest="1", now=NOW))

"""Who may watch a call's video and data (webgate/calls/watch.py, ``CallManager.authorize_watch``):
the ``watch`` claim's forms, the same ``sub`` as the token that placed the call, nothing else;
every refusal the identical ``not_found``; every attempt counted toward the per-IP rate."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.calls.gw import make_config, start_telephony, wait_for
from webgate.calls.call import Call, CallState
from webgate.calls.errors import CallRefused
from webgate.calls.policy import CallPolicy
from webgate.calls.registry import InMemoryCallRegistry
from webgate.calls.watch import NOT_FOUND, NOT_FOUND_MESSAGE, Watches
from webgate.config import TokensConfig
from webgate.legs.hub import attach_hub
from webgate.legs.local import LocalLeg
from webgate.security.tokens import mint_token, verify_token

KEY = "watch-test-token-key-0123456789abcdef"
NOW = 1_700_000_000.0
SID = "4821736095"
OTHER = "4821736096"
IP = "192.0.2.7"


class FakeCaller:
    """A HubCaller that does nothing."""

    def watchers_changed(self, count: int) -> None: ...

    def data_to_caller(self, label: str, data: str | bytes, sender: str | None) -> None: ...

    def request_keyframe(self) -> None: ...

    def limit_bitrate(self, bps: int) -> None: ...


class Host:
    """What Watches uses of the manager."""

    def __init__(self, attempts: int = 0) -> None:
        self.clock = [0.0]
        self.policy = CallPolicy(max_attempts_per_ip_per_minute=attempts, clock=lambda: self.clock[0])
        self.registry = InMemoryCallRegistry()
        self.tokens = TokensConfig(key=KEY)
        self.wall_clock = lambda: NOW
        self.counters: dict[str, int] = {}


class Leg:
    kind = "webrtc"
    client = f"{IP}:5000"


def live_call(host: Host, session_id: str = SID, placed_by: str | None = None, hub: bool = True) -> Call:
    call = Call(None, Leg(), session_id, None)  # type: ignore[arg-type]
    if placed_by is not None:
        call.grant = verify_token(mint_token(KEY, dest="1234", sub=placed_by, now=NOW), host.tokens, now=NOW)
    if hub:
        attach_hub(call, caller=FakeCaller())
    host.registry.add(call)
    return call


def tok(**kw: Any) -> str:
    return mint_token(KEY, now=NOW, **kw)


def refusal(w: Watches, session_id: object, token: object, ip: str = IP) -> CallRefused:
    with pytest.raises(CallRefused) as ei:
        w.authorize(session_id, token, ip)
    return ei.value


@pytest.mark.parametrize(
    "claim",
    [SID, "*", [SID], [OTHER, SID], ["*"], [OTHER, "*"]],
)
def test_watch_claim_forms_that_cover_the_call(claim: Any) -> None:
    host = Host()
    call = live_call(host)
    assert Watches(host).authorize(SID, tok(watch=claim), IP) is call
    assert host.counters["watches_authorized"] == 1


def test_same_sub_as_the_token_that_placed_the_call() -> None:
    host = Host()
    call = live_call(host, placed_by="alice")
    w = Watches(host)
    assert w.authorize(SID, tok(sub="alice"), IP) is call
    assert w.authorize(SID, tok(sub="alice", dest="9999"), "[2001:db8::1]:443") is call  # a second device
    assert refusal(w, SID, tok(sub="bob")).code == NOT_FOUND
    # a call placed without a token has no sub to match: a token with a sub (even "") is not enough
    host2 = Host()
    live_call(host2)
    assert refusal(Watches(host2), SID, tok(sub="alice")).code == NOT_FOUND


def test_every_not_found_case_is_identical() -> None:
    host = Host()
    live_call(host, placed_by="alice")
    live_call(host, OTHER, placed_by="carol")
    ended = live_call(host, "1111111111")
    ended.state = CallState.ENDED
    live_call(host, "2222222222", hub=False)  # a call without video or data (e.g. LocalLeg)
    closed = live_call(host, "3333333333")
    closed.hub.close("remote_hangup")
    w = Watches(host)
    expired = mint_token(KEY, watch="*", ttl_s=60, now=NOW - 3600)
    cases: list[tuple[object, object]] = [
        (SID, None),  # no token
        (SID, ""),
        (SID, "not-a-jwt"),
        (SID, mint_token("x" * 40, watch="*", now=NOW)),  # another key
        (SID, expired),
        (SID, mint_token(KEY, watch="*", now=NOW + 600)),  # issued in the future
        (SID, tok(watch=OTHER)),  # another call
        (SID, tok(watch=[OTHER, "5555555555"])),
        (SID, tok(session_id=SID)),  # a call token's session_id claim is not a watch claim
        (SID, tok(dest="1234")),
        (SID, tok(sub="carol")),  # the sub of another call
        ("9999999999", tok(watch="*")),  # unknown session ID
        ("9999999999", tok(sub="alice")),
        ("1111111111", tok(watch="*")),  # ended
        ("2222222222", tok(watch="*")),  # no hub
        ("3333333333", tok(watch="*")),  # hub closed
        ("12", tok(watch="*")),  # not a session ID
        (f"{SID}\n", tok(watch="*")),
        (None, tok(watch="*")),
        (4821736095, tok(watch="*")),
        ({"x": 1}, tok(watch="*")),
        (SID, 12345),
        (SID, {"token": "x"}),
    ]
    seen = set()
    for sid, t in cases:
        e = refusal(w, sid, t)
        seen.add((type(e), e.code, e.message, e.sip_status, str(e)))
    assert seen == {(CallRefused, NOT_FOUND, NOT_FOUND_MESSAGE, 404, "not_found: no such call")}
    assert host.counters["watches_refused"] == len(cases)
    assert host.counters["watches_authorized"] == 0


def test_no_token_key_configured_means_nobody_watches() -> None:
    host = Host()
    live_call(host)
    host.tokens = TokensConfig(key="")
    assert refusal(Watches(host), SID, tok(watch="*")).code == NOT_FOUND


def test_attempts_count_toward_the_per_ip_rate() -> None:
    host = Host(attempts=3)
    call = live_call(host)
    w = Watches(host)
    assert w.authorize(SID, tok(watch="*"), IP) is call  # 1: allowed, still counted
    assert refusal(w, "9999999999", tok(watch="*")).code == NOT_FOUND  # 2
    assert refusal(w, SID, None).code == NOT_FOUND  # 3
    e = refusal(w, SID, tok(watch="*"))  # 4: past the rate, even with a good token
    assert (e.code, e.sip_status) == ("rate_limited", 429)
    assert refusal(w, SID, tok(watch="*"), f"{IP}:1234").code == "rate_limited"  # the same IP, any port
    assert w.authorize(SID, tok(watch="*"), "192.0.2.8") is call  # another address
    host.clock[0] += 61
    assert w.authorize(SID, tok(watch="*"), IP) is call


def test_watch_claim_validation() -> None:
    cfg = TokensConfig(key=KEY)
    assert verify_token(tok(watch=SID), cfg, now=NOW).watch == (SID,)
    assert verify_token(tok(watch=[SID, OTHER, SID]), cfg, now=NOW).watch == (SID, OTHER)
    g = verify_token(tok(watch="*"), cfg, now=NOW)
    assert g.watch == ("*",) and g.may_watch(SID) and g.may_watch("12345678")
    g = verify_token(tok(watch=[SID]), cfg, now=NOW)
    assert g.may_watch(SID) and not g.may_watch(OTHER)
    assert verify_token(tok(dest="1"), cfg, now=NOW).watch == ()
    assert not verify_token(tok(dest="1"), cfg, now=NOW).may_watch(SID)


@pytest.mark.parametrize(
    "bad",
    ["", "12", "1234567a", f"{SID}\n", "**", "all", [], ["12"], [SID, 7], 4821736095, {"id": SID}, True, [SID] * 65,
     "\u0664\u0668\u0662\u0661\u0667\u0663\u0666\u0660\u0669\u0665"],
)
def test_bad_watch_claims_are_refused(bad: Any) -> None:
    from webgate.security.tokens import TokenError, grant_from_claims

    with pytest.raises(TokenError) as ei:
        grant_from_claims({"watch": bad})
    assert ei.value.code == "invalid_token" and "claim 'watch'" in ei.value.message
    with pytest.raises(TokenError):
        mint_token(KEY, watch=bad, now=NOW)


@pytest_twisted.ensureDeferred
async def test_the_managers_authorize_watch() -> None:
    """Through the real CallManager: a live echo call placed with a token (sub alice), its hub
    attached the way a leg does it."""
    svc = start_telephony(make_config({"tokens": {"key": KEY}, "limits": {"max_attempts_per_ip_per_minute": 60}}))
    try:
        m = svc.manager
        leg = LocalLeg(client=f"{IP}:1")
        call = m.place_call(leg, "echo", token=mint_token(KEY, sub="alice"))
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        with pytest.raises(CallRefused) as ei:
            m.authorize_watch(call.session_id, mint_token(KEY, watch="*"), IP)
        assert ei.value.code == NOT_FOUND  # no hub: a LocalLeg has no video or data
        attach_hub(call, caller=FakeCaller(), video=svc.config.video)
        assert call.hub.max_watchers == svc.config.video.max_watchers_per_call == 4
        assert m.authorize_watch(call.session_id, mint_token(KEY, watch=call.session_id), IP) is call
        assert m.authorize_watch(call.session_id, mint_token(KEY, sub="alice"), IP) is call
        with pytest.raises(CallRefused) as ei:
            m.authorize_watch(call.session_id, mint_token(KEY, sub="bob"), IP)
        assert (ei.value.code, ei.value.message) == (NOT_FOUND, NOT_FOUND_MESSAGE)
        m.hangup(call)
        with pytest.raises(CallRefused) as ei:
            m.authorize_watch(call.session_id, mint_token(KEY, watch="*"), IP)
        assert (ei.value.code, ei.value.message) == (NOT_FOUND, NOT_FOUND_MESSAGE)
        assert m.counters["watches_authorized"] == 2 and m.counters["watches_refused"] == 3
    finally:
        await svc.stopService()

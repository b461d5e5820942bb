"""The call layer's seams (issue 13): the neutral syntax checks shared with security/, the one
refusal type, the ports the adapters implement, and the manager's parts keeping its log
namespace and its public surface."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from tests.calls.gw import make_config, start_telephony
from webgate import syntax
from webgate.adapters.rtp import RtpPortPool
from webgate.calls import admission, builtin, inbound, media_path, outbound
from webgate.calls.dialplan import validate_destination
from webgate.calls.errors import CallRefused, NoPortsAvailable
from webgate.calls.manager import CallManager
from webgate.legs.local import LocalLeg
from webgate.security.tokens import INVALID_TOKEN, TOKEN_EXPIRED, TokenError, mint_token, verify_token

KEY = "k" * 32


@pytest.mark.parametrize("dest", ["echo", "2000", "+4930123", "*97#", "a.b_c-d", "x" * 64])
def test_destinations_that_are_dial_strings(dest: str) -> None:
    assert syntax.is_valid_destination(dest)
    assert validate_destination(dest) == dest


@pytest.mark.parametrize("dest", ["", "x" * 65, "sip:2000@evil", "20 00", "2000\r\nX: y", "a@b", "<2000>", "2000;x", None, 2000])
def test_destinations_that_are_refused_with_484(dest: Any) -> None:
    assert not syntax.is_valid_destination(dest)
    with pytest.raises(CallRefused) as ei:
        validate_destination(dest)
    assert (ei.value.code, ei.value.sip_status) == ("invalid_destination", 484)
    assert ei.value.message == "destination must be 1-64 characters of letters, digits, + * # . _ -"


def test_session_id_syntax() -> None:
    for good in ("12345678", "1234567890"):
        assert syntax.is_valid_session_id(good)
    for bad in ("1234567", "12345678901", "1234567a", "", None, 12345678, " 12345678"):
        assert not syntax.is_valid_session_id(bad)


def test_security_raises_the_call_layers_refusal() -> None:
    """One refusal type for calls/ and security/: an invalid token is refused like any call."""
    assert CallRefused is syntax.CallRefused
    assert issubclass(TokenError, CallRefused)
    with pytest.raises(CallRefused) as ei:
        verify_token("a.b.c", type("Cfg", (), {"key": KEY})(), now=0.0)
    assert (ei.value.code, ei.value.sip_status) == (INVALID_TOKEN, 401) == ("invalid_token", 401)
    expired = mint_token(KEY, dest="1", ttl_s=60, now=1000.0)
    with pytest.raises(TokenError) as ei2:
        verify_token(expired, type("Cfg", (), {"key": KEY})(), now=2000.0)
    assert ei2.value.code == TOKEN_EXPIRED == "token_expired"
    # a token's destinations pass the same syntax check as a client's destination
    with pytest.raises(TokenError, match="invalid destination"):
        mint_token(KEY, dest="sip:1@x", now=1000.0)


class _NoPorts:
    """A reactor whose UDP ports are all taken."""

    def listenUDP(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (Twisted API)
        raise CannotListenError("127.0.0.1", args[0], OSError("in use"))


def test_the_rtp_adapter_raises_the_call_layers_no_ports_error() -> None:
    pool = RtpPortPool(_NoPorts(), "127.0.0.1", 40000, 40003)
    with pytest.raises(NoPortsAvailable):
        pool.allocate()


def test_the_managers_parts_log_in_its_namespace() -> None:
    """The lines that moved out of manager.py keep the namespace log consumers filter on."""
    for module in (admission, builtin, inbound, media_path, outbound):
        log = module.log
        assert isinstance(log, Logger) and log.namespace == "webgate.calls.manager", module.__name__


@pytest_twisted.ensureDeferred
async def test_no_media_ports_is_refused_and_frees_the_session_id() -> None:
    svc = start_telephony(make_config())
    try:
        manager = svc.manager
        assert isinstance(manager, CallManager) and svc.rtp_pool is not None
        refused: list[tuple[str, str]] = []

        class Observer:
            def call_refused(self, code: str, ingress: str, client: str) -> None:
                refused.append((code, ingress))

        manager.observers.append(Observer())
        svc.rtp_pool.port_max = svc.rtp_pool.port_min - 1  # no pair left
        with pytest.raises(CallRefused) as ei:
            manager.place_call(LocalLeg(), "echo", session_id="1234567890")
        assert (ei.value.code, ei.value.sip_status) == ("no_media_ports", 503)
        assert refused == [("no_media_ports", "local")]
        assert manager.counters["calls_refused"] == 1 and manager.counters["calls_placed"] == 0
        assert not manager.session_ids.live and len(manager.registry) == 0
        assert manager.live_calls() == 0 and manager.builtin_calls == {}
    finally:
        await svc.stopService()


def test_session_id_with_a_trailing_newline_is_refused() -> None:
    """`$` matches before a final newline: the check must be a full match (it once was not)."""
    from webgate.syntax import is_valid_session_id

    assert is_valid_session_id("12345678")
    for bad in ("12345678\n", "1234567\n8", "\n12345678", "١٢٣٤٥٦٧٨"):
        assert not is_valid_session_id(bad), repr(bad)


def test_a_reoffer_for_a_codec_this_build_cannot_encode_is_refused_with_488() -> None:
    """Issue 16: a re-INVITE moving to G.729 while libbcg729 is absent gets 488 (the call stays on its
    codec), not an answer the stream could not honour; with the library present, the same offer is answered."""
    from types import SimpleNamespace

    from webgate.media.codecs import libraries
    from webgate.proto import sdp

    class Session:
        local_sdp = b""

        def __init__(self) -> None:
            self.answers: list[tuple[bytes | None, int]] = []

        def answer_offer(self, body: bytes | None, status: int = 200) -> None:
            self.answers.append((body, status))

    class Stream:
        def __init__(self) -> None:
            self.media = SimpleNamespace(codec=sdp.PCMU)
            self.configured: list[Any] = []

        def configure(self, nm: Any) -> None:
            self.configured.append(nm)

    offer = sdp.build_offer([sdp.G729, sdp.TELEPHONE_EVENT], "127.0.0.1", 40000, 1)
    paths = media_path.MediaPaths(SimpleNamespace(flush=lambda: None), {}, lambda: None,
                                  rtp_advertise="127.0.0.1", jitter=(20, 100))
    owner = SimpleNamespace(sdp_session_id=7, sdp_version=1)
    saved = libraries.library_path("bcg729")
    try:
        libraries.set_library_paths({"bcg729": ""})  # as if libbcg729-0 were not installed
        s, st = Session(), Stream()
        paths.answer_reoffer(s, offer.serialize(), SimpleNamespace(stream=st, rtp_port=41000), owner)
        assert [status for _b, status in s.answers] == [488] and st.configured == []
        libraries.set_library_paths({"bcg729": saved})
        s, st = Session(), Stream()
        paths.answer_reoffer(s, offer.serialize(), SimpleNamespace(stream=st, rtp_port=41000), owner)
        assert [status for _b, status in s.answers] == [200] and st.configured[0].codec.name == "G729"
    finally:
        libraries.set_library_paths({"bcg729": saved})

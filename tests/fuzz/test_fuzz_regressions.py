"""Each crash the fuzzers found (docs/security.md, "Fuzzing"), kept as a regression case: the
input goes through the same entry point as in the fuzz target and must now end in the
documented error (or be handled), never in another exception.

Self-contained (no import of fuzz/), so each case also runs against an older tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from webgate.config import ConfigError, load_config
from webgate.proto.errors import RemoteProtocolError
from webgate.proto.sdp import Codec, negotiate_answer, parse_sdp

#: (fuzz target, case name, input as the fuzz target receives it); the short fuzz run replays them
REGRESSIONS: list[tuple[str, str, bytes]] = [
    # config-1: a config file that is not UTF-8 escaped load_config as UnicodeDecodeError
    ("config", "config_not_utf8", b"# webgate configuration\n[sip]\nuser_agent = \"x\xd7y\"\n"),
    # sdp-1: a lone CR inside an SDP line was accepted, then our answer (which copies the
    # telephone-event fmtp) raised LocalProtocolError when serialized
    ("sdp", "sdp_cr_in_line", (b"v=0\r\no=- 1013157649 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
     b"m=audio 42002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\x02"
     b"a=fmtp:101 0-15\r\na=sendrecv")),
]


def _case(name: str) -> bytes:
    return next(data for _, n, data in REGRESSIONS if n == name)


def test_config_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "webgate.toml"
    path.write_bytes(_case("config_not_utf8"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "UTF-8" in str(e.value)


def test_sdp_with_a_cr_inside_a_line_is_refused_not_answered() -> None:
    offer = _case("sdp_cr_in_line")
    with pytest.raises(RemoteProtocolError):
        parse_sdp(offer)
    # the same with a NUL: RFC 4566 text excludes NUL, CR and LF
    with pytest.raises(RemoteProtocolError):
        parse_sdp(offer.replace(b"\r\x02", b"\x00\r\n"))
    # and a well-formed offer still negotiates and serializes
    good = parse_sdp(offer.replace(b"\r\x02", b"\r\n"))
    answer = negotiate_answer(good, [Codec("PCMU", 8000), Codec("telephone-event", 8000)], "127.0.0.1", 40000)
    assert b"a=fmtp:101 0-15\r\n" in answer[0].serialize()

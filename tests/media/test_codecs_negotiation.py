"""The new SIP codecs in SDP offer/answer (fmtp per RFC 4867 / RFC 4856, answers honouring the
offer, ptime/maxptime), what the call layer offers (a codec whose library is absent is not), and
the configuration: ``check-config`` naming the package to install."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from webgate import cli
from webgate.calls.offers import (
    BUILTIN_CODECS,
    can_encode,
    in_offer_order,
    inbound_codecs,
    sdp_codecs,
)
from webgate.config import ConfigError, parse_config
from webgate.media.codecs import set_library_paths
from webgate.proto import sdp
from webgate.proto.errors import RemoteProtocolError

ALL_NEW = ["G729", "AMR", "AMR-WB", "G726-32", "AAL2-G726-32", "G723"]


@pytest.fixture(autouse=True)
def default_libraries() -> Iterator[None]:
    set_library_paths({})
    yield
    set_library_paths({})


def offer_of(*lines: str, m: str) -> sdp.SessionDescription:
    body = "\r\n".join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
                        f"m=audio 4000 RTP/AVP {m}", *lines]) + "\r\n"
    return sdp.parse_sdp(body.encode())


def answer(offer: sdp.SessionDescription, names: list[str]) -> tuple[sdp.MediaDescription, sdp.NegotiatedMedia]:
    supported = in_offer_order(offer, [c for c in sdp_codecs(names) if can_encode(c)])
    ans, nm = sdp.negotiate_answer(offer, supported + [sdp.TELEPHONE_EVENT], "192.0.2.9", 5000)
    return ans.media[0], nm


def test_offer_lists_each_codec_with_its_fmtp() -> None:
    offer = sdp.build_offer(sdp_codecs(ALL_NEW) + [sdp.TELEPHONE_EVENT], "192.0.2.9", 5000, 1)
    m = offer.media[0]
    got = {(c.name, c.fmtp) for c in m.codecs()}
    assert ("G729", "annexb=no") in got and ("AMR", "octet-align=1") in got and ("AMR", None) in got
    assert ("AMR-WB", "octet-align=1") in got and ("AMR-WB", None) in got
    assert {"G726-32", "AAL2-G726-32", "G723", "telephone-event"} <= {c.name for c in m.codecs()}
    pts = {c.name + (c.fmtp or ""): c.payload_type for c in m.codecs()}
    assert pts["G729annexb=no"] == 18 and pts["G723"] == 4
    assert pts["G726-32"] is not None and pts["G726-32"] >= 96  # RFC 3551: dynamic
    # DTMF at AMR-WB's 16 kHz clock too
    assert any(c.is_telephone_event and c.clock_rate == 16000 for c in m.codecs())
    # a G.723.1-led offer asks for 30 ms packets, its frame
    assert sdp.build_offer(sdp_codecs(["G723", "PCMU"]), "192.0.2.9", 5000, 1).media[0].ptime == 30
    assert offer.media[0].ptime == 20


def test_amr_answer_honours_the_offers_packing_and_modes() -> None:
    offer = offer_of("a=rtpmap:97 AMR/8000", "a=fmtp:97 octet-align=1; mode-set=0,2,4,7; mode-change-period=2; "
                     "mode-change-capability=2; mode-change-neighbor=1", "a=ptime:40", "a=maxptime:60", m="97")
    media, nm = answer(offer, ["AMR"])
    params = sdp.fmtp_params(media.fmtp[97])
    assert params == {"octet-align": "1", "mode-set": "0,2,4,7", "mode-change-period": "2",
                      "mode-change-capability": "2", "mode-change-neighbor": "1"}
    assert nm.codec.payload_type == 97 and nm.ptime == 40 and nm.maxptime == 60
    # bandwidth-efficient offered: answered bandwidth-efficient (no octet-align)
    media, nm = answer(offer_of("a=rtpmap:98 AMR/8000", "a=fmtp:98 mode-set=7", m="98"), ["AMR"])
    assert sdp.fmtp_params(media.fmtp[98]) == {"mode-set": "7"}
    # both offered: the offerer's first choice
    both = offer_of("a=rtpmap:98 AMR/8000", "a=rtpmap:97 AMR/8000", "a=fmtp:97 octet-align=1", m="98 97")
    assert answer(both, ["AMR"])[1].codec.payload_type == 98


def test_amr_options_we_cannot_do_are_not_chosen() -> None:
    for fmtp in ("octet-align=1; crc=1", "octet-align=1; robust-sorting=1", "octet-align=1; interleaving=4"):
        with pytest.raises(RemoteProtocolError) as e:
            answer(offer_of("a=rtpmap:97 AMR/8000", f"a=fmtp:97 {fmtp}", m="97"), ["AMR"])
        assert e.value.status_hint == 488
    assert not sdp.AMR_OA.matches(sdp.AMR_BE)
    assert sdp.AMR_OA.matches(sdp.Codec("AMR", 8000, fmtp="mode-set=2;octet-align=1"))


def test_g729_answer_says_annexb_no_and_pt2_is_g726() -> None:
    media, nm = answer(offer_of("a=rtpmap:18 G729/8000", "a=fmtp:18 annexb=yes", m="18"), ["G729"])
    assert media.fmtp[18] == "annexb=no" and nm.codec.name == "G729"
    media, nm = answer(offer_of(m="2"), ["G726-32"])  # PT 2 with no rtpmap: G.726-32 (RFC 1890's G721)
    assert nm.codec.name == "G726-32" and nm.codec.payload_type == 2


def test_uac_side_keeps_our_packing_when_an_answer_drops_octet_align() -> None:
    offer = sdp.build_offer(sdp_codecs(["AMR"]), "192.0.2.9", 5000, 1)
    oa_pt = next(c.payload_type for c in offer.media[0].codecs() if c.fmtp == "octet-align=1")
    ans = offer_of(f"a=rtpmap:{oa_pt} AMR/8000", f"a=fmtp:{oa_pt} mode-set=2", "a=maxptime:40", m=str(oa_pt))
    nm = sdp.apply_answer(offer, ans)
    assert nm.codec.payload_type == oa_pt and nm.maxptime == 40
    assert sdp.fmtp_params(nm.codec.fmtp) == {"mode-set": "2", "octet-align": "1"}


def test_a_codec_whose_library_is_absent_is_not_offered_or_answered(tmp_path: Path) -> None:
    assert [c.name for c in sdp_codecs(["PCMU", "G729"])] == ["PCMU", "G729"]
    set_library_paths({"bcg729": str(tmp_path / "nowhere.so")})
    assert [c.name for c in sdp_codecs(["PCMU", "G729"])] == ["PCMU"]
    assert not can_encode(sdp.G729_NO_ANNEXB)
    assert "G729" not in {c.name for c in inbound_codecs()}
    assert "G729" in {c.name for c in BUILTIN_CODECS}  # the builtin filters with can_encode
    with pytest.raises(RemoteProtocolError):
        answer(offer_of("a=rtpmap:18 G729/8000", m="18"), ["G729"])
    set_library_paths({})
    assert "G729" in {c.name for c in inbound_codecs()}


def test_check_config_names_the_missing_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "webgate.toml"
    conf.write_text('[codecs]\nbcg729_library = "/nonexistent/libbcg729.so.0"\n\n'
                    '[[trunk]]\nname = "pbx"\ntarget = "sip:pbx.example.com"\ncodecs = ["PCMU", "G729"]\n')
    assert cli.main(["check-config", str(conf)]) == 1
    err = capsys.readouterr().err
    assert "trunk pbx: codec G729 needs libbcg729 (apt install libbcg729-0)" in err
    # with the library where it is: valid, and every new codec name is known
    trunk = {"name": "pbx", "target": "sip:pbx.example.com", "codecs": ALL_NEW}
    config = parse_config({"trunk": [trunk]})
    assert config.trunks[0].codecs == tuple(ALL_NEW)
    with pytest.raises(ConfigError) as e:
        parse_config({"codecs": {"amrwbenc_library": ""}, "trunk": [trunk]})
    assert "trunk pbx: codec AMR-WB needs libvo-amrwbenc (apt install libvo-amrwbenc0)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({"codecs": {"g729": "x"}})
    assert "codecs.g729" in str(e.value)

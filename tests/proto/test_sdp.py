"""Tests for webgate.proto.sdp: parser/serializer round trips, offer/answer, hold, 488, fuzz."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    Connection,
    SessionDescription,
    apply_answer,
    build_offer,
    effective_direction,
    mirror_direction,
    negotiate_answer,
    parse_sdp,
)

# Captured from Chromium 156 headless (peers/chromium/www/offer_dumpdom.html, fake devices).
CHROMIUM_OFFER = """\
v=0
o=- 3063520470810173909 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 14a26c88-11df-4289-a139-0b20844bcccf
m=audio 56911 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 192.0.2.2
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1313919238 1 udp 2122194687 192.0.2.2 56911 typ host generation 0 network-id 1
a=candidate:1227013558 1 udp 2122265343 fd00::2 43480 typ host generation 0 network-id 2
a=candidate:815739806 1 tcp 1518214911 192.0.2.2 9 typ host tcptype active generation 0 network-id 1
a=candidate:938303278 1 tcp 1518285567 fd00::2 9 typ host tcptype active generation 0 network-id 2
a=ice-ufrag:+eYD
a=ice-pwd:j6Pdfpfw5k1t19uN0b92ip3X
a=ice-options:trickle
a=fingerprint:sha-256 54:CD:68:9B:91:03:E0:AF:95:02:82:B3:54:35:1A:1D:E7:23:63:3D:D0:95:56:41:53:BF:9C:A9:0D:F0:F6:92
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:14a26c88-11df-4289-a139-0b20844bcccf 748e3651-a6ea-4402-bf0b-9751af9f6973
a=rtcp-mux
a=rtcp-rsize
a=rtcp-xr:rcvr-rtt=all
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:904249201 cname:+2PrbjZXZ3t0jOPa
a=ssrc:904249201 msid:14a26c88-11df-4289-a139-0b20844bcccf 748e3651-a6ea-4402-bf0b-9751af9f6973
m=video 46333 UDP/TLS/RTP/SAVPF 96 97 102 103 104 107 108 109 114 115 116 117 39 40 45 46 98 99 100 101 118 119 120
c=IN IP4 192.0.2.2
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1313919238 1 udp 2122194687 192.0.2.2 46333 typ host generation 0 network-id 1
a=candidate:1227013558 1 udp 2122265343 fd00::2 41429 typ host generation 0 network-id 2
a=candidate:815739806 1 tcp 1518214911 192.0.2.2 9 typ host tcptype active generation 0 network-id 1
a=candidate:938303278 1 tcp 1518285567 fd00::2 9 typ host tcptype active generation 0 network-id 2
a=ice-ufrag:+eYD
a=ice-pwd:j6Pdfpfw5k1t19uN0b92ip3X
a=ice-options:trickle
a=fingerprint:sha-256 54:CD:68:9B:91:03:E0:AF:95:02:82:B3:54:35:1A:1D:E7:23:63:3D:D0:95:56:41:53:BF:9C:A9:0D:F0:F6:92
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendrecv
a=msid:14a26c88-11df-4289-a139-0b20844bcccf 227b7f32-6c93-413c-b445-d7d465e061ef
a=rtcp-mux
a=rtcp-rsize
a=rtcp-xr:rcvr-rtt=all
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 goog-remb
a=rtcp-fb:104 transport-cc
a=rtcp-fb:104 ccm fir
a=rtcp-fb:104 nack
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=104
a=rtpmap:108 H264/90000
a=rtcp-fb:108 goog-remb
a=rtcp-fb:108 transport-cc
a=rtcp-fb:108 ccm fir
a=rtcp-fb:108 nack
a=rtcp-fb:108 nack pli
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
a=rtpmap:114 H264/90000
a=rtcp-fb:114 goog-remb
a=rtcp-fb:114 transport-cc
a=rtcp-fb:114 ccm fir
a=rtcp-fb:114 nack
a=rtcp-fb:114 nack pli
a=fmtp:114 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:115 rtx/90000
a=fmtp:115 apt=114
a=rtpmap:116 H264/90000
a=rtcp-fb:116 goog-remb
a=rtcp-fb:116 transport-cc
a=rtcp-fb:116 ccm fir
a=rtcp-fb:116 nack
a=rtcp-fb:116 nack pli
a=fmtp:116 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:39 H264/90000
a=rtcp-fb:39 goog-remb
a=rtcp-fb:39 transport-cc
a=rtcp-fb:39 ccm fir
a=rtcp-fb:39 nack
a=rtcp-fb:39 nack pli
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f
a=rtpmap:40 rtx/90000
a=fmtp:40 apt=39
a=rtpmap:45 AV1/90000
a=rtcp-fb:45 goog-remb
a=rtcp-fb:45 transport-cc
a=rtcp-fb:45 ccm fir
a=rtcp-fb:45 nack
a=rtcp-fb:45 nack pli
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 VP9/90000
a=rtcp-fb:100 goog-remb
a=rtcp-fb:100 transport-cc
a=rtcp-fb:100 ccm fir
a=rtcp-fb:100 nack
a=rtcp-fb:100 nack pli
a=fmtp:100 profile-id=2
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=rtpmap:118 red/90000
a=rtpmap:119 rtx/90000
a=fmtp:119 apt=118
a=rtpmap:120 ulpfec/90000
a=ssrc-group:FID 1062036024 3894511499
a=ssrc:1062036024 cname:+2PrbjZXZ3t0jOPa
a=ssrc:1062036024 msid:14a26c88-11df-4289-a139-0b20844bcccf 227b7f32-6c93-413c-b445-d7d465e061ef
a=ssrc:3894511499 cname:+2PrbjZXZ3t0jOPa
a=ssrc:3894511499 msid:14a26c88-11df-4289-a139-0b20844bcccf 227b7f32-6c93-413c-b445-d7d465e061ef
"""

BARESIP_OFFER = """\
v=0
o=- 3170272050 1405190686 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
a=tool:baresip 1.0.0
m=audio 28322 RTP/AVP 96 9 0 8 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:2687151813 cname:sip:alice@127.0.0.1:28572
a=minptime:20
a=ptime:20
"""

# SIPp's uas_pcmu.xml / uac_media.xml bodies with the [keywords] filled in.
SIPP_UAS_ANSWER = (
    "v=0\r\n"
    "o=sipp 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 26000 RTP/AVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)
SIPP_UAC_OFFER = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 26100 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)

SUPPORTED = [PCMU, PCMA, TELEPHONE_EVENT]


# ------------------------------------------------------------------------------ parsing


def test_parse_chromium_offer() -> None:
    sdp = parse_sdp(CHROMIUM_OFFER)
    assert sdp.origin.sess_id == "3063520470810173909"
    assert sdp.origin.sess_version == 2
    assert sdp.get_attribute("group") == "BUNDLE 0 1"
    assert [m.kind for m in sdp.media] == ["audio", "video"]
    audio = sdp.media[0]
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert audio.port == 56911
    assert audio.formats == ["111", "63", "9", "0", "8", "13", "110", "126"]
    assert audio.connection == Connection("192.0.2.2")
    assert audio.rtcp is not None and audio.rtcp.port == 9
    assert audio.rtcp.connection == Connection("0.0.0.0")
    assert audio.rtcp_mux
    assert audio.direction == "sendrecv"
    names = [(c.payload_type, c.name, c.clock_rate, c.channels) for c in audio.codecs()]
    assert names == [
        (111, "opus", 48000, 2),
        (63, "red", 48000, 2),
        (9, "G722", 8000, 1),
        (0, "PCMU", 8000, 1),
        (8, "PCMA", 8000, 1),
        (13, "CN", 8000, 1),
        (110, "telephone-event", 48000, 1),
        (126, "telephone-event", 8000, 1),
    ]
    assert audio.codec_for(111) == Codec("opus", 48000, 2, "minptime=10;useinbandfec=1", 111)
    assert audio.get_attribute("ice-ufrag") == "+eYD"
    # candidates are kept in order as generic attributes
    cands = [v for k, v in audio.attributes if k == "candidate"]
    assert len(cands) == 4 and cands[1] is not None and "fd00::2" in cands[1]
    video = sdp.media[1]
    assert video.codec_for(102) is not None
    assert video.fmtp[102] == "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"
    assert len(video.formats) == 23


def test_parse_baresip_offer() -> None:
    sdp = parse_sdp(BARESIP_OFFER.encode())
    audio = sdp.media[0]
    assert sdp.connection == Connection("127.0.0.1")
    assert sdp.get_attribute("tool") == "baresip 1.0.0"
    assert audio.ptime == 20
    assert audio.get_attribute("minptime") == "20"
    assert audio.codec_for(96) == Codec("opus", 48000, 2, "stereo=1;sprop-stereo=1", 96)
    assert audio.codec_for(9) == dataclasses.replace(G722, fmtp=None)


@pytest.mark.parametrize("text", [CHROMIUM_OFFER, BARESIP_OFFER, SIPP_UAS_ANSWER, SIPP_UAC_OFFER])
def test_round_trip(text: str) -> None:
    first = parse_sdp(text)
    data = first.serialize()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert data.endswith(b"\r\n")
    second = parse_sdp(data)
    assert second == first
    assert second.serialize() == data
    # every original line survives (order may differ for the structured ones)
    assert sorted(text.replace("\r", "").strip().split("\n")) == sorted(
        data.decode().strip().split("\r\n")
    )


def test_sipp_exact_bytes_round_trip() -> None:
    assert parse_sdp(SIPP_UAC_OFFER).serialize().decode().startswith("v=0\r\no=user1 ")
    # SIPp's order matches our canonical order except ptime/direction, which we also emit last
    assert parse_sdp(SIPP_UAC_OFFER).serialize().decode() == SIPP_UAC_OFFER


def test_ipv6_connection_and_session_direction() -> None:
    text = (
        "v=0\no=- 1 1 IN IP6 2001:db8::1\ns=x\nc=IN IP6 2001:db8::2\nt=0 0\na=sendonly\n"
        "m=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 8\na=inactive\n"
    )
    sdp = parse_sdp(text)
    assert sdp.origin.addrtype == "IP6"
    assert sdp.connection == Connection("2001:db8::2", "IP6")
    assert sdp.direction == "sendonly"
    assert effective_direction(sdp, sdp.media[0]) == "sendonly"
    assert effective_direction(sdp, sdp.media[1]) == "inactive"
    assert parse_sdp(sdp.serialize()) == sdp


def test_tolerates_unknown_lines_and_bad_optional_attributes() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nx=whatever\nt=0 0\n"
        "m=audio 4000 RTP/AVP 0 98\nc=IN IP4 1.2.3.4/127\ny=media-unknown\n"
        "a=rtpmap:98 broken\na=ptime:abc\na=ptime:30.0\na=rtcp:xyz\n"
    )
    sdp = parse_sdp(text)
    media = sdp.media[0]
    assert media.connection is not None and media.connection.address == "1.2.3.4"
    assert media.connection.suffix == "/127"
    assert media.ptime == 30
    assert ("rtpmap", "98 broken") in media.attributes
    assert ("ptime", "abc") in media.attributes
    assert media.codecs() == [dataclasses.replace(PCMU, fmtp=None)]  # unknown dynamic PT skipped
    assert ("x", "whatever") in sdp.other_lines and ("y", "media-unknown") in media.other_lines
    assert parse_sdp(sdp.serialize()) == sdp


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "o=- 1 1 IN IP4 1.2.3.4\n",  # no v=
        "v=1\no=- 1 1 IN IP4 1.2.3.4\n",
        "v=0\ns=-\n",  # no o=
        "v=0\no=- 1 IN IP4 1.2.3.4\n",
        "v=0\no=- 1 x IN IP4 1.2.3.4\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 70000 RTP/AVP 0\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio -1 RTP/AVP 0\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ngarbage line\n",
        "\x00\xff",
    ],
)
def test_garbage_is_400(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_sdp(text)
    assert info.value.status_hint == 400


def test_serialize_refuses_crlf_injection() -> None:
    sdp = parse_sdp(SIPP_UAC_OFFER)
    sdp.session_name = "x\r\nm=video 1 RTP/AVP 0"
    with pytest.raises(LocalProtocolError):
        sdp.serialize()


# ------------------------------------------------------------------------------ offer/answer


def test_build_offer_assigns_payload_types() -> None:
    offer = build_offer([OPUS, PCMU, PCMA, TELEPHONE_EVENT], "10.0.0.1", 30000, 42,
                        rtcp_port=30001)
    data = offer.serialize().decode()
    assert "m=audio 30000 RTP/AVP 96 0 8 97\r\n" in data
    assert "a=rtpmap:96 opus/48000/2\r\n" in data
    assert "a=fmtp:96 minptime=10;useinbandfec=1\r\n" in data
    assert "a=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-16\r\n" in data
    assert "o=- 42 1 IN IP4 10.0.0.1\r\n" in data
    assert "c=IN IP4 10.0.0.1\r\n" in data
    assert "a=ptime:20\r\na=sendrecv\r\n" in data
    assert "a=rtcp:30001\r\n" in data
    v6 = build_offer([PCMU], "::1", 30000, 1)
    assert v6.connection == Connection("::1", "IP6")
    with pytest.raises(LocalProtocolError):
        build_offer([], "10.0.0.1", 1, 1)
    with pytest.raises(LocalProtocolError):
        build_offer([PCMU], "10.0.0.1", 1, 1, direction="sideways")


def test_answer_chromium_offer_prefers_our_order() -> None:
    offer = parse_sdp(CHROMIUM_OFFER)
    answer, media = negotiate_answer(
        offer, [PCMA, PCMU, TELEPHONE_EVENT], "127.0.0.1", 40000, 7,
        protos=["UDP/TLS/RTP/SAVPF"],
    )
    assert media.codec.name == "PCMA" and media.codec.payload_type == 8
    assert media.telephone_event == 126  # the 8 kHz one, not 110 (48 kHz)
    assert media.telephone_event_clock_rate == 8000
    assert media.remote_address == "192.0.2.2" and media.remote_port == 56911
    assert media.direction == "sendrecv" and not media.on_hold
    assert len(answer.media) == 2
    assert answer.media[0].formats == ["8", "126"]
    assert answer.media[0].proto == "UDP/TLS/RTP/SAVPF"
    assert answer.media[1].kind == "video" and answer.media[1].port == 0
    assert answer.media[1].formats == offer.media[1].formats
    assert parse_sdp(answer.serialize()) == answer


def test_answer_chromium_offer_with_opus_keeps_dynamic_pt() -> None:
    offer = parse_sdp(CHROMIUM_OFFER)
    _, media = negotiate_answer(offer, [OPUS, PCMU, TELEPHONE_EVENT], "127.0.0.1", 40000,
                                protos=["UDP/TLS/RTP/SAVPF"])
    assert media.codec.payload_type == 111 and media.codec.clock_rate == 48000
    assert media.telephone_event == 110


def test_srtp_offer_rejected_by_default_proto_list() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        negotiate_answer(parse_sdp(CHROMIUM_OFFER), SUPPORTED, "127.0.0.1", 40000)
    assert info.value.status_hint == 488


def test_answer_baresip_offer_g722() -> None:
    offer = parse_sdp(BARESIP_OFFER)
    answer, media = negotiate_answer(offer, [G722, PCMU, TELEPHONE_EVENT], "127.0.0.1", 40000,
                                     ptime=20)
    assert media.codec.name == "G722" and media.codec.clock_rate == 8000
    assert media.telephone_event == 101
    assert media.remote_rtcp_port == 28323
    assert answer.media[0].formats == ["9", "101"]
    assert answer.media[0].ptime == 20


def test_answer_without_telephone_event_support() -> None:
    _, media = negotiate_answer(parse_sdp(SIPP_UAC_OFFER), [PCMU], "127.0.0.1", 40000)
    assert media.telephone_event is None


def test_no_common_codec_is_488() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        negotiate_answer(parse_sdp(SIPP_UAC_OFFER), [G722, OPUS], "127.0.0.1", 40000)
    assert info.value.status_hint == 488
    video_only = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=video 5000 RTP/AVP 96\n"
    with pytest.raises(RemoteProtocolError) as info:
        negotiate_answer(parse_sdp(video_only), SUPPORTED, "127.0.0.1", 40000)
    assert info.value.status_hint == 488


@pytest.mark.parametrize(
    ("offered", "ours"),
    [("sendrecv", "sendrecv"), ("sendonly", "recvonly"), ("recvonly", "sendonly"),
     ("inactive", "inactive")],
)
def test_direction_mirrored(offered: str, ours: str) -> None:
    text = SIPP_UAC_OFFER.replace("a=sendrecv", f"a={offered}")
    answer, media = negotiate_answer(parse_sdp(text), SUPPORTED, "127.0.0.1", 40000)
    assert media.direction == ours
    assert answer.media[0].direction == ours
    assert media.on_hold == (offered in ("sendonly", "inactive"))
    assert mirror_direction(offered) == ours


def test_local_direction_intersects() -> None:
    _, media = negotiate_answer(parse_sdp(SIPP_UAC_OFFER), SUPPORTED, "127.0.0.1", 1,
                                direction="sendonly")
    assert media.direction == "sendonly" and media.sends and not media.receives
    assert mirror_direction("sendonly", "sendonly") == "inactive"


def test_reinvite_hold_and_move() -> None:
    first = parse_sdp(SIPP_UAC_OFFER)
    _, m1 = negotiate_answer(first, SUPPORTED, "127.0.0.1", 40000)
    assert (m1.remote_address, m1.remote_port, m1.on_hold) == ("127.0.0.1", 26100, False)
    # RFC 2543 style hold: c=0.0.0.0 with sendrecv
    held = parse_sdp(SIPP_UAC_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    _, m2 = negotiate_answer(held, SUPPORTED, "127.0.0.1", 40000)
    assert m2.on_hold and not m2.sends and m2.receives
    # moved to another address and port, resumed
    moved = parse_sdp(
        SIPP_UAC_OFFER.replace("127.0.0.1", "10.9.8.7").replace("26100", "26200")
    )
    _, m3 = negotiate_answer(moved, SUPPORTED, "127.0.0.1", 40000)
    assert (m3.remote_address, m3.remote_port, m3.on_hold) == ("10.9.8.7", 26200, False)
    assert m3.remote_rtcp_port == 26201


def test_offer_rejected_audio_lines_skipped() -> None:
    text = SIPP_UAC_OFFER.replace("m=audio 26100 RTP/AVP 0 8 101",
                                  "m=audio 0 RTP/AVP 0\r\nm=audio 26100 RTP/AVP 0 8 101")
    answer, media = negotiate_answer(parse_sdp(text), SUPPORTED, "127.0.0.1", 40000)
    assert media.media_index == 1
    assert [m.port for m in answer.media] == [0, 40000]


def test_rtcp_mux_only_when_asked() -> None:
    text = SIPP_UAC_OFFER.replace("a=sendrecv", "a=sendrecv\r\na=rtcp-mux")
    answer, media = negotiate_answer(parse_sdp(text), SUPPORTED, "127.0.0.1", 40000)
    assert not media.rtcp_mux and media.remote_rtcp_port == 26101
    answer, media = negotiate_answer(parse_sdp(text), SUPPORTED, "127.0.0.1", 40000,
                                     rtcp_mux=True)
    assert media.rtcp_mux and media.remote_rtcp_port == 26100 and answer.media[0].rtcp_mux


# ------------------------------------------------------------------------------ UAC side


def test_apply_answer_from_sipp() -> None:
    offer = build_offer([PCMU, PCMA, TELEPHONE_EVENT], "127.0.0.1", 30000, 1)
    media = apply_answer(offer, parse_sdp(SIPP_UAS_ANSWER))
    assert media.codec.name == "PCMU" and media.codec.payload_type == 0
    assert media.telephone_event == 101
    assert (media.remote_address, media.remote_port, media.remote_rtcp_port) == (
        "127.0.0.1", 26000, 26001)
    assert media.direction == "sendrecv" and media.ptime == 20


def test_apply_answer_back_to_back() -> None:
    offer = build_offer([OPUS, PCMA, TELEPHONE_EVENT], "10.0.0.1", 30000, 5, direction="sendonly")
    offer_wire = parse_sdp(offer.serialize())
    answer, theirs = negotiate_answer(offer_wire, [PCMA, TELEPHONE_EVENT], "10.0.0.2", 31000, 9)
    assert theirs.direction == "recvonly" and theirs.on_hold
    ours = apply_answer(offer, parse_sdp(answer.serialize()))
    assert ours.codec.name == "PCMA" and ours.direction == "sendonly"
    assert ours.telephone_event == theirs.telephone_event == 97
    assert ours.remote_address == "10.0.0.2" and ours.remote_port == 31000


def test_apply_answer_with_renumbered_dynamic_pt() -> None:
    offer = build_offer([OPUS, PCMU], "10.0.0.1", 30000, 5)
    answer = parse_sdp(
        "v=0\no=- 1 1 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\n"
        "m=audio 31000 RTP/AVP 120\na=rtpmap:120 OPUS/48000/2\n"
    )
    media = apply_answer(offer, answer)
    assert media.codec.payload_type == 120  # the remote's number is what we send


@pytest.mark.parametrize(
    "answer_text",
    [
        "v=0\no=- 1 1 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\nm=audio 0 RTP/AVP 0\n",
        "v=0\no=- 1 1 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\nm=audio 31000 RTP/AVP 18\n",
        "v=0\no=- 1 1 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\n",
    ],
)
def test_apply_answer_488(answer_text: str) -> None:
    offer = build_offer([PCMU, PCMA], "10.0.0.1", 30000, 5)
    with pytest.raises(RemoteProtocolError) as info:
        apply_answer(offer, parse_sdp(answer_text))
    assert info.value.status_hint == 488


def test_apply_answer_hold_by_remote() -> None:
    offer = build_offer([PCMU], "10.0.0.1", 30000, 5)
    answer = parse_sdp(SIPP_UAS_ANSWER.replace("a=sendrecv", "a=inactive"))
    media = apply_answer(offer, answer)
    assert media.on_hold and media.direction == "inactive"


# ------------------------------------------------------------------------------ fuzz


def _parse_or_remote_error(data: bytes | str) -> SessionDescription | None:
    try:
        return parse_sdp(data)
    except RemoteProtocolError as exc:
        assert exc.status_hint == 400
        return None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_remote_error(data)
    _parse_or_remote_error(b"v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\n" + data)


_SEEDS = [CHROMIUM_OFFER[:2500], BARESIP_OFFER, SIPP_UAC_OFFER, SIPP_UAS_ANSWER]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_SEEDS),
    st.lists(
        st.tuples(st.integers(0, 3000), st.integers(0, 20),
                  st.text(alphabet="0123456789 /:=aimcv\r\n-x.", max_size=12)),
        min_size=1, max_size=5,
    ),
)
def test_fuzz_mutated_sdp(seed: str, edits: list[tuple[int, int, str]]) -> None:
    text = seed
    for pos, cut, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos + cut:]
    sdp = _parse_or_remote_error(text)
    if sdp is None:
        return
    # whatever parsed must serialize and re-parse to the same model
    try:
        data = sdp.serialize()
    except LocalProtocolError:
        return
    assert parse_sdp(data) == sdp
    # and negotiation either works or gives a 4xx-style RemoteProtocolError
    try:
        negotiate_answer(sdp, SUPPORTED, "127.0.0.1", 40000)
    except RemoteProtocolError as exc:
        assert exc.status_hint in (400, 488)

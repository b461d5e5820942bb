"""Tests for webgate.proto.h264: AVC records and tags, RFC 6184 packetizer/depacketizer, SPS, GOP cache."""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.flv import (
    AVC_END_OF_SEQUENCE,
    AVC_NALU,
    AVC_SEQUENCE_HEADER,
    FRAME_INTER,
    FRAME_KEY,
    VideoTagHeader,
    build_video_tag,
)
from webgate.proto.h264 import (
    FU_A,
    NAL_AUD,
    NAL_IDR,
    NAL_PPS,
    NAL_SEI,
    NAL_SLICE,
    NAL_SPS,
    STAP_A,
    AccessUnit,
    AvcDecoderConfig,
    AvcTagReader,
    AvcTagWriter,
    Depacketizer,
    GopCache,
    H264Payload,
    Packetizer,
    build_avc_tag,
    has_parameter_sets,
    is_keyframe,
    join_annexb,
    join_length_prefixed,
    nal_type,
    parse_avc_tag,
    parse_sps,
    profile_level_id,
    split_annexb,
    split_length_prefixed,
    sprop_parameter_sets,
    with_parameter_sets,
)

# ------------------------------------------------------------------------------ fixtures
# SPS/PPS written by FFmpeg 5.1's libx264 (`ffmpeg -f lavfi -i testsrc=size=WxH -c:v libx264
# -profile:v P -pix_fmt F -f h264`), cut out of the Annex B stream; the sizes are what ffprobe
# reports for the same stream. crop720/crop618 were re-cropped with `-bsf:v h264_metadata=crop_*`.
REAL_SPS = {
    # name: (hex, width, height, profile-level-id)
    "baseline 320x240": ("6742c00dd90141fb011000000300100000030320f142a480", 320, 240, "42c00d"),
    "baseline 640x360 (cropped)": ("6742c01fd900a02ff97011000003000100000300320f162e48", 640, 360, "42c01f"),
    "high 640x360 (cropped)": ("6764001eacd940a02ff97011000003000100000300320f162d96", 640, 360, "64001e"),
    "high 1280x720": ("6764001facd9405005bb011000000300100000030320f1831960", 1280, 720, "64001f"),
    "high 1280x720 (cropped from 736)": (
        "67640020acd9405005df297011000003000100000300320f183196", 1280, 720, "640020"),
    "main 1920x1080 (cropped)": ("674d4028eca03c0113f2e022000003000200000300641e30632c", 1920, 1080, "4d4028"),
    "high 1920x1080 interlaced": ("67640028acd94078044fde0220000003002000000643e2c5b2c0", 1920, 1080, "640028"),
    "high 642x362 (odd crop)": ("6764001eacd940a42fe224c044000003000400000300c83c58b658", 642, 362, "64001e"),
    "high 618x352 (crop on 4 sides)": (
        "6764001eacd940a02fc490a5c044000003000400000300c83c58b658", 618, 352, "64001e"),
    "high 4:2:2 322x242": ("677a000dbcd9415087888fc044000003000400000300c83c50a658", 322, 242, "7a000d"),
    "high 4:4:4 322x242": ("67f4000d919b282a10f1f1f808800000030080000019078a14cb", 322, 242, "f4000d"),
    "high gray 330x250": ("6764000df36505421e79f016c80000030008000003019078a14cb0", 330, 250, "64000d"),
}
# Branches x264 never writes (SPS scaling lists, pic_order_cnt_type 1, separate colour planes, field
# coding), made with _make_sps below; FFmpeg's `-bsf:v trace_headers` parsed each one to its
# rbsp_stop_one_bit with the same field values (widths/heights below are the spec's formula).
CRAFTED_SPS = {
    "scaling lists 640x360": (
        "6764001ead843fff928efffc891c3870e1c3870e1c3870e1c3870e1c3870e1c3870e1c3870e03f0e1c3870e1c3"
        "870e1c3870e1c3870e1c3870e1c3870e1c38701f870e1c387421ff043b405017fca8", 640, 360),
    "separate colour planes 317x233": ("67f4001e939b40a0fe990a80", 317, 233),
    "field coding 720x568": ("674d001eda02d091f680", 720, 568),
}
# The AVCDecoderConfigurationRecords FFmpeg's FLV muxer wrote for libx264 (High 4:4:4 from testsrc's
# RGB, High 4:2:0, Constrained Baseline): with and without the High-profile extension.
AVCC_444 = bytes.fromhex(
    "01f4000dffe1001967f4000d919640507ec044000003000400000300c83c50a92001000668ebc3c44844fff8f800")
AVCC_HIGH = bytes.fromhex(
    "0164001effe1001a6764001eacb201405ff2e022000003000200000300641e2c5c9001000668ebc3cb22c0fdf8f800")
AVCC_BASELINE = bytes.fromhex(
    "0142c01effe100196742c01ed900a02ff97011000003000100000300320f162e4801000568cb83cb20")

SPS = bytes.fromhex(REAL_SPS["high 640x360 (cropped)"][0])
PPS = bytes.fromhex("68ebe3cb22c0")


def nal(t: int, size: int, nri: int = 3, seed: int = 0) -> bytes:
    """A NAL unit of type ``t``, ``size`` bytes long (header included), random body (whose first bit
    is 1: a slice's first_mb_in_slice is 0, so it starts a picture)."""
    body = bytearray(random.Random(seed * 7919 + size).randbytes(size - 1))
    if body:
        body[0] |= 0x80
    return bytes([(nri << 5) | t]) + body


def idr(size: int = 5000, seed: int = 0) -> bytes:
    return b"\x65\x88" + nal(NAL_IDR, size, seed=seed)[2:]  # first_mb_in_slice = 0


def p_slice(size: int = 800, seed: int = 0) -> bytes:
    return b"\x41\x9a" + nal(NAL_SLICE, size, 2, seed)[2:]


class Stream:
    """Packetizes access units into (seq, ts, marker, payload) tuples with running numbers."""

    def __init__(self, max_payload: int = 1200, seq: int = 65000, ts: int = 2**32 - 9000, **kw: bool) -> None:
        self.packetizer = Packetizer(max_payload, **kw)
        self.seq = seq
        self.ts = ts

    def packets(self, nals: Sequence[bytes]) -> list[tuple[int, int, bool, bytes]]:
        out = []
        for p in self.packetizer.packetize(nals):
            out.append((self.seq, self.ts, p.marker, p.payload))
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        return out


def feed(d: Depacketizer, packets: Sequence[tuple[int, int, bool, bytes]]) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    for seq, ts, marker, payload in packets:
        out.extend(d.push(seq, ts, marker, payload))
    return out


# ------------------------------------------------------------------------------ NAL helpers


def test_nal_type_keyframe_and_parameter_sets() -> None:
    assert nal_type(SPS) == NAL_SPS and nal_type(PPS) == NAL_PPS and nal_type(b"") == 0
    assert is_keyframe([SPS, PPS, idr()]) and not is_keyframe([p_slice(), b""])
    assert has_parameter_sets([PPS, SPS]) and not has_parameter_sets([SPS, idr()])
    aud = bytes([NAL_AUD, 0xF0])
    assert with_parameter_sets([aud, idr()], [SPS], [PPS]) == [aud, SPS, PPS, idr()]
    assert with_parameter_sets([idr()], [SPS], [PPS]) == [SPS, PPS, idr()]
    assert with_parameter_sets([PPS, idr()], [SPS], [b"\x68\x00"]) == [SPS, PPS, idr()]
    assert with_parameter_sets([SPS, PPS, idr()], [b"\x67"], [b"\x68"]) == [SPS, PPS, idr()]
    assert with_parameter_sets([p_slice()], [SPS], [PPS]) == [p_slice()]


@pytest.mark.parametrize("length_size", [1, 2, 3, 4])
def test_length_prefixed_round_trip(length_size: int) -> None:
    nals = [nal(1, n) for n in (1, 2, 100, 250)]
    data = join_length_prefixed(nals, length_size)
    assert len(data) == sum(map(len, nals)) + 4 * length_size
    assert split_length_prefixed(data, length_size) == nals
    for cut in range(1, len(data)):
        if cut not in _boundaries(nals, length_size):
            with pytest.raises(RemoteProtocolError):
                split_length_prefixed(data[:cut], length_size)


def _boundaries(nals: list[bytes], length_size: int) -> set[int]:
    out, pos = set(), 0
    for n in nals:
        pos += length_size + len(n)
        out.add(pos)
    return out


def test_length_prefixed_edges() -> None:
    assert split_length_prefixed(b"") == []
    assert split_length_prefixed(b"\x00\x00\x00\x00\x00\x00\x00\x01\x09") == [b"\x09"]  # empty skipped
    with pytest.raises(LocalProtocolError):
        join_length_prefixed([b"x" * 256], 1)
    with pytest.raises(LocalProtocolError):
        split_length_prefixed(b"", 5)


def test_annexb_round_trip() -> None:
    nals = [SPS, PPS, idr(300), b"\x06\x05\x00\x80"]
    assert split_annexb(join_annexb(nals)) == nals
    assert join_annexb([SPS]) == b"\x00\x00\x00\x01" + SPS
    three = b"\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00"  # 3-byte codes, trailing zeros
    assert split_annexb(three) == [SPS, PPS]
    assert split_annexb(b"\x00\x00") == [] and split_annexb(b"no start code") == []


# ------------------------------------------------------------------------------ AVCDecoderConfigurationRecord


@pytest.mark.parametrize("record", [AVCC_444, AVCC_HIGH, AVCC_BASELINE], ids=["444", "high", "baseline"])
def test_avc_config_round_trip_of_ffmpeg_records(record: bytes) -> None:
    config = AvcDecoderConfig.parse(record)
    assert config.version == 1 and config.nalu_length_size == 4
    assert len(config.sps) == 1 and len(config.pps) == 1
    assert (config.profile, config.compatibility, config.level) == tuple(config.sps[0][1:4])
    assert config.serialize() == record == bytes(config)
    assert AvcDecoderConfig.from_parameter_sets(config.sps, config.pps).serialize() == record
    for cut in range(len(record) - 4 if config.chroma_format is not None else len(record)):
        with pytest.raises(RemoteProtocolError):
            AvcDecoderConfig.parse(record[:cut])


def test_avc_config_fields() -> None:
    c444 = AvcDecoderConfig.parse(AVCC_444)
    assert (c444.profile, c444.chroma_format, c444.bit_depth_luma, c444.bit_depth_chroma) == (244, 3, 8, 8)
    assert AvcDecoderConfig.parse(AVCC_BASELINE).chroma_format is None
    assert AvcDecoderConfig.parse(AVCC_HIGH).chroma_format == 1
    # several parameter sets, 2-byte lengths
    config = AvcDecoderConfig.from_parameter_sets([SPS, SPS[:-1]], [PPS, b"\x68\x01", b"\x68\x02"], 2)
    again = AvcDecoderConfig.parse(config.serialize())
    assert again == config and again.nalu_length_size == 2 and len(again.pps) == 3
    assert AvcDecoderConfig.parse(AVCC_HIGH[:-4]).chroma_format is None  # extension left out: accepted
    with pytest.raises(RemoteProtocolError, match="version"):
        AvcDecoderConfig.parse(b"\x02" + AVCC_HIGH[1:])
    with pytest.raises(LocalProtocolError):
        AvcDecoderConfig.from_parameter_sets([], [PPS])
    with pytest.raises(LocalProtocolError):
        AvcDecoderConfig(100, 0, 30, 3, (SPS,), (PPS,)).serialize()


# ------------------------------------------------------------------------------ FLV AVC tags


def test_avc_tag_build_and_parse() -> None:
    body = build_avc_tag(AVC_NALU, b"\x00\x00\x00\x02\x41\x9a", keyframe=False, composition_time=-40)
    assert body[:5] == bytes([0x27, 1]) + (-40 & 0xFFFFFF).to_bytes(3, "big")
    tag = parse_avc_tag(body)
    assert (tag.frame_type, tag.packet_type, tag.composition_time) == (FRAME_INTER, AVC_NALU, -40)
    assert not tag.is_keyframe and tag.payload == b"\x00\x00\x00\x02\x41\x9a"
    head = parse_avc_tag(build_avc_tag(AVC_SEQUENCE_HEADER, AVCC_HIGH))
    assert head.is_keyframe and head.frame_type == FRAME_KEY and head.payload == AVCC_HIGH
    assert build_avc_tag(AVC_END_OF_SEQUENCE, keyframe=False) == b"\x27\x02\x00\x00\x00"
    # the same bytes as flv.build_video_tag
    assert build_avc_tag(AVC_NALU, b"x", composition_time=80) == build_video_tag(
        VideoTagHeader(FRAME_KEY, 7, AVC_NALU, 80), b"x")
    for bad in (b"", b"\x22abc", b"\x17\x01", b"\x17\x05\x00\x00\x00"):  # empty, Sorenson, short, type 5
        with pytest.raises(RemoteProtocolError):
            parse_avc_tag(bad)
    with pytest.raises(LocalProtocolError):
        build_avc_tag(3)
    with pytest.raises(LocalProtocolError):
        build_avc_tag(AVC_NALU, composition_time=1 << 23)


def test_tag_reader_makes_access_units_with_parameter_sets_in_keyframes() -> None:
    reader = AvcTagReader()
    config = AvcDecoderConfig.parse(AVCC_HIGH)
    assert reader.feed(build_avc_tag(AVC_SEQUENCE_HEADER, AVCC_HIGH), 0) is None
    assert reader.config == config
    key = idr(2000)
    au = reader.feed(build_avc_tag(AVC_NALU, join_length_prefixed([b"\x06\x05\x01\x80", key])), 0)
    assert au is not None and au.is_keyframe and au.timestamp == 0
    assert au.nals == (config.sps[0], config.pps[0], b"\x06\x05\x01\x80", key)
    inter = reader.feed(build_avc_tag(AVC_NALU, join_length_prefixed([p_slice()]), keyframe=False,
                                      composition_time=40), 1000)
    assert inter is not None and inter.nals == (p_slice(),) and inter.timestamp == 1040 * 90
    assert reader.feed(build_avc_tag(AVC_END_OF_SEQUENCE), 2000) is None
    assert reader.feed(build_avc_tag(AVC_NALU, b""), 2000) is None
    wrap = reader.feed(build_avc_tag(AVC_NALU, join_length_prefixed([p_slice()])), 2**32 // 90 + 1)
    assert wrap is not None and wrap.timestamp == ((2**32 // 90 + 1) * 90) & 0xFFFFFFFF
    plain = AvcTagReader(parameter_sets_in_keyframes=False)
    plain.feed(build_avc_tag(AVC_SEQUENCE_HEADER, AVCC_HIGH), 0)
    au = plain.feed(build_avc_tag(AVC_NALU, join_length_prefixed([key])), 0)
    assert au is not None and au.nals == (key,)
    with pytest.raises(RemoteProtocolError):
        reader.feed(build_avc_tag(AVC_NALU, b"\x00\x00\x00\x09\x41"), 0)


def test_tag_writer_sends_a_sequence_header_first_and_on_change() -> None:
    writer = AvcTagWriter()
    assert writer.write([p_slice()]) == [] and writer.needs_keyframe  # nothing before a keyframe
    assert writer.write([idr()]) == []  # a keyframe, but no SPS/PPS known yet
    tags = writer.write([SPS, PPS, idr()])
    assert [parse_avc_tag(t).packet_type for t in tags] == [AVC_SEQUENCE_HEADER, AVC_NALU]
    assert AvcDecoderConfig.parse(parse_avc_tag(tags[0]).payload).sps == (SPS,)
    assert split_length_prefixed(parse_avc_tag(tags[1]).payload) == [idr()]
    assert parse_avc_tag(tags[1]).is_keyframe and not writer.needs_keyframe
    (inter,) = writer.write([p_slice()], composition_time=33)
    assert not parse_avc_tag(inter).is_keyframe and parse_avc_tag(inter).composition_time == 33
    assert len(writer.write([SPS, PPS, idr()])) == 1  # same parameter sets: no new header
    other = bytes.fromhex(REAL_SPS["high 1280x720"][0])
    tags = writer.write([other, PPS, idr()])
    assert len(tags) == 2 and AvcDecoderConfig.parse(parse_avc_tag(tags[0]).payload).sps == (other,)
    assert parse_avc_tag(writer.end_of_sequence()).packet_type == AVC_END_OF_SEQUENCE
    # writer -> reader gives back the access units (SPS/PPS in the keyframe)
    reader = AvcTagReader()
    got = [au.nals for t in AvcTagWriter().write([SPS, PPS, idr()]) if (au := reader.feed(t, 0))]
    assert got == [(SPS, PPS, idr())]


# ------------------------------------------------------------------------------ packetizer


def test_single_nal_unit_packets_and_marker() -> None:
    pk = Packetizer(1200, insert_parameter_sets=False)
    one = pk.packetize([p_slice(900)])
    assert one == [H264Payload(p_slice(900), True)]
    two = pk.packetize([p_slice(700, 1), p_slice(700, 2)])  # two slices too big to aggregate
    assert [p.marker for p in two] == [False, True] and [p.payload for p in two] == [p_slice(700, 1), p_slice(700, 2)]
    assert pk.packetize([]) == []


def test_stap_a_aggregates_small_nal_units() -> None:
    pk = Packetizer(1200)
    sei = nal(NAL_SEI, 20, nri=0)
    (stap,) = pk.packetize([SPS, PPS, sei, idr(300)])
    assert stap.marker and stap.payload[0] == 0x78  # NRI 3 (the highest inside), type 24
    expected = b"".join(len(n).to_bytes(2, "big") + n for n in (SPS, PPS, sei, idr(300)))
    assert stap.payload[1:] == expected
    low = pk.packetize([nal(NAL_SEI, 10, nri=0), nal(NAL_SLICE, 10, nri=1)])[0].payload
    assert low[0] == (1 << 5) | STAP_A


def test_stap_a_boundaries() -> None:
    pk = Packetizer(100, insert_parameter_sets=False)
    a, b = nal(NAL_SEI, 47), nal(NAL_SLICE, 48)
    assert len(pk.packetize([a, b])) == 1  # 1 + 2 + 47 + 2 + 48 = 100: fits exactly
    c = nal(NAL_SLICE, 49)
    out = pk.packetize([a, c])  # 101: does not
    assert [p.payload for p in out] == [a, c]
    # a NAL unit of exactly the budget goes alone; one byte more is fragmented
    assert pk.packetize([nal(NAL_SLICE, 100)]) == [H264Payload(nal(NAL_SLICE, 100), True)]
    assert [p.payload[0] & 0x1F for p in pk.packetize([nal(NAL_SLICE, 101)])] == [FU_A, FU_A]


def test_fu_a_fragments() -> None:
    pk = Packetizer(1200, insert_parameter_sets=False)
    big = idr(5000)
    frags = pk.packetize([big])
    assert len(frags) == 5 and all(len(f.payload) <= 1200 for f in frags)
    sizes = [len(f.payload) - 2 for f in frags]
    assert max(sizes) - min(sizes) <= 1  # near-equal, no tiny tail
    assert [f.marker for f in frags] == [False] * 4 + [True]
    assert all(f.payload[0] == (big[0] & 0xE0) | FU_A for f in frags)
    assert [f.payload[1] & 0xC0 for f in frags] == [0x80, 0, 0, 0, 0x40]
    assert all(f.payload[1] & 0x1F == NAL_IDR for f in frags)
    assert bytes([big[0]]) + b"".join(f.payload[2:] for f in frags) == big
    tiny = Packetizer(3, insert_parameter_sets=False).packetize([nal(NAL_SLICE, 10)])
    assert len(tiny) == 9 and all(len(p.payload) == 3 for p in tiny)
    for bad in (2, 65536):
        with pytest.raises(LocalProtocolError):
            Packetizer(bad)


def test_parameter_sets_inserted_before_idr() -> None:
    pk = Packetizer(1200)
    assert [p.payload for p in pk.packetize([idr(900)])] == [idr(900)]  # none known yet
    pk.packetize([SPS, PPS, idr(900)])  # learnt in-band
    first = pk.packetize([idr(900)])[0].payload
    assert first[0] & 0x1F == STAP_A and first[3:3 + len(SPS)] == SPS
    assert [p.payload for p in pk.packetize([p_slice()])] == [p_slice()]  # only before IDRs
    given_sets = Packetizer(1200)
    given_sets.set_parameter_sets([SPS], [PPS])
    d = Depacketizer()
    (au,) = d.push(1, 0, True, given_sets.packetize([b"\x09\xf0", idr(500)])[0].payload)
    assert au.nals == (b"\x09\xf0", SPS, PPS, idr(500))
    off = Packetizer(1200, insert_parameter_sets=False)
    off.set_parameter_sets([SPS], [PPS])
    assert [p.payload for p in off.packetize([idr(900)])] == [idr(900)]


def test_packetizer_drops_nal_units_rtp_would_misread() -> None:
    pk = Packetizer(1200, insert_parameter_sets=False)
    out = pk.packetize([b"", b"\x00abc", bytes([STAP_A]) + b"x", bytes([FU_A]) + b"y", b"\x7fz", p_slice()])
    assert [p.payload for p in out] == [p_slice()] and pk.dropped_nals == 5


# ------------------------------------------------------------------------------ round trips


def test_round_trip_over_sizes_and_payload_budgets() -> None:
    sizes = [1, 2, 3, 10, 99, 100, 101, 1198, 1199, 1200, 1201, 1202, 2399, 2400, 2401, 65535, 70001]
    for budget in (3, 4, 50, 100, 576, 1000, 1200, 1400):
        stream = Stream(budget, insert_parameter_sets=False)
        d = Depacketizer(wait_for_keyframe=False)
        units = []
        for k, size in enumerate(sizes):
            head = b"\x65" if size > 1 and k % 5 == 0 else b"\x41"
            units.append([SPS, PPS, head + nal(1, size, seed=k)[1:]] if size > 1 else [b"\x09"])
            units.append([nal(NAL_SEI, 5, 0), nal(1, size, 2, k), nal(1, max(1, size // 3), 2, k + 1)])
        got = []
        for nals in units:
            packets = stream.packets(nals)
            assert all(len(p[3]) <= budget for p in packets)
            assert [p[2] for p in packets] == [False] * (len(packets) - 1) + [True]
            got.extend(feed(d, packets))
        assert [list(au.nals) for au in got] == units, budget
        assert d.stats.broken == d.stats.malformed == d.stats.lost == 0


@settings(max_examples=300, deadline=None)
@given(
    st.integers(3, 1500),
    st.lists(
        st.lists(st.tuples(st.sampled_from([1, 2, *range(5, 24)]), st.integers(0, 3), st.integers(2, 4000)),
                 min_size=1, max_size=8),
        min_size=1, max_size=6),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
)
def test_round_trip_property(budget: int, shapes: list[list[tuple[int, int, int]]], seq: int, ts: int) -> None:
    stream = Stream(budget, seq, ts, insert_parameter_sets=False)
    d = Depacketizer(wait_for_keyframe=False)
    units = [[nal(t, size, nri, k) for k, (t, nri, size) in enumerate(shape)] for shape in shapes]
    got: list[AccessUnit] = []
    for k, nals in enumerate(units):
        packets = stream.packets(nals)
        assert packets and all(len(p[3]) <= budget for p in packets)
        got.extend(feed(d, packets))
        assert got[-1].timestamp == (ts + 3000 * k) & 0xFFFFFFFF
    assert [list(au.nals) for au in got] == units


# ------------------------------------------------------------------------------ depacketizer: loss


def gop(stream: Stream, frames: int = 5, idr_size: int = 5000) -> list[list[tuple[int, int, bool, bytes]]]:
    """Packets of one GOP: IDR (with SPS/PPS) then P frames, one list per access unit."""
    units = [stream.packets([SPS, PPS, idr(idr_size)])]
    units += [stream.packets([p_slice(800 + k * 500, k)]) for k in range(1, frames)]
    return units


def test_loss_in_the_middle_of_an_fu_a_waits_for_the_next_idr() -> None:
    stream = Stream()
    d = Depacketizer()
    first, second = gop(stream, 5), gop(stream)
    assert len(feed(d, [p for unit in first[:3] for p in unit])) == 3
    torn = first[4]  # 2800 bytes: three FU-A fragments
    assert len(torn) == 3 and [p[3][1] & 0xC0 for p in torn] == [0x80, 0, 0x40]
    assert feed(d, first[3] + [torn[0], torn[2]]) == [first_au(first[3])]
    assert d.needs_keyframe and d.take_keyframe_request() and not d.take_keyframe_request()
    assert d.stats.lost == 1 and d.stats.broken == 1 and d.stats.keyframe_requests == 1
    assert d.stats.malformed == 0  # loss is not a malformed payload
    got = feed(d, [p for unit in second for p in unit])
    assert [a.is_keyframe for a in got] == [True, False, False, False, False]
    assert not d.needs_keyframe and d.stats.access_units == 9


def test_p_frames_after_a_torn_one_are_skipped() -> None:
    stream = Stream()
    d = Depacketizer()
    g = gop(stream, 5)
    feed(d, g[0] + g[1])
    torn = g[4]
    assert feed(d, g[2][:-1] + g[3] + torn) == []  # g[2] lost its last fragment
    assert d.stats.lost == 1 and d.stats.broken == 1 and d.stats.skipped == 2
    assert d.stats.keyframe_requests == 1


def first_au(packets: list[tuple[int, int, bool, bytes]]) -> AccessUnit:
    d = Depacketizer(wait_for_keyframe=False)
    (au,) = feed(d, packets)
    return au


def test_lost_fu_a_start_and_lost_marker_packet() -> None:
    stream = Stream()
    d = Depacketizer()
    (g,) = [gop(stream, 3)]
    key, p1, p2 = g
    assert key[1][3][1] & 0x80 and not key[2][3][1] & 0x80  # STAP-A, FU-A start, FU-A ...
    assert feed(d, key[2:]) == []  # starts with an FU-A continuation: never a picture start
    assert d.stats.broken == 1 and d.stats.access_units == 0 and d.stats.malformed == 0
    d2 = Depacketizer()
    assert feed(d2, key[:-1]) == []  # the marker packet (last FU-A) lost
    assert feed(d2, p1 + p2) == []  # the gap: the IDR is broken, the P frames are skipped
    assert (d2.stats.lost, d2.stats.broken, d2.stats.skipped) == (1, 1, 2)
    assert d2.needs_keyframe and d2.take_keyframe_request()


def test_a_whole_access_unit_lost_between_complete_ones() -> None:
    stream = Stream()
    d = Depacketizer()
    g = gop(stream, 4)
    assert len(feed(d, g[0] + g[1])) == 2
    assert feed(d, g[3]) == []  # g[2] lost entirely: g[3] is complete but undecodable
    assert d.stats.lost == len(g[2]) and d.stats.broken == 0 and d.stats.skipped == 1
    assert d.take_keyframe_request()


def test_an_idr_right_after_a_gap_is_taken_when_it_starts_cleanly() -> None:
    stream = Stream()
    d = Depacketizer()
    g1, g2 = gop(stream, 3), gop(stream, 2)
    feed(d, g1[0])
    got = feed(d, g2[0] + g2[1])  # g1[1:] lost; g2 starts with the SPS/PPS STAP-A
    assert [au.is_keyframe for au in got] == [True, False]
    assert d.stats.keyframe_requests == 1 and not d.needs_keyframe
    # the same without the STAP-A: an IDR FU-A start with first_mb_in_slice == 0 is a clean start too
    stream = Stream(insert_parameter_sets=False)
    d = Depacketizer()
    a = stream.packets([idr(3000)])
    stream.packets([p_slice()])  # lost
    b = stream.packets([idr(3000, 1)])
    assert len(feed(d, a + b)) == 2
    # ... but not a second slice (first_mb_in_slice != 0) whose first slice was lost
    stream = Stream(insert_parameter_sets=False)
    d = Depacketizer()
    a = stream.packets([idr(3000)])
    b = stream.packets([idr(900), b"\x65\x30" + idr(900)[2:]])
    assert feed(d, a + b[1:]) == [first_au(a)]
    assert d.stats.broken == 1


def test_duplicates_and_late_packets_are_dropped() -> None:
    stream = Stream()
    d = Depacketizer()
    key = gop(stream, 1)[0]
    packets = [key[0], key[0], key[1], key[0], *key[2:]]
    (au,) = feed(d, packets)
    assert au.nals == (SPS, PPS, idr())
    assert d.stats.late == 2 and d.stats.lost == 0


def test_a_big_jump_back_is_a_new_start() -> None:
    d = Depacketizer(wait_for_keyframe=False)
    stream = Stream(seq=5000)
    assert feed(d, stream.packets([p_slice()])) != []
    stream.seq = 100
    assert feed(d, stream.packets([SPS, PPS, idr()]))[0].is_keyframe
    assert d.stats.late == 0 and d.stats.keyframe_requests == 1


def test_starting_mid_stream_and_without_waiting() -> None:
    stream = Stream()
    d = Depacketizer()
    g = gop(stream, 3)
    assert feed(d, g[1] + g[2]) == []
    assert d.take_keyframe_request() and d.stats.skipped == 2 and d.stats.keyframe_requests == 1
    assert not d.take_keyframe_request()
    assert feed(d, gop(stream, 1)[0])[0].is_keyframe
    now = Depacketizer(wait_for_keyframe=False)
    stream = Stream()
    g = gop(stream, 3)
    assert len(feed(now, g[1] + g[2])) == 2 and not now.take_keyframe_request()


def test_timestamp_change_and_flush_end_an_access_unit_without_marker() -> None:
    d = Depacketizer(wait_for_keyframe=False)
    assert d.push(1, 100, False, p_slice(300, 1)) == []
    (au,) = d.push(2, 200, False, p_slice(300, 2))
    assert au == AccessUnit(100, (p_slice(300, 1),))
    assert d.flush() == [AccessUnit(200, (p_slice(300, 2),))] and d.flush() == []
    d.push(3, 300, False, bytes([0x7C, 0x81]) + b"x")  # FU-A start
    assert d.flush() == [] and d.stats.malformed == 1  # ended inside an FU-A


def test_reset_forgets_the_stream() -> None:
    d = Depacketizer()
    s = Stream()
    feed(d, gop(s, 1)[0])
    d.push(s.seq, s.ts, False, p_slice())
    d.reset()
    assert d.needs_keyframe and d.take_keyframe_request() and d.flush() == []
    s = Stream(seq=7)
    assert feed(d, gop(s, 1)[0])[0].is_keyframe


# ------------------------------------------------------------------------------ depacketizer: garbage


MALFORMED = {
    "empty": b"",
    "forbidden bit": b"\xe5\x88\x00",
    "type 0": b"\x00abc",
    "STAP-B": b"\x19\x00\x01\x00\x02\x09\xf0",
    "MTAP16": b"\x1a\x00\x01",
    "FU-B": b"\x1d\x85\x00\x01x",
    "type 30": b"\x1e\x00",
    "STAP-A size overrun": b"\x78\x00\x09\x67\x00",
    "STAP-A zero size": b"\x78\x00\x00\x00\x02\x09\xf0",
    "STAP-A trailing byte": b"\x78\x00\x02\x09\xf0\x01",
    "STAP-A empty": b"\x78",
    "STAP-A inner STAP-A": b"\x78\x00\x02\x78\x00",
    "STAP-A inner type 0": b"\x78\x00\x02\x00\x00",
    "FU-A too short": b"\x7c\x85",
    "FU-A start and end": b"\x7c\xc5\x88",
    "FU-A continuation alone": b"\x7c\x05\x88",
    "FU-A end alone": b"\x7c\x45\x88",
    "FU-A of a STAP-A": b"\x7c\x98\x88",
    "FU-A of type 0": b"\x7c\x80\x88",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_payloads_are_dropped_and_counted(name: str) -> None:
    d = Depacketizer(wait_for_keyframe=False)
    assert feed(d, [(1, 10, True, p_slice(100, 1))]) != []
    assert d.push(2, 20, True, MALFORMED[name]) == []
    assert d.stats.malformed == 1 and d.stats.broken == 1 and d.needs_keyframe
    assert d.push(3, 30, True, p_slice(100, 3)) == []  # waits for a keyframe now
    assert d.push(4, 40, True, idr(100)) == [AccessUnit(40, (idr(100),))]


def test_fu_a_rules_inside_an_access_unit() -> None:
    d = Depacketizer(wait_for_keyframe=False)
    # an FU-A start while another is open; a single NAL unit inside an FU-A; a type change
    for bad_second in (b"\x7c\x85\x99", p_slice(10), b"\x7c\x01\x99"):
        d.push(d.stats.packets + 1, d.stats.packets, False, b"\x7c\x85\x88")
        n = d.stats.packets + 1
        assert d.push(n, n - 2, False, bad_second) == []
        assert d.push(n + 1, n - 2, True, b"\x7c\x45\x77") == []
    assert d.stats.malformed >= 3 and d.stats.access_units == 0


def test_size_limits() -> None:
    d = Depacketizer(wait_for_keyframe=False, max_access_unit_size=4000)
    assert feed(d, Stream(1200, insert_parameter_sets=False).packets([idr(3999)])) != []
    assert feed(d, Stream(1200, seq=100, insert_parameter_sets=False).packets([idr(4001)])) == []
    assert d.stats.broken == 1
    few = Depacketizer(wait_for_keyframe=False, max_nals=3)
    stap = Stream(1200, insert_parameter_sets=False)
    assert feed(few, stap.packets([nal(NAL_SEI, 5)] * 3)) != []
    assert feed(few, stap.packets([nal(NAL_SEI, 5)] * 4)) == [] and few.stats.broken == 1


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 8), st.booleans(),
                          st.one_of(st.binary(max_size=40),
                                    st.binary(min_size=1, max_size=30).map(lambda b: b"\x7c" + b),
                                    st.binary(min_size=1, max_size=30).map(lambda b: b"\x78" + b))),
                max_size=60))
def test_garbage_never_raises(packets: list[tuple[int, int, bool, bytes]]) -> None:
    d = Depacketizer(wait_for_keyframe=False)
    out: list[AccessUnit] = []
    for seq, ts, marker, payload in packets:
        out.extend(d.push(seq, ts, marker, payload))
    out.extend(d.flush())
    for au in out:
        assert au.nals and all(1 <= nal_type(n) <= 23 and not n[0] & 0x80 for n in au.nals)
    s = d.stats
    assert s.packets == len(packets) and s.access_units == len(out)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 300), st.integers(1, 100))
def test_random_loss_never_delivers_a_damaged_access_unit(seed: int, budget_extra: int, loss_pct: int) -> None:
    rng = random.Random(seed)
    stream = Stream(100 + budget_extra * 4, rng.randrange(65536), rng.randrange(2**32))
    sent: dict[int, list[bytes]] = {}
    packets = []
    for g in range(3):
        for k in range(6):
            nals = [SPS, PPS, idr(rng.randrange(10, 4000), g)] if k == 0 else [p_slice(rng.randrange(10, 3000), k)]
            sent[stream.ts] = nals if k else [SPS, PPS, nals[-1]]
            packets += stream.packets(nals)
    kept = [p for p in packets if rng.randrange(100) >= loss_pct]
    d = Depacketizer()
    for au in feed(d, kept):
        # an IDR whose SPS/PPS packet was lost right after a gap still starts cleanly: it is taken
        # (decodable with the parameter sets already known; a Packetizer puts them back in front)
        whole = sent[au.timestamp]
        assert list(au.nals) in (whole, [n for n in whole if nal_type(n) not in (NAL_SPS, NAL_PPS)])
        assert au.nals[-1] == whole[-1]


# ------------------------------------------------------------------------------ SPS


@pytest.mark.parametrize("name", sorted(REAL_SPS))
def test_sps_of_ffmpeg_streams(name: str) -> None:
    hexa, width, height, plid = REAL_SPS[name]
    sps = bytes.fromhex(hexa)
    info = parse_sps(sps)
    assert (info.width, info.height) == (width, height)
    assert info.profile_level_id == plid == profile_level_id(sps)


def test_sps_details() -> None:
    info = parse_sps(bytes.fromhex(REAL_SPS["high 618x352 (crop on 4 sides)"][0]))
    assert info.crop == (16, 6, 8, 8) and info.chroma_format_idc == 1 and info.frame_mbs_only
    interlaced = parse_sps(bytes.fromhex(REAL_SPS["high 1920x1080 interlaced"][0]))
    assert not interlaced.frame_mbs_only and interlaced.crop == (0, 0, 0, 8)
    assert parse_sps(bytes.fromhex(REAL_SPS["high 4:4:4 322x242"][0])).chroma_format_idc == 3
    assert parse_sps(bytes.fromhex(REAL_SPS["high gray 330x250"][0])).chroma_format_idc == 0
    base = parse_sps(bytes.fromhex(REAL_SPS["baseline 320x240"][0]))
    assert (base.profile_idc, base.constraint_flags, base.level_idc) == (66, 0xC0, 13)
    assert base.bit_depth_luma == base.bit_depth_chroma == 8


@pytest.mark.parametrize("name", sorted(CRAFTED_SPS))
def test_sps_branches_x264_does_not_write(name: str) -> None:
    hexa, width, height = CRAFTED_SPS[name]
    info = parse_sps(bytes.fromhex(hexa))
    assert (info.width, info.height) == (width, height)


def test_crafted_constants_match_the_bit_writer() -> None:
    ramp = [(i * 7) % 200 + 4 for i in range(64)]
    assert _make_sps(scaling={0: [16] * 16, 3: [6] + [13] * 15, 6: ramp, 7: [16] * 10 + [0]},
                     crop=(0, 0, 0, 4)).hex() == CRAFTED_SPS["scaling lists 640x360"][0]
    assert _make_sps(profile=244, chroma=3, separate=1, width_mbs=20, height_units=15,
                     crop=(1, 2, 3, 4)).hex() == CRAFTED_SPS["separate colour planes 317x233"][0]
    assert _make_sps(profile=77, width_mbs=45, height_units=18, frame_mbs_only=0, poc_type=2,
                     crop=(0, 0, 0, 2)).hex() == CRAFTED_SPS["field coding 720x568"][0]
    long = _make_sps(profile=244, chroma=3, scaling={i: ramp[:16] if i < 6 else ramp for i in range(12)},
                     poc_type=1, poc_cycle=(1, -3, 7, 0, 200), width_mbs=20, height_units=15, crop=(1, 2, 3, 4))
    info = parse_sps(long)
    assert (info.width, info.height, info.pic_order_cnt_type) == (317, 233, 1)


class _BitWriter:
    def __init__(self) -> None:
        self.value = 0
        self.bits = 0

    def u(self, n: int, x: int) -> None:
        self.value = (self.value << n) | x
        self.bits += n

    def ue(self, x: int) -> None:
        x += 1
        self.u(2 * x.bit_length() - 1, x)

    def se(self, x: int) -> None:
        self.ue(2 * x - 1 if x > 0 else -2 * x)

    def rbsp(self) -> bytes:
        self.u(1, 1)
        self.u(-self.bits % 8, 0)
        return self.value.to_bytes(self.bits // 8, "big")


def _escape(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _make_sps(*, profile: int = 100, constraints: int = 0, level: int = 30, sps_id: int = 0, chroma: int = 1,
              separate: int = 0, depth: tuple[int, int] = (8, 8), scaling: dict[int, list[int]] | None = None,
              poc_type: int = 0, poc_cycle: Sequence[int] = (), width_mbs: int = 40, height_units: int = 23,
              frame_mbs_only: int = 1, crop: tuple[int, int, int, int] | None = None, refs: int = 1) -> bytes:
    """An SPS NAL unit written field by field (H.264 §7.3.2.1.1, no VUI)."""
    w = _BitWriter()
    w.u(8, profile)
    w.u(8, constraints)
    w.u(8, level)
    w.ue(sps_id)
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135, 144):
        w.ue(chroma)
        if chroma == 3:
            w.u(1, separate)
        w.ue(depth[0] - 8)
        w.ue(depth[1] - 8)
        w.u(1, 0)
        w.u(1, scaling is not None)
        if scaling is not None:
            for i in range(8 if chroma != 3 else 12):
                values = scaling.get(i)
                w.u(1, values is not None)
                size = 16 if i < 6 else 64
                if values is not None and len(values) < size and 0 not in values:
                    values = [*values, 0]  # 0: the last value repeats to the end
                last = 8
                for v in (values or [])[:size]:
                    w.se((v - last + 128) % 256 - 128)
                    last = v
                    if v == 0:
                        break
    w.ue(0)  # log2_max_frame_num_minus4
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.u(1, 0)
        w.se(-2)
        w.se(1)
        w.ue(len(poc_cycle))
        for c in poc_cycle:
            w.se(c)
    w.ue(refs)
    w.u(1, 0)
    w.ue(width_mbs - 1)
    w.ue(height_units - 1)
    w.u(1, frame_mbs_only)
    if not frame_mbs_only:
        w.u(1, 0)
    w.u(1, 1)
    w.u(1, crop is not None)
    for c in crop or ():
        w.ue(c)
    w.u(1, 0)  # vui_parameters_present_flag
    return b"\x67" + _escape(w.rbsp())


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([66, 77, 88, 100, 110, 122, 244]), st.integers(0, 3), st.booleans(),
    st.integers(1, 256), st.integers(1, 160), st.booleans(), st.integers(0, 2),
    st.lists(st.integers(-(2**20), 2**20), max_size=5), st.integers(0, 12), st.integers(0, 12),
    st.integers(0, 31), st.one_of(st.none(), st.dictionaries(st.integers(0, 11), st.lists(st.integers(0, 255),
                                                                                        min_size=1, max_size=64))),
)
def test_sps_property(profile: int, chroma: int, separate: bool, width_mbs: int, height_units: int,
                      frame_mbs_only: bool, poc_type: int, cycle: list[int], crop_x: int, crop_y: int,
                      sps_id: int, scaling: dict[int, list[int]] | None) -> None:
    high = profile >= 100
    chroma = chroma if high else 1
    if scaling is not None:
        scaling = {i: v[: 16 if i < 6 else 64] for i, v in scaling.items() if i < (8 if chroma != 3 else 12)}
    cat = 0 if (chroma == 3 and separate) else chroma
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[cat]
    field = 1 if frame_mbs_only else 2
    unit_x, unit_y = (sub_w if cat else 1), (sub_h if cat else 1) * field
    crop_x = min(crop_x, (width_mbs * 16 - 1) // unit_x // 2)
    crop_y = min(crop_y, (height_units * 16 * field - 1) // unit_y // 2)
    sps = _make_sps(profile=profile, chroma=chroma, separate=int(separate), sps_id=sps_id,
                    scaling=scaling if high else None, poc_type=poc_type, poc_cycle=cycle, width_mbs=width_mbs,
                    height_units=height_units, frame_mbs_only=int(frame_mbs_only),
                    crop=(crop_x, crop_x, crop_y, crop_y))
    info = parse_sps(sps)
    assert info.width == width_mbs * 16 - 2 * crop_x * unit_x
    assert info.height == height_units * 16 * field - 2 * crop_y * unit_y
    assert (info.sps_id, info.pic_order_cnt_type, info.frame_mbs_only) == (sps_id, poc_type, frame_mbs_only)
    assert info.chroma_format_idc == chroma


def test_malformed_sps_raises_remote_protocol_error() -> None:
    sps = bytes.fromhex(REAL_SPS["high 640x360 (cropped)"][0])
    parsed = []
    for cut in range(len(sps) + 1):
        try:
            parsed.append((cut, parse_sps(sps[:cut]).height))
        except RemoteProtocolError:
            assert not parsed  # only prefixes too short to reach the cropping fail
    first = parsed[0][0]
    assert 8 < first < len(sps) and {h for _, h in parsed} == {360}
    with pytest.raises(RemoteProtocolError, match="not an SPS"):
        parse_sps(PPS)
    with pytest.raises(RemoteProtocolError, match="chroma_format_idc"):
        parse_sps(_make_sps(chroma=5))
    with pytest.raises(RemoteProtocolError, match="pic_order_cnt_type"):
        parse_sps(_make_sps(poc_type=3))
    with pytest.raises(RemoteProtocolError, match="crops the whole picture"):
        parse_sps(_make_sps(width_mbs=1, crop=(4, 4, 0, 0)))
    with pytest.raises(RemoteProtocolError):
        parse_sps(b"\x67\x64\x00\x1e" + b"\x00" * 8)  # an exp-Golomb code that never ends
    with pytest.raises(RemoteProtocolError):
        profile_level_id(PPS)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=60))
def test_garbage_sps_raises_only_remote_protocol_error(data: bytes) -> None:
    try:
        info = parse_sps(b"\x67" + data)
    except RemoteProtocolError:
        return
    assert info.width > 0 and info.height > 0


def test_sprop_parameter_sets() -> None:
    value = sprop_parameter_sets([SPS], [PPS])
    assert [base64.b64decode(v) for v in value.split(",")] == [SPS, PPS]


# ------------------------------------------------------------------------------ GOP cache


def au(ts: int, *nals: bytes) -> AccessUnit:
    return AccessUnit(ts, tuple(nals))


def test_gop_cache_keeps_the_last_idr_and_what_follows() -> None:
    cache = GopCache()
    cache.add(au(0, p_slice()))  # nothing before the first keyframe
    assert cache.frames() == [] and not cache.has_keyframe and len(cache) == 0
    cache.add(au(1, SPS, PPS, idr()))
    cache.add(au(2, p_slice(800, 2)))
    assert [f.timestamp for f in cache.frames()] == [1, 2] and cache.size == len(SPS) + len(PPS) + 5000 + 800
    cache.add(au(3, idr(4000, 1)))  # a new GOP: the cache restarts; the last SPS/PPS go in front
    frames = cache.frames()
    assert [f.timestamp for f in frames] == [3] and frames[0].nals == (SPS, PPS, idr(4000, 1))
    assert frames[0].is_keyframe and cache.size == 4000


def test_gop_cache_limits() -> None:
    cache = GopCache(max_bytes=10_000, max_access_units=4)
    cache.set_parameter_sets([SPS], [PPS])
    cache.add(au(1, idr(5000)))
    assert cache.frames()[0].nals == (SPS, PPS, idr(5000))
    cache.add(au(2, p_slice(4000)))
    cache.add(au(3, p_slice(2000)))  # 11000 bytes: over the cap, dropped until the next IDR
    assert cache.frames() == [] and cache.size == 0
    cache.add(au(4, p_slice(100)))
    assert cache.frames() == []
    cache.add(au(5, idr(100)))
    for ts in range(6, 9):
        cache.add(au(ts, p_slice(10)))
    assert len(cache) == 4
    cache.add(au(9, p_slice(10)))
    assert len(cache) == 0
    cache.add(au(10, idr(20_000)))  # a keyframe bigger than the cap is not kept
    assert cache.frames() == []
    cache.add(au(11, idr(100)))
    cache.clear()
    assert cache.frames() == [] and not cache.has_keyframe


def test_a_new_watcher_starts_from_the_gop_cache() -> None:
    """Publisher packets -> depacketizer -> cache; a watcher joining mid-GOP gets the IDR first."""
    stream = Stream(insert_parameter_sets=False)
    d = Depacketizer()
    cache = GopCache()
    for unit in gop(stream, 4):
        for a in feed(d, unit):
            cache.add(a)
    watcher = Packetizer(1000)
    out = Depacketizer()
    packets = [(f.timestamp, p) for f in cache.frames() for p in watcher.packetize(f.nals)]
    got = feed(out, [(k, ts, p.marker, p.payload) for k, (ts, p) in enumerate(packets)])
    assert got[0].is_keyframe and len(got) == 4 and out.stats.skipped == 0

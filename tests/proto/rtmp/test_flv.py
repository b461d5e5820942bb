from __future__ import annotations

import pytest

from webgate.proto.errors import RemoteProtocolError
from webgate.proto.flv import (
    AAC_SEQUENCE_HEADER,
    AVC_NALU,
    FRAME_KEY,
    TAG_AUDIO,
    TAG_VIDEO,
    VIDEO_AVC,
    VIDEO_SORENSON,
    VIDEO_VP6,
    AudioTagHeader,
    FlvWriter,
    VideoTagHeader,
    audio_codec_of,
    audio_header_for,
    build_audio_tag,
    build_video_tag,
    parse_audio_specific_config,
    parse_audio_tag,
    parse_video_tag,
    read_flv,
)


@pytest.mark.parametrize("fmt", range(16))
def test_audio_header_roundtrip_all_formats(fmt: int) -> None:
    h = AudioTagHeader(fmt, 3, 1, 1, 1 if fmt == 10 else None)
    tag = build_audio_tag(h, b"payload")
    parsed, payload = parse_audio_tag(tag)
    assert parsed == h and payload == b"payload"
    assert tag[0] == (fmt << 4) | 0x0F


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (0x52, ("nellymoser", 8000, 1)),  # id 5, flags say 5.5k
        (0x4E, ("nellymoser", 16000, 1)),
        (0x6E, ("nellymoser", 44100, 1)),
        (0x6A, ("nellymoser", 22050, 1)),
        (0xB6, ("speex", 16000, 1)),  # rate flag 11k: ignored
        (0x72, ("pcm_alaw", 8000, 1)),
        (0x8E, ("pcm_mulaw", 8000, 1)),
        (0x2F, ("mp3", 44100, 2)),
        (0x3E, ("pcm_s16le", 44100, 1)),
        (0x1E, ("adpcm_swf", 44100, 1)),
    ],
)
def test_audio_codec_of(first: int, expected: tuple[str, int, int]) -> None:
    assert audio_codec_of(bytes([first, 0, 0])) == expected


def test_aac_rate_from_audio_specific_config() -> None:
    asc_16k_mono = bytes([0x14, 0x08])  # AAC-LC, index 8 (16000), 1 channel
    asc = parse_audio_specific_config(asc_16k_mono)
    assert (asc.object_type, asc.sample_rate, asc.channels) == (2, 16000, 1)
    seq = build_audio_tag(
        AudioTagHeader(10, 3, 1, 1, AAC_SEQUENCE_HEADER), asc_16k_mono
    )
    assert audio_codec_of(seq) == ("aac", 16000, 1)
    raw = build_audio_tag(AudioTagHeader(10, 3, 1, 1, 1), b"\x21\x00")
    assert audio_codec_of(raw) == ("aac", 44100, 2)  # no config known: flags
    assert audio_codec_of(raw, aac_config=bytes([0x12, 0x10])) == ("aac", 44100, 2)
    assert audio_codec_of(raw, aac_config=bytes([0x11, 0x88])) == ("aac", 48000, 1)
    with pytest.raises(RemoteProtocolError):
        parse_audio_specific_config(
            b"\x17\x80"
        )  # frequency index 15 without explicit rate


def test_audio_header_for() -> None:
    assert audio_header_for("pcm_mulaw").sound_format == 8
    assert audio_header_for("nellymoser", 8000).sound_format == 5
    assert audio_header_for("nellymoser", 16000).sound_format == 4
    assert audio_header_for("speex", 16000).sound_format == 11
    for codec, rate in [
        ("pcm_alaw", 8000),
        ("nellymoser", 44100),
        ("speex", 16000),
        ("pcm_mulaw", 8000),
    ]:
        h = audio_header_for(codec, rate)
        assert audio_codec_of(build_audio_tag(h, b"\x00")) == (codec, rate, 1)


@pytest.mark.parametrize("bad", [b"", b"\xa0"])
def test_bad_audio_tags(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_audio_tag(bad)


def test_video_tags() -> None:
    h = VideoTagHeader(FRAME_KEY, VIDEO_AVC, AVC_NALU, -33)
    tag = build_video_tag(h, b"nal")
    assert tag[:2] == b"\x17\x01"
    parsed, payload = parse_video_tag(tag)
    assert parsed == h and parsed.is_keyframe and payload == b"nal"
    for codec in (VIDEO_SORENSON, VIDEO_VP6):
        parsed, payload = parse_video_tag(
            build_video_tag(VideoTagHeader(2, codec), b"x")
        )
        assert parsed == VideoTagHeader(2, codec) and payload == b"x"
    with pytest.raises(RemoteProtocolError):
        parse_video_tag(b"\x17\x01")


def test_flv_file_roundtrip() -> None:
    w = FlvWriter(audio=True, video=True)
    w.write(TAG_AUDIO, 0, b"\x82abc")
    w.write(TAG_VIDEO, 40, b"\x17\x01\x00\x00\x00nal")
    w.write(TAG_AUDIO, 0x01000005, b"\x82d")
    data = w.getvalue()
    assert data[:5] == b"FLV\x01\x05"
    flags, tags = read_flv(data)
    tag_list = list(tags)
    assert flags == 5
    assert [(t.tag_type, t.timestamp, t.data) for t in tag_list] == [
        (8, 0, b"\x82abc"),
        (9, 40, b"\x17\x01\x00\x00\x00nal"),
        (8, 0x01000005, b"\x82d"),
    ]
    # previous tag size after the first tag: 11 + 4
    assert data[13 + 11 + 4 : 13 + 11 + 4 + 4] == (15).to_bytes(4, "big")
    _, truncated = read_flv(data[:-6])
    assert len(list(truncated)) == 2
    with pytest.raises(RemoteProtocolError):
        read_flv(b"NOTFLV" + bytes(10))

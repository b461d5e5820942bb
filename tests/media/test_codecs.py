"""Codec registry, encode -> decode round trips, hostile payloads."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from tests.media.conftest import tone
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.codecs import (
    AudioSpecificConfig,
    CodecInfo,
    audio_specific_config,
    available_codecs,
    create_decoder,
    create_encoder,
    get_codec,
    parse_audio_specific_config,
    parse_fmtp,
)
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

ROUND_TRIP = [
    ("PCMU", None),
    ("PCMA", None),
    ("G722", None),
    ("opus", None),
    ("nellymoser", None),
    ("nellymoser", 16000),
    ("nellymoser", 44100),
    ("aac", None),
    ("aac", 16000),
    ("mp3", None),
    ("mp3", 16000),
    ("L16", None),
    ("pcm_s16le", None),
    ("adpcm_swf", None),
    ("speex", 8000),
    ("speex", 16000),
    ("speex", 32000),
    ("GSM", None),
]

DECODABLE = [c.name for c in available_codecs() if c.can_decode]


def _round_trip(
    info: CodecInfo, pcm: np.ndarray, chunk: int
) -> tuple[np.ndarray, int, list[bytes]]:
    enc = create_encoder(info)
    dec = create_decoder(info)
    packets: list[bytes] = []
    for i in range(0, len(pcm), chunk):
        packets.extend(enc.encode(pcm[i : i + chunk]))
    packets.extend(enc.flush())
    out = [dec.decode(p) for p in packets]
    return np.concatenate(out), dec.sample_rate, packets


def test_registry_basics() -> None:
    pcmu = get_codec("pcmu")
    assert (pcmu.name, pcmu.sample_rate, pcmu.rtp_clock_rate, pcmu.payload_type) == (
        "PCMU",
        8000,
        8000,
        0,
    )
    assert pcmu.frame_samples == 160 and pcmu.can_encode and pcmu.can_decode
    g722 = get_codec("G722", 8000)
    assert (
        g722.sample_rate,
        g722.rtp_clock_rate,
        g722.frame_samples,
        g722.payload_type,
    ) == (16000, 8000, 320, 9)
    opus = get_codec("OPUS", 48000, 2)
    assert (opus.name, opus.sample_rate, opus.channels, opus.frame_samples) == (
        "opus",
        48000,
        2,
        960,
    )
    assert get_codec("nellymoser").codec_frame_samples == 256
    assert get_codec("aac").codec_frame_samples == 1024
    assert get_codec("speex", 16000).frame_samples == 320
    assert get_codec("mpeg4-generic").name == "aac"
    with pytest.raises(LocalProtocolError):
        get_codec("no-such-codec")
    with pytest.raises(LocalProtocolError):
        get_codec("PCMU", 16000)
    with pytest.raises(LocalProtocolError):
        get_codec("PCMA", 8000, 2)
    with pytest.raises(AttributeError):
        pcmu.name = "x"  # type: ignore[misc]
    names = {c.name for c in available_codecs()}
    assert {
        "PCMU",
        "PCMA",
        "G722",
        "opus",
        "speex",
        "GSM",
        "iLBC",
        "nellymoser",
        "aac",
        "mp3",
    } <= names


def test_decode_only_codecs_refuse_encoder() -> None:
    ilbc = get_codec("iLBC")
    assert ilbc.can_decode and not ilbc.can_encode
    with pytest.raises(LocalProtocolError):
        create_encoder("iLBC")


def test_fmtp_parsing() -> None:
    assert parse_fmtp("mode=20; useinbandfec=1;") == {"mode": "20", "useinbandfec": "1"}
    assert parse_fmtp(None) == {}
    assert get_codec("iLBC", fmtp="mode=20").codec_frame_samples == 160
    assert get_codec("iLBC").codec_frame_samples == 240


@pytest.mark.parametrize(("name", "rate"), ROUND_TRIP)
def test_round_trip_keeps_1khz_tone(name: str, rate: int | None) -> None:
    info = get_codec(name, rate)
    if not info.can_encode:
        pytest.skip(f"{name} encoder not available on this machine")
    pcm = tone(1000.0, info.sample_rate, 1.0)
    out, out_rate, packets = _round_trip(info, pcm, info.frame_samples)
    assert packets
    assert out.dtype == np.int16 and out.ndim == 1
    assert out_rate == info.sample_rate
    # Whole stream came back (codec delay/padding may add up to a few frames).
    assert len(pcm) <= len(out) <= len(pcm) + 4 * max(info.codec_frame_samples, 1152)
    mid = out[len(out) // 4 : 3 * len(out) // 4]
    assert dominant_frequency(mid, out_rate) == pytest.approx(1000.0, rel=0.02)
    # Not attenuated to nothing.  FFmpeg's Nellymoser encoder at 8/16 kHz loses
    # 15-50 dB on pure tones sitting on MDCT bin centres (500, 1000, 1500 Hz...),
    # a quirk of that encoder with sines, not of our wrapper (22.05/44.1 kHz are fine).
    quirky = name == "nellymoser" and info.sample_rate <= 16000
    assert rms_dbfs(mid) > rms_dbfs(pcm) - (20.0 if quirky else 6.0)


@pytest.mark.parametrize("name", ["PCMU", "PCMA", "G722", "opus", "speex", "GSM"])
def test_rtp_codecs_emit_one_packet_per_20ms(name: str) -> None:
    info = get_codec(name)
    if not info.can_encode:
        pytest.skip(f"{name} encoder not available")
    enc = create_encoder(info)
    pcm = tone(1000.0, info.sample_rate, 0.2)
    counts = [
        len(enc.encode(pcm[i : i + info.frame_samples]))
        for i in range(0, len(pcm), info.frame_samples)
    ]
    assert counts == [1] * 10


def test_encoder_accepts_odd_chunk_sizes() -> None:
    info = get_codec("G722")
    pcm = tone(1000.0, 16000, 0.5)
    enc = create_encoder(info)
    packets: list[bytes] = []
    for i in range(0, len(pcm), 77):
        packets.extend(enc.encode(pcm[i : i + 77]))
    assert len(packets) == len(pcm) // 320
    assert all(len(p) == 160 for p in packets)


def test_opus_decodes_stereo_stream_to_mono() -> None:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = 48000
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.bit_rate = 64000
    ctx.open()
    left = tone(1000.0, 48000, 0.5)
    inter = np.stack([left, left], axis=1).reshape(1, -1)
    packets: list[bytes] = []
    for i in range(0, len(left), 960):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(inter[:, 2 * i : 2 * (i + 960)]),
            format="s16",
            layout="stereo",
        )
        frame.sample_rate = 48000
        frame.time_base = Fraction(1, 48000)
        frame.pts = i
        packets.extend(bytes(p) for p in ctx.encode(frame))
    dec = create_decoder("opus", 48000, 2)
    out = np.concatenate([dec.decode(p) for p in packets])
    assert out.ndim == 1 and len(out) == len(packets) * 960
    assert dominant_frequency(out[4800:], 48000) == pytest.approx(1000.0, rel=0.02)


def test_opus_conceal_gives_one_frame() -> None:
    dec = create_decoder("opus")
    enc = create_encoder("opus")
    dec.decode(enc.encode(tone(1000.0, 48000, 0.02))[0])
    lost = dec.conceal()
    assert lost.dtype == np.int16 and len(lost) == 960


def test_aac_extradata_and_asc() -> None:
    enc = create_encoder("aac", 44100)
    asc = enc.extradata
    assert asc is not None
    parsed = parse_audio_specific_config(asc)
    assert parsed == AudioSpecificConfig(object_type=2, sample_rate=44100, channels=1)
    assert audio_specific_config(44100, 1)[:2] == asc[:2]
    assert audio_specific_config(16000, 2) == bytes([0x14, 0x10])
    # A decoder configured from the ASC (as from an FLV AAC sequence header).
    pcm = tone(1000.0, 44100, 1.0)
    packets = enc.encode(pcm) + enc.flush()
    dec = create_decoder("aac", extradata=asc)
    out = np.concatenate([dec.decode(p) for p in packets])
    assert dec.sample_rate == 44100
    assert dominant_frequency(
        out[len(out) // 4 : -len(out) // 4], 44100
    ) == pytest.approx(1000.0, rel=0.02)


def test_aac_decoder_rate_follows_asc() -> None:
    asc = audio_specific_config(22050, 1)
    dec = create_decoder("aac", extradata=asc)
    assert dec.info.sample_rate == 22050


@pytest.mark.parametrize("data", [b"", b"\x12", b"\x17\x80", b"\x03\x08", b"\x16\x88"])
def test_bad_asc_raises_remote_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_audio_specific_config(data)


def test_ilbc_decodes_either_mode() -> None:
    dec = create_decoder("iLBC")
    assert len(dec.decode(bytes(50))) == 240
    assert len(dec.decode(bytes(38))) == 160  # switched to 20 ms mode
    assert len(dec.decode(bytes(76))) == 320
    with pytest.raises(RemoteProtocolError):
        dec.decode(bytes(37))


def test_gsm_decoder_frame_size() -> None:
    dec = create_decoder("GSM")
    assert len(dec.decode(bytes(33))) == 160


def test_l16_is_big_endian_and_stereo_downmixes() -> None:
    dec = create_decoder("L16", 8000)
    assert dec.decode(b"\x01\x00\xff\xff").tolist() == [256, -1]
    dec2 = create_decoder("L16", 8000, 2)
    assert dec2.decode(b"\x00\x10\x00\x30").tolist() == [32]
    with pytest.raises(RemoteProtocolError):
        dec.decode(b"\x01")


def test_oversized_payload_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        create_decoder("PCMU").decode(bytes(70000))


@pytest.mark.parametrize("name", DECODABLE)
def test_garbage_payloads_never_crash(name: str) -> None:
    # (a seeded loop rather than hypothesis: hypothesis and pytest-twisted's greenlet don't mix here)
    import random

    r = random.Random(name)
    payloads = [b"", b"\x00", b"\xff" * 600] + [r.randbytes(r.randint(0, 600)) for _ in range(60)]
    for payload in payloads:
        _decode_garbage(name, payload)


def _decode_garbage(name: str, payload: bytes) -> None:
    dec = create_decoder(name)
    try:
        out = dec.decode(payload)
    except RemoteProtocolError:
        return
    assert out.dtype == np.int16 and out.ndim == 1


@pytest.mark.parametrize("name", DECODABLE)
def test_random_payload_sequences(name: str, rng: np.random.Generator) -> None:
    """Many random packets through one decoder: only RemoteProtocolError, decoder stays usable."""
    dec = create_decoder(name)
    errors = 0
    for _ in range(200):
        size = int(rng.integers(1, 400))
        try:
            out = dec.decode(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            assert out.dtype == np.int16
        except RemoteProtocolError:
            errors += 1
    assert len(dec.conceal()) == dec.sample_rate // 50
    assert errors <= 200

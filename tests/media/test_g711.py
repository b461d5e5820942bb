"""G.711 tables against FFmpeg's pcm_mulaw / pcm_alaw, exhaustively."""

from __future__ import annotations

import av
import numpy as np
import pytest

from webgate.media.codecs import (
    alaw_decode,
    alaw_encode,
    create_decoder,
    create_encoder,
    ulaw_decode,
    ulaw_encode,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def _ffmpeg_encode(codec: str, pcm: np.ndarray) -> bytes:
    ctx = av.CodecContext.create(codec, "w")
    ctx.sample_rate = 8000
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.open()
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in list(ctx.encode(frame)) + list(ctx.encode(None)))


def _ffmpeg_decode(codec: str, payload: bytes) -> np.ndarray:
    ctx = av.CodecContext.create(codec, "r")
    ctx.sample_rate = 8000
    ctx.layout = "mono"
    frames = ctx.decode(av.Packet(payload))
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


@pytest.mark.parametrize(
    ("codec", "encode"), [("pcm_mulaw", ulaw_encode), ("pcm_alaw", alaw_encode)]
)
def test_encode_all_65536_inputs_match_ffmpeg(codec, encode) -> None:
    ours = encode(ALL_SAMPLES)
    theirs = _ffmpeg_encode(codec, ALL_SAMPLES)
    assert len(ours) == 65536
    assert ours == theirs


@pytest.mark.parametrize(
    ("codec", "decode"), [("pcm_mulaw", ulaw_decode), ("pcm_alaw", alaw_decode)]
)
def test_decode_all_256_codes_match_ffmpeg(codec, decode) -> None:
    ours = decode(ALL_CODES)
    assert ours.dtype == np.int16
    assert np.array_equal(ours, _ffmpeg_decode(codec, ALL_CODES))


def test_known_values() -> None:
    # ITU G.711: µ-law 0xFF and A-law 0xD5 are the codes for +0 / smallest positive.
    assert ulaw_encode(np.array([0], np.int16)) == b"\xff"
    assert alaw_encode(np.array([0], np.int16)) == b"\xd5"
    assert ulaw_decode(b"\x00")[0] == -32124
    assert ulaw_decode(b"\x80")[0] == 32124
    assert alaw_decode(b"\x55")[0] == -8
    assert alaw_decode(b"\xaa")[0] == 32256


@pytest.mark.parametrize(
    "decode_encode", [(ulaw_decode, ulaw_encode), (alaw_decode, alaw_encode)]
)
def test_decode_then_encode_is_identity_on_codes(decode_encode) -> None:
    decode, encode = decode_encode
    pcm = decode(ALL_CODES)
    again = encode(pcm)
    # µ-law has two zero codes (0x7F, 0xFF), which both decode to 0 and re-encode to 0xFF.
    diffs = [i for i in range(256) if again[i] != i]
    assert diffs in ([], [0x7F])


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_encoder_buffers_to_20ms_packets(name: str) -> None:
    enc = create_encoder(name)
    assert enc.encode(np.zeros(100, np.int16)) == []
    packets = enc.encode(np.zeros(300, np.int16))
    assert [len(p) for p in packets] == [160, 160]
    assert [len(p) for p in enc.flush()] == [160]


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_conceal_repeats_then_fades_to_silence(name: str) -> None:
    dec = create_decoder(name)
    first = dec.decode(create_encoder(name).encode(np.full(160, 8000, np.int16))[0])
    c1 = dec.conceal()
    assert len(c1) == 160
    assert abs(int(c1[0]) - int(first[0])) <= 1  # starts at the last level: no click
    assert np.all(np.abs(c1[1:].astype(int)) <= np.abs(c1[:-1].astype(int)))  # fading
    c2, c3, c4 = dec.conceal(), dec.conceal(), dec.conceal()
    assert np.abs(c2).max() < np.abs(c1).max()
    assert np.abs(c3).max() < np.abs(c2).max()
    assert not c4.any()

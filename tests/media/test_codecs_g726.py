"""G.726-32 in both bit orders: the RFC 3551 order checked against the codewords themselves
(spandsp unpacked, one per byte), Debian ffmpeg decoding both, frameless packet times."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import require
from tests.media.conftest import tone
from tests.media.ffmpeg_decode import decode_payloads
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.codecs import (
    create_decoder,
    create_encoder,
    get_codec,
    libraries,
    set_library_paths,
)
from webgate.media.codecs.g726 import aal2_order, rfc3551_order


@pytest.fixture(autouse=True)
def spandsp() -> Iterator[None]:
    set_library_paths({})
    require.require_library("libspandsp", libraries.available("spandsp"), "libspandsp2")
    yield
    set_library_paths({})


def _codewords(pcm: np.ndarray) -> bytes:
    """spandsp's G.726-32 codewords, unpacked (G726_PACKING_NONE: one 4-bit code per byte)."""
    lib = ctypes.CDLL("libspandsp.so.2")
    lib.g726_init.restype = ctypes.c_void_p
    lib.g726_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.g726_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.g726_free.argtypes = [ctypes.c_void_p]
    state = lib.g726_init(None, 32000, 0, 0)
    out = ctypes.create_string_buffer(len(pcm))
    data = np.ascontiguousarray(pcm, dtype=np.int16)
    n = lib.g726_encode(state, out, data.ctypes.data, len(data))
    lib.g726_free(state)
    return out.raw[:n]


def test_bit_orders_against_the_codewords() -> None:
    pcm = tone(1000.0, 8000, 0.5) + (np.random.default_rng(3).normal(0, 300, 4000)).astype(np.int16)
    codes = _codewords(pcm)
    assert len(codes) == 4000 and max(codes) <= 15
    rfc = b"".join(create_encoder("G726-32").encode(pcm))
    aal2 = b"".join(create_encoder("AAL2-G726-32").encode(pcm))
    # RFC 3551 §4.5.4: the first codeword in the four least significant bits of the octet
    assert rfc[0] == codes[0] | (codes[1] << 4)
    assert rfc == rfc3551_order(codes)
    assert aal2 == aal2_order(codes) and aal2 != rfc


@pytest.mark.parametrize("codec", ["G726-32", "AAL2-G726-32"])
def test_debian_ffmpeg_decodes_our_payloads(tmp_path: Path, codec: str) -> None:
    payloads = create_encoder(codec).encode(tone(1000.0, 8000, 1.0))
    assert {len(p) for p in payloads} == {80}  # 20 ms, half a byte a sample
    pcm, rate = decode_payloads(codec, payloads, tmp_path)
    assert len(pcm) == 8000
    assert abs(dominant_frequency(pcm[2000:], rate) - 1000.0) < 10 and rms_dbfs(pcm[2000:]) > -20
    # and our own decoder agrees with Debian's ffmpeg sample for sample
    dec = create_decoder(codec)
    ours = np.concatenate([dec.decode(p) for p in payloads])
    assert np.array_equal(ours, pcm)


@pytest.mark.parametrize("frame_ms", [10, 20, 30, 40, 60])
def test_any_packet_time(frame_ms: int) -> None:
    enc = create_encoder(get_codec("G726-32"), frame_ms=frame_ms)
    dec = create_decoder("G726-32")
    payloads = enc.encode(tone(700.0, 8000, 1.2))
    assert {len(p) for p in payloads} == {frame_ms * 4}
    assert enc.frame_samples == frame_ms * 8
    pcm = np.concatenate([dec.decode(p) for p in payloads])
    assert abs(dominant_frequency(pcm[-4000:], 8000) - 700.0) < 10


def test_loss_repeats_and_fades() -> None:
    enc, dec = create_encoder("G726-32"), create_decoder("G726-32")
    for p in enc.encode(tone(700.0, 8000, 0.2)):
        dec.decode(p)
    first = dec.conceal(160)
    assert rms_dbfs(first) > -20
    assert rms_dbfs(dec.conceal(160)) < rms_dbfs(first)
    dec.conceal(160)
    assert not dec.conceal(160).any()  # silent after 60 ms

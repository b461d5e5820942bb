"""AMR-NB and AMR-WB (RFC 4867): both packings bit for bit, mode-set and Codec Mode Requests,
both coder backends (PyAV's opencore and the system libraries), concealment, and Debian ffmpeg's
own (native, non-opencore) decoders decoding our payloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import require
from tests.media.conftest import tone
from tests.media.ffmpeg_decode import amr_storage, decode_payloads
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.codecs import (
    create_decoder,
    create_encoder,
    get_codec,
    libraries,
    set_library_paths,
)
from webgate.media.codecs.amr import (
    NB_BITS,
    NO_DATA,
    WB_BITS,
    AmrDecoder,
    AmrEncoder,
    AmrFrame,
    amr_params,
    pack_payload,
    unpack_payload,
)
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

OA = "octet-align=1"


@pytest.fixture(autouse=True)
def amr_libraries() -> Iterator[None]:
    set_library_paths({})
    require.require_library("libvo-amrwbenc", libraries.available("amrwbenc"), "libvo-amrwbenc0")
    yield
    set_library_paths({})


def _frame(ft: int, wideband: bool, seed: int) -> AmrFrame:
    n = (WB_BITS if wideband else NB_BITS)[ft] if ft != NO_DATA else 0
    rng = np.random.default_rng(seed)
    value = int(rng.integers(0, 2**62)) ** 5 % (1 << n) if n else 0
    nbytes = (n + 7) // 8
    return AmrFrame(ft, True, (value << (nbytes * 8 - n)).to_bytes(nbytes, "big") if n else b"")


def test_octet_aligned_layout_by_hand() -> None:
    f = AmrFrame(7, True, bytes(range(31)))  # 244 bits = 30.5 bytes -> 31, low 4 bits padding
    f = AmrFrame(7, True, f.bits[:30] + bytes([f.bits[30] & 0xF0]))
    payload = pack_payload([f, AmrFrame(NO_DATA, True, b"")], wideband=False, octet_align=True, cmr=5)
    assert payload[0] == 0x50  # CMR 5, reserved 0
    assert payload[1] == 0x80 | (7 << 3) | 0x04  # F=1, FT=7, Q=1
    assert payload[2] == (NO_DATA << 3) | 0x04  # last ToC entry
    assert payload[3:] == f.bits
    assert unpack_payload(payload, wideband=False, octet_align=True) == (5, [f, AmrFrame(NO_DATA, True, b"")])


def test_bandwidth_efficient_layout_by_hand() -> None:
    # RFC 4867 §4.3.5.1's example shape: CMR(4) F(1) FT(4) Q(1), then the speech bits
    f = _frame(0, False, 1)  # 95 bits
    payload = pack_payload([f], wideband=False, octet_align=False, cmr=15)
    assert len(payload) == (4 + 6 + 95 + 7) // 8 == 14
    bits = "".join(f"{b:08b}" for b in payload)
    assert bits[:4] == "1111" and bits[4] == "0" and bits[5:9] == "0000" and bits[9] == "1"
    speech = "".join(f"{b:08b}" for b in f.bits)[:95]
    assert bits[10:105] == speech and set(bits[105:]) <= {"0"}


@given(st.booleans(), st.booleans(), st.lists(st.integers(0, 9), min_size=1, max_size=6),
       st.integers(0, 15), st.integers(0, 1000))
def test_pack_unpack_round_trip(wideband: bool, octet: bool, fts: list[int], cmr: int, seed: int) -> None:
    top = 9 if wideband else 8
    frames = [_frame(ft if ft <= top else NO_DATA, wideband, seed + i) for i, ft in enumerate(fts)]
    payload = pack_payload(frames, wideband=wideband, octet_align=octet, cmr=cmr)
    assert unpack_payload(payload, wideband=wideband, octet_align=octet) == (cmr, frames)
    # the test's own converter (tests/media/ffmpeg_decode.py) reads the same frames
    storage = amr_storage([payload], wideband=wideband, octet_align=octet)
    magic = b"#!AMR-WB\n" if wideband else b"#!AMR\n"
    assert storage == magic + b"".join(bytes([(f.ft << 3) | 4]) + f.bits for f in frames)


@pytest.mark.parametrize("payload", [b"", b"\xf0", b"\xf0\xc4", b"\xf0\x4c", b"\xf0" + b"\xbc" * 40])
def test_malformed_octet_aligned_payloads(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        unpack_payload(payload, wideband=False, octet_align=True)


def test_reserved_frame_type_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        unpack_payload(bytes([0xF0, 12 << 3 | 4]), wideband=False, octet_align=True)


def test_params_from_fmtp() -> None:
    p = amr_params("octet-align=1; mode-set=0,2,5,7; mode-change-period=2; mode-change-neighbor=1", False)
    assert p.octet_align and p.mode_set == (0, 2, 5, 7) and p.mode_change_period == 2 and p.mode_change_neighbor
    assert amr_params(None, True).modes == tuple(range(9))
    assert amr_params("mode-set=9,x,3", False).mode_set == (3,)
    for bad in ("crc=1", "robust-sorting=1", "interleaving=4"):
        with pytest.raises(LocalProtocolError):
            amr_params(bad, False)


@pytest.mark.parametrize("backend", ["av", "lib"])
@pytest.mark.parametrize("fmtp", [OA, None])
def test_amr_nb_round_trip_both_backends(backend: str, fmtp: str | None) -> None:
    if backend == "lib":
        require.require_library("libopencore-amrnb", libraries.available("amrnb"), "libopencore-amrnb0")
    info = get_codec("AMR", 8000, fmtp=fmtp)
    enc = AmrEncoder(info, backend=backend)  # type: ignore[arg-type]
    dec = AmrDecoder(info, backend=backend)  # type: ignore[arg-type]
    payloads = enc.encode(tone(800.0, 8000, 1.0))
    assert len(payloads) == 50
    assert {len(p) for p in payloads} == {33 if fmtp else 32}  # 12.2 kbit/s: 244 bits
    pcm = np.concatenate([dec.decode(enc.pack(payloads[i : i + 2])) for i in range(0, 50, 2)])
    assert len(pcm) == 8000
    assert abs(dominant_frequency(pcm[2000:], 8000) - 800.0) < 10 and rms_dbfs(pcm[2000:]) > -20


@pytest.mark.parametrize("backend", ["av", "lib"])
def test_amr_wb_round_trip(backend: str) -> None:
    if backend == "lib":
        require.require_library("libopencore-amrwb", libraries.available("amrwb"), "libopencore-amrwb0")
    info = get_codec("AMR-WB", 16000)
    enc, dec = AmrEncoder(info), AmrDecoder(info, backend=backend)  # type: ignore[arg-type]
    payloads = enc.encode(tone(1500.0, 16000, 1.0))
    assert len(payloads) == 50 and {len(p) for p in payloads} == {(4 + 6 + 477 + 7) // 8}
    pcm = np.concatenate([dec.decode(p) for p in payloads])
    assert len(pcm) == 16000
    assert abs(dominant_frequency(pcm[4000:], 16000) - 1500.0) < 15 and rms_dbfs(pcm[4000:]) > -20


@pytest.mark.parametrize("codec, rate, fmtp", [("AMR", 8000, OA), ("AMR", 8000, None),
                                                ("AMR-WB", 16000, OA), ("AMR-WB", 16000, None)])
def test_debian_ffmpeg_decodes_our_payloads(tmp_path: Path, codec: str, rate: int, fmtp: str | None) -> None:
    enc = create_encoder(get_codec(codec, rate, fmtp=fmtp))
    payloads = enc.encode(tone(1000.0, rate, 1.0))
    # packets of three frames (60 ms), as a far end asking ptime 60 gets them
    packets = [enc.pack(payloads[i : i + 3]) for i in range(0, 48, 3)]
    pcm, got_rate = decode_payloads(codec, packets, tmp_path, fmtp)
    assert got_rate == rate and len(pcm) == 48 * rate // 50
    assert abs(dominant_frequency(pcm[len(pcm) // 4 :], rate) - 1000.0) < 15
    assert rms_dbfs(pcm[len(pcm) // 4 :]) > -20


def test_mode_set_and_codec_mode_request() -> None:
    info = get_codec("AMR", 8000, fmtp="mode-set=0,2,4,7; mode-change-neighbor=1; mode-change-period=2")
    enc, dec = create_encoder(info), create_decoder(info)
    assert isinstance(enc, AmrEncoder) and enc.mode == 7  # the highest of the set
    frames = [unpack_payload(p, wideband=False, octet_align=False)[1][0].ft for p in enc.encode(tone(500.0, 8000, 0.2))]
    assert set(frames) == {7}
    enc.request_mode(3)  # not in the set: the highest below it, 2; one neighbour at a time, every 2nd frame
    fts = [unpack_payload(p, wideband=False, octet_align=False)[1][0].ft for p in enc.encode(tone(500.0, 8000, 0.2))]
    assert fts[:6] == [4, 4, 2, 2, 2, 2], fts
    # the far end's CMR reaches the decoder's mode_request (the stream hands it to the encoder)
    other = AmrEncoder(get_codec("AMR", 8000))
    frame = unpack_payload(other.encode(tone(500.0, 8000, 0.02))[0], wideband=False, octet_align=False)[1]
    dec.decode(pack_payload(frame, wideband=False, octet_align=False, cmr=0))
    assert dec.mode_request == 0
    enc.request_mode(15)  # "no request" changes nothing


def test_loss_and_no_data_frames_use_the_codecs_concealment() -> None:
    for codec, rate in (("AMR", 8000), ("AMR-WB", 16000)):
        enc, dec = create_encoder(get_codec(codec, rate)), create_decoder(get_codec(codec, rate))
        for p in enc.encode(tone(600.0, rate, 0.5)):
            dec.decode(p)
        hidden = dec.conceal(rate // 50)
        assert len(hidden) == rate // 50 and rms_dbfs(hidden) > -35, codec
        no_data = pack_payload([AmrFrame(NO_DATA, True, b"")], wideband=codec == "AMR-WB", octet_align=False)
        assert len(dec.decode(no_data)) == rate // 50
        later = np.concatenate([dec.conceal(rate // 50) for _ in range(25)])
        assert rms_dbfs(later[-rate // 50 :]) < rms_dbfs(hidden) - 10, codec  # fades out

"""G.729 through libbcg729: frames, payload splitting (Annex B SID), concealment, Debian
ffmpeg decoding our payloads, bcg729 decoding ffmpeg-independent input, and the library path."""

from __future__ import annotations

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
from webgate.media.codecs.g729 import FRAME_BYTES, split_frames
from webgate.proto.errors import RemoteProtocolError


@pytest.fixture(autouse=True)
def bcg729() -> Iterator[None]:
    set_library_paths({})
    require.require_library("libbcg729", libraries.available("bcg729"), "libbcg729-0")
    yield
    set_library_paths({})


def _encode(hz: float = 1000.0, seconds: float = 1.0) -> list[bytes]:
    enc = create_encoder("G729")
    return enc.encode(tone(hz, 8000, seconds))


def test_frames_are_10_bytes_per_10_ms() -> None:
    payloads = _encode()
    assert len(payloads) == 100 and {len(p) for p in payloads} == {FRAME_BYTES}
    enc = create_encoder("G729")
    assert enc.joinable and enc.frame_samples == 80
    assert enc.pack(payloads[:3]) == b"".join(payloads[:3])


def test_round_trip_keeps_the_tone() -> None:
    enc, dec = create_encoder("G729"), create_decoder("G729")
    payloads = enc.encode(tone(700.0, 8000, 1.0))
    # two frames per packet (20 ms), as on the wire
    pcm = np.concatenate([dec.decode(enc.pack(payloads[i : i + 2])) for i in range(0, 100, 2)])
    assert len(pcm) == 8000
    assert abs(dominant_frequency(pcm[2000:], 8000) - 700.0) < 10
    assert rms_dbfs(pcm[2000:]) > -20


def test_debian_ffmpeg_decodes_our_payloads(tmp_path: Path) -> None:
    pcm, rate = decode_payloads("G729", _encode(1000.0, 1.0), tmp_path)
    assert len(pcm) == 8000
    assert abs(dominant_frequency(pcm[2000:], rate) - 1000.0) < 10
    assert rms_dbfs(pcm[2000:]) > -20


def test_sid_frames_and_malformed_payloads() -> None:
    dec = create_decoder("G729")
    frame = _encode(500.0, 0.1)[0]
    assert split_frames(frame * 2 + b"\x12\x34") == [frame, frame, b"\x12\x34"]
    assert len(dec.decode(frame * 2 + b"\x12\x34")) == 240  # two frames + comfort noise
    assert len(dec.decode(b"\x00\x00")) == 80  # a SID frame alone
    for bad in (b"", b"\x01", frame + b"\x00", frame * 30):
        with pytest.raises(RemoteProtocolError):
            dec.decode(bad)


def test_loss_is_concealed_by_the_codec_not_by_silence() -> None:
    enc, dec = create_encoder("G729"), create_decoder("G729")
    for p in enc.encode(tone(600.0, 8000, 0.5)):
        dec.decode(p)
    hidden = dec.conceal(160)
    assert len(hidden) == 160
    assert rms_dbfs(hidden) > -30  # bcg729's erasure concealment continues the voice
    assert abs(dominant_frequency(hidden, 8000) - 600.0) < 60
    later = np.concatenate([dec.conceal(160) for _ in range(20)])
    assert rms_dbfs(later[-160:]) < rms_dbfs(hidden)  # and attenuates a long gap


def test_a_missing_library_makes_g729_unavailable(tmp_path: Path) -> None:
    set_library_paths({"bcg729": str(tmp_path / "libbcg729.so.0")})
    info = get_codec("G729")
    assert not info.can_encode and not info.can_decode
    set_library_paths({"bcg729": ""})
    assert not get_codec("G729").can_encode
    set_library_paths({})
    assert get_codec("G729").can_encode

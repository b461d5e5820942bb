"""G.723.1 at 6.3 kbit/s through PyAV: 30 ms frames, payload splitting, Debian ffmpeg decoding
our payloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.media.conftest import tone
from tests.media.ffmpeg_decode import decode_payloads
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.codecs import create_decoder, create_encoder, get_codec, packet_plan
from webgate.media.codecs.g723 import split_frames
from webgate.proto.errors import RemoteProtocolError


def test_frames_and_packets() -> None:
    enc = create_encoder("G723")
    payloads = enc.encode(tone(800.0, 8000, 0.9))
    assert len(payloads) == 30 and {len(p) for p in payloads} == {24}
    assert all(p[0] & 3 == 0 for p in payloads)  # 6.3 kbit/s frames
    assert enc.joinable and enc.frame_samples == 240
    info = get_codec("G723")
    assert packet_plan(info, 20) == (30, 1)  # a 20 ms ptime still gets whole 30 ms frames
    assert packet_plan(info, 60) == (30, 2) and packet_plan(info, 60, 30) == (30, 1)
    dec = create_decoder("G723")
    pcm = np.concatenate([dec.decode(enc.pack(payloads[i : i + 2])) for i in range(0, 30, 2)])
    assert len(pcm) == 7200
    assert abs(dominant_frequency(pcm[2400:], 8000) - 800.0) < 15 and rms_dbfs(pcm[2400:]) > -25


def test_debian_ffmpeg_decodes_our_payloads(tmp_path: Path) -> None:
    payloads = create_encoder("G723").encode(tone(1000.0, 8000, 1.2))
    pcm, rate = decode_payloads("G723", payloads, tmp_path)
    assert len(pcm) == 40 * 240
    assert abs(dominant_frequency(pcm[3000:], rate) - 1000.0) < 15 and rms_dbfs(pcm[3000:]) > -25


def test_split_frames() -> None:
    hi, lo, sid = b"\x00" * 24, b"\x01" * 20, b"\x02" * 4
    assert split_frames(hi + lo + sid) == [hi, lo, sid]
    for bad in (b"", b"\x03", hi[:23], hi + b"\x00"):
        with pytest.raises(RemoteProtocolError):
            split_frames(bad)

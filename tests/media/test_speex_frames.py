"""webgate.media.speex.split_frames: Speex packets cut into frames without decoding."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from tests.require import require_library
from webgate.media import _native
from webgate.media.codecs import create_decoder
from webgate.media.speex import split_frames
from webgate.media.tones import ToneGenerator
from webgate.proto.errors import RemoteProtocolError


@pytest.fixture
def libspeex() -> None:
    """libspeex (Debian libspeex1) for the encoder: skip, or fail under WEBGATE_REQUIRE_PEERS=1."""
    require_library("libspeex", _native.speex_available(), "libspeex1")


@pytest.mark.usefixtures("libspeex")
@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("quality", range(11))
def test_one_frame_packets_come_back_byte_identical(rate: int, quality: int) -> None:
    """Every mode libspeex picks for qualities 0-10: one frame, same bytes (same padding)."""
    enc = _native.SpeexEncoder(rate, quality)
    gen = ToneGenerator(700.0, rate, 0.3)
    for _ in range(5):
        packet = enc.encode(gen.generate(rate // 50))
        assert split_frames(packet, rate) == [packet]


@pytest.mark.usefixtures("ffmpeg_program")
@pytest.mark.parametrize("per_packet", [2, 3, 5])
def test_multi_frame_packets_decode_the_same_when_split(per_packet: int, tmp_path: Path) -> None:
    """ffmpeg's libspeex packs several frames per FLV tag: decoding the split frames one by one
    gives exactly the samples of decoding the whole packets."""
    flv = tmp_path / "spx.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=f=700:r=16000:d=1",
         "-c:a", "libspeex", "-frames_per_packet", str(per_packet), "-ar", "16000", "-ac", "1", str(flv)],
        check=True, timeout=30,
    )
    with av.open(str(flv)) as c:
        packets = [bytes(p) for p in c.demux(audio=0) if p.size]
    frames = [split_frames(p) for p in packets]
    assert {len(f) for f in frames[:-1]} == {per_packet}
    whole, split = create_decoder("speex", 16000), create_decoder("speex", 16000)
    a = np.concatenate([whole.decode(p) for p in packets])
    b = np.concatenate([split.decode(f) for fs in frames for f in fs])
    assert len(a) == len(b) and np.array_equal(a, b)


def test_bad_packets_raise_remote_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        split_frames(b"")
    with pytest.raises(RemoteProtocolError):
        split_frames(b"\x80\x00")  # starts with a wideband layer
    with pytest.raises(RemoteProtocolError):
        split_frames(bytes([0b01001000]) + b"\x00" * 3)  # NB mode 9: unknown
    with pytest.raises(RemoteProtocolError):
        split_frames(b"\x1e" + b"\x00" * 10, 16000)  # NB mode 3 (160 bits) cut short
    with pytest.raises(RemoteProtocolError):
        split_frames(b"\x00" * 4, 12000)  # no Speex mode at 12 kHz
    # random bytes: frames or RemoteProtocolError, never anything else
    rnd = random.Random(7)
    for _ in range(3000):
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
        for rate in (8000, 16000, 32000):
            try:
                out = split_frames(data, rate)
            except RemoteProtocolError:
                continue
            assert out and all(isinstance(f, bytes) and f for f in out)

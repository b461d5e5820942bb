"""Packet-loss concealment: Opus through libopus (real PLC, and in-band FEC rebuilding a lost
packet from the next one, in the decoder and through the stream), repeat-and-fade for
Nellymoser and AAC on the frame path, as for G.711."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests import require
from tests.media.conftest import tone
from webgate.media.analysis import rms_dbfs
from webgate.media.codecs import (
    create_decoder,
    create_encoder,
    get_codec,
    libraries,
    opus_has_lbrr,
    set_library_paths,
)
from webgate.media.codecs.opus import OpusDecoder
from webgate.media.stream import RtpAudioStream
from webgate.proto import rtp
from webgate.proto.sdp import Codec, NegotiatedMedia

FAR = ("192.0.2.10", 4000)


def _speechlike(seconds: float) -> np.ndarray:
    t = np.arange(int(48000 * seconds)) / 48000
    sweep = np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * 3 * t)) * t)
    return (0.3 * 32767 * sweep * (0.6 + 0.4 * np.sin(2 * np.pi * 5 * t))).astype(np.int16)


def _opus_with_fec(pcm: np.ndarray) -> list[bytes]:
    """20 ms Opus packets from libopus with in-band FEC on (as a far end with useinbandfec sends)."""
    lib = ctypes.CDLL("libopus.so.0")
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int32]
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    err = ctypes.c_int()
    enc = lib.opus_encoder_create(48000, 1, 2048, ctypes.byref(err))  # OPUS_APPLICATION_VOIP
    for request, value in ((4012, 1), (4014, 20), (4002, 24000)):  # INBAND_FEC, PACKET_LOSS_PERC, BITRATE
        assert lib.opus_encoder_ctl(ctypes.c_void_p(enc), ctypes.c_int(request), ctypes.c_int(value)) == 0
    out = ctypes.create_string_buffer(1500)
    packets = []
    for i in range(len(pcm) // 960):
        frame = np.ascontiguousarray(pcm[i * 960 : (i + 1) * 960])
        n = lib.opus_encode(enc, frame.ctypes.data, 960, out, 1500)
        packets.append(out.raw[:n])
    lib.opus_encoder_destroy(enc)
    return packets


def _error_db(got: np.ndarray, want: np.ndarray) -> float:
    a, b = got.astype(float), want.astype(float)
    return float(10 * np.log10(np.mean((a - b) ** 2) / np.mean(b**2)))


@pytest.fixture(autouse=True)
def libopus() -> None:
    set_library_paths({})
    require.require_library("libopus", libraries.available("opus"), "libopus0")


def test_opus_fec_rebuilds_a_lost_packet_plc_only_guesses() -> None:
    packets = _opus_with_fec(_speechlike(2.0))
    reference = create_decoder("opus")
    clean = [reference.decode(p) for p in packets]
    results = {}
    for mode in ("fec", "plc"):
        dec = create_decoder("opus")
        assert isinstance(dec, OpusDecoder)
        for p in packets[:50]:
            dec.decode(p)
        results[mode] = dec.recover(packets[51], 960) if mode == "fec" else dec.conceal(960)
        assert len(results[mode]) == 960
        assert dec.decode(packets[51]).size == 960
    assert _error_db(results["fec"], clean[50]) < -10  # close to what was sent
    assert _error_db(results["plc"], clean[50]) > -6
    assert rms_dbfs(results["plc"]) > -45  # libopus's PLC is not silence


def test_lbrr_flag_is_read_from_the_packet() -> None:
    with_fec = _opus_with_fec(_speechlike(1.0))
    assert sum(bool(opus_has_lbrr(p)) for p in with_fec) >= len(with_fec) - 2  # all but the first
    plain = create_encoder("opus").encode(_speechlike(1.0))  # no useinbandfec: no FEC data
    assert not any(opus_has_lbrr(p) for p in plain)
    fec = create_encoder(get_codec("opus", 48000, 2, "useinbandfec=1")).encode(_speechlike(1.0))
    assert sum(bool(opus_has_lbrr(p)) for p in fec) > len(fec) // 2  # the far end asked: we send it
    assert opus_has_lbrr(b"\xf8\xff\xfe") is None  # CELT-only: no SILK layer
    # a packet without FEC data: recover() conceals and does not count it as rebuilt
    dec = create_decoder("opus")
    assert isinstance(dec, OpusDecoder)
    for p in plain[:10]:
        dec.decode(p)
    dec.recover(plain[11], 960)
    assert dec.fec_recovered == 0


def test_without_libopus_pyav_decodes_and_loss_is_silent() -> None:
    set_library_paths({"opus": ""})
    dec = create_decoder("opus")
    assert not isinstance(dec, OpusDecoder)
    enc = create_encoder("opus")
    for p in enc.encode(tone(440.0, 48000, 0.2)):
        dec.decode(p)
    assert not dec.conceal().any()


def test_stream_uses_fec_when_the_next_packet_is_there() -> None:
    packets = _opus_with_fec(_speechlike(1.2))
    s = RtpAudioStream(lambda d, a: None, None, label="t")
    s.configure(NegotiatedMedia(remote_address=FAR[0], remote_port=FAR[1], remote_rtcp_address=FAR[0],
                                remote_rtcp_port=FAR[1] + 1, codec=Codec("opus", 48000, 2, payload_type=111),
                                telephone_event=None, ptime=20, direction="sendrecv", on_hold=False))
    played: list[np.ndarray] = []
    s.on_audio = lambda pcm, rate: played.append(pcm)
    sender = rtp.RtpSender(111, 48000)
    for i, p in enumerate(packets):
        pkt = sender.next_packet(p, 960)
        if i not in (20, 40):
            s.datagram_received(pkt.serialize(), FAR, i * 0.02)
        s.tick(i * 0.02)
    for k in range(10):
        s.tick(len(packets) * 0.02 + k * 0.02)
    assert s.stats.concealed == 2 and s.stats.recovered == 2
    pcm = np.concatenate(played)
    blocks = pcm[4800 : len(pcm) // 480 * 480].reshape(-1, 480)
    assert (np.abs(blocks).max(axis=1) > 1000).all()  # no silent 10 ms


@pytest.mark.parametrize("codec, rate", [("nellymoser", 16000), ("aac", 44100)])
def test_frame_path_codecs_repeat_and_fade(codec: str, rate: int) -> None:
    enc = create_encoder(codec, rate)
    dec = create_decoder(codec, rate, extradata=enc.extradata)
    for p in enc.encode(tone(500.0, rate, 0.5)):
        dec.decode(p)
    n = rate // 50
    a, b, c, d = (dec.conceal(n) for _ in range(4))
    assert rms_dbfs(a) > -35 and rms_dbfs(a) > rms_dbfs(b) > rms_dbfs(c)
    assert not d.any()  # silent after 60 ms

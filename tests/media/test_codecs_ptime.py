"""Packet times on the SIP side (webgate/media/stream.py): what we send follows the far end's
``ptime``/``maxptime`` (whole codec frames per packet), what we receive may have any packet time
(10 ms packets play two per 20 ms tick, 30 ms ones one every 30 ms), and a lost packet is
concealed for its own duration by the codec's concealment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests import require
from tests.media.conftest import tone
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.codecs import (
    create_encoder,
    get_codec,
    libraries,
    packet_plan,
    set_library_paths,
)
from webgate.media.stream import RtpAudioStream
from webgate.proto import rtp
from webgate.proto.sdp import Codec, NegotiatedMedia

FAR = ("192.0.2.10", 4000)


def media(codec: Codec, ptime: int = 20, maxptime: int | None = None) -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address=FAR[0], remote_port=FAR[1], remote_rtcp_address=FAR[0], remote_rtcp_port=FAR[1] + 1,
        codec=codec, telephone_event=None, ptime=ptime, direction="sendrecv", on_hold=False, maxptime=maxptime,
    )


def sent_packets(codec: Codec, ptime: int, maxptime: int | None = None, seconds: float = 0.6) -> list[rtp.RtpPacket]:
    out: list[bytes] = []
    s = RtpAudioStream(lambda d, a: out.append(d), None, label="t")
    s.configure(media(codec, ptime, maxptime))
    info = get_codec(codec.name, codec.clock_rate, codec.channels, codec.fmtp)
    pcm = tone(1000.0, info.sample_rate, seconds)
    for i in range(0, len(pcm), info.sample_rate // 50):  # 20 ms at a time, as the legs do
        s.send_pcm(pcm[i : i + info.sample_rate // 50], info.sample_rate)
    return [rtp.RtpPacket.parse(d) for d in out]


@pytest.fixture(autouse=True)
def libraries_default() -> None:
    set_library_paths({})
    require.require_library("libbcg729", libraries.available("bcg729"), "libbcg729-0")


@pytest.mark.parametrize("ptime, size, step", [(10, 10, 80), (20, 20, 160), (30, 30, 240), (40, 40, 320), (60, 60, 480)])
def test_g729_sends_the_far_ends_ptime(ptime: int, size: int, step: int) -> None:
    packets = sent_packets(Codec("G729", 8000, payload_type=18), ptime)
    assert {len(p.payload) for p in packets} == {size}
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)} == {step}
    assert all(p.payload_type == 18 for p in packets)


def test_maxptime_caps_and_odd_values_round_to_frames() -> None:
    assert {len(p.payload) for p in sent_packets(Codec("G729", 8000, payload_type=18), 60, 30)} == {30}
    assert {len(p.payload) for p in sent_packets(Codec("PCMU", 8000, payload_type=0), 30)} == {240}
    assert {len(p.payload) for p in sent_packets(Codec("PCMA", 8000, payload_type=8), 10)} == {80}
    assert {len(p.payload) for p in sent_packets(Codec("G726-32", 8000, payload_type=2), 30)} == {120}
    # G.722 has 20 ms frames: 40 ms is two of them, 10 ms still one
    assert {len(p.payload) for p in sent_packets(Codec("G722", 8000, payload_type=9), 40)} == {320}
    assert {len(p.payload) for p in sent_packets(Codec("G722", 8000, payload_type=9), 10)} == {160}
    # Opus stays one 20 ms frame per packet
    opus = sent_packets(Codec("opus", 48000, 2, payload_type=111), 60)
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(opus)} == {960}
    amr = sent_packets(Codec("AMR", 8000, fmtp="octet-align=1", payload_type=96), 40)
    assert {len(p.payload) for p in amr} == {1 + 2 + 2 * 31}  # CMR, two ToC entries, two 12.2k frames
    assert packet_plan(get_codec("PCMU"), None) == (20, 1)


def _receive(codec: Codec, packet_ms: int, lose: set[int] = frozenset(), seconds: float = 1.2) -> tuple[np.ndarray, RtpAudioStream]:
    """Feed a stream packets of ``packet_ms`` (dropping the indexes in ``lose``) on time, tick every
    20 ms, return what it played."""
    info = get_codec(codec.name, codec.clock_rate, codec.channels, codec.fmtp)
    enc = create_encoder(info, frame_ms=packet_ms)
    s = RtpAudioStream(lambda d, a: None, None, label="t")
    s.configure(media(codec))
    played: list[np.ndarray] = []
    s.on_audio = lambda pcm, rate: played.append(pcm)
    frames = enc.encode(tone(600.0, info.sample_rate, seconds))
    per = max(1, packet_ms * info.sample_rate // 1000 // enc.frame_samples)
    packets = [enc.pack(frames[i : i + per]) for i in range(0, len(frames) - per + 1, per)]
    step = per * enc.frame_samples * info.rtp_clock_rate // info.sample_rate
    sender = rtp.RtpSender(codec.payload_type or 0, info.rtp_clock_rate)
    t = 0.0
    due = 0.0
    i = 0
    while t < seconds + 0.3:
        while i < len(packets) and due <= t:
            pkt = sender.next_packet(packets[i], step)
            if i not in lose:
                s.datagram_received(pkt.serialize(), FAR, due)
            i += 1
            due += packet_ms / 1000
        s.tick(t)
        t = round(t + 0.02, 6)
    return (np.concatenate(played) if played else np.zeros(0, np.int16)), s


@pytest.mark.parametrize("codec, packet_ms", [
    (Codec("G729", 8000, payload_type=18), 10),
    (Codec("G729", 8000, payload_type=18), 30),
    (Codec("G723", 8000, payload_type=4), 30),
    (Codec("G723", 8000, payload_type=4), 60),
    (Codec("PCMU", 8000, payload_type=0), 10),
    (Codec("AMR", 8000, payload_type=96), 40),
])
def test_any_received_packet_time_plays_continuously(codec: Codec, packet_ms: int) -> None:
    pcm, s = _receive(codec, packet_ms)
    rate = 8000
    assert s.stats.concealed == 0 and s.stats.bad_packets == 0
    assert len(pcm) >= rate  # all of it came out, none of it dropped
    tail = pcm[len(pcm) // 3 :]
    assert abs(dominant_frequency(tail, rate) - 600.0) < 15 and rms_dbfs(tail) > -25
    blocks = tail[: len(tail) // 80 * 80].reshape(-1, 80)
    assert (np.abs(blocks).max(axis=1) > 300).all()  # no silent 10 ms anywhere


@pytest.mark.parametrize("codec, packet_ms", [(Codec("G729", 8000, payload_type=18), 20),
                                               (Codec("AMR", 8000, payload_type=96), 20),
                                               (Codec("G729", 8000, payload_type=18), 30)])
def test_a_lost_packet_is_concealed_for_its_duration(codec: Codec, packet_ms: int) -> None:
    pcm, s = _receive(codec, packet_ms, lose={20, 21})
    assert s.stats.concealed == 2
    n = packet_ms * 8
    assert len(pcm) >= 8000
    blocks = pcm[4000 // n * n : len(pcm) // n * n].reshape(-1, n)
    assert (np.abs(blocks).max(axis=1) > 300).all()  # the codec's concealment: no silent packet

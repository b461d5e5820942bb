"""The beep/announcement mixed into relayed (packet path) Opus and G.722 payloads
(webgate/media/recording/prompt.py ``_Recoder``): bytes in, bytes out, measured after decoding
with a fresh decoder as the far end would; each payload keeps its duration, and outside a prompt
the payloads pass untouched (the same objects)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.recording.test_audio_prompt import band
from webgate.media.codecs import (
    create_decoder,
    create_encoder,
    get_codec,
    opus_packet_samples,
)
from webgate.media.codecs.base import AvEncoder
from webgate.media.codecs.registry import codec_spec, pick_av_codec
from webgate.media.recording.prompt import BEEP_HZ, PromptPlayer, beep
from webgate.media.tones import ToneGenerator

VOICE_HZ = 660.0


def payloads(name: str, clock: int, channels: int, count: int, frame_ms: int = 20) -> tuple[list[bytes], int]:
    """``count`` payloads of a 660 Hz tone in ``name``, ``frame_ms`` each; and the codec's PCM rate."""
    info = get_codec(name, clock, channels, None)
    if name == "opus" and frame_ms != 20:
        spec = codec_spec(info)
        codec = pick_av_codec(spec.av_encoder, "w")
        assert codec is not None
        enc = AvEncoder(info, codec, spec.av_format, spec.bit_rate, options={"frame_duration": str(frame_ms)})
    else:
        enc = create_encoder(info)
    rate = info.sample_rate
    pcm = np.asarray(ToneGenerator(VOICE_HZ, rate, 0.2).generate(rate * frame_ms * count // 1000), dtype=np.int16)
    out = enc.encode(pcm)
    if name == "G722" and frame_ms != 20:  # G.722 is a byte stream: re-cut into frame_ms payloads
        data, size = b"".join(out), rate * frame_ms // 1000 // 2
        out = [data[i:i + size] for i in range(0, len(data), size)]
    assert len(out) == count
    return out, rate


def decode_all(name: str, clock: int, channels: int, seq: list[bytes]) -> np.ndarray:
    dec = create_decoder(get_codec(name, clock, channels, None))
    return np.concatenate([dec.decode(p) for p in seq])


@pytest.mark.parametrize(("name", "clock", "channels"), [("opus", 48000, 2), ("G722", 8000, 1), ("speex", 16000, 1)])
def test_prompt_mixes_into_relayed_payloads_both_ways(name: str, clock: int, channels: int) -> None:
    src, rate = payloads(name, clock, channels, 40)  # 800 ms of voice
    p = PromptPlayer(get_codec(name, clock, channels, None))
    p.play(beep(rate, 0.3))  # 300 ms: 15 payloads
    out = [p.out_payload(x) for x in src]
    into = [p.in_payload(x) for x in src]
    assert not p.active and p.recoded == (15, 15)
    for seq in (out, into):
        # the first 15 carry the beep (new bytes), the rest are the very payloads that came
        assert all(a is not b for a, b in zip(seq[:15], src[:15], strict=True))
        assert all(a is b for a, b in zip(seq[15:], src[15:], strict=True))
        # one payload of the same duration each: the RTP timestamps stay right
        if name == "opus":
            assert [opus_packet_samples(x) for x in seq] == [960] * 40
        elif name == "G722":
            assert [len(x) for x in seq] == [160] * 40
        dec = create_decoder(get_codec(name, clock, channels, None))
        assert [len(dec.decode(x)) for x in seq] == [rate // 50] * 40
        pcm = decode_all(name, clock, channels, seq)
        assert len(pcm) == 40 * rate // 50
        during, after = pcm[int(0.05 * rate):int(0.25 * rate)], pcm[int(0.45 * rate):]
        assert band(during, rate, BEEP_HZ) > 0.2 and band(during, rate, VOICE_HZ) > 0.2, (
            band(during, rate, BEEP_HZ), band(during, rate, VOICE_HZ))
        assert band(after, rate, BEEP_HZ) < 0.01 and band(after, rate, VOICE_HZ) > 0.8
    # a second prompt starts afresh (new codec state) and works the same
    p.play(beep(rate, 0.1))
    again = [p.out_payload(x) for x in src[:10]]
    pcm = decode_all(name, clock, channels, again)
    assert band(pcm[: rate // 10], rate, BEEP_HZ) > 0.2 and p.recoded[0] == 20


def test_opus_payloads_of_other_frame_durations_keep_theirs() -> None:
    src, rate = payloads("opus", 48000, 2, 20, frame_ms=40)
    p = PromptPlayer(get_codec("opus", 48000, 2, None))
    p.play(beep(rate, 0.4))
    out = [p.out_payload(x) for x in src]
    assert [opus_packet_samples(x) for x in out] == [1920] * 20 and p.recoded[0] == 10
    pcm = decode_all("opus", 48000, 2, out)
    assert band(pcm[int(0.05 * rate):int(0.35 * rate)], rate, BEEP_HZ) > 0.2
    assert band(pcm[int(0.5 * rate):], rate, BEEP_HZ) < 0.01


def test_g722_payloads_it_cannot_remake_pass_untouched_and_the_prompt_keeps_time() -> None:
    src, rate = payloads("G722", 8000, 1, 20, frame_ms=30)  # 30 ms: not whole 20 ms encoder frames
    p = PromptPlayer(get_codec("G722", 8000, 1, None))
    p.play(beep(rate, 0.3))
    out = [p.out_payload(x) for x in src]
    into = [p.in_payload(x) for x in src]
    assert all(a is b for a, b in zip(out + into, src + src, strict=True)) and p.recoded == (0, 0)
    assert not p.active  # 300 ms of prompt went by with 10 payloads of 30 ms
    # undecodable bytes: passed on as they came, never an exception
    p.play(beep(rate, 0.1))
    q = PromptPlayer(get_codec("opus", 48000, 2, None))
    q.play(beep(48000, 0.1))
    junk = b"\xff\xff\xff"
    assert q.out_payload(junk) is junk

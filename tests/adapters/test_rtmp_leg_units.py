"""The RTMP leg's media units without sockets: clock conversion over long calls, and hostile FLV audio.

* SIP -> RTMP (:class:`Player`): FLV timestamps come from the count of samples sent, so they stay
  exact however long the call (checked over 2 hours of 20 ms G.711 frames, and per codec).
* RTMP -> SIP (:class:`AudioIn`): published audio is re-cut into 20 ms frames and paced by the media
  clock; over 2 hours of a steady publisher nothing is dropped and nothing lags.
* Any bytes as an FLV audio tag (hypothesis): only the documented errors are raised inside, and they
  are counted (``bad_tags``), never escape ``feed()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webgate.calls.call import CallState
from webgate.legs.rtmp_audio import AudioIn, Player
from webgate.media.codecs import ulaw_encode
from webgate.media.tones import ToneGenerator
from webgate.proto import flv


class Sink:
    def __init__(self) -> None:
        self.tags: list[tuple[int, bytes]] = []
        self.open = True

    def send_audio_tag(self, timestamp_ms: int, data: bytes) -> None:
        self.tags.append((timestamp_ms, data))


@dataclass
class _Codec:
    name: str
    sample_rate: int


@dataclass
class _Stream:
    codec: _Codec


@dataclass
class FakeCall:
    """Just what AudioIn reads from a call, recording what it sends toward SIP."""

    codec_name: str = "PCMU"
    rate: int = 8000
    state: CallState = CallState.ANSWERED
    session_id: str = "12345678"
    payloads: list[bytes] = field(default_factory=list)
    frames: list[tuple[Any, int]] = field(default_factory=list)

    @property
    def stream(self) -> _Stream:
        return _Stream(_Codec(self.codec_name, self.rate))

    def send_payload(self, payload: bytes, samples: int) -> None:
        self.payloads.append(payload)

    def send_audio(self, pcm: Any, rate: int) -> None:
        self.frames.append((pcm, rate))


TWO_HOURS_FRAMES = 2 * 3600 * 50  # 20 ms frames


def test_player_g711_timestamps_exact_over_two_hours() -> None:
    sink = Sink()
    p = Player(sink, "g711")
    payload = bytes(160)
    for _ in range(TWO_HOURS_FRAMES):
        p.payload(payload, "PCMU")
    stamps = np.fromiter((t for t, _ in sink.tags), dtype=np.int64, count=len(sink.tags))
    assert len(stamps) == TWO_HOURS_FRAMES
    assert stamps[0] == 0
    assert stamps[-1] == (TWO_HOURS_FRAMES - 1) * 20 == 7_199_980
    assert set(np.diff(stamps).tolist()) == {20}  # not one millisecond of drift anywhere


@pytest.mark.parametrize(("codec", "rate", "frame"), [("nellymoser", 8000, 256), ("speex", 16000, 320), ("aac", 16000, 1024)])
def test_player_encoded_timestamps_follow_the_sample_count(codec: str, rate: int, frame: int) -> None:
    sink = Sink()
    p = Player(sink, codec)
    gen = ToneGenerator(1000.0, 8000, 0.3)
    for _ in range(50 * 20):  # 20 s of 20 ms frames from an 8 kHz SIP leg
        p.pcm(gen.generate(160), 8000)
    audio = [(t, d) for t, d in sink.tags if not (codec == "aac" and d[1] == flv.AAC_SEQUENCE_HEADER)]
    # tag k starts at sample k * frame of the encoder's clock, rounded down to a millisecond
    assert [t for t, _ in audio] == [k * frame * 1000 // rate for k in range(len(audio))]
    assert len(audio) * frame / rate == pytest.approx(20.0, abs=0.2)  # minus the resampler/encoder delay
    # far into a long call the same integer formula holds (no float accumulation)
    p._samples = 2 * 3600 * rate + 7 * frame
    assert p._ts() == 7_200_000 + 7 * frame * 1000 // rate


def _ulaw_tag(gen: ToneGenerator, ms: int) -> bytes:
    return bytes([0x82]) + ulaw_encode(gen.generate(8 * ms))


def test_audio_in_pacing_two_hours_no_loss_no_lag() -> None:
    """A steady publisher (ffmpeg sends 128 ms G.711 messages) against the 20 ms media clock."""
    call = FakeCall()
    a = AudioIn("t")
    gen = ToneGenerator(800.0, 8000, 0.3)
    tag = _ulaw_tag(gen, 128)  # same bytes every time: the content does not matter here
    fed_ms = 0
    total_ticks = TWO_HOURS_FRAMES
    for i in range(total_ticks):
        now = i * 0.02
        while fed_ms < (i + 1) * 20:  # the publisher keeps ~one message ahead of the clock
            a.feed(call, tag)
            fed_ms += 128
        a.tick(call, now)
    assert a.dropped_ms == 0
    assert a.bad_tags == 0
    assert a.passthrough_frames == a.sent_frames == len(call.payloads)
    # every ms fed was either sent or is still queued (at most the prebuffer + one message)
    assert a.sent_frames * 20 + a.queued_ms + len(a._g711) // 8 == fed_ms
    # started after the prebuffer, then exactly one frame per tick: no accumulated lag after 2 hours
    assert total_ticks - a.sent_frames <= a.prebuffer_ms // 20 + 1, (total_ticks, a.sent_frames, a.prebuffer_ms)


def test_audio_in_frame_path_pacing_exact() -> None:
    """Decoded (transcoded) audio goes out one 20 ms frame per tick too."""
    call = FakeCall(codec_name="G722", rate=16000)
    a = AudioIn("t")
    gen = ToneGenerator(800.0, 8000, 0.3)
    for i in range(50 * 60):  # a minute, 20 ms PCMA... as µ-law (frame path toward a G.722 leg)
        a.feed(call, _ulaw_tag(gen, 20))
        a.tick(call, i * 0.02)
    assert a.passthrough_frames == 0 and a.bad_tags == 0 and a.dropped_ms == 0
    assert all(rate == 16000 and len(pcm) == 320 for pcm, rate in call.frames)
    assert 50 * 60 - a.sent_frames <= a.prebuffer_ms // 20 + 1


def test_audio_in_start_up_burst_is_drained_to_the_prebuffer() -> None:
    """A publisher that bursts 360 ms at start (ffmpeg without -re, a reconnecting encoder) and then
    sends in real time: the burst must not stay as a standing delay toward SIP."""
    call = FakeCall()
    a = AudioIn("t")
    gen = ToneGenerator(800.0, 8000, 0.3)
    for _ in range(18):
        a.feed(call, _ulaw_tag(gen, 20))
    depths = []
    for i in range(50 * 10):
        a.feed(call, _ulaw_tag(gen, 20))
        a.tick(call, i * 0.02)
        depths.append(a.queued_ms)
    assert a.bad_tags == 0
    assert max(depths[:50]) >= 340  # the burst queued first ...
    assert max(depths[-100:]) <= a.prebuffer_ms + 20, (a.prebuffer_ms, max(depths[-100:]))  # ... and was drained
    assert a.drained_ms == a.dropped_ms and 260 <= a.drained_ms <= 360, a.drained_ms
    # after the drain: one frame per tick, nothing more dropped
    sent, dropped = a.sent_frames, a.dropped_ms
    for i in range(500, 1000):
        a.feed(call, _ulaw_tag(gen, 20))
        a.tick(call, i * 0.02)
    assert a.sent_frames - sent == 500 and a.dropped_ms == dropped


# ---- hostile FLV audio --------------------------------------------------------------------------

_first_byte = st.integers(0, 255)
_tag = st.builds(lambda b, rest: bytes([b]) + rest, _first_byte, st.binary(max_size=600))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_tag, min_size=1, max_size=6), st.sampled_from([("PCMU", 8000), ("PCMA", 8000), ("G722", 16000)]))
def test_fuzz_audio_in_any_tag_bytes(tags: list[bytes], sip: tuple[str, int]) -> None:
    call = FakeCall(codec_name=sip[0], rate=sip[1])
    a = AudioIn("fuzz")
    for i, t in enumerate(tags):
        a.feed(call, t)  # anything but a counted bad tag would escape and fail the test
        a.tick(call, i * 0.02)
    assert a.tags == len(tags)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=40), st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_fuzz_audio_in_aac_config_then_frames(asc: bytes, frames: list[bytes]) -> None:
    """A garbage AudioSpecificConfig followed by garbage raw AAC frames."""
    call = FakeCall()
    a = AudioIn("fuzz")
    a.feed(call, bytes([0xAF, flv.AAC_SEQUENCE_HEADER]) + asc)
    for f in frames:
        a.feed(call, bytes([0xAF, flv.AAC_RAW]) + f)
    assert a.tags == 1 + len(frames)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_flv_parsers(blob: bytes) -> None:
    from webgate.proto.errors import RemoteProtocolError

    for fn in (flv.parse_audio_tag, flv.audio_codec_of, flv.parse_video_tag, flv.parse_audio_specific_config):
        try:
            fn(blob)
        except RemoteProtocolError:
            pass
    try:
        _, tags = flv.read_flv(blob)
        list(tags)
    except RemoteProtocolError:
        pass

"""The stereo aligner and the writers, with bytes (webgate/media/recording)."""

from __future__ import annotations

import os
import struct
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from webgate.media.codecs import create_encoder, get_codec
from webgate.media.codecs.g711 import ulaw_encode
from webgate.media.recording.audio import (
    LEFT,
    RIGHT,
    RecordingTap,
    StereoTimeline,
    StreamAnchor,
)
from webgate.media.recording.ogg import OggOpusWriter
from webgate.media.recording.wav import WavWriter, repair_wav

RATE = 8000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def tone(freq: float, n: int, rate: int = RATE, amp: float = 8000) -> np.ndarray:
    t = np.arange(n) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def freq_of(x: np.ndarray, rate: int = RATE) -> float:
    spec = np.abs(np.fft.rfft(x.astype(float) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def make_tap(clock: Clock) -> RecordingTap:
    info = get_codec("PCMU", 8000, 1, None)
    return RecordingTap(RATE, lambda: info, clock=clock)


def test_timeline_places_silence_in_gaps_and_pauses() -> None:
    tl = StereoTimeline(RATE)
    tl.place(LEFT, 100, np.full(50, 7, dtype=np.int16))
    tl.place(RIGHT, 0, np.full(10, 9, dtype=np.int16))
    tl.pause(120)
    tl.resume(130)
    out = tl.take(200)
    assert out.shape == (200, 2)
    assert (out[:100, LEFT] == 0).all() and (out[100:120, LEFT] == 7).all()
    assert (out[120:130, LEFT] == 0).all() and (out[130:150, LEFT] == 7).all() and (out[150:, LEFT] == 0).all()
    assert (out[:10, RIGHT] == 9).all() and (out[10:, RIGHT] == 0).all()
    # a late placement (before what was taken) is cut
    tl.place(LEFT, 190, np.full(20, 5, dtype=np.int16))
    assert tl.late_samples == 10
    assert (tl.take(220)[:10, LEFT] == 5).all()


def test_anchor_follows_rtp_clock_and_reanchors_on_jump_and_ssrc() -> None:
    a = StreamAnchor(16000)
    assert a.position(1, 1000, 8000, 500) == 500  # anchored at arrival
    assert a.position(1, 1160, 8000, 820) == 820  # 160 ticks at 8 kHz = 320 samples at 16 kHz
    assert a.position(1, 1320, 8000, 900) == 1140  # jitter on arrival: the RTP clock wins
    assert a.position(1, 1320 + 80000, 8000, 2000) == 2000  # a 10 s timestamp jump: anchored again
    assert a.position(2, 5, 8000, 2400) == 2400  # a new SSRC
    assert a.reanchors == 1
    # wrap-around of the 32-bit timestamp
    b = StreamAnchor(8000)
    b.position(7, 0xFFFFFF00, 8000, 0)
    assert b.position(7, 0x60, 8000, 0x160) == 0x160


def _feed(tap: RecordingTap, clock: Clock, side: str, pcm: np.ndarray, ssrc: int, ts0: int, order: list[int] | None = None,
          skip: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    frames = [pcm[i:i + 160] for i in range(0, len(pcm), 160)]
    idx = order if order is not None else list(range(len(frames)))
    t0 = clock.t
    for k, i in enumerate(idx):
        clock.t = t0 + 0.02 * k  # one packet every 20 ms (in arrival order)
        if i in skip:
            continue
        fn = tap.sent if side == "left" else tap.received
        fn(ssrc, (ts0 + 160 * i) & 0xFFFFFFFF, ulaw_encode(frames[i]))
    clock.t = t0


def test_tap_aligns_both_sides_on_the_timeline_with_loss_and_reordering() -> None:
    clock = Clock()
    tap = make_tap(clock)
    left, right = tone(660, 8000), tone(440, 8000)
    # the web caller starts 0.5 s in, the SIP party at once; the right side is reordered and loses frame 10
    clock.t += 0.5
    _feed(tap, clock, "left", left, ssrc=11, ts0=12345)
    clock.t -= 0.5
    order = list(range(50))
    order[3], order[4] = order[4], order[3]
    _feed(tap, clock, "right", right, ssrc=22, ts0=0xFFFFF000, order=order, skip={10})
    clock.t += 2.0
    out = tap.take(final=True)
    assert out.shape == (16000, 2)
    assert (out[:4000, LEFT] == 0).all()
    assert abs(freq_of(out[4000:12000, LEFT]) - 660) < 5
    assert abs(freq_of(out[:8000, RIGHT]) - 440) < 5
    assert (out[1600:1760, RIGHT] == 0).all()  # the lost frame is silence, in its place
    assert np.abs(out[1760:1920, RIGHT]).max() > 1000
    assert (out[8000:, RIGHT] == 0).all()


def test_tap_ssrc_change_and_pause_keep_the_timeline() -> None:
    clock = Clock()
    tap = make_tap(clock)
    _feed(tap, clock, "right", tone(440, 1600), ssrc=1, ts0=0)  # 0 .. 0.2 s
    clock.t += 0.4  # 0.4 s in: a new SSRC (a transfer, a new media server) with unrelated timestamps
    _feed(tap, clock, "right", tone(440, 1600), ssrc=2, ts0=999999)  # 0.4 .. 0.6 s
    clock.t += 0.2
    first = tap.take()  # up to 0.3 s (0.6 s less the reorder delay)
    assert len(first) == int(0.3 * RATE)
    tap.pause()  # 0.6 s
    _feed(tap, clock, "right", tone(440, 8000), ssrc=2, ts0=999999 + 1600)  # 0.6 .. 1.6 s, paused
    clock.t += 1.0
    tap.resume()  # 1.6 s
    _feed(tap, clock, "right", tone(440, 4000), ssrc=2, ts0=999999 + 9600)  # 1.6 .. 2.1 s
    clock.t += 0.8
    out = np.concatenate([first, tap.take(final=True)])
    assert len(out) == int(2.4 * RATE)
    right = out[:, RIGHT]

    def loud(a: float, b: float) -> bool:
        return bool(np.abs(right[int(a * RATE):int(b * RATE)]).max() > 1000)

    def quiet(a: float, b: float) -> bool:
        return bool((right[int(a * RATE):int(b * RATE)] == 0).all())

    assert loud(0.0, 0.2) and quiet(0.2, 0.4) and loud(0.4, 0.6)
    assert quiet(0.6, 1.6)  # the pause: silence of its length
    assert loud(1.6, 2.1) and quiet(2.1, 2.4)
    assert tap.reanchors == 0  # an SSRC change anchors anew without counting as a jump
    assert (out[:, LEFT] == 0).all()


def test_wav_header_rewritten_on_flush_and_repaired(tmp_path: Path) -> None:
    p = tmp_path / "a.wav"
    w = WavWriter(p, 16000)
    w.write(np.ones((1600, 2), dtype=np.int16))
    w.flush()
    with wave.open(str(p)) as r:  # readable mid-recording, as after a SIGKILL
        assert (r.getnchannels(), r.getframerate(), r.getnframes()) == (2, 16000, 1600)
    w.write(np.ones((800, 2), dtype=np.int16))
    w._f.flush()  # type: ignore[union-attr]  # the data reached the OS, the header did not
    with wave.open(str(p)) as r:
        assert r.getnframes() == 1600
    with open(p, "ab") as f:
        f.write(b"\x01\x02\x03")  # a partial sample frame
    assert repair_wav(p) is True
    with wave.open(str(p)) as r:
        assert r.getnframes() == 2400
    assert repair_wav(p) is False
    w.close()
    with pytest.raises(FileExistsError):
        WavWriter(p, 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(ValueError):
        repair_wav(bad)
    trunc = tmp_path / "t.wav"
    trunc.write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVE")
    with pytest.raises(ValueError):
        repair_wav(trunc)


def test_wav_write_failure_raises_oserror(tmp_path: Path) -> None:
    w = WavWriter(tmp_path / "x.wav", 8000)
    os.close(w._f.fileno())  # type: ignore[union-attr]  # the descriptor goes bad under it
    with pytest.raises(OSError):
        w.write(np.ones((8000, 2), dtype=np.int16))
        w.flush()
    with pytest.raises(OSError):
        w.close()
    w.close()  # closed once, whatever happened


def test_ogg_opus_stereo_is_readable(tmp_path: Path, require_program: Callable[..., str]) -> None:
    require_program("ffprobe")
    p = tmp_path / "a.ogg"
    w = OggOpusWriter(p, 16000)
    x = np.stack([tone(660, 32000, 16000), tone(440, 32000, 16000)], axis=1)
    for i in range(0, len(x), 1000):
        w.write(x[i:i + 1000])
    w.flush()
    w.close()
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,channels:format=duration",
                          "-of", "default=nw=1", str(p)], capture_output=True, text=True, check=True).stdout
    assert "codec_name=opus" in out and "channels=2" in out
    dur = float(out.split("duration=")[1].split()[0])
    assert abs(dur - 2.0) < 0.05
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(p), "-f", "s16le", "-ac", "2", "-ar", "16000", "-"],
                         capture_output=True, check=True).stdout
    s = np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2)
    assert abs(freq_of(s[4000:20000, 0], 16000) - 660) < 5
    assert abs(freq_of(s[4000:20000, 1], 16000) - 440) < 5


def test_frame_path_pcm_is_placed_without_decoding() -> None:
    """The frame path hands over PCM (sent: before encoding, counted by the tap; received: what
    the stream decoded, with its packet's RTP timestamp), mixed with a switch to the packet path."""
    clock = Clock()
    tap = make_tap(clock)
    left, right = tone(660, 4000), tone(440, 4000)
    t0 = clock.t
    for k in range(25):  # 0.5 s of 20 ms frames
        clock.t = t0 + 0.02 * k
        tap.sent_pcm(left[160 * k:160 * (k + 1)])
        tap.received_pcm(77, 5000 + 160 * k, right[160 * k:160 * (k + 1)])
    clock.t = t0 + 0.5
    _feed(tap, clock, "left", tone(660, 4000), ssrc=3, ts0=9)  # then the packet path, 0.5 .. 1.0 s
    clock.t = t0 + 1.0
    out = tap.take(final=True)
    assert len(out) == 8000
    assert abs(freq_of(out[:4000, LEFT]) - 660) < 5 and abs(freq_of(out[4000:, LEFT]) - 660) < 5
    assert np.abs(out[:4000, LEFT]).min() < np.abs(out[:4000, LEFT]).max()  # audio, not a constant
    assert abs(freq_of(out[:4000, RIGHT]) - 440) < 5 and (out[4000:, RIGHT] == 0).all()
    assert tap.decode_errors == 0 and tap.reanchors == 0


def test_g722_is_recorded_at_16_khz_on_its_8_khz_rtp_clock() -> None:
    """G.722: 16 kHz audio, RTP timestamps at 8000/s (RFC 3551); the file is at 16 kHz."""
    info = get_codec("G722", 8000, 1, None)
    assert (info.sample_rate, info.rtp_clock_rate) == (16000, 8000)
    clock = Clock()
    tap = RecordingTap(16000, lambda: info, clock=clock)
    enc = create_encoder(info, frame_ms=20)
    pcm = tone(1000, 16000, 16000)
    t0 = clock.t
    for k in range(50):
        clock.t = t0 + 0.02 * k
        for payload in enc.encode(pcm[320 * k:320 * (k + 1)]):
            tap.received(5, 1000 + 160 * k, payload)
    clock.t = t0 + 1.0
    out = tap.take(final=True)
    assert len(out) == 16000
    assert abs(freq_of(out[2000:14000, RIGHT], 16000) - 1000) < 5
    assert np.abs(out[2000:14000, RIGHT]).max() > 3000 and tap.reanchors == 0

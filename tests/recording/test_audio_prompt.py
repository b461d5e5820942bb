"""The announcement and the periodic beep reach both parties while a call is recorded
(webgate/media/recording/prompt.py): mixed into relayed G.711 payloads, and on a live call
(frame path) into what the SIP party gets (seen in the recording's left channel) and what the
web caller hears."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest_twisted

from tests.ops.helpers import local_call, sleep, start_gateway
from tests.recording.helpers import read_stereo
from webgate.media.analysis import write_wav
from webgate.media.codecs import get_codec
from webgate.media.codecs.g711 import ulaw_decode, ulaw_encode
from webgate.media.recording.prompt import BEEP_HZ, PromptPlayer, beep, load_prompt
from webgate.media.tones import ToneGenerator


def band(x: np.ndarray, rate: int, hz: float) -> float:
    """Share of the energy of ``x`` within 30 Hz of ``hz``."""
    spec = np.abs(np.fft.rfft(x.astype(float) * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[np.abs(f - hz) < 30].sum() / max(spec.sum(), 1e-9))


def test_prompt_mixes_into_g711_payloads_then_passes_them_untouched() -> None:
    p = PromptPlayer(get_codec("PCMU", 8000, 1, None))
    voice = ToneGenerator(660, 8000, 0.2)
    p.play(beep(8000))  # 200 ms
    out = [p.out_payload(ulaw_encode(voice.frame())) for _ in range(10)]
    into = [p.in_payload(ulaw_encode(voice.frame())) for _ in range(10)]
    assert not p.active
    for seq in (out, into):
        pcm = np.concatenate([ulaw_decode(x) for x in seq])
        assert band(pcm, 8000, BEEP_HZ) > 0.2 and band(pcm, 8000, 660) > 0.2
    frame = ulaw_encode(voice.frame())
    assert p.out_payload(frame) is frame and p.in_payload(frame) is frame
    # PCM (the frame path) likewise, in each direction once
    p.play(beep(8000, 0.04))
    a = p.out_pcm(np.zeros(320, dtype=np.int16))
    b = p.in_pcm(np.zeros(320, dtype=np.int16))
    assert np.array_equal(a, b) and np.abs(a).max() > 1000 and not p.active


def test_load_prompt_resamples(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    write_wav(wav, np.asarray(ToneGenerator(1000, 16000, 0.3).generate(16000), dtype=np.int16), 16000)
    pcm = load_prompt(str(wav), 8000)
    assert abs(len(pcm) - 8000) < 400 and band(pcm, 8000, 1000) > 0.8
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....")
    try:
        load_prompt(str(bad), 8000)
    except (OSError, ValueError):
        pass
    else:
        raise AssertionError("an unreadable WAV must raise")


@pytest_twisted.ensureDeferred
async def test_announcement_and_beeps_reach_both_parties(tmp_path: Path) -> None:
    ann = tmp_path / "announce.wav"
    write_wav(ann, np.asarray(ToneGenerator(2000, 16000, 0.3).generate(8000), dtype=np.int16), 16000)  # 0.5 s
    gw = start_gateway({"builtin": {"tone_hz": 440}, "recording": {
        "dir": str(tmp_path / "rec"), "min_free_mb": 0, "flush_s": 0.2, "record_beep_s": 1, "record_announcement": str(ann)}})
    try:
        call, leg = await local_call(gw, "tone", tone_hz=660)
        n = len(leg.received)
        rec = gw.svc.recordings.start(call)
        await sleep(2.6)
        rec.stop()
        heard = np.concatenate(leg.received[n:])
        call.hangup()
    finally:
        await gw.stop()
    stereo, rate = read_stereo(rec.audio_path)
    left = stereo[:, 0]
    # the SIP party got the announcement first, then a beep about every second, over the caller's 660 Hz
    assert band(left[:int(0.45 * rate)], rate, 2000) > 0.2
    assert band(left[int(0.6 * rate):int(0.9 * rate)], rate, 2000) < 0.01
    beeps = [band(left[int(t * rate):int((t + 0.1) * rate)], rate, BEEP_HZ) for t in np.arange(0.5, 2.5, 0.1)]
    assert sum(b > 0.2 for b in beeps) >= 2 and sum(b < 0.01 for b in beeps) >= 10, beeps
    # the web caller heard them too, over the far end's 440 Hz
    assert band(heard[:int(0.5 * rate)], rate, 2000) > 0.1
    assert band(heard, rate, BEEP_HZ) > 0.01 and band(heard, rate, 440) > 0.3

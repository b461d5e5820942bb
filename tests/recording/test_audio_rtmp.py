"""An RTMP ffmpeg caller (Nellymoser, 800 Hz) -> webgate -> baresip (440 Hz) through a recording
route: the stereo WAV's left channel is the caller's 800 Hz, its right baresip's 440 Hz, its
length the call's (within 100 ms), and ffprobe reads it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.rtmp_helpers import Gateway, ffmpeg
from tests.calls.gw import sleep, wait_for
from tests.interop import peers
from tests.interop.conftest import require_program, tone_baresip
from tests.recording.helpers import freq_of, read_stereo, rms
from webgate.calls.call import CallState


@pytest_twisted.ensureDeferred
async def test_rtmp_nellymoser_caller_is_recorded_in_stereo(tmp_path: Path) -> None:
    require_program("ffmpeg", "ffmpeg")
    (tmp_path / "bob").mkdir()
    with tone_baresip(tmp_path / "bob", 440.0) as bob:
        route = peers.phone_route(bob, codecs=["PCMU"])
        route["route"][0]["record"] = "audio"
        gw = Gateway({**route, "recording": {"dir": str(tmp_path / "rec"), "min_free_mb": 0, "flush_s": 0.25}})
        try:
            pub = ffmpeg("-re", "-f", "lavfi", "-i", "sine=frequency=800:sample_rate=44100:duration=4",
                         "-c:a", "nellymoser", "-ar", "8000", "-f", "flv", gw.url("call/bob"), timeout=30)
            assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), bob.log_tail(1500)
            call = next(iter(gw.svc.registry))
            await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 10)
            code, _o, err = await pub.wait()
            assert code == 0, err.decode(errors="replace")
            assert await wait_for(lambda: call.state is CallState.ENDED, 8)
            await sleep(0.1)
        finally:
            await gw.stop()
    assert call.recording is not None and call.leg.audio_in.codec == "nellymoser"
    side = json.loads(Path(call.recording).read_text())
    assert side["state"] == "stopped" and side["channels"]["left"]["ingress"] == "rtmp", side
    wav = side["files"]["audio"]
    stereo, rate = read_stereo(wav)
    assert rate == 8000
    # recording started with the early media/answer and ended at the hangup: the call's length
    call_s = call.times.ended - (call.times.answered or call.times.created)
    assert abs(len(stereo) / rate - call_s) < 0.1, (len(stereo) / rate, call_s)
    mid = stereo[int(1.0 * rate):int(3.0 * rate)]
    assert abs(freq_of(mid[:, 0], rate) - 800) < 15 and rms(mid[:, 0]) > 1000
    assert abs(freq_of(mid[:, 1], rate) - 440) < 15 and rms(mid[:, 1]) > 1000
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,channels,sample_rate",  # noqa: ASYNC221 - a short ffprobe after the call
                            "-of", "default=nw=1", wav], capture_output=True, text=True, check=True).stdout
    assert "codec_name=pcm_s16le" in probe and "channels=2" in probe and "sample_rate=8000" in probe

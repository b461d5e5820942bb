"""Recording from early media: SIPp answers 183 Session Progress with SDP and plays a 1 kHz tone
for 1.5 s, then 200 OK (2 s after the 183) and nothing more. The route records audio: the
recording starts at the 183 (docs/recording.md "Which calls": "early media and an IVR before the
answer are in the file"), so the file's right channel opens with the tone, then silence after it
stopped; the sidecar's start is before the answer; the file's length is the call's from the 183,
not from the answer; and the left channel holds the caller's 660 Hz."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest_twisted

from tests.calls.gw import make_config, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.interop.conftest import sipp_factory  # noqa: F401 - the fixture
from tests.interop.test_sipp_uac import until_exit
from tests.recording.helpers import freq_of, read_stereo, rms
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg

EARLY_HZ, CALLER_HZ = 1000.0, 660.0


@pytest_twisted.ensureDeferred
async def test_recording_starts_at_early_media(
        sipp_factory: Callable[..., peers.Sipp],  # noqa: F811 - the imported fixture
        tmp_path: Path) -> None:
    wav = peers.make_ulaw_wav(tmp_path / "tone.wav", EARLY_HZ, seconds=1.5)
    scen = peers.render_scenario("uas_183_early.xml", tmp_path, TONE_WAV=wav, EARLY_MS=2000)
    sipp = sipp_factory(scen)
    svc = start_telephony(make_config({
        "trunk": [{"name": "sipp", "target": f"sip:{sipp.address}"}],
        "route": [{"pattern": r"\d{3,15}", "trunk": "sipp", "public": True, "record": "audio"}],
        "recording": {"dir": str(tmp_path / "rec"), "min_free_mb": 0, "flush_s": 0.25},
    }))
    try:
        leg = LocalLeg(tone_hz=CALLER_HZ)
        call = svc.manager.place_call(leg, "2004")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.EARLY_MEDIA, 5), sipp.describe()
        early_at = time.time()
        # recording from the 183 on, before any answer
        assert await wait_for(lambda: call.recording is not None, 1)
        assert call.state is CallState.EARLY_MEDIA and call.times.answered is None
        side = json.loads(Path(call.recording).read_text())
        assert side["state"] == "recording"
        early_stream = call.stream
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()
        await sleep(1.5)
        assert early_stream is call.stream and call.stream.recorder is not None
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        assert await wait_for(lambda: call.ended, 5)
    finally:
        await svc.stopService()
    side = json.loads(Path(call.recording).read_text())
    assert side["state"] == "stopped", side
    start = datetime.fromisoformat(side["start"]).timestamp()
    answered = call.times.answered
    assert answered is not None and start < answered - 1.5 and abs(start - early_at) < 0.5, (start, early_at, answered)
    stereo, rate = read_stereo(side["files"]["audio"])
    assert rate == 8000
    # the file runs from the 183 to the hangup: ~2 s of early media + ~1.5 s answered
    length = len(stereo) / rate
    assert abs(length - (call.times.ended - start)) < 0.15 and length > 3.2, (length, call.times.ended - start)
    right, left = stereo[:, 1], stereo[:, 0]
    tone = right[int(0.2 * rate):int(1.3 * rate)]
    assert abs(freq_of(tone, rate) - EARLY_HZ) < 15 and rms(tone) > 2000, (freq_of(tone, rate), rms(tone))
    assert rms(right[int(1.8 * rate):]) < 100  # SIPp sends nothing after its WAV
    assert abs(freq_of(left[int(2.3 * rate):int(3.3 * rate)], rate) - CALLER_HZ) < 15

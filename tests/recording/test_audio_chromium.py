"""Chromium (660 Hz fake microphone) <-> webgate <-> baresip (440 Hz) through a recording route.

The stereo WAV's left channel measures 660 Hz and its right 440 Hz, its length is the call's
within 100 ms, ffprobe reads it; a hold in the middle (re-INVITE sendonly: both sides go quiet)
leaves silence of the hold's length and the timeline goes on. Packet path (PCMU relayed) and
frame path (Opus from the browser, transcoded) alike."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.adapters.webrtc_client import Gateway
from tests.calls.gw import sleep, wait_for
from tests.interop import peers
from tests.interop.conftest import tone_baresip
from tests.interop.test_chromium_calls import BROWSER_HZ, PHONE_HZ, Page, chromium  # noqa: F401 - fixture
from tests.recording.helpers import freq_of, longest_silence, read_stereo, rms


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("codecs", "path"), [(["PCMU", "opus"], "packet"), (["opus"], "frame")])
@pytest_twisted.ensureDeferred
async def test_chromium_to_baresip_recorded_in_stereo_with_hold(
    chromium: Any,  # noqa: F811 - the imported fixture
    tmp_path: Path, codecs: list[str], path: str,
) -> None:
    (tmp_path / "bob").mkdir()
    with tone_baresip(tmp_path / "bob", PHONE_HZ) as bob:
        route = peers.phone_route(bob, codecs=["PCMU"])
        route["route"][0]["record"] = "audio"
        gw = Gateway({**route, "recording": {"dir": str(tmp_path / "rec"), "min_free_mb": 0, "flush_s": 0.25}})
        page = Page(chromium, gw)
        try:
            await page.open()
            await page.call("bob", audioCodecs=codecs)
            assert (await page.wait("answered", 10))["ok"], bob.log_tail(2000)
            (call,) = list(gw.svc.registry)
            assert call.media_path == path and call.recording is not None
            await sleep(2.0)
            held: defer.Deferred[bool] = defer.Deferred()
            gw.manager.hold(call, True, lambda ok, status: held.callback(ok))
            assert await held
            hold_start = time.monotonic()
            await sleep(1.5)
            resumed: defer.Deferred[bool] = defer.Deferred()
            gw.manager.hold(call, False, lambda ok, status: resumed.callback(ok))
            assert await resumed
            hold_s = time.monotonic() - hold_start
            await sleep(2.0)
            await page.hangup()
            assert await wait_for(lambda: call.ended, 5)
            await sleep(0.1)
        finally:
            await gw.stop()
    side = json.loads(Path(call.recording).read_text())
    assert side["state"] == "stopped" and side["channels"]["left"]["ingress"] == "webrtc", side
    wav = side["files"]["audio"]
    stereo, rate = read_stereo(wav)
    assert rate == 8000
    call_s = call.times.ended - call.times.answered
    assert abs(len(stereo) / rate - call_s) < 0.1, (len(stereo) / rate, call_s)
    before = stereo[int(0.8 * rate):int(2.0 * rate)]
    assert abs(freq_of(before[:, 0], rate) - BROWSER_HZ) < 15 and rms(before[:, 0]) > 500, "left: the browser"
    assert abs(freq_of(before[:, 1], rate) - PHONE_HZ) < 15 and rms(before[:, 1]) > 500, "right: baresip"
    # the hold: both quiet for (about) its length, then the tones again, on the same timeline
    start, length = longest_silence(stereo)
    # (the quiet starts at the re-INVITE and ends when both sides send again: a loaded machine
    # stretches those edges a little around the measured hold)
    assert abs(length / rate - hold_s) < 0.5 and 1.5 < start / rate < 3.0, (start / rate, length / rate, hold_s)
    after = stereo[start + length + int(0.3 * rate):start + length + int(1.5 * rate)]
    assert abs(freq_of(after[:, 0], rate) - BROWSER_HZ) < 15 and abs(freq_of(after[:, 1], rate) - PHONE_HZ) < 15
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,channels:format=duration",  # noqa: ASYNC221 - a short ffprobe after the call
                            "-of", "default=nw=1", wav], capture_output=True, text=True, check=True).stdout
    assert "codec_name=pcm_s16le" in probe and "channels=2" in probe
    assert abs(float(probe.split("duration=")[1].split()[0]) - call_s) < 0.1

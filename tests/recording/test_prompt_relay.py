"""The recording's beep on a relayed (packet path) call, real peers, both directions measured:
an aiortc caller (900 Hz) <-> webgate <-> baresip (440 Hz), the Opus payloads relayed untouched,
with ``record_beep_s = 1``; and a real Chromium (660 Hz fake microphone, its own Opus encoder)
to baresip, relayed, where baresip's decoded audio and the file's left channel are measured (the
page's own measurement gives only dominant frequencies). (G.722 is never relayed by a web leg
today, WebRTC relays G.711 and Opus only: its mixing is measured on bytes in
test_prompt_codecs.py.) While a beep plays the gateway decodes, mixes and
re-encodes the relayed payloads (webgate/media/recording/prompt.py): baresip's decoded audio and
the browser's both hold 1400 Hz bursts about every second over the other side's tone, and the
recording's left channel (what baresip got) holds them too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted

from tests.adapters.webrtc_client import (
    Browser,
    Gateway,
    close_all,
    complete_call,
    connect,
)
from tests.calls.gw import sleep, wait_for
from tests.interop import peers
from tests.interop.conftest import baresip_factory  # noqa: F401 - the fixture
from tests.interop.test_baresip import closed
from tests.interop.test_chromium_calls import BROWSER_HZ as CHROMIUM_HZ
from tests.interop.test_chromium_calls import Page, chromium  # noqa: F401 - the fixture
from tests.recording.helpers import read_stereo
from tests.recording.test_audio_prompt import band
from webgate.media.recording.prompt import BEEP_HZ

BROWSER_HZ, PHONE_HZ = 900.0, 440.0


def beeps(x: np.ndarray, rate: int) -> tuple[list[float], int]:
    """Where the beeps start (s: runs of 100 ms windows holding 1400 Hz), and the number of
    windows without any."""
    win = rate // 10
    shares = [band(x[i:i + win], rate, BEEP_HZ) for i in range(0, len(x) - win, win)]
    starts: list[float] = []
    for i, share in enumerate(shares):
        if share > 0.1 and (not starts or i / 10 - starts[-1] > 0.5):  # one beep: 0.2 s (a busy
            starts.append(i / 10)  # machine may bunch its packets around a window's edge)
    return starts, sum(s < 0.01 for s in shares)


def assert_beeps(x: np.ndarray, rate: int, who: str) -> None:
    """At least three beeps, about a second apart (± 0.3 s: the starts are found in 100 ms windows,
    and a loaded machine delays a packet burst by a window or two), and quiet (no 1400 Hz) in between."""
    starts, off = beeps(x, rate)
    print(f"[relayed] {who}: beeps at {starts} s, {off} windows without")
    gaps = np.diff(starts)
    assert len(starts) >= 3 and all(0.7 < g < 1.3 for g in gaps) and off >= 15, (who, starts, off)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("codec", "baresip_codec"), [("opus", "opus")])
@pytest_twisted.ensureDeferred
async def test_beep_heard_both_ways_on_a_relayed_call(
        baresip_factory: Callable[..., peers.Baresip],  # noqa: F811 - the imported fixture
        tmp_path: Path, codec: str, baresip_codec: str) -> None:
    bob = baresip_factory("bob", audio_codecs=baresip_codec)
    route = peers.phone_route(bob, codecs=[codec])
    route["route"][0]["record"] = "audio"
    gw = Gateway({**route, "recording": {"dir": str(tmp_path / "rec"), "min_free_mb": 0, "flush_s": 0.25,
                                         "record_beep_s": 1}})
    browser = Browser(tone_hz=BROWSER_HZ, codecs=[codec])
    ws = None
    try:
        ws = await connect(gw.url)
        assert (await complete_call(ws, browser, {"type": "call", "destination": "bob"}, timeout=10))["codec"].lower() == codec.lower()
        (call,) = list(gw.svc.registry)
        assert call.media_path == "packet" and call.leg.stats.transcoded is False
        assert call.recording is not None
        await browser.heard(seconds=4.5, timeout=15, tail_s=1)
        prompt = gw.svc.recordings.active[call.session_id].prompt
        assert prompt is not None
        recoded = prompt.recoded
        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        await closed(bob)
        assert await wait_for(lambda: call.ended, 5)
    finally:
        await close_all(gw, browser, ws)
    # every beep of 200 ms is about 10 relayed payloads of 20 ms each way
    assert recoded[0] >= 20 and recoded[1] >= 20, recoded
    heard, rate = browser.recording(), browser.rate or 48000
    heard = heard[int(0.5 * rate):]  # skip the jitter buffer's start
    assert_beeps(heard, rate, f"the browser ({codec}, recoded {recoded})")
    assert band(heard, rate, PHONE_HZ) > 0.3  # baresip's tone under it
    wav = bob.recorded_wav("dec")
    assert wav is not None, bob.log_tail(2000)
    got, got_rate = peers.read_wav(wav)
    assert_beeps(got[int(0.5 * got_rate):], got_rate, "baresip")
    assert band(got, got_rate, BROWSER_HZ) > 0.3
    side = json.loads(Path(call.recording).read_text())
    stereo, srate = read_stereo(side["files"]["audio"])
    assert_beeps(stereo[:, 0], srate, "the recording's left channel")
    assert band(stereo[:, 1], srate, BEEP_HZ) < 0.01  # the right channel is what baresip said


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_beep_from_a_real_chromium_opus_call_reaches_baresip(
        chromium: Any,  # noqa: F811 - the imported fixture
        baresip_factory: Callable[..., peers.Baresip],  # noqa: F811 - the imported fixture
        tmp_path: Path) -> None:
    bob = baresip_factory("bob", audio_codecs="opus")
    route = peers.phone_route(bob, codecs=["opus"])
    route["route"][0]["record"] = "audio"
    gw = Gateway({**route, "recording": {"dir": str(tmp_path / "rec"), "min_free_mb": 0, "flush_s": 0.25,
                                         "record_beep_s": 1}})
    page = Page(chromium, gw)
    try:
        await page.open()
        assert (await page.call("bob", audioCodecs=["opus"]))["codec"] == "opus"
        assert (await page.wait("answered", 10))["ok"], bob.log_tail(2000)
        (call,) = list(gw.svc.registry)
        assert call.media_path == "packet" and call.leg.stats.transcoded is False and call.recording
        await sleep(4.5)
        prompt = gw.svc.recordings.active[call.session_id].prompt
        assert prompt is not None
        recoded = prompt.recoded
        await page.hangup()
        await closed(bob, 8)
        assert await wait_for(lambda: call.ended, 5)
    finally:
        await gw.stop()
    assert recoded[0] >= 20 and recoded[1] >= 20, recoded
    wav = bob.recorded_wav("dec")
    assert wav is not None, bob.log_tail(2000)
    got, got_rate = peers.read_wav(wav)
    assert_beeps(got[int(0.5 * got_rate):], got_rate, f"baresip, from Chromium (recoded {recoded})")
    # the 660 Hz share of the whole recording: beeps (a fifth of the time) and the call's start take
    # their part; a narrow band holds far less than this without the tone (0.29 seen under load)
    assert band(got, got_rate, CHROMIUM_HZ) > 0.2
    side = json.loads(Path(call.recording).read_text())
    stereo, srate = read_stereo(side["files"]["audio"])
    assert_beeps(stereo[:, 0], srate, "the recording's left channel (Chromium)")

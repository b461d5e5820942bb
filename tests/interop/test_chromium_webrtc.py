"""Headless Chromium (Debian package, driven by Selenium + chromedriver) calls through the gateway.

The page is the gateway's own demo page (``/``); the test script imports the served
``/html5_client/webgate.js`` and uses only its public API. The fake microphone plays a tone
WAV; the page measures the dominant frequency of ``call.remoteStream`` with a WebAudio
AnalyserNode, and the assertions run here in pytest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.webrtc_client import Gateway
from tests.calls.gw import wait_for
from webgate.media.analysis import write_wav
from webgate.media.tones import ToneGenerator

TONE_HZ = 660.0

# Runs in the page (Selenium execute_async_script): the last argument is the callback.
CALL_SCRIPT = r"""
const [wsUrl, destination, dtmf] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const out = { events: [], dtmf: [], freqs: [] };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  try {
    const { WebGate } = await import('/html5_client/webgate.js');
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const gw = new WebGate({ url: wsUrl });
    const call = await gw.call(destination, { stream });
    out.sessionId = call.sessionId; out.codec = call.codec; out.stateAtResolve = call.state;
    for (const t of ['ringing', 'answered', 'dtmf', 'ended', 'error'])
      call.addEventListener(t, (e) => { out.events.push(t); if (t === 'dtmf') out.dtmf.push(e.detail.digit);
                                         if (t === 'ended') out.ended = e.detail; if (t === 'error') out.error = e.detail; });
    for (let i = 0; i < 100 && call.state !== 'answered'; i++) await sleep(100);
    out.answered = call.state === 'answered';
    const el = new Audio(); el.srcObject = call.remoteStream; el.muted = true; el.play().catch(() => {});
    const ac = new AudioContext(); await ac.resume();
    const an = ac.createAnalyser(); an.fftSize = 8192;
    for (let i = 0; i < 50 && call.remoteStream.getAudioTracks().length === 0; i++) await sleep(100);
    ac.createMediaStreamSource(call.remoteStream).connect(an);
    await sleep(2500);
    const buf = new Float32Array(an.frequencyBinCount);
    for (let m = 0; m < 3; m++) {
      an.getFloatFrequencyData(buf);
      let k = 2; for (let i = 3; i < buf.length; i++) if (buf[i] > buf[k]) k = i;
      out.freqs.push({ hz: k * ac.sampleRate / an.fftSize, db: buf[k] });
      await sleep(300);
    }
    if (dtmf) {
      call.sendDTMF(dtmf);
      for (let i = 0; i < 100 && out.dtmf.length < dtmf.length; i++) await sleep(100);
    }
    const stats = await call.pc.getStats(); const codecs = {};
    stats.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
    stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') { out.packetsReceived = s.packetsReceived; out.inboundCodec = codecs[s.codecId]; } });
    call.hangup();
    out.finalState = call.state;
    ac.close();
  } catch (e) {
    out.exception = (e.code ? e.code + ': ' : '') + e.name + ': ' + e.message;
  }
  done(out);
})();
"""

REFUSED_SCRIPT = r"""
const [wsUrl, destination] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const { WebGate } = await import('/html5_client/webgate.js');
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  try { await new WebGate({ url: wsUrl }).call(destination, { stream }); done({ resolved: true }); }
  catch (e) { done({ name: e.name, code: e.code, message: e.message }); }
})();
"""


def _chromium_args(profile: str, wav: str) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
    ]


def _run_browser(http: str, ws_url: str, wav: str, steps: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Blocking: start Chromium via chromedriver, run ``steps(driver)``, always quit. Runs in a thread."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="webgate-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/lib/chromium/chromium" if os.path.exists("/usr/lib/chromium/chromium") else shutil.which("chromium") or ""
    for a in _chromium_args(profile, wav):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    try:
        drv.set_script_timeout(60)
        drv.get(http + "/")
        result = steps(drv)
        try:
            result["console"] = [e["message"] for e in drv.get_log("browser")][-20:]
        except Exception as e:  # noqa: BLE001 - console logs are a debugging aid only
            result["console"] = [f"unavailable: {e!r}"]
        return result
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def tone_wav(tmp_path: Path) -> str:
    pcm = ToneGenerator(TONE_HZ, 48000, 0.5).generate(48000 * 5)
    path = tmp_path / "tone660_48k.wav"
    write_wav(path, np.asarray(pcm, dtype=np.int16), 48000)
    return str(path)


@pytest.fixture
def browser_ready(require_program: Callable[[str], str]) -> None:
    require_program("chromium")
    require_program("chromedriver")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("media_io", ["native", "loop", "twisted"])  # each relay implementation ([rtp] media_io)
@pytest_twisted.ensureDeferred
async def test_chromium_calls_echo_hears_its_tone_and_dtmf(browser_ready: None, tone_wav: str, media_io: str) -> None:
    gw = Gateway({"rtp": {"media_io": media_io}})
    reader = gw.svc.rtp_pool.reader
    assert (reader is not None) == (media_io != "twisted")
    assert (reader is not None and hasattr(reader, "set_rule")) == (media_io == "native")
    read_before = reader.datagrams if reader is not None else 0
    relayed_before = getattr(reader, "relayed", 0)
    try:

        def steps(drv: Any) -> dict[str, Any]:
            page = drv.execute_script(
                "return {title: document.title, dest: document.getElementById('dest').value,"
                " pad: document.querySelectorAll('#pad button').length,"
                " meters: !!document.getElementById('mic-meter') && !!document.getElementById('far-meter')}"
            )
            out: dict[str, Any] = drv.execute_async_script(CALL_SCRIPT, gw.url, "echo", "1234#")
            out["page"] = page
            return out

        result: dict[str, Any] = await deferToThread(_run_browser, gw.http, gw.url, tone_wav, steps)
        print("\nchromium result:", {k: v for k, v in result.items() if k != "console"})
        assert "exception" not in result, result
        # the demo page itself
        assert result["page"]["title"] == "webgate demo" and result["page"]["dest"] == "echo"
        assert result["page"]["pad"] == 16 and result["page"]["meters"]
        # session ID before the answer
        assert result["sessionId"].isdigit() and 8 <= len(result["sessionId"]) <= 10
        assert result["stateAtResolve"] == "trying"
        assert result["answered"], result
        # a Chromium offer (opus first) toward a G.711 trunk: answered in PCMU, no Opus anywhere
        assert result["codec"] == "PCMU" and result["inboundCodec"] == "audio/PCMU"
        assert result["packetsReceived"] > 50
        freqs = [f["hz"] for f in result["freqs"]]
        measured = sorted(freqs)[1]
        assert abs(measured - TONE_HZ) < 15, freqs
        assert result["dtmf"] == list("1234#"), result
        assert result["finalState"] == "ended"
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.manager.builtin_calls, 5)
        assert await wait_for(lambda: not gw.svc.rtp_pool.in_use, 5)
        if reader is not None:  # the call's media came through the one loop reader (both legs: > 2 × 50)
            assert reader.datagrams - read_before > 100
        if media_io == "native":  # relayed in C, both ways (the DTMF digits and RTCP went through Python)
            assert reader.relayed - relayed_before > 100
    finally:
        await gw.stop()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_chromium_refused_call_rejects_with_code(browser_ready: None, tone_wav: str) -> None:
    gw = Gateway()
    try:

        def steps(drv: Any) -> dict[str, Any]:
            return {
                "not_allowed": drv.execute_async_script(REFUSED_SCRIPT, gw.url, "+4930123456"),
                "crlf": drv.execute_async_script(REFUSED_SCRIPT, gw.url, "echo\r\nX-Evil: 1"),
            }

        result = await deferToThread(_run_browser, gw.http, gw.url, tone_wav, steps)
        assert result["not_allowed"]["name"] == "WebGateError"
        assert result["not_allowed"]["code"] == "destination_not_allowed"
        assert result["crlf"]["code"] == "invalid_destination"
        assert len(gw.svc.registry) == 0
    finally:
        await gw.stop()

"""Headless Chromium calls real phones through the gateway (issue 3, browser tests 2-6).

One Chromium (Debian package, Selenium + chromedriver, fake microphone = a 660 Hz WAV) is
shared by the whole module; each test starts its own in-process gateway, navigates the
browser to its demo page and drives ``/html5_client/webgate.js`` through its public API with
a small page-side harness (``window.H``). The far ends are real: SIPp UAS scenarios and a
baresip phone (auto-answer, 440 Hz WAV as its microphone, recording what it hears).

- baresip through the dial plan: audio both ways (the page measures baresip's 440 Hz,
  baresip's recording has the browser's 660 Hz), DTMF both ways with the trunk in RFC 4733
  and in INFO mode (browser digits both signalled and from ``RTCDTMFSender``), and the media
  path: a PCMU-first offer is relayed untranscoded (packet path), an Opus-only offer is
  transcoded (frame path) toward a G.711-only trunk and relayed untouched (packet path)
  toward a trunk offering Opus to an Opus phone;
- SIPp: the session ID in the INVITE (header / caller ID / both) and known to the page before
  the phone rings; hang-up while ringing (CANCEL) and after answer (BYE); BYE from the phone;
  WebSocket drop; the browser's peer connection going away; unanswered; busy;
- the configured ICE servers reach the browser (and both ICE agents use them: a loopback
  STUN responder counts their binding requests).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import deferToThread

from tests.adapters.webrtc_client import Gateway
from tests.calls.gw import process_exit, reactor, wait_for
from tests.interop import peers
from tests.interop.test_baresip import (
    assert_wav_tone,
    closed,
    dtmf_at_bob,
    info_digits,
    rtp_events,
)
from tests.interop.test_chromium_webrtc import _chromium_args
from tests.require import require_program
from webgate.media.analysis import write_wav
from webgate.media.tones import ToneGenerator

BROWSER_HZ = 660.0  # the fake microphone
PHONE_HZ = 440.0  # baresip's microphone (peers.Baresip default)

# ---------------------------------------------------------------------------------- page harness
# Each script runs with Selenium's execute_async_script: the last argument is the callback.
# window.H keeps the call and everything that happened to it between scripts.

SNAPSHOT = r"""
window.snap = () => ({ events: H.events, dtmf: H.dtmf, ended: H.ended, errors: H.errors,
  state: H.call ? H.call.state : null, exception: H.exception || null });
"""

START = SNAPSHOT + r"""
const [wsUrl, destination, o] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const H = window.H = { events: [], dtmf: [], ended: null, errors: [], t0: performance.now() };
  try {
    const { WebGate } = await import('/html5_client/webgate.js');
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const gw = new WebGate({ url: wsUrl });
    const opts = { stream };
    if (o.audioCodecs) opts.audioCodecs = o.audioCodecs;
    const call = H.call = await gw.call(destination, opts);
    H.events.push({ type: 'resolved', state: call.state, ms: performance.now() - H.t0 });
    for (const t of ['ringing', 'answered', 'dtmf', 'ended', 'error'])
      call.addEventListener(t, (e) => {
        H.events.push({ type: t, ms: performance.now() - H.t0 });
        if (t === 'dtmf') H.dtmf.push(e.detail);
        if (t === 'ended') H.ended = e.detail;
        if (t === 'error') H.errors.push(e.detail);
      });
    done({ sessionId: call.sessionId, codec: call.codec, state: call.state,
           iceServers: call.iceServers, welcome: call._welcome });
  } catch (e) {
    H.exception = (e.code ? e.code + ': ' : '') + e.name + ': ' + e.message;
    done({ exception: H.exception, code: e.code || null });
  }
})();
"""

# wait until the call reaches a state ('ringing', 'answered', 'ended') or has N dtmf events
WAIT = SNAPSHOT + r"""
const [what, timeoutMs] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const t0 = performance.now();
  const ok = () => {
    if (what.startsWith('dtmf:')) return H.dtmf.length >= Number(what.slice(5));
    if (what === 'connected') return H.call.pc.connectionState === 'connected';
    if (what === 'ringing') return H.events.some((e) => e.type === 'ringing') || H.call.state === 'answered';
    return H.call.state === what;
  };
  while (!ok() && !(what !== 'ended' && H.call.state === 'ended') && performance.now() - t0 < timeoutMs)
    await new Promise((r) => setTimeout(r, 50));
  done(Object.assign(snap(), { ok: ok() }));
})();
"""

# dominant frequency of call.remoteStream (WebAudio AnalyserNode), plus inbound RTP stats
MEASURE = r"""
const done = arguments[arguments.length - 1];
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const call = H.call; const out = { freqs: [] };
  if (!H.an) {
    const el = new Audio(); el.srcObject = call.remoteStream; el.muted = true; el.play().catch(() => {});
    const ac = H.ac = new AudioContext(); await ac.resume();
    const an = H.an = ac.createAnalyser(); an.fftSize = 8192;
    for (let i = 0; i < 50 && call.remoteStream.getAudioTracks().length === 0; i++) await sleep(100);
    ac.createMediaStreamSource(call.remoteStream).connect(an);
    await sleep(2000);
  }
  const buf = new Float32Array(H.an.frequencyBinCount);
  for (let m = 0; m < 3; m++) {
    H.an.getFloatFrequencyData(buf);
    let k = 2; for (let i = 3; i < buf.length; i++) if (buf[i] > buf[k]) k = i;
    out.freqs.push({ hz: k * H.ac.sampleRate / H.an.fftSize, db: buf[k] });
    await sleep(300);
  }
  const stats = await call.pc.getStats(); const codecs = {};
  stats.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') { out.packetsReceived = s.packetsReceived; out.inboundCodec = codecs[s.codecId]; }
    if (s.type === 'outbound-rtp' && s.kind === 'audio') { out.packetsSent = s.packetsSent; out.outboundCodec = codecs[s.codecId]; }
  });
  done(out);
})();
"""

DTMF = r"""
const [digits, inband] = arguments;
const done = arguments[arguments.length - 1];
try { const can = H.call.canInsertDTMF; H.call.sendDTMF(digits, 160, { inband }); done({ canInsertDTMF: can }); }
catch (e) { done({ exception: e.name + ': ' + e.message }); }
"""

ACTION = SNAPSHOT + r"""
const [what] = arguments;
const done = arguments[arguments.length - 1];
if (what === 'hangup') H.call.hangup();
else if (what === 'close_ws') H.call.ws.close();        // the WebSocket drops, nothing else is said
else if (what === 'close_pc') H.call.pc.close();        // media goes away, the WebSocket stays open
done(snap());
"""


class Page:
    """The shared Chromium, pointed at one gateway; every call blocks in a thread."""

    def __init__(self, drv: Any, gw: Gateway) -> None:
        self.drv = drv
        self.gw = gw

    async def _run(self, script: str, *args: Any) -> Any:
        return await deferToThread(self.drv.execute_async_script, script, *args)

    async def open(self) -> None:
        await deferToThread(self.drv.get, self.gw.http + "/")

    async def start(self, destination: str, **opts: Any) -> dict[str, Any]:
        return await self._run(START, self.gw.url, destination, opts)  # type: ignore[no-any-return]

    async def wait(self, what: str, timeout_s: float = 10.0) -> dict[str, Any]:
        return await self._run(WAIT, what, int(timeout_s * 1000))  # type: ignore[no-any-return]

    async def measure(self) -> dict[str, Any]:
        return await self._run(MEASURE)  # type: ignore[no-any-return]

    async def dtmf(self, digits: str, inband: bool = False) -> dict[str, Any]:
        return await self._run(DTMF, digits, inband)  # type: ignore[no-any-return]

    async def action(self, what: str) -> dict[str, Any]:
        return await self._run(ACTION, what)  # type: ignore[no-any-return]

    async def call(self, destination: str, **opts: Any) -> dict[str, Any]:
        """``start`` that fails (with the page's console) when the page threw."""
        start = await self.start(destination, **opts)
        assert "exception" not in start, (start, self.console())
        return start

    async def call_answered(self, destination: str, peer: Any) -> None:
        """``open``, ``call`` and wait for the answer; fails with ``peer.describe()`` if none came."""
        await self.open()
        await self.call(destination)
        assert (await self.wait("answered", 10))["ok"], peer.describe()

    async def hangup(self) -> dict[str, Any]:
        """The page hangs up: the snapshot, whose ``ended`` cause must be ``client_hangup``."""
        snap = await self.action("hangup")
        assert snap["ended"]["cause"] == "client_hangup", snap
        return snap

    def console(self) -> list[str]:
        try:
            return [e["message"] for e in self.drv.get_log("browser")][-20:]
        except Exception as e:  # noqa: BLE001 - a debugging aid only
            return [f"unavailable: {e!r}"]


def measured_hz(m: dict[str, Any]) -> float:
    return float(sorted(f["hz"] for f in m["freqs"])[1])  # the median of three


# -------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module (startup is the slow part)."""
    require_program("chromium", "chromium")
    require_program("chromedriver", "chromium-driver")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    d = tmp_path_factory.mktemp("chromium")
    wav = d / "tone660_48k.wav"
    write_wav(wav, np.asarray(ToneGenerator(BROWSER_HZ, 48000, 0.5).generate(48000 * 5), dtype=np.int16), 48000)
    profile = tempfile.mkdtemp(prefix="webgate-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/lib/chromium/chromium" if os.path.exists("/usr/lib/chromium/chromium") else shutil.which("chromium") or ""
    for a in _chromium_args(profile, str(wav)):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    drv.set_script_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sipp_gateway(sipp: peers.Sipp, **extra: Any) -> Gateway:
    """A gateway whose destination ``1000`` (a public route) goes to ``sipp``."""
    cfg: dict[str, Any] = {
        "trunk": [{"name": "sipp", "target": f"sip:127.0.0.1:{sipp.port}", "codecs": ["PCMU"]}],
        "route": [{"pattern": "1000", "trunk": "sipp", "public": True}],
        "webrtc": {"ice_timeout_s": 3},
    }
    cfg.update(extra)
    return Gateway(cfg)


async def released(gw: Gateway) -> bool:
    return await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.svc.rtp_pool.in_use, 5)


# ------------------------------------------------------------------------------------ baresip

@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "dtmf_mode, audio_codecs, browser_codec, media_path",
    [
        ("rfc4733", ["PCMU", "opus"], "PCMU", "packet"),  # a PCMU-first offer: relayed untranscoded
        ("info", ["opus"], "opus", "frame"),  # an Opus-only offer: Opus <-> G.711 transcoded
    ],
)
@pytest_twisted.ensureDeferred
async def test_browser_calls_baresip_audio_and_dtmf_both_ways(
    chromium: Any,
    baresip_factory: Callable[..., peers.Baresip],
    dtmf_mode: str,
    audio_codecs: list[str],
    browser_codec: str,
    media_path: str,
) -> None:
    bob = baresip_factory("bob", audio_codecs="pcmu")
    gw = Gateway(peers.phone_route(bob, codecs=["PCMU"], dtmf=dtmf_mode))
    page = Page(chromium, gw)
    try:
        await page.open()
        start = await page.call("bob", audioCodecs=audio_codecs)
        assert start["codec"] == browser_codec
        snap = await page.wait("answered", 10)
        assert snap["ok"], (snap, bob.log_tail(2000))
        (call,) = list(gw.svc.registry)
        assert call.codec == "PCMU" and call.media_path == media_path
        assert gw.manager.counters[f"{media_path}_path"] == 1
        leg = call.leg
        assert leg.stats.transcoded is (media_path == "frame")

        # the browser hears baresip's own tone
        m = await page.measure()
        print(f"\n[{dtmf_mode}/{browser_codec}] page measured {[round(f['hz'], 1) for f in m['freqs']]} Hz, "
              f"in {m.get('inboundCodec')} out {m.get('outboundCodec')}, path {call.media_path}")
        assert abs(measured_hz(m) - PHONE_HZ) < 15, m
        assert m["inboundCodec"] == f"audio/{browser_codec}" and m["outboundCodec"] == f"audio/{browser_codec}"
        assert m["packetsReceived"] > 50
        if media_path == "packet":
            assert leg.stats.packets_relayed > 50 and leg.out_track is not None and leg.out_track.payloads_sent > 50
        else:
            assert leg.stats.packets_relayed == 0 and leg.stats.frames_from_browser > 50

        # browser -> phone: "12" signalled, "34" from the browser's RTCDTMFSender (RFC 4733 in RTP)
        r = await page.dtmf("12")
        assert "exception" not in r, r
        assert await dtmf_at_bob(bob, "12", 6) == "12", bob.log_tail(2000)
        r = await page.dtmf("34", True)
        assert r["canInsertDTMF"] is True, r
        assert await dtmf_at_bob(bob, "1234", 8) == "1234", bob.log_tail(2000)
        assert leg.stats.dtmf_from_browser == 2
        if dtmf_mode == "rfc4733":
            assert await wait_for(lambda: rtp_events(bob) == "1234", 2), bob.log_tail(2000)
            assert info_digits(bob) == ""
        else:
            assert await wait_for(lambda: info_digits(bob) == "1234", 2), bob.log_tail(2000)
            assert rtp_events(bob) == ""

        # phone -> browser (baresip sends RFC 4733)
        await deferToThread(bob.send_dtmf, "56#")
        snap = await page.wait("dtmf:3", 8)
        assert [d["digit"] for d in snap["dtmf"]] == list("56#"), snap
        assert {d["method"] for d in snap["dtmf"]} == {"rfc4733"}

        await page.hangup()
        await closed(bob, 8)
        assert_wav_tone(bob.recorded_wav("dec"), BROWSER_HZ, "baresip heard the browser")
        assert await released(gw)
    finally:
        await gw.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("audio_codecs", [["opus"], None])  # Opus-only, and Chromium's own offer
@pytest_twisted.ensureDeferred
async def test_browser_opus_to_an_opus_trunk_is_relayed_untouched(
    chromium: Any, baresip_factory: Callable[..., peers.Baresip], audio_codecs: list[str] | None
) -> None:
    """The trunk offers Opus and baresip speaks it: Chromium's Opus payloads go to the phone and
    the phone's come back without being decoded (packet path), audio measured on both sides.
    (With a G.711-only trunk the same Opus-only offer is transcoded: the test above.)"""
    bob = baresip_factory("bob", audio_codecs="opus")
    gw = Gateway(peers.phone_route(bob, codecs=["opus", "PCMU"]))
    page = Page(chromium, gw)
    try:
        await page.open()
        opts = {"audioCodecs": audio_codecs} if audio_codecs else {}
        start = await page.call("bob", **opts)
        assert start["codec"] == "opus"
        snap = await page.wait("answered", 10)
        assert snap["ok"], (snap, bob.log_tail(2000))
        (call,) = list(gw.svc.registry)
        leg = call.leg
        assert call.codec == "opus" and call.media_path == "packet" and leg.stats.transcoded is False
        assert gw.manager.counters["packet_path"] == 1 and gw.manager.counters["frame_path"] == 0
        m = await page.measure()
        print(f"\n[chromium opus {audio_codecs or 'default offer'}] page measured "
              f"{[round(f['hz'], 1) for f in m['freqs']]} Hz, in {m.get('inboundCodec')} out {m.get('outboundCodec')}, "
              f"relayed {leg.stats.packets_relayed} browser->SIP, {leg.out_track.payloads_sent} SIP->browser")
        assert abs(measured_hz(m) - PHONE_HZ) < 15, m
        assert m["inboundCodec"] == "audio/opus" and m["outboundCodec"] == "audio/opus"
        assert leg.stats.packets_relayed > 50 and leg.stats.frames_from_browser == leg.stats.packets_relayed
        assert leg.out_track is not None and leg.out_track.payloads_sent > 50 and leg.stats.bad_packets == 0
        await page.hangup()
        await closed(bob, 8)
        assert_wav_tone(bob.recorded_wav("dec"), BROWSER_HZ, "baresip heard the browser (Opus relayed)")
        assert await released(gw)
    finally:
        await gw.stop()


# --------------------------------------------------------------------------------------- SIPp

@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["header", "caller_id", "both"])
@pytest_twisted.ensureDeferred
async def test_session_id_in_invite_and_hangup_while_ringing_cancels(
    chromium: Any, sipp_factory: Callable[..., peers.Sipp], mode: str
) -> None:
    sipp = sipp_factory("uas_ring_cancel")
    gw = sipp_gateway(sipp, session_id={"mode": mode, "header": "X-Web-Session"})
    page = Page(chromium, gw)
    try:
        await page.open()
        start = await page.call("1000")
        sid = start["sessionId"]
        assert sid.isdigit() and 8 <= len(sid) <= 10 and start["state"] == "trying"
        snap = await page.wait("ringing", 10)
        assert snap["ok"], (snap, sipp.describe())
        kinds = [e["type"] for e in snap["events"]]
        assert kinds.index("resolved") < kinds.index("ringing")  # the page knew the ID before the phone rang

        invite = next(m for m in sipp.received() if m.method == "INVITE")
        header = invite.header("X-Web-Session")
        from_user = invite.header("From") or ""
        pai = invite.header("P-Asserted-Identity")
        print(f"\n[{mode}] session {sid}: X-Web-Session={header!r} From={from_user!r} PAI={pai!r}")
        if mode in ("header", "both"):
            assert header == sid
        else:
            assert header is None
        if mode in ("caller_id", "both"):
            assert f"sip:{sid}@" in from_user and pai is not None and f"sip:{sid}@" in pai
        else:
            assert f"sip:{sid}@" not in from_user and pai is None

        await page.hangup()
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
        assert sipp.received_requests()[:2] == ["INVITE", "CANCEL"] and "ACK" in sipp.received_requests()
        assert await released(gw)
    finally:
        await gw.stop()


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_hangup_after_answer_sends_bye_and_audio_flows(chromium: Any, sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_answer", rtp_echo=True)  # SIPp echoes the gateway's RTP
    gw = sipp_gateway(sipp)
    page = Page(chromium, gw)
    try:
        await page.call_answered("1000", sipp)
        m = await page.measure()
        print(f"\nbrowser -> gateway -> SIPp echo -> browser: {[round(f['hz'], 1) for f in m['freqs']]} Hz")
        assert abs(measured_hz(m) - BROWSER_HZ) < 15, m
        await page.hangup()
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
        assert "BYE" in sipp.received_requests() and "CANCEL" not in sipp.received_requests()
        assert await released(gw)
    finally:
        await gw.stop()


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_bye_from_the_phone_ends_the_page_call(chromium: Any, sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_bye_from_far", duration_ms=2000)
    gw = sipp_gateway(sipp)
    page = Page(chromium, gw)
    try:
        await page.call_answered("1000", sipp)
        snap = await page.wait("ended", 10)
        assert snap["ok"], snap
        assert snap["ended"]["cause"] == "remote_hangup" and snap["ended"]["local"] is False
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
        assert await released(gw)
    finally:
        await gw.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("what", ["close_ws", "close_pc"])
@pytest_twisted.ensureDeferred
async def test_lost_browser_releases_the_sip_leg(chromium: Any, sipp_factory: Callable[..., peers.Sipp], what: str) -> None:
    """close_ws: the WebSocket drops (no hangup message). close_pc: the browser's peer
    connection goes away while the WebSocket stays: the call ends within ice_timeout_s (3 s)."""
    sipp = sipp_factory("uas_answer")
    gw = sipp_gateway(sipp)
    page = Page(chromium, gw)
    try:
        await page.call_answered("1000", sipp)
        assert (await page.wait("connected", 10))["ok"]
        (call,) = list(gw.svc.registry)
        assert await wait_for(lambda: call.leg.pc.connectionState == "connected", 5)
        t0 = time.monotonic()
        await page.action(what)
        assert await wait_for(lambda: "BYE" in sipp.received_requests(), 5), sipp.describe()
        elapsed = time.monotonic() - t0
        print(f"\n[{what}] BYE at SIPp {elapsed:.2f} s after the browser went away (cause {call.end_cause})")
        assert elapsed < 3.0 + 1.0  # ice_timeout_s + margin (in practice well under a second)
        assert call.end_cause == ("ws_closed" if what == "close_ws" else "ice_failed")
        if what == "close_pc":  # the WebSocket is still there: the page is told why
            snap = await page.wait("ended", 5)
            assert snap["ended"]["cause"] == "ice_failed", snap
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
        assert await released(gw)
        assert await wait_for(lambda: call.leg.pc.connectionState == "closed", 5)
    finally:
        await gw.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "scenario, cause, status",
    [
        ("uas_no_answer", "timeout", 408),  # not even 100 Trying: Timer B (64*T1 = 6.4 s with t1_ms=100)
        ("uas_busy", "rejected", 486),
    ],
)
@pytest_twisted.ensureDeferred
async def test_unanswered_and_busy(
    chromium: Any, sipp_factory: Callable[..., peers.Sipp], scenario: str, cause: str, status: int
) -> None:
    sipp = sipp_factory(scenario, duration_ms=10000)
    gw = sipp_gateway(sipp)
    page = Page(chromium, gw)
    try:
        await page.open()
        await page.call("1000")
        snap = await page.wait("ended", 15)
        assert snap["ok"], (snap, sipp.describe())
        print(f"\n[{scenario}] page ended: {snap['ended']}")
        assert snap["ended"]["cause"] == cause and snap["ended"].get("status") in (status, None), snap
        if status == 486:
            assert snap["ended"]["status"] == 486
        assert await released(gw)
    finally:
        await gw.stop()


# ---------------------------------------------------------------------------------- ICE servers

class StunResponder(DatagramProtocol):
    """A loopback STUN server: answers Binding requests with the XOR-MAPPED-ADDRESS, counts them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        from aioice import stun

        try:
            req = stun.parse_message(data)
        except ValueError:
            return
        if req.message_method != stun.Method.BINDING or req.message_class != stun.Class.REQUEST:
            return
        self.requests.append(addr)
        resp = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE, transaction_id=req.transaction_id)
        resp.attributes["XOR-MAPPED-ADDRESS"] = addr
        self.transport.write(bytes(resp), addr)


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_configured_ice_servers_reach_the_browser(chromium: Any) -> None:
    stun_server = StunResponder()
    port = reactor.listenUDP(0, stun_server, interface="127.0.0.1")
    url = f"stun:127.0.0.1:{port.getHost().port}"
    gw = Gateway({"webrtc": {"ice_servers": [{"urls": url}, {"urls": ["turn:127.0.0.1:9"], "username": "u", "credential": "pw"}]}})
    page = Page(chromium, gw)
    try:
        await page.open()
        start = await page.call("echo")
        # the welcome message (before the RTCPeerConnection existed) and the browser's pc configuration
        assert start["welcome"]["ice_servers"][0] == {"urls": [url]}
        assert start["welcome"]["ice_servers"][1] == {"urls": ["turn:127.0.0.1:9"], "username": "u", "credential": "pw"}
        used = start["iceServers"]
        assert [s["urls"] for s in used] == [[url], ["turn:127.0.0.1:9"]], used
        assert (await page.wait("answered", 15))["ok"]
        (call,) = list(gw.svc.registry)
        assert [s["urls"] for s in call.leg.settings.ice_servers] == [[url], ["turn:127.0.0.1:9"]]
        # both ICE agents (Chromium's and the gateway's aiortc) asked the configured STUN server
        assert await wait_for(lambda: len(set(stun_server.requests)) >= 2, 5), stun_server.requests
        m = await page.measure()
        assert abs(measured_hz(m) - BROWSER_HZ) < 15, m
        await page.action("hangup")
        assert await released(gw)
    finally:
        await gw.stop()
        await port.stopListening()

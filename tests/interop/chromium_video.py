"""Helpers for headless Chromium as a video caller and as a watcher (issue 14).

- :func:`solid_y4m`: a Y4M file of one solid colour, made by ffmpeg, for Chromium's
  ``--use-file-for-fake-video-capture`` (the caller's "camera");
- :func:`launch_chromium` / :func:`quit_chromium`: one Chromium (Debian package, Selenium +
  chromedriver, ``SE_OFFLINE``), with a tone WAV as its microphone and optionally a Y4M as its camera;
- :class:`CallerPage` and :class:`WatcherPage`: drive ``/html5_client/webgate.js`` through its public
  API (``gw.call(..., {video, data})``, ``call.send``, ``gw.watch``, ``view.send``) with a small
  page-side harness (``window.H`` for the caller, so ``test_chromium_calls.MEASURE`` measures its
  audio; ``window.W`` for the watcher). Every method blocks in a thread (``deferToThread``).

The watcher measures what it decoded: its ``<video>`` element drawn to a canvas (mean RGB of the
middle of the picture), the ``video`` event's size and codec, and the data messages in order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread

from tests.interop.test_chromium_calls import MEASURE
from tests.interop.test_chromium_webrtc import _chromium_args

# ------------------------------------------------------------------------------------- the caller

CALLER_START = r"""
const [wsUrl, destination, o] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const H = window.H = { events: [], data: [], watchers: [], ended: null, errors: [], t0: performance.now() };
  try {
    const { WebGate } = await import('/html5_client/webgate.js');
    const stream = H.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: !!o.video });
    const gw = new WebGate({ url: wsUrl, token: o.token || undefined });
    const opts = { stream, video: !!o.video, data: !!o.data };
    if (o.videoCodecs) opts.videoCodecs = o.videoCodecs;
    const call = H.call = await gw.call(destination, opts);
    H.watchers.push(call.watchers);
    call.addEventListener('watchers', (e) => H.watchers.push(e.detail.count));
    call.addEventListener('data', (e) => {
      const d = e.detail;
      H.data.push({ data: typeof d.data === 'string' ? d.data : { bytes: Array.from(new Uint8Array(d.data)) },
                    label: d.label, from: d.from });
    });
    for (const t of ['answered', 'ended', 'error'])
      call.addEventListener(t, (e) => {
        H.events.push(t);
        if (t === 'ended') H.ended = e.detail;
        if (t === 'error') H.errors.push(e.detail);
      });
    const v = stream.getVideoTracks()[0];
    done({ sessionId: call.sessionId, codec: call.codec, watchers: call.watchers,
           camera: v ? v.getSettings() : null });
  } catch (e) {
    H.exception = (e.code ? e.code + ': ' : '') + e.name + ': ' + e.message;
    done({ exception: H.exception, code: e.code || null });
  }
})();
"""

# send `n` messages `prefix + i` (and optionally `bytes` as one binary message) with call.send / view.send
SEND = r"""
const [who, prefix, n, bytes, label] = arguments;
const done = arguments[arguments.length - 1];
try {
  const target = who === 'caller' ? window.H.call : window.W.view;
  const opts = label ? { label } : undefined;
  for (let i = 0; i < n; i++) target.send(prefix + i, opts);
  if (bytes) target.send(new Uint8Array(bytes), opts);
  done({ sent: n + (bytes ? 1 : 0) });
} catch (e) { done({ exception: (e.code ? e.code + ': ' : '') + e.name + ': ' + e.message, code: e.code || null }); }
"""

# poll until `expr` (a JS expression over the harness object X) is truthy; returns {ok, value, state}
WAIT = r"""
const [who, expr, timeoutMs] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const X = who === 'caller' ? window.H : window.W;
  const f = new Function('X', 'return (' + expr + ');');
  const t0 = performance.now();
  let value = null;
  while (performance.now() - t0 < timeoutMs) {
    try { value = f(X); } catch (e) { value = null; }
    if (value) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const copy = Object.assign({}, X); delete copy.call; delete copy.view; delete copy.stream; delete copy.an; delete copy.ac;
  delete copy.el;
  done({ ok: !!value, value: value === undefined ? null : JSON.parse(JSON.stringify(value)), harness: copy });
})();
"""

ACTION = r"""
const [who, what] = arguments;
const done = arguments[arguments.length - 1];
try {
  if (who === 'caller' && what === 'hangup') window.H.call.hangup();
  if (who === 'watcher' && what === 'close') window.W.view.close();
  done({ ok: true });
} catch (e) { done({ exception: e.name + ': ' + e.message }); }
"""

# ------------------------------------------------------------------------------------ the watcher

WATCH_START = r"""
const [wsUrl, sessionId, o] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const W = window.W = { events: [], data: [], video: null, ended: null, errors: [], t0: performance.now() };
  try {
    const { WebGate } = await import('/html5_client/webgate.js');
    const gw = new WebGate({ url: wsUrl });
    const view = W.view = await gw.watch(sessionId, { token: o.token, video: true, audio: !!o.audio });
    W.events.push({ type: 'resolved', ms: performance.now() - W.t0 });
    view.addEventListener('video', (e) => { W.video = e.detail; W.events.push({ type: 'video', ms: performance.now() - W.t0 }); });
    view.addEventListener('data', (e) => {
      const d = e.detail;
      W.data.push({ data: typeof d.data === 'string' ? d.data : { bytes: Array.from(new Uint8Array(d.data)) }, label: d.label });
    });
    view.addEventListener('ended', (e) => { W.ended = e.detail; W.events.push({ type: 'ended' }); });
    view.addEventListener('error', (e) => W.errors.push(e.detail));
    const el = W.el = document.createElement('video');
    el.muted = true; el.playsInline = true; el.autoplay = true; el.srcObject = view.remoteStream;
    document.body.appendChild(el);
    el.play().catch(() => {});
    done({ sessionId: view.sessionId, state: view.state, video: view.video,
           tracksAtResolve: view.remoteStream.getTracks().length });
  } catch (e) {
    done({ exception: (e.code ? e.code + ': ' : '') + e.name + ': ' + e.message, code: e.code || null, name: e.name });
  }
})();
"""

# the watcher's <video> drawn to a canvas: mean RGB of the middle half of the picture, a few samples
COLOUR = r"""
const [samples] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const el = window.W.el; const out = { samples: [] };
  for (let i = 0; i < 100 && !(el.videoWidth > 0 && el.readyState >= 2); i++) await sleep(100);
  out.width = el.videoWidth; out.height = el.videoHeight;
  if (!el.videoWidth) { done(out); return; }
  const c = document.createElement('canvas'); c.width = el.videoWidth; c.height = el.videoHeight;
  const g = c.getContext('2d', { willReadFrequently: true });
  for (let s = 0; s < samples; s++) {
    await sleep(300);
    g.drawImage(el, 0, 0, c.width, c.height);
    const x0 = Math.floor(c.width / 4), y0 = Math.floor(c.height / 4);
    const d = g.getImageData(x0, y0, Math.floor(c.width / 2), Math.floor(c.height / 2)).data;
    let r = 0, gg = 0, b = 0; const n = d.length / 4;
    for (let i = 0; i < d.length; i += 4) { r += d[i]; gg += d[i + 1]; b += d[i + 2]; }
    out.samples.push([r / n, gg / n, b / n]);
  }
  const st = await window.W.view.pc.getStats(); const codecs = {};
  st.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
  st.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.framesDecoded = s.framesDecoded; out.packetsLost = s.packetsLost; out.codec = codecs[s.codecId];
      out.frameWidth = s.frameWidth; out.frameHeight = s.frameHeight;
    }
  });
  done(out);
})();
"""


def solid_y4m(path: Path, colour: str, size: str = "320x240", rate: int = 15, seconds: float = 2.0) -> Path:
    """A Y4M (yuv420p) of ``colour`` (an ffmpeg colour: ``red``, ``0x2080ff``) made by ffmpeg."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"color=c={colour}:size={size}:rate={rate}",
         "-t", str(seconds), "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=60,
    )
    return path


def launch_chromium(wav: str, y4m: str | None = None) -> tuple[Any, str]:
    """Blocking: a headless Chromium (its microphone ``wav``, its camera ``y4m`` or Chromium's fake
    pattern); returns the driver and its profile directory (for :func:`quit_chromium`)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="webgate-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/lib/chromium/chromium" if os.path.exists("/usr/lib/chromium/chromium") else shutil.which("chromium") or ""
    for a in _chromium_args(profile, wav):
        opts.add_argument(a)
    if y4m is not None:
        opts.add_argument(f"--use-file-for-fake-video-capture={y4m}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    drv.set_script_timeout(60)
    return drv, profile


def quit_chromium(drv: Any, profile: str) -> None:
    try:
        drv.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class _Page:
    who = ""

    def __init__(self, drv: Any, http: str, ws_url: str) -> None:
        self.drv = drv
        self.http = http
        self.ws_url = ws_url

    async def _run(self, script: str, *args: Any) -> Any:
        return await deferToThread(self.drv.execute_async_script, script, *args)

    async def open(self, path: str = "/") -> None:
        await deferToThread(self.drv.get, self.http + path)

    async def send(self, prefix: str, n: int, binary: bytes | None = None, label: str | None = None) -> dict[str, Any]:
        return await self._run(SEND, self.who, prefix, n, list(binary) if binary else None, label)  # type: ignore[no-any-return]

    async def wait(self, expr: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """Poll the page until ``expr`` (JavaScript over ``X``, the harness object) is truthy."""
        return await self._run(WAIT, self.who, expr, int(timeout_s * 1000))  # type: ignore[no-any-return]

    async def action(self, what: str) -> dict[str, Any]:
        return await self._run(ACTION, self.who, what)  # type: ignore[no-any-return]

    def console(self) -> list[str]:
        try:
            return [e["message"] for e in self.drv.get_log("browser")][-20:]
        except Exception as e:  # noqa: BLE001 - a debugging aid only
            return [f"unavailable: {e!r}"]


class CallerPage(_Page):
    """The caller: ``gw.call(destination, {video, data})`` from the demo page's origin."""

    who = "caller"

    async def call(self, destination: str, **opts: Any) -> dict[str, Any]:
        start: dict[str, Any] = await self._run(CALLER_START, self.ws_url, destination, opts)
        assert "exception" not in start, (start, self.console())
        return start

    async def measure(self) -> dict[str, Any]:
        """The dominant frequency of ``call.remoteStream`` (``test_chromium_calls.MEASURE``)."""
        return await self._run(MEASURE)  # type: ignore[no-any-return]


class WatcherPage(_Page):
    """A watcher: ``gw.watch(sessionId, {token, video: true, audio})``."""

    who = "watcher"

    async def watch(self, session_id: str, token: str | None, audio: bool = False) -> dict[str, Any]:
        """The page's ``watch`` result: ``sessionId``, ``video`` (the gateway's), or ``exception`` and ``code``."""
        return await self._run(WATCH_START, self.ws_url, session_id, {"token": token, "audio": audio})  # type: ignore[no-any-return]

    async def colour(self, samples: int = 3) -> dict[str, Any]:
        """``width``, ``height``, ``samples`` (mean [R, G, B] of the middle of the picture) and the
        inbound video stats (``framesDecoded``, ``packetsLost``, ``codec``)."""
        return await self._run(COLOUR, samples)  # type: ignore[no-any-return]

"""Real headless Chromium callers for the benchmark's cross-check (issue 18): N browsers, one call each.

    python bench/chromium_callers.py --target webgate --url ws://127.0.0.1:18080/ws --dest bench \\
        --calls 10 --hold 30 --codec pcmu --out FILE.jsonl [--start-at MONOTONIC]
    python bench/chromium_callers.py --target janus --url ws://198.18.0.1:18188/ --uri sip:bench@127.0.0.1:25060 ...

Each call is its own Chromium (Debian's chromium + chromium-driver, driven by Selenium, as
tests/interop/test_chromium_*.py do): its own process tree, audio capture clock (a fake
microphone playing a 400 Hz tone file) and so its own send phase, as independent users have.
The page (served here on 127.0.0.1, a secure context) makes an RTCPeerConnection with the
microphone track, prefers the codec asked for (setCodecPreferences), and hands its offer to this
process, which does the signalling exactly as ``bench/loadgen.py`` does (webgate's WebSocket API,
or the Janus SIP plugin through ``bench.janus_sig``) and gives the answer back to the page.
Chromium then runs its own media and RTCP for the whole hold: what the gateway pays for a real
browser.  The browsers are started before ``--start-at`` (a few seconds each on a busy CPU).

Output (JSON Lines, appended to --out): per call bench_id target codec ok error t_request
t_answered t_media_up t_first_audio (approximate: the first stats poll with packets received)
t_end seconds, Chromium's getStats at the end (inbound/outbound RTP, the nominated candidate
pair) and from it loss, jitter_ms, rtcp_tx (packets sent on the pair that were not RTP),
rtp_header_bytes (outbound header bytes per packet); then a summary line.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import concurrent.futures
import contextlib
import http.server
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import wave
from typing import Any

import numpy as np

mono = time.monotonic

PAGE = b"""<!doctype html><meta charset="utf-8"><title>bench caller</title><script>
window.mk = async (codec) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  const tr = pc.addTransceiver(stream.getAudioTracks()[0], {direction: 'sendrecv', streams: [stream]});
  const want = codec === 'pcmu' ? 'audio/pcmu' : 'audio/opus';
  tr.setCodecPreferences(RTCRtpReceiver.getCapabilities('audio').codecs.filter(c => c.mimeType.toLowerCase() === want));
  pc.ontrack = (e) => { const a = new Audio(); a.muted = true; a.srcObject = e.streams[0] || new MediaStream([e.track]);
                        a.play().catch(() => {}); window.__audio = a; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === 'complete') r();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r());
    setTimeout(r, 5000); });
  return pc.localDescription.sdp;
};
window.answer = async (sdp) => {
  await window.pc.setRemoteDescription({type: 'answer', sdp});
  for (let i = 0; i < 200 && window.pc.connectionState !== 'connected'; i++) {
    if (window.pc.connectionState === 'failed') return 'failed';
    await new Promise((r) => setTimeout(r, 50));
  }
  return window.pc.connectionState;
};
window.stats = async () => {
  const o = {};
  if (!window.pc) return o;
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') o.inbound = s;
    else if (s.type === 'outbound-rtp' && s.kind === 'audio') o.outbound = s;
    else if (s.type === 'candidate-pair') (o.pairs = o.pairs || {})[s.id] = s;
    else if (s.type === 'transport') o.transport = s;
    else if (s.type === 'codec') (o.codecs = o.codecs || []).push(s.mimeType);
  });
  if (o.transport && o.pairs) o.pair = o.pairs[o.transport.selectedCandidatePairId];
  delete o.pairs;
  return JSON.parse(JSON.stringify(o));
};
</script>"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *_a: Any) -> None:
        return


def tone_wav(path: Path, hz: float = 400.0, seconds: float = 10.0, rate: int = 48000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.round(3276.7 * np.sin(2 * np.pi * hz * t)).astype("<i2")   # -20 dBFS peak, as the synthetic callers
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def launch(url: str, wav: str, workdir: str) -> Any:
    """One headless Chromium (blocking; run in a thread)."""
    os.environ.setdefault("SE_OFFLINE", "true")   # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chr-", dir=workdir)
    opts = webdriver.ChromeOptions()
    opts.binary_location = ("/usr/lib/chromium/chromium" if os.path.exists("/usr/lib/chromium/chromium")
                            else shutil.which("chromium") or "")
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--use-fake-device-for-media-stream",
              "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
              "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
              "--disable-features=WebRtcHideLocalIpsWithMdns"]:
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    drv.set_script_timeout(90)
    drv.get(url)
    return drv


class Gate:
    """Counts calls that are up or failed; when all are, prints ``UP n`` (run.py starts its measured
    window then) and releases the calls' holds."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.up = 0
        self.failed = 0
        self.all = asyncio.Event()

    def settle(self, ok: bool) -> None:
        if ok:
            self.up += 1
        else:
            self.failed += 1
        if self.up + self.failed >= self.calls and not self.all.is_set():
            self.all.set()
            print(f"UP {self.up}", flush=True)


class ChromiumCall:
    def __init__(self, k: int, args: argparse.Namespace, drv: Any, gate: Gate) -> None:
        self.k = k
        self.gate = gate
        self.args = args
        self.drv = drv
        self.bench_id = random.randint(1000000000, 9999999999)
        self.rec: dict[str, Any] = {
            "bench_id": self.bench_id, "target": args.target, "codec": args.codec, "caller": "chromium",
            "ok": False, "error": None, "t_request": None, "t_accepted": None, "t_answered": None,
            "t_media_up": None, "t_first_audio": None, "t_end": None,
        }

    async def js(self, script: str, *a: Any) -> Any:
        """Run an async page function; the last argument of execute_async_script is its callback."""
        body = (f"const d = arguments[arguments.length - 1]; ({script})(...Array.from(arguments).slice(0, -1))"
                ".then(d, (e) => d({error: String(e)}));")
        return await asyncio.to_thread(self.drv.execute_async_script, body, *a)

    async def media(self, answer: str) -> None:
        a = self.args
        state = await self.js("window.answer", answer)
        if state != "connected":
            raise RuntimeError(f"chromium connection {state}")
        t_up = mono()
        self.rec["t_media_up"] = t_up
        self.gate.settle(ok=True)
        end_at = t_up + a.hold
        if a.hold_after_up is not None:   # hold until every call is up (or failed), then that long
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.all.wait(), a.timeout * 4)
            end_at = mono() + a.hold_after_up
        mid: tuple[float, dict[str, Any]] | None = None   # a snapshot once the call is steady
        while mono() < end_at:
            await asyncio.sleep(min(1.0, max(0.0, end_at - mono())))
            if self.rec["t_first_audio"] is None or (mid is None and mono() > t_up + a.warmup):
                st = await self.js("window.stats")
                if self.rec["t_first_audio"] is None and (st.get("inbound") or {}).get("packetsReceived"):
                    self.rec["t_first_audio"] = mono()
                if mid is None and mono() > t_up + a.warmup:
                    mid = (mono(), st)
        self.rec["seconds"] = round(mono() - t_up, 3)
        st = await self.js("window.stats")
        t_end = mono()
        self.rec["stats"] = st
        if mid is not None:   # RTCP packets a minute in the steady part: (pair - RTP) packets sent
            def nonrtp(x: dict[str, Any]) -> int:
                return (x.get("pair") or {}).get("packetsSent", 0) - (x.get("outbound") or {}).get("packetsSent", 0)

            if t_end - mid[0] > 1:
                self.rec["rtcp_per_min"] = round(60 * (nonrtp(st) - nonrtp(mid[1])) / (t_end - mid[0]), 2)
        inb, out, pair = st.get("inbound") or {}, st.get("outbound") or {}, st.get("pair") or {}
        rx, lost = inb.get("packetsReceived", 0), inb.get("packetsLost", 0)
        self.rec.update(
            rx_packets=rx, tx_packets=out.get("packetsSent"),
            loss=round(max(0, lost) / (rx + max(0, lost)), 5) if rx else None,
            jitter_ms=round(1000 * inb["jitter"], 3) if inb.get("jitter") is not None else None,
            rtcp_tx=(pair.get("packetsSent", 0) - out.get("packetsSent", 0)) if pair and out else None,
            rtp_header_bytes=round(out["headerBytesSent"] / out["packetsSent"], 2) if out.get("packetsSent") else None,
            codecs=st.get("codecs"),
        )

    async def run_webgate(self) -> None:
        import websockets.asyncio.client as wsc

        a = self.args
        offer = await self.js("window.mk", a.codec)
        ws = await asyncio.wait_for(wsc.connect(a.url, max_size=None, ping_interval=None, compression=None), a.timeout)
        try:
            self.rec["t_request"] = mono()
            await ws.send(json.dumps({"type": "call", "destination": a.dest, "sdp": offer, "session_id": str(self.bench_id)}))
            answer = None
            ended = asyncio.get_running_loop().create_future()

            async def reader() -> None:
                nonlocal answer
                async for raw in ws:
                    m = json.loads(raw)
                    if m.get("type") == "accepted":
                        self.rec["t_accepted"] = mono()
                    elif m.get("type") == "answer" and answer is None:
                        answer = m["sdp"]
                        got.set()
                    elif m.get("type") == "progress" and m.get("state") == "answered":
                        self.rec["t_answered"] = mono()
                    elif m.get("type") in ("ended", "error"):
                        if not ended.done():
                            ended.set_result(m)
                        got.set()

            async def pinger() -> None:
                while True:
                    await asyncio.sleep(20)
                    await ws.send('{"type":"ping"}')

            got = asyncio.Event()
            rt, pt = asyncio.ensure_future(reader()), asyncio.ensure_future(pinger())
            try:
                await asyncio.wait_for(got.wait(), a.timeout)
                if answer is None:
                    raise RuntimeError(f"no answer: {ended.result() if ended.done() else '?'}")
                self.rec["answer_sdp"] = answer
                await self.media(answer)
                if ended.done():
                    self.rec["error"] = f"ended early: {ended.result()}"
                await ws.send('{"type":"hangup"}')
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended), 5)
            finally:
                rt.cancel()
                pt.cancel()
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(ws.close(), 2)

    async def run_janus(self, at: float) -> None:
        from bench.janus_sig import JanusSipCall

        a = self.args
        j = JanusSipCall(a.url)
        try:
            await asyncio.wait_for(j.start(), max(a.timeout, at - mono() + a.timeout))
            if at > mono():
                await asyncio.sleep(at - mono())
            offer = await self.js("window.mk", a.codec)
            self.rec["t_request"] = mono()
            answer = await asyncio.wait_for(j.call(a.uri, offer, {"X-Bench-Id": str(self.bench_id)}), a.timeout)
            self.rec["t_accepted"] = getattr(j, "t_calling", None)
            self.rec["t_answered"] = getattr(j, "t_accepted", None)
            self.rec["answer_sdp"] = answer
            await self.media(answer)
            if getattr(j, "t_hangup", None) is not None:
                self.rec["error"] = f"janus hangup {getattr(j, 'hangup_reason', '')}".strip()
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(j.hangup(), 7)

    async def run(self, at: float) -> dict[str, Any]:
        try:
            if self.args.target == "janus":
                await self.run_janus(at)
            else:
                if at > mono():
                    await asyncio.sleep(at - mono())
                await self.run_webgate()
            if self.rec["error"] is None:
                self.rec["ok"] = True
        except Exception as e:  # noqa: BLE001 - a failed call is a record, never a crash
            self.rec["error"] = self.rec["error"] or f"{type(e).__name__}: {e}"
        if self.rec["t_media_up"] is None:
            self.gate.settle(ok=False)
        self.rec["t_end"] = mono()
        with contextlib.suppress(Exception):
            self.rec["offer_sdp"] = await self.js("async () => window.pc && window.pc.localDescription.sdp")
        return self.rec


def _append(path: str, recs: list[dict[str, Any]]) -> None:
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)


async def amain(a: argparse.Namespace) -> int:
    # every call blocks a thread in each Selenium round trip: one thread per browser (and spare)
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=a.calls + 4))
    work = tempfile.mkdtemp(prefix="webgate-bench-chromium-")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    page = f"http://127.0.0.1:{srv.server_address[1]}/"
    wav = Path(work) / "tone400.wav"
    tone_wav(wav)
    drivers: list[Any] = []
    t0 = mono()
    try:
        for _ in range(a.calls):   # one at a time: each start is CPU-heavy
            drivers.append(await asyncio.to_thread(launch, page, str(wav), work))
        t_ready = mono()
        print("READY", flush=True)   # run.py starts its clock for the step here
        start = a.start_at if a.start_at is not None else mono() + 1.0
        if mono() > start:
            sys.stderr.write(f"chromium_callers: browsers ready {mono() - start:.1f} s after --start-at\n")
        gate = Gate(len(drivers))
        calls = [ChromiumCall(k, a, d, gate) for k, d in enumerate(drivers)]
        recs = await asyncio.gather(*(c.run(max(start, mono()) + k / a.rate) for k, c in enumerate(calls)))
        _append(a.out, [*recs, {"summary": True, "caller": "chromium", "target": a.target, "calls": a.calls,
                                "ok": sum(1 for r in recs if r.get("ok")), "launch_s": round(t_ready - t0, 2)}])
        if not a.quiet:
            sys.stderr.write(f"chromium_callers: {sum(1 for r in recs if r.get('ok'))}/{a.calls} ok; "
                             f"errors {[r['error'] for r in recs if r.get('error')]}\n")
    finally:
        for d in drivers:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(d.quit)
        srv.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=["webgate", "janus"], default="webgate")
    p.add_argument("--url", default=None)
    p.add_argument("--dest", default="bench")
    p.add_argument("--uri", default="sip:bench@127.0.0.1:25060")
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--rate", type=float, default=5.0, help="calls started per second")
    p.add_argument("--hold", type=float, default=30.0, help="seconds of media per call")
    p.add_argument("--codec", choices=["pcmu", "opus"], default="pcmu")
    p.add_argument("--out", required=True)
    p.add_argument("--start-at", type=float, default=None, help="time.monotonic() of the first call")
    p.add_argument("--hold-after-up", type=float, default=None,
                   help="hold every call until all are up (or failed; 'UP n' on stdout), then this many seconds "
                        "(instead of --hold from each call's own media up)")
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds after media up before the steady RTCP count starts")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    if a.url is None:
        a.url = "ws://127.0.0.1:18080/ws" if a.target == "webgate" else "ws://127.0.0.1:18188/"
    return asyncio.run(_guarded(a))


async def _guarded(a: argparse.Namespace) -> int:
    """SIGTERM (run.py stopping a step) cancels the run, so the browsers are quit, never orphaned."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, task.cancel)
    try:
        return await amain(a)
    except asyncio.CancelledError:
        return 1


if __name__ == "__main__":
    sys.exit(main())

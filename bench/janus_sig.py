"""asyncio signalling client for the Janus SIP plugin over the Janus WebSocket transport.

One WebSocket (subprotocol ``janus-protocol``), one Janus session and one janus.plugin.sip handle
per call, as a browser using janus.js would do:

    c = JanusSipCall("ws://127.0.0.1:18188/")
    await c.start()                                   # create, attach, register type "guest"
    answer = await c.call("sip:bench@127.0.0.1:25060", offer_sdp, {"X-Bench-Id": "1234567890"})
    ...
    await c.hangup()                                  # hangup, wait "hangup", destroy, close

Timestamps (time.monotonic()): t_request (call() entered), t_ack (Janus acked the call request),
t_calling (plugin event "calling": the INVITE went out), t_accepted (event "accepted": 200 OK,
answer in hand), t_webrtcup (Janus core: ICE+DTLS up), t_hangup (hangup event, either side).
Errors from Janus (core or plugin) raise RuntimeError(text).  Nothing here blocks the loop.
Needs the ``websockets`` package (>= 13, the asyncio implementation).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from websockets.asyncio.client import connect

KEEPALIVE_S = 25.0


class JanusSipCall:
    def __init__(self, url: str = "ws://127.0.0.1:18188/") -> None:
        self.url = url
        self.ws: Any = None
        self.session_id: int | None = None
        self.handle_id: int | None = None
        self.answer_sdp: str | None = None
        self.call_id: str | None = None          # SIP Call-ID Janus used (from the "calling" event)
        self.t_request: float | None = None
        self.t_ack: float | None = None
        self.t_calling: float | None = None
        self.t_accepted: float | None = None
        self.t_webrtcup: float | None = None
        self.t_hangup: float | None = None
        self.hangup_reason: str | None = None
        self.events: list[dict[str, Any]] = []    # every async message (plugin events, webrtcup, media, hangup...)
        self._pending: dict[str, asyncio.Queue[Any]] = {}     # transaction -> replies (success/error/ack)
        self._event_waiters: list[tuple[set[str], asyncio.Future[dict[str, Any]]]] = []
        self._reader: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._closed = False
        self._call_tx: str | None = None

    # --- plumbing ---------------------------------------------------------------------------

    async def _send(self, msg: dict[str, Any], want: tuple[str, ...] = ("success",), timeout: float = 10.0,
                    tx: str | None = None) -> dict[str, Any]:
        """Send ``msg`` with a (fresh) transaction; return the first reply of a kind in ``want``
        (``success`` or ``ack``).  A Janus ``error`` reply raises RuntimeError."""
        if self._closed or self.ws is None:
            raise RuntimeError("janus websocket closed")
        tx = tx or secrets.token_hex(6)
        msg["transaction"] = tx
        if self.session_id is not None and "session_id" not in msg and msg.get("janus") != "create":
            msg["session_id"] = self.session_id
        replies: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()
        self._pending[tx] = replies
        deadline = time.monotonic() + timeout
        try:
            await self.ws.send(json.dumps(msg))
            while True:
                reply = await asyncio.wait_for(replies.get(), max(0.0, deadline - time.monotonic()))
                if isinstance(reply, Exception):
                    raise reply
                kind = reply.get("janus")
                if kind == "error":
                    err = reply.get("error", {})
                    raise RuntimeError(f"janus error {err.get('code')}: {err.get('reason')} (request {msg.get('janus')})")
                if kind in want:
                    return reply
                # e.g. an "ack" before the "success" we want: keep waiting
        except TimeoutError:
            raise RuntimeError(f"janus: no {'/'.join(want)} to {msg.get('janus')} within {timeout} s") from None
        finally:
            self._pending.pop(tx, None)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                self._dispatch(msg)
        except Exception:  # noqa: BLE001, S110 - connection dropped: the finally below closes
            pass
        finally:
            self._closed = True
            err = RuntimeError("janus websocket closed")
            for q in self._pending.values():
                q.put_nowait(err)
            for _, fut in self._event_waiters:
                if not fut.done():
                    fut.set_exception(err)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("janus")
        tx = msg.get("transaction")
        now = time.monotonic()
        if kind in ("success", "error", "ack") and tx in self._pending:
            if kind == "ack" and self.t_ack is None and tx == self._call_tx:
                self.t_ack = now
            self._pending[tx].put_nowait(msg)
            return
        if kind == "ack":
            return
        # asynchronous: plugin "event", or core "webrtcup" / "media" / "hangup" / "slowlink" / "detached" / "timeout"
        name = kind or ""
        if kind == "event":
            data = (msg.get("plugindata") or {}).get("data") or {}
            if "error" in data or "error_code" in data:
                name = "error"
            else:
                res = data.get("result") or {}
                name = res.get("event") or ""
                if name == "calling":
                    self.t_calling = self.t_calling or now
                    self.call_id = data.get("call_id") or self.call_id
                elif name == "accepted":
                    self.t_accepted = self.t_accepted or now
                elif name == "hangup":
                    self.t_hangup = self.t_hangup or now
                    self.hangup_reason = f"{res.get('code')} {res.get('reason')}"
        elif kind == "webrtcup":
            self.t_webrtcup = self.t_webrtcup or now
        elif kind == "hangup":
            name = "pc_hangup"  # the Janus core closed the PeerConnection (not the SIP call)
        msg["_name"] = name
        msg["_t"] = now
        self.events.append(msg)
        for names, fut in list(self._event_waiters):
            if not fut.done() and (name in names or (name == "error" and "error" in names)):
                fut.set_result(msg)

    async def _wait_event(self, names: set[str], timeout: float, after: int = 0) -> dict[str, Any]:
        """The first async event named in ``names`` (already arrived at index >= ``after``, or next)."""
        for m in self.events[after:]:  # already arrived?
            if m["_name"] in names:
                return m
        if self._closed:
            raise RuntimeError("janus websocket closed")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (names, fut)
        self._event_waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._event_waiters.remove(entry)

    async def _keepalive_loop(self) -> None:
        try:
            while not self._closed:
                await asyncio.sleep(KEEPALIVE_S)
                if self._closed or self.session_id is None:
                    return
                await self.ws.send(json.dumps({"janus": "keepalive", "session_id": self.session_id,
                                               "transaction": secrets.token_hex(6)}))
        except Exception:  # noqa: BLE001, S110 - closed: nothing to keep alive
            pass

    @staticmethod
    def _plugin_error(msg: dict[str, Any]) -> str:
        data = (msg.get("plugindata") or {}).get("data") or {}
        return f"janus sip error {data.get('error_code')}: {data.get('error')}"

    async def _message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None, tx: str | None = None) -> None:
        """A plugin request; the SIP plugin answers every request asynchronously (ack, then an event)."""
        msg: dict[str, Any] = {"janus": "message", "handle_id": self.handle_id, "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        await self._send(msg, ("ack", "success"), tx=tx)

    # --- API --------------------------------------------------------------------------------

    async def start(self, timeout: float = 10.0, register_timeout: float = 120.0) -> None:
        """Connect, create a session, attach janus.plugin.sip, register as a guest.

        Note: Janus's SIP plugin handles "register" on its single request thread and sleeps 100 ms
        there while the session's Sofia thread starts, so registrations are serialised at about
        10/s, and a "call" queued behind them waits too.  Start sessions ahead of the calls
        (as a browser registers at page load) to measure the call path alone."""
        try:
            self.ws = await asyncio.wait_for(
                connect(self.url, subprotocols=["janus-protocol"], compression=None, ping_interval=None,
                        open_timeout=timeout, max_size=2**22),
                timeout)
        except Exception as e:  # refused, timeout, handshake rejected
            raise RuntimeError(f"janus websocket {self.url}: {type(e).__name__}: {e}") from e
        try:
            await self._setup(timeout, register_timeout)
        except BaseException:
            await self.close()
            raise

    async def _setup(self, timeout: float, register_timeout: float) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())
        r = await self._send({"janus": "create"}, timeout=timeout)
        self.session_id = r["data"]["id"]
        self._keepalive = asyncio.get_running_loop().create_task(self._keepalive_loop())
        r = await self._send({"janus": "attach", "plugin": "janus.plugin.sip"}, timeout=timeout)
        self.handle_id = r["data"]["id"]
        await self._message({"request": "register", "type": "guest", "username": "sip:bench@127.0.0.1"})
        # generous: registrations queue at ~100 ms each inside Janus (see above)
        try:
            ev = await self._wait_event({"registered", "registration_failed", "error"}, register_timeout)
        except TimeoutError:
            raise RuntimeError(f"janus sip: not registered within {register_timeout} s") from None
        if ev["_name"] != "registered":
            raise RuntimeError(self._plugin_error(ev) if ev["_name"] == "error" else f"janus sip: {ev['_name']}")

    async def call(self, uri: str, offer_sdp: str, headers: dict[str, str], timeout: float = 30.0) -> str:
        """Send the SIP plugin ``call`` with our offer; return the answer SDP (event ``accepted``)."""
        self.t_request = time.monotonic()
        body = {"request": "call", "uri": uri, "headers": dict(headers)}
        # aiortc does not trickle: the offer carries every candidate.
        jsep = {"type": "offer", "sdp": offer_sdp, "trickle": False}
        self._call_tx = secrets.token_hex(6)
        n = len(self.events)
        await self._message(body, jsep, tx=self._call_tx)
        try:
            ev = await self._wait_event({"accepted", "hangup", "error", "timeout", "detached"}, timeout, after=n)
        except TimeoutError:
            raise RuntimeError(f"janus sip: no answer within {timeout} s") from None
        if ev["_name"] == "error":
            raise RuntimeError(self._plugin_error(ev))
        if ev["_name"] == "hangup":
            raise RuntimeError(f"janus sip: call ended before answer: {self.hangup_reason}")
        if ev["_name"] != "accepted":
            raise RuntimeError(f"janus: {ev['_name']} before answer")
        jsep_ans = ev.get("jsep") or {}
        if not jsep_ans.get("sdp"):
            raise RuntimeError("janus sip: accepted without an answer SDP")
        self.answer_sdp = jsep_ans["sdp"]
        return self.answer_sdp

    async def hangup(self, timeout: float = 5.0) -> None:
        """Hang up (if the call is still up), wait for the ``hangup`` event, destroy the session, close."""
        try:
            if self.ws is not None and not self._closed and self.handle_id is not None:
                if self.t_hangup is None and self.t_calling is not None:
                    try:
                        n = len(self.events)
                        await self._message({"request": "hangup"})
                        await self._wait_event({"hangup", "error"}, timeout, after=n)
                    except (TimeoutError, RuntimeError):
                        pass
                if self.session_id is not None:
                    try:
                        await self._send({"janus": "destroy"}, timeout=timeout)
                    except RuntimeError:
                        pass
        finally:
            await self.close()

    async def close(self) -> None:
        self._closed = True
        for t in (self._keepalive,):
            if t is not None:
                t.cancel()
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:  # noqa: BLE001, S110 - already closed
                pass
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 2)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()


# --- self-check: python bench/janus_sig.py [--calls N] [--duration S] [--uri URI] -----------------
# aiortc callers (full RTCPeerConnection, PCMU, 400 Hz tone at -20 dBFS) call through Janus to a SIP
# UAS that echoes RTP (e.g. `sipp -sn uas -rtp_echo -p 25060 -i 127.0.0.1 -m N` or bench/farend.py);
# each must reach "connected" and hear its 400 Hz back.  Janus must already run (bench/janus_proc.py).
# Sessions are registered first (see JanusSipCall.start), then the calls are placed --gap apart.

async def _selfcheck_call(i: int, sig: JanusSipCall, uri: str, duration: float) -> dict[str, Any]:
    import fractions
    import random

    import numpy as np
    from aiortc import (
        RTCConfiguration,
        RTCPeerConnection,
        RTCRtpSender,
        RTCSessionDescription,
    )
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
    from av import AudioFrame

    class Tone(AudioStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.ts, self.t0 = 0, 0.0

        async def recv(self) -> AudioFrame:
            if self.t0 == 0.0:
                self.t0 = time.monotonic()
            else:
                self.ts += 960
                await asyncio.sleep(max(0.0, self.t0 + self.ts / 48000 - time.monotonic()))
            x = (4634 * np.sin(2 * np.pi * 400 / 48000 * (self.ts + np.arange(960)))).astype(np.int16)
            f = AudioFrame(format="s16", layout="mono", samples=960)
            f.planes[0].update(x.tobytes())
            f.pts, f.sample_rate, f.time_base = self.ts, 48000, fractions.Fraction(1, 48000)
            return f

    r: dict[str, Any] = {"i": i, "bench_id": str(random.randint(1000000000, 9999999999)), "ok": False}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(Tone())
    caps = RTCRtpSender.getCapabilities("audio").codecs
    pc.getTransceivers()[0].setCodecPreferences([c for c in caps if c.mimeType.lower() == "audio/pcmu"])
    got: list[Any] = []
    rate = [8000]
    up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected" and not up.done():
            r["t_connected"] = time.monotonic()
            up.set_result(None)
        elif pc.connectionState == "failed" and not up.done():
            up.set_exception(RuntimeError("ICE/DTLS failed"))

    @pc.on("track")
    def _track(track: Any) -> None:
        async def consume() -> None:
            while True:
                try:
                    fr = await track.recv()
                except MediaStreamError:
                    return
                rate[0] = fr.sample_rate
                got.append(fr.to_ndarray().reshape(-1))
        asyncio.ensure_future(consume())

    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer = await sig.call(uri, pc.localDescription.sdp, {"X-Bench-Id": r["bench_id"]})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(up, 10)
        await asyncio.sleep(duration)
        x = np.concatenate(got).astype(np.float64) if got else np.zeros(1)
        tail = x[-2 * rate[0]:]
        spec = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
        spec[0] = 0
        r.update(ok=True, rx_s=round(len(x) / rate[0], 2), freq=round(float(np.argmax(spec)) * rate[0] / len(tail)),
                 dbfs=round(20 * float(np.log10(max(1e-9, float(np.sqrt(np.mean(tail ** 2)))) / 32768)), 1),
                 setup_ms=round((sig.t_calling - sig.t_request) * 1000, 1),
                 answer_ms=round((sig.t_accepted - sig.t_request) * 1000, 1),
                 connect_ms=round((r["t_connected"] - sig.t_accepted) * 1000, 1))
    except Exception as e:  # noqa: BLE001 - report, don't stop the others
        r["error"] = f"{type(e).__name__}: {e}"
    finally:
        await sig.hangup()
        await pc.close()
    return r


async def _selfcheck() -> None:
    import argparse
    import os
    import statistics

    ap = argparse.ArgumentParser(description="aiortc -> Janus SIP plugin -> echoing SIP UAS, N concurrent calls")
    ap.add_argument("--url", default="ws://127.0.0.1:18188/")
    ap.add_argument("--uri", default="sip:bench@127.0.0.1:25060")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between call starts")
    ap.add_argument("--janus-pid", type=int, help="report this process's CPU%% and RSS while all calls are up")
    a = ap.parse_args()

    def cpu_rss(pid: int) -> tuple[float, float]:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        fl = st[st.rindex(")") + 2:].split()
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * 4096 / 2**20
        return (int(fl[11]) + int(fl[12])) / 100.0, rss

    t = time.monotonic()
    sigs = [JanusSipCall(a.url) for _ in range(a.calls)]
    await asyncio.gather(*(s.start() for s in sigs))
    print(f"{a.calls} sessions registered in {time.monotonic() - t:.2f} s")
    base = cpu_rss(a.janus_pid) if a.janus_pid else None
    tasks = []
    for i, s in enumerate(sigs):
        tasks.append(asyncio.ensure_future(_selfcheck_call(i, s, a.uri, a.duration)))
        await asyncio.sleep(a.gap)
    if a.janus_pid and base:
        await asyncio.sleep(min(3.0, a.duration / 4))
        c1, t1 = cpu_rss(a.janus_pid)[0], time.monotonic()
        await asyncio.sleep(a.duration / 2)
        (c2, rss), t2 = cpu_rss(a.janus_pid), time.monotonic()
        threads = len(os.listdir(f"/proc/{a.janus_pid}/task"))
    res = await asyncio.gather(*tasks)
    ok = [r for r in res if r["ok"]]
    print(f"calls {len(res)}, connected + audio back {len(ok)}; errors: {[r['error'] for r in res if not r['ok']]}")
    if ok:
        med = lambda k: round(statistics.median(r[k] for r in ok), 1)
        print(f"freq back (Hz) {sorted({r['freq'] for r in ok})}, level {sorted({r['dbfs'] for r in ok})} dBFS, "
              f"audio back min {min(r['rx_s'] for r in ok)} s")
        print(f"median ms: call->calling {med('setup_ms')}, call->accepted {med('answer_ms')}, "
              f"accepted->connected {med('connect_ms')}; max call->calling {max(r['setup_ms'] for r in ok)}")
    if a.janus_pid and base:
        pct = (c2 - c1) / (t2 - t1) * 100
        print(f"janus {a.janus_pid}: {pct:.1f}% of one core with {len(ok)} calls up ({pct / max(1, len(ok)):.2f}%/call), "
              f"RSS {base[1]:.1f} -> {rss:.1f} MB ({(rss - base[1]) / max(1, len(ok)):.2f} MB/call), {threads} threads")


if __name__ == "__main__":
    asyncio.run(_selfcheck())

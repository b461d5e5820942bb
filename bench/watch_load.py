"""The watched-video benchmark (issue 14): N WebRTC callers with 1 Mbit/s VP8 video, one watcher each.

    python bench/watch_load.py --calls N --gateway-pid PID --key TOKEN_KEY \\
        [--url ws://127.0.0.1:18080/ws] [--dest echo] [--window 10] [--out FILE.jsonl]

Against a running gateway (``bench/run.py --only watch`` starts one), in two phases at the same N:

1. **audio only**: N callers to ``--dest`` (G.711, the audio as ``bench/loadgen.py`` sends it);
2. **watched video**: the same N callers, each also sending VP8 video at about 1 Mbit/s (30 fps), and
   one watcher per call (a ``watch`` message with a ``watch: "*"`` token) that joins
   ``--watch-delay`` s after its call's media is up.

Each phase measures the gateway's CPU (``/proc/PID/stat``) over ``--window`` s with every call
(and watcher) up; the difference per call is what forwarding one video to one watcher costs.

The callers are ``bench/loadgen.py``'s (aiortc for offer/ICE/DTLS-SRTP, then raw SRTP on the
nominated socket, spread send phases, Chromium-shaped audio RTCP) with a video transceiver added
(VP8 only, like a page's ``setCodecPreferences``). The video is encoded once at start-up
(aiortc's ``Vp8Encoder``, i.e. PyAV/libvpx in real-time CBR mode, at ``--bitrate`` of a moving
test pattern, keyframe first), and replayed by every caller with its own SSRC, sequence numbers,
timestamps and VP8 picture IDs from a 30 fps timer wheel (spread phases): the callers encode
nothing. A PLI/FIR from the gateway makes a caller's next frame the keyframe (as a browser
encodes one on request). The video stream gets an SR + SDES about every second (Chromium's
video report interval); the MID header extension (when negotiated) until the gateway reports on
the stream.

The watchers are aiortc peers with a recvonly video offer whose RTP is taken off the socket
before aiortc sees it (nothing is decoded): they count packets and sequence gaps and find the
first complete keyframe (every packet of its timestamp, from the VP8 start packet with P = 0 to
the marker, without a gap); they send an RR + REMB (2.5 Mbit/s: never the bound) about every
second, as Chromium's receiver does.

Printed on stdout (one JSON object): the gateway's CPU (idle, audio-only, watched; per call; the
difference per watched call), the forwarded packet loss (video packets the callers sent in the
window against those the watchers received in it, and the watchers' sequence gaps), and
``watch`` -> first complete keyframe (p50/p99). ``--out`` also gets one record per call.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import random
import re
import struct
import time
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from bench import loadgen as lg
from bench.common import percentile, proc_cpu_s

mono = time.monotonic
_RTP_HDR = struct.Struct("!BBHII")
FPS = 30
VIDEO_CLOCK = 90000
VIDEO_RTCP_S = 1.0          # Chromium's video RTCP report interval
URI_MID = lg.URI_MID
URI_AST = lg.URI_ABS_SEND_TIME


# -- the pre-encoded video ------------------------------------------------------------------

def encode_clip(seconds: float, width: int, height: int, bitrate: int) -> list[list[bytes]]:
    """``seconds`` of a moving test pattern encoded once to VP8 RTP payloads (one list per frame,
    keyframe first, deltas after): aiortc's own encoder (PyAV libvpx, real-time CBR)."""
    from aiortc.codecs.vpx import Vp8Encoder
    from av import VideoFrame

    enc = Vp8Encoder()
    enc.target_bitrate = bitrate
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(1)
    frames: list[list[bytes]] = []
    for i in range(round(seconds * FPS)):
        img = np.empty((height, width, 3), dtype=np.uint8)
        img[..., 0] = (xx + 4 * i) % 256
        img[..., 1] = (yy + 2 * i) % 256
        img[..., 2] = ((xx + yy) // 2 + 6 * i) % 256
        bx, by = (i * 7) % (width - 64), (i * 3) % (height - 64)
        img[by:by + 64, bx:bx + 64] = 255
        img += rng.integers(0, 12, img.shape, dtype=np.uint8)   # sensor noise: keeps the bitrate up
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i * (VIDEO_CLOCK // FPS), fractions.Fraction(1, VIDEO_CLOCK)
        payloads, _ = enc.encode(frame, force_keyframe=(i == 0))
        frames.append([bytes(p) for p in payloads])
    return frames


def is_vp8_key_start(payload: bytes) -> bool:
    """The first packet of a VP8 keyframe: descriptor S = 1, partition 0, then P = 0."""
    if len(payload) < 2 or not payload[0] & 0x10 or payload[0] & 0x0F:
        return False
    off = 1
    if payload[0] & 0x80:
        x = payload[1]
        off = 2
        if x & 0x80:
            off += 2 if len(payload) > 2 and payload[2] & 0x80 else 1
        if x & 0x40:
            off += 1
        if x & 0x30:
            off += 1
    return len(payload) > off and not payload[off] & 0x01


class NoFramesVideo(MediaStreamTrack):
    """A video track whose recv() never returns: aiortc encodes and sends nothing."""

    kind = "video"

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()


def _section(sdp: str, kind: str) -> str:
    return sdp.split(f"m={kind}", 1)[1].split("\nm=", 1)[0] if f"m={kind}" in sdp else ""


def _extmap(section: str, uri: str) -> int | None:
    m = re.search(rf"a=extmap:(\d+)(?:/\w+)? {re.escape(uri)}\s", section + "\n")
    return int(m.group(1)) if m and int(m.group(1)) <= 14 else None


def _sdes(ssrc: int, cname: str) -> bytes:
    c = cname.encode()[:255]
    chunk = struct.pack("!I", ssrc) + bytes((1, len(c))) + c + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return bytes((0x81, 202)) + struct.pack("!H", len(chunk) // 4) + chunk


def _silence(sender: Any) -> None:
    sender._send_rtcp = lg._no_rtcp
    task = getattr(sender, "_RTCRtpSender__rtcp_task", None)
    if task is not None:
        task.cancel()


# -- the caller ---------------------------------------------------------------------------------

class _VideoTick:
    """What the video wheel (a ``loadgen.Sender`` at 30 fps) calls."""

    def __init__(self, call: VideoCall) -> None:
        self.call = call
        self.slot: int | None = None

    def send_frame(self) -> None:
        self.call.send_video_frame()


class VideoCall(lg.Call):
    """A loadgen caller (audio as loadgen sends it) with a VP8 video stream replayed from the clip."""

    def __init__(self, gen: WatchGen, k: int) -> None:
        super().__init__(gen, k)   # type: ignore[arg-type]
        self.wgen = gen
        self.video = gen.video
        self.rec["session_id"] = str(self.bench_id)
        self.v_tx = self.v_tx_window = self.v_tx_bytes = 0
        self.plis_rx = self.nacks_rx = self.rembs_rx = 0
        self._vtick = _VideoTick(self)
        self._vrtcp: asyncio.TimerHandle | None = None
        self._answer_sdp = ""
        self.watcher: Watcher | None = None

    def _new_pc(self) -> RTCPeerConnection:
        pc = super()._new_pc()
        if self.video:
            tr = pc.addTransceiver(NoFramesVideo(), direction="sendrecv")
            tr.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                    if c.mimeType.lower() == "video/vp8"])
        return pc

    async def _apply_answer(self, sdp: str) -> None:
        self._answer_sdp = sdp
        await super()._apply_answer(sdp)

    def take_over(self, pt: int, shape: lg.AnswerShape, browser_rtcp: bool = True) -> None:
        super().take_over(pt, shape, browser_rtcp)
        if not self.video:
            return
        vsec = _section(self._answer_sdp, "video")
        m = re.search(r"a=rtpmap:(\d+) VP8/90000", vsec, re.IGNORECASE)
        if not m or "a=inactive" in vsec:
            self.rec["video_error"] = "no VP8 in the answer"
            return
        tr = next(t for t in self.pc.getTransceivers() if t.kind == "video")  # type: ignore[union-attr]
        _silence(tr.sender)
        self._vpt = int(m.group(1))
        self._vssrc = tr.sender._ssrc
        self._vseq = random.randint(0, 0xFFFF)
        self._vts = random.randint(0, 0xFFFFFFFF)
        self._vpic = random.randint(0, 0x7FFF)
        self._vi = 0
        self._key_due = False
        self._vmid_id = _extmap(vsec, URI_MID)
        self._vmid = (getattr(tr, "mid", None) or "1").encode()
        self._send_vmid = self._vmid_id is not None
        self._vast_id = _extmap(vsec, URI_AST)
        self._vsdes = _sdes(self._vssrc, self._cname)
        loop = asyncio.get_running_loop()
        self._vrtcp = loop.call_later(VIDEO_RTCP_S / 2 * random.uniform(0.5, 1.5), self._vrtcp_due)
        self.wgen.vsender.add(self._vtick)   # type: ignore[arg-type]
        loop.call_later(self.wgen.args.watch_delay, self.wgen.start_watcher, self)

    def stop_media(self) -> None:
        super().stop_media()
        self.wgen.vsender.remove(self._vtick)   # type: ignore[arg-type]
        if self._vrtcp is not None:
            self._vrtcp.cancel()
            self._vrtcp = None

    def send_video_frame(self) -> None:
        frames = self.wgen.frames
        if self._key_due:
            self._vi, self._key_due = 0, False
        payloads = frames[self._vi]
        self._vi = (self._vi + 1) % len(frames)
        pic = struct.pack("!H", 0x8000 | self._vpic)
        self._vpic = (self._vpic + 1) & 0x7FFF
        ext = b""
        if self._vast_id is not None:
            v = int(mono() * 262144) & 0xFFFFFF
            ext += bytes(((self._vast_id << 4) | 2, v >> 16, (v >> 8) & 0xFF, v & 0xFF))
        if self._send_vmid:
            ext += bytes(((self._vmid_id << 4) | (len(self._vmid) - 1),)) + self._vmid   # type: ignore[operator]
        if ext:
            ext += b"\0" * (-len(ext) % 4)
            ext = lg._EXT_HDR.pack(0xBEDE, len(ext) // 4) + ext
        b0 = 0x90 if ext else 0x80
        last = len(payloads) - 1
        w = self.wgen.window
        counting = w is not None and w[0] <= mono() < w[1]
        for j, p in enumerate(payloads):
            pkt = (_RTP_HDR.pack(b0, self._vpt | (0x80 if j == last else 0), self._vseq, self._vts, self._vssrc)
                   + ext + p[:2] + pic + p[4:])
            self._vseq = (self._vseq + 1) & 0xFFFF
            try:
                self._sendto(self._protect(pkt), self._addr)
            except Exception:  # noqa: BLE001 - socket closed under us: the call is ending
                return
            self.v_tx += 1
            self.v_tx_bytes += len(p)
            if counting:
                self.v_tx_window += 1
        self._vts = (self._vts + VIDEO_CLOCK // FPS) & 0xFFFFFFFF

    def _vrtcp_due(self) -> None:
        self._vrtcp = asyncio.get_running_loop().call_later(VIDEO_RTCP_S * random.uniform(0.5, 1.5), self._vrtcp_due)
        now = time.time() + 2208988800
        s = int(now)
        sr = (bytes((0x80, 200)) + struct.pack("!H", 6)
              + struct.pack("!IIIIII", self._vssrc, s & 0xFFFFFFFF, int((now - s) * 4294967296) & 0xFFFFFFFF,
                            self._vts, self.v_tx & 0xFFFFFFFF, self.v_tx_bytes & 0xFFFFFFFF))
        self._send_rtcp(sr + self._vsdes)

    def _on_rtcp(self, data: bytes, t: float) -> None:
        try:
            p = self._unprotect_rtcp(data)
        except Exception:  # noqa: BLE001 - pylibsrtp.Error
            self.srtp_errors += 1
            return
        vssrc = getattr(self, "_vssrc", None)
        pos = 0
        while pos + 8 <= len(p):
            rc, pt = p[pos] & 0x1F, p[pos + 1]
            end = pos + 4 * (struct.unpack_from("!H", p, pos + 2)[0] + 1)
            blocks = -1
            if pt == 200 and pos + 28 <= len(p):
                self._lsr = struct.unpack_from("!I", p, pos + 10)[0]
                self._lsr_at = t
                blocks = pos + 28
            elif pt == 201:
                blocks = pos + 8
            elif pt == 206 and rc in (1, 4):   # PLI / FIR: the next frame is a keyframe
                self.plis_rx += 1
                self._key_due = True
            elif pt == 206 and rc == 15:
                self.rembs_rx += 1
            elif pt == 205 and rc == 1:
                self.nacks_rx += 1
            for b in range(rc if blocks >= 0 else 0):
                if blocks + 24 * b + 4 <= len(p):
                    about = struct.unpack_from("!I", p, blocks + 24 * b)[0]
                    if about == self._ssrc:
                        self._send_mid = False
                    elif about == vssrc:
                        self._send_vmid = False
            pos = end

    async def _media(self, pt: int, shape: lg.AnswerShape) -> None:
        """As loadgen's, but held until the phase ends (not for a fixed time)."""
        args = self.gen.args
        t_up = await asyncio.wait_for(asyncio.shield(self._connected), args.timeout)
        self.rec["t_media_up"] = t_up
        self._rx_pt = pt
        self.rec["answer_shape"] = shape.summary()
        self.take_over(pt, shape, browser_rtcp=True)
        self.an.jitter_max_after = self.an.win_start = t_up + args.warmup
        self.gen.sender.add(self)
        self.wgen.up += 1
        stop = asyncio.ensure_future(self.wgen.stop.wait())
        try:
            await asyncio.wait([stop, asyncio.shield(self.ended)], return_when=asyncio.FIRST_COMPLETED)
            if self.ended.done():
                self.rec["error"] = f"ended early: {self.ended.result()}"
        finally:
            stop.cancel()
        self.t_stop = mono()
        self.an.win_end = self.t_stop
        self.gen.sender.remove(self)
        self.stop_media()

    def record(self) -> dict[str, Any]:
        r = super().record()
        r.update(video=self.video, v_tx=self.v_tx, v_tx_window=self.v_tx_window, plis_rx=self.plis_rx,
                 nacks_rx=self.nacks_rx, rembs_rx=self.rembs_rx)
        if self.watcher is not None:
            r["watcher"] = self.watcher.record()
        return r


# -- the watcher ----------------------------------------------------------------------------------

class Watcher:
    """A ``watch`` of one call: recvonly video, RTP counted off the socket, never decoded."""

    def __init__(self, gen: WatchGen, call: VideoCall) -> None:
        self.gen = gen
        self.call = call
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.rec: dict[str, Any] = {"ok": False, "error": None, "t_watch": None, "t_watching": None,
                                    "t_answer": None, "t_connected": None, "t_first_key": None}
        self.rx = self.rx_window = self.srtp_errors = self.rtcp_tx = 0
        self.base: int | None = None    # first extended sequence number
        self.max_ext: int | None = None
        self.mssrc: int | None = None
        self._key: tuple[int, int] | None = None   # (timestamp, first seq) of a keyframe being collected
        self._key_seqs: set[int] = set()
        self._key_end: int | None = None
        self._unprotect: Any = None
        self._dtls: Any = None
        self._rr_prev = (0, 0)
        self._lsr, self._lsr_at = 0, 0.0
        self._rtcp: asyncio.TimerHandle | None = None
        self.closed = asyncio.Event()

    def _hook(self) -> None:
        tr = self.pc.getTransceivers()[0]
        self._dtls = tr.receiver.transport
        for proto in self._dtls.transport._connection._protocols:
            orig = proto.datagram_received

            def hook(data: bytes, addr: Any, _orig: Any = orig) -> None:
                if 127 < data[0] < 192 and not 191 < data[1] < 224:
                    self._on_rtp(data)
                elif 127 < data[0] < 192:
                    self._on_rtcp(data)
                else:
                    _orig(data, addr)

            proto.datagram_received = hook

    def _on_rtp(self, data: bytes) -> None:
        t = mono()
        if self._unprotect is None:
            rx = getattr(self._dtls, "_rx_srtp", None)
            if rx is None:
                return
            self._unprotect = rx.unprotect
        try:
            p = self._unprotect(data)
        except Exception:  # noqa: BLE001 - pylibsrtp.Error
            self.srtp_errors += 1
            return
        seq, ts, ssrc = struct.unpack_from("!HII", p, 2)
        self.rx += 1
        w = self.gen.window
        if w is not None and w[0] <= t < w[1]:
            self.rx_window += 1
        if self.max_ext is None:
            self.base = self.max_ext = seq
            self.mssrc = ssrc
        else:
            d = (seq - (self.max_ext & 0xFFFF)) & 0xFFFF
            if d < 0x8000:
                self.max_ext += d
        if self.rec["t_first_key"] is not None:
            return
        off = 12 + 4 * (p[0] & 0x0F)
        if p[0] & 0x10:
            off += 4 + 4 * struct.unpack_from("!H", p, off + 2)[0]
        end = len(p) - (p[-1] if p[0] & 0x20 else 0)
        payload = p[off:end]
        if is_vp8_key_start(payload):
            self._key, self._key_seqs, self._key_end = (ts, seq), set(), None
        if self._key is None or ts != self._key[0]:
            return
        self._key_seqs.add(seq)
        if p[1] & 0x80:
            self._key_end = seq
        if self._key_end is not None:
            n = ((self._key_end - self._key[1]) & 0xFFFF) + 1
            if len(self._key_seqs) >= n:
                self.rec["t_first_key"] = t

    def _on_rtcp(self, data: bytes) -> None:
        rx = getattr(self._dtls, "_rx_srtp", None)
        if rx is None:
            return
        try:
            p = rx.unprotect_rtcp(data)
        except Exception:  # noqa: BLE001
            return
        if len(p) >= 28 and p[1] == 200:
            self._lsr, self._lsr_at = struct.unpack_from("!I", p, 10)[0], mono()

    def _rtcp_due(self) -> None:
        """RR on the received stream + REMB, as Chromium's video receiver (about every second)."""
        self._rtcp = asyncio.get_running_loop().call_later(VIDEO_RTCP_S * random.uniform(0.5, 1.5), self._rtcp_due)
        if self.mssrc is None or self.base is None or self.max_ext is None:
            return
        expected = self.max_ext - self.base + 1
        e0, r0 = self._rr_prev
        de, dr = expected - e0, self.rx - r0
        self._rr_prev = (expected, self.rx)
        frac = max(0, min(255, (256 * (de - dr)) // de)) if de > 0 else 0
        dlsr = int((mono() - self._lsr_at) * 65536) & 0xFFFFFFFF if self._lsr else 0
        rr = (bytes((0x81, 201)) + struct.pack("!HI", 7, self._ssrc)
              + struct.pack("!IIIIII", self.mssrc, (frac << 24) | min(max(0, expected - self.rx), 0x7FFFFF),
                            self.max_ext & 0xFFFFFFFF, 0, self._lsr, dlsr))
        exp, mant = 0, 2_500_000
        while mant >= 1 << 18:
            mant >>= 1
            exp += 1
        remb = (bytes((0x8F, 206)) + struct.pack("!HII", 5, self._ssrc, 0) + b"REMB"
                + bytes((1, (exp << 2) | (mant >> 16), (mant >> 8) & 0xFF, mant & 0xFF)) + struct.pack("!I", self.mssrc))
        try:
            self._sendto(self._protect_rtcp(rr + remb + self._sdes), self._addr)
            self.rtcp_tx += 1
        except Exception:  # noqa: BLE001, S110 - the watch is ending
            pass

    async def run(self) -> None:
        args = self.gen.args
        ws = None
        try:
            self.pc.addTransceiver("video", direction="recvonly")
            connected = asyncio.get_running_loop().create_future()

            @self.pc.on("connectionstatechange")
            def _state() -> None:
                if self.pc.connectionState == "connected" and not connected.done():
                    connected.set_result(mono())
                elif self.pc.connectionState in ("failed", "closed") and not connected.done():
                    connected.set_exception(RuntimeError(f"watcher connection {self.pc.connectionState}"))

            await self.pc.setLocalDescription(await self.pc.createOffer())
            self._hook()   # before any media can arrive: aiortc never sees (nor decodes) the video
            ws = await asyncio.wait_for(self.gen.wsc.connect(args.url, max_size=None, ping_interval=None,
                                                             compression=None), args.timeout)
            self.rec["t_watch"] = mono()
            await ws.send(json.dumps({"type": "watch", "session_id": str(self.call.bench_id),
                                      "sdp": self.pc.localDescription.sdp, "token": self.gen.token}))
            answer = None
            while answer is None:
                m = json.loads(await asyncio.wait_for(ws.recv(), args.timeout))
                if m.get("type") == "watching":
                    self.rec["t_watching"] = mono()
                    self.rec["video"] = m.get("video")
                elif m.get("type") == "answer":
                    self.rec["t_answer"] = mono()
                    answer = m["sdp"]
                elif m.get("type") in ("error", "ended"):
                    raise RuntimeError(f"{m.get('type')} {m.get('code') or m.get('cause')}")
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            self.rec["t_connected"] = await asyncio.wait_for(connected, args.timeout)
            tr = self.pc.getTransceivers()[0]
            pair = self._dtls.transport._connection._nominated[1]
            self._sendto, self._addr = pair.protocol.transport.sendto, pair.remote_addr
            self._protect_rtcp = self._dtls._tx_srtp.protect_rtcp
            self._ssrc = tr.sender._ssrc
            self._sdes = _sdes(self._ssrc, f"watch{self.call.bench_id}")
            self._rtcp = asyncio.get_running_loop().call_later(VIDEO_RTCP_S / 2, self._rtcp_due)
            stop = asyncio.ensure_future(self.gen.stop.wait())
            recv = asyncio.ensure_future(ws.recv())
            while not stop.done():
                await asyncio.wait([stop, recv], return_when=asyncio.FIRST_COMPLETED)
                if recv.done():
                    m = json.loads(recv.result())
                    if m.get("type") == "ended":
                        self.rec["error"] = f"ended early: {m.get('cause')}"
                        stop.cancel()
                        break
                    recv = asyncio.ensure_future(ws.recv())
            recv.cancel()
            if self.rec["error"] is None:
                self.rec["ok"] = True
        except Exception as e:  # noqa: BLE001 - a failed watch is a record, never a crash
            self.rec["error"] = self.rec["error"] or f"{type(e).__name__}: {e}"
        finally:
            if self._rtcp is not None:
                self._rtcp.cancel()
            if ws is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(ws.close(), 2)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.pc.close(), 5)
            self.closed.set()

    def record(self) -> dict[str, Any]:
        r = dict(self.rec)
        exp = (self.max_ext - self.base + 1) if self.base is not None and self.max_ext is not None else 0
        r.update(rx=self.rx, rx_window=self.rx_window, expected=exp, seq_lost=max(0, exp - self.rx),
                 srtp_errors=self.srtp_errors, rtcp_tx=self.rtcp_tx,
                 watch_to_first_key_ms=(round(1000 * (r["t_first_key"] - r["t_watch"]), 2)
                                        if r["t_first_key"] and r["t_watch"] else None))
        return r


# -- one phase ----------------------------------------------------------------------------------

class WatchGen:
    """N calls of one phase (audio only, or video with a watcher each), held until ``stop``."""

    def __init__(self, args: argparse.Namespace, video: bool, frames: list[list[bytes]], token: str) -> None:
        import websockets.asyncio.client as wsc

        self.args = args
        self.video = video
        self.frames = frames
        self.token = token
        self.wsc = wsc
        self.sender = lg.Sender(slot=args.slot_ms / 1000)
        self.vsender = lg.Sender(period=1 / FPS, slot=args.slot_ms / 1000)
        self.stop = asyncio.Event()
        self.window: tuple[float, float] | None = None
        self.up = 0
        self.calls: list[VideoCall] = []
        self.watchers: list[Watcher] = []
        self.tasks: list[asyncio.Future[Any]] = []

    def write(self, rec: dict[str, Any]) -> None:
        """loadgen.Call's record hook: the records are taken at the end of the phase instead."""

    def start_watcher(self, call: VideoCall) -> None:
        if self.stop.is_set() or call.ended.done():
            return
        w = Watcher(self, call)
        call.watcher = w
        self.watchers.append(w)
        self.tasks.append(asyncio.ensure_future(w.run()))

    async def _one(self, k: int, at: float) -> None:
        await asyncio.sleep(max(0.0, at - mono()))
        c = VideoCall(self, k)
        self.calls.append(c)
        await c.run()

    async def run(self, gateway_pid: int) -> dict[str, Any]:
        a = self.args
        n = a.calls
        t0 = mono()
        calls = [asyncio.ensure_future(self._one(k, t0 + k / a.rate)) for k in range(n)]
        # every call up, and (video) every watcher with its first keyframe, or the set-up time-out
        deadline = t0 + n / a.rate + a.timeout + (a.watch_delay + a.timeout if self.video else 0)
        while mono() < deadline:
            ready = self.up >= n and (not self.video or sum(1 for w in self.watchers if w.rec["t_first_key"]) >= n)
            if ready or all(c.done() for c in calls):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(a.settle)
        cpu0, c0, w0 = proc_cpu_s(gateway_pid), os.times(), mono()
        self.window = (w0, w0 + a.window)
        await asyncio.sleep(a.window)
        cpu1, c1, w1 = proc_cpu_s(gateway_pid), os.times(), mono()
        up_at_end = self.up
        self.stop.set()
        await asyncio.wait(calls + self.tasks, timeout=30)
        recs = [c.record() for c in self.calls]
        return {"cpu_s": cpu1 - cpu0, "wall_s": w1 - w0, "calls_up": up_at_end,
                "callers_cpu_pct": 100 * ((c1.user + c1.system) - (c0.user + c0.system)) / (w1 - w0),
                "records": recs}


def summarize(n: int, idle: float | None, audio: dict[str, Any], watched: dict[str, Any],
              frames: list[list[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    def pct(ph: dict[str, Any]) -> float:
        return 100 * ph["cpu_s"] / ph["wall_s"]

    a_pct, v_pct = pct(audio), pct(watched)
    recs = watched["records"]
    ws = [r["watcher"] for r in recs if r.get("watcher")]
    sent = sum(r["v_tx_window"] for r in recs)
    got = sum(w["rx_window"] for w in ws)
    exp = sum(w["expected"] for w in ws)
    lost = sum(w["seq_lost"] for w in ws)
    first = [w["watch_to_first_key_ms"] for w in ws if w.get("watch_to_first_key_ms") is not None]
    nbytes = sum(len(p) for f in frames for p in f)
    ok_a = sum(1 for r in audio["records"] if r.get("ok"))
    ok_v = sum(1 for r in recs if r.get("ok"))

    def p(v: float | None, d: int = 2) -> float | None:
        return None if v is None else round(v, d)

    return {
        "calls": n, "window_s": round(args.window, 1), "dest": args.dest,
        "video": {"codec": "VP8", "size": f"{args.width}x{args.height}", "fps": FPS,
                  "bitrate_kbps": round(8 * nbytes / (len(frames) / FPS) / 1000, 1),
                  "packets_per_s": round(sum(len(f) for f in frames) / (len(frames) / FPS), 1),
                  "clip_s": round(len(frames) / FPS, 2)},
        "gateway_cpu_pct": {
            "idle": p(idle), "audio_only": p(a_pct), "watched": p(v_pct),
            "per_audio_call": p(a_pct / n, 3), "per_watched_call": p(v_pct / n, 3),
            "video_forward_per_call": p((v_pct - a_pct) / n, 3),
        },
        "forwarded_loss": {
            "sent_in_window": sent, "received_in_window": got,
            "loss_pct": p(100 * (sent - got) / sent, 3) if sent else None,
            "watcher_seq_expected": exp, "watcher_seq_lost": lost,
            "seq_loss_pct": p(100 * lost / exp, 3) if exp else None,
        },
        "watch_to_first_frame_ms": {"n": len(first), "p50": p(percentile(first, 50), 1),
                                    "p99": p(percentile(first, 99), 1),
                                    "max": p(max(first), 1) if first else None,
                                    # where the time goes (p50 of each part): watch -> answer, answer ->
                                    # DTLS connected, connected -> first complete keyframe
                                    "parts_p50": {k: p(percentile([1000 * (w[b] - w[a]) for w in ws if w.get(a) and w.get(b)], 50), 1)
                                                  for k, a, b in (("answer", "t_watch", "t_answer"),
                                                                  ("connected", "t_answer", "t_connected"),
                                                                  ("keyframe", "t_connected", "t_first_key"))}},
        "ok": {"audio_calls": ok_a, "watched_calls": ok_v, "watchers": sum(1 for w in ws if w.get("ok"))},
        "callers_cpu_pct": {"audio_only": p(audio["callers_cpu_pct"], 1), "watched": p(watched["callers_cpu_pct"], 1)},
        # the callers and watchers are one process: past 90 % of a core it, not the gateway, limits the step
        "load_limited": max(audio["callers_cpu_pct"], watched["callers_cpu_pct"]) > 90,
        "caller_plis_rx": sum(r["plis_rx"] for r in recs), "caller_rembs_rx": sum(r["rembs_rx"] for r in recs),
        "caller_nacks_rx": sum(r["nacks_rx"] for r in recs),
        "echo_audio_loss_mean": {
            "audio_only": p(_mean([r["loss"] for r in audio["records"] if r.get("ok") and r.get("loss") is not None]), 5),
            "watched": p(_mean([r["loss"] for r in recs if r.get("ok") and r.get("loss") is not None]), 5)},
        "errors": sorted({str(r.get("error"))[:80] for r in audio["records"] + recs if r.get("error")}
                         | {str(w.get("error"))[:80] for w in ws if w.get("error")})[:5],
    }


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


async def amain(args: argparse.Namespace) -> int:
    from webgate.security.tokens import mint_token

    t = mono()
    frames = encode_clip(args.clip_s, args.width, args.height, args.bitrate)
    sys.stderr.write(f"watch_load: clip encoded ({len(frames)} frames) in {mono() - t:.1f} s\n")
    token = mint_token(args.key, sub="bench-agent", watch="*", ttl_s=24 * 3600)
    idle = None
    if args.idle_window > 0:
        c0, t0 = proc_cpu_s(args.gateway_pid), mono()
        await asyncio.sleep(args.idle_window)
        idle = 100 * (proc_cpu_s(args.gateway_pid) - c0) / (mono() - t0)
    audio = await WatchGen(args, False, frames, token).run(args.gateway_pid)
    await asyncio.sleep(args.settle)   # the audio calls' teardown, off the next window
    watched = await WatchGen(args, True, frames, token).run(args.gateway_pid)
    out = summarize(args.calls, idle, audio, watched, frames, args)
    if args.out:
        with open(args.out, "a") as f:
            for phase, ph in (("audio", audio), ("watched", watched)):
                for r in ph["records"]:
                    f.write(json.dumps({"phase": phase, **r}) + "\n")
            f.write(json.dumps({"summary": True, **out}) + "\n")
    print(json.dumps(out), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:18080/ws")
    p.add_argument("--dest", default="echo")
    p.add_argument("--calls", type=int, default=2)
    p.add_argument("--gateway-pid", type=int, required=True, help="the gateway process whose CPU is measured")
    p.add_argument("--key", default=os.environ.get("WEBGATE_TOKEN_KEY", ""),
                   help="the gateway's [tokens] key (watch tokens are minted with it); default $WEBGATE_TOKEN_KEY")
    p.add_argument("--rate", type=float, default=10.0, help="calls started per second")
    p.add_argument("--window", type=float, default=10.0, help="seconds measured with every call (and watcher) up")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between all up and the window")
    p.add_argument("--idle-window", type=float, default=0.0, help="measure the gateway idle first (s; 0: skip)")
    p.add_argument("--watch-delay", type=float, default=1.0, help="a watcher joins this long after its call's media is up")
    p.add_argument("--bitrate", type=int, default=1_000_000)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--clip-s", type=float, default=4.0, help="seconds of video encoded once and replayed")
    p.add_argument("--slot-ms", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--ice-host", default="127.0.0.1")
    p.add_argument("--out", default="")
    a = p.parse_args()
    if len(a.key.encode()) < 32:
        p.error("--key (or $WEBGATE_TOKEN_KEY): the gateway's [tokens] key, at least 32 bytes")
    # loadgen.Call reads these
    a.codec, a.target, a.plain_rtp, a.sync, a.hold = "pcmu", "webgate", False, False, 0.0
    lg._set_ice_host(a.ice_host)
    return asyncio.run(amain(a))


if __name__ == "__main__":
    sys.exit(main())

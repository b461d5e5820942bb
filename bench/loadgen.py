"""Lean WebRTC callers for the benchmark: N calls in one asyncio process.

    python bench/loadgen.py --target webgate --url ws://127.0.0.1:18080/ws --dest bench \\
        --calls N --rate R --hold S --codec pcmu|opus --out FILE.jsonl [--start-at MONOTONIC] [--warmup 2]
    python bench/loadgen.py --target janus --url ws://127.0.0.1:18188/ --uri sip:bench@127.0.0.1:25060 ...

aiortc only negotiates (offer, ICE, DTLS-SRTP).  Once DTLS is connected the media is taken over
at the packet level: a timer wheel (``Sender``) sends every call's RTP (SRTP-protected with
aiortc's own tx session) straight on the nominated ICE socket, and received SRTP is intercepted on
that socket before aioice/aiortc see it (unprotected with aiortc's rx session and fed to
``bench.audiosig.Analyzer``).  STUN (consent freshness) and DTLS still go to aioice/aiortc.

Load shape (issue 18): by default each call sends on its own phase, uniform over the 20 ms period
(1 ms slots); ``--sync`` sends every call's frame in the same instant.  The callers behave as
Chromium does for the answer they got (``AnswerShape``): the offer carries Chromium's audio extmaps
(``chromium_offer``), RTP carries the header extensions the answer negotiated, RTCP is Chromium's
(SR + SDES and RR + SDES, each about every 5 s, SRTCP; transport-cc feedback when negotiated) and
aiortc's own RTCP is silenced.  ``--plain-rtp`` turns the shaping off (the bench before issue 18).

aiortc 1.16 / aioice private internals used (re-check them on an upgrade):
- ``RTCRtpSender._ssrc``: the SSRC announced in the offer's a=ssrc; we send with it.
- ``RTCRtpSender.transport`` -> ``RTCDtlsTransport``; its ``_tx_srtp`` / ``_rx_srtp``
  (``pylibsrtp.Session``), created in ``_setup_srtp()`` before the DTLS state becomes
  "connected".  aiortc still uses them for its own RTCP (same thread, no concurrency).
- ``RTCDtlsTransport.transport`` (``RTCIceTransport``) ``._connection`` (``aioice.Connection``):
  ``._nominated[1]`` (``CandidatePair``: ``.protocol`` = ``StunProtocol``, ``.remote_addr``)
  and ``._protocols`` (every local socket's ``StunProtocol``).
- ``StunProtocol.transport`` (the asyncio ``DatagramTransport``; we call ``sendto``) and
  ``StunProtocol.datagram_received``, which we shadow with an instance attribute (asyncio calls
  ``protocol.datagram_received`` by attribute lookup): bytes 128..191 are ours, the rest goes
  to the original method.
- ``aioice.ice.get_host_addresses`` is replaced so ICE gathers on 127.0.0.1 only (``--ice-host``):
  no STUN servers, no other interfaces, one candidate pair per call.
The sender is given a track whose ``recv()`` never returns, so aiortc never sends RTP itself
(without a track, aiortc's ``_run_rtp`` polls every 20 ms per call).

The WebSocket client is the ``websockets`` package (``websockets.asyncio.client``).

Output (JSON Lines, appended to --out): one record per call when it ends, then one summary line.
Per call: bench_id target codec ok error; times (time.monotonic()): t_request (call message
sent), t_accepted (webgate ``accepted`` / Janus ``calling``), t_answered (webgate progress
``answered`` / Janus ``accepted``), t_media_up (DTLS connected), t_first_audio (first RTP
received), t_end; tx_packets rx_packets; seconds (media up -> stop); the steady window is
[t_media_up + warmup, stop): expected_frames (its length / 20 ms), rx_frames (packets that
arrived in it), silent_frames (< -45 dBFS), loss = (expected - rx + silent) / expected (>= 0);
rx_seq_lost (RFC 3550, whole call); jitter_ms (RFC 3550 at the end), jitter_max_ms (max after
warm-up); latency_ms (one-way = RTT/2 per mark seen in the window, minus our own codec delay
codec_delay_ms); marks_sent, marks_sent_window, marks_seen (in the window), marks_seen_total;
tx_late_max_ms (the sender's worst lateness so far); srtp_errors rtcp_rx decode_errors; rtcp_tx
twcc_tx (RTCP compound packets / transport-cc feedback sent); send_slot (the call's phase, ms);
rtp_header_bytes (RTP header + extensions per packet); answer_shape (extmaps, rtcp-fb of the answer).
Janus extras: t_ready (session registered), t_janus_ack, t_webrtcup.
Summary: {"summary": true, calls, ok, worker_cpu_s (os.times user+system), wall_s,
tx_late_max_ms, tx_ticks (wake-ups), tx_ticks_late_5ms, tx_ticks_late_10ms, tx_frames, load_shape,
slot_ms, plain_rtp, maxrss_mb, cpu_trace:
[[t, own cpu s, calls sending, cpu s of each --watch-pid], ...] once a second}.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/loadgen.py` puts bench/ first on sys.path; import the benchmark modules as bench.*
# from the repository root instead, so one copy of each is loaded.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import re
import resource
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from bench import audiosig as sig

mono = time.monotonic
_RTP_HDR = struct.Struct("!BBHII")
_SEQ_TS = struct.Struct("!HI")
_EXT_HDR = struct.Struct("!HH")
_RB = struct.Struct("!IIIIII")
RTCP_INTERVAL_S = 5.0     # Chromium's audio RTCP report interval (randomised x 0.5..1.5)
TWCC_INTERVAL_S = 0.1     # Chromium's transport-cc feedback period (audio rates)
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"


async def _no_rtcp(*_a: Any, **_k: Any) -> None:
    return None


@dataclass
class AnswerShape:
    """What the gateway's answer negotiated for the audio stream, and so what Chromium sends:
    the header extensions it has extmaps for (audio level on every packet, abs-send-time and the
    transport-wide sequence number when negotiated, the MID until the remote's RTCP acknowledges
    the stream) and transport-cc feedback when the answer has ``a=rtcp-fb:PT transport-cc``.
    Chromium never offers goog-remb on an audio codec, so an audio-only call carries no REMB."""

    mid: int | None = None
    audio_level: int | None = None
    abs_send_time: int | None = None
    twcc_seq: int | None = None
    twcc_feedback: bool = False
    remb: bool = False
    fb: list[str] = field(default_factory=list)
    extmaps: list[str] = field(default_factory=list)

    @property
    def ext_any(self) -> bool:
        return any(x is not None for x in (self.mid, self.audio_level, self.abs_send_time, self.twcc_seq))

    @classmethod
    def parse(cls, sdp: str, pt: int, plain: bool = False) -> AnswerShape:
        sh = cls()
        audio = sdp.split("m=audio", 1)[1].split("\nm=", 1)[0] if "m=audio" in sdp else ""
        for m in re.finditer(r"a=extmap:(\d+)(?:/\w+)? (\S+)", audio):
            eid, uri = int(m.group(1)), m.group(2)
            sh.extmaps.append(f"{eid} {uri}")
            if eid > 14:
                continue   # two-byte form: never offered by us
            if uri == URI_MID:
                sh.mid = eid
            elif uri == URI_AUDIO_LEVEL:
                sh.audio_level = eid
            elif uri == URI_ABS_SEND_TIME:
                sh.abs_send_time = eid
            elif uri == URI_TWCC:
                sh.twcc_seq = eid
        for m in re.finditer(r"a=rtcp-fb:(\S+) ([^\r\n]+)", audio):
            if m.group(1) in (str(pt), "*"):
                sh.fb.append(m.group(2).strip())
        sh.twcc_feedback = sh.twcc_seq is not None and "transport-cc" in sh.fb
        sh.remb = "goog-remb" in sh.fb
        if plain:   # --plain-rtp: no header extension at all (the bench before issue 18)
            sh.mid = sh.audio_level = sh.abs_send_time = sh.twcc_seq = None
            sh.twcc_feedback = False
        return sh

    def summary(self) -> dict[str, Any]:
        return {"extmaps": self.extmaps, "fb": self.fb, "twcc_feedback": self.twcc_feedback, "remb": self.remb}


def _ext_static(sh: AnswerShape) -> tuple[bytes, bytes]:
    """The audio-level element for a tone frame and for a mark frame (-dBov, voice bit set)."""
    if sh.audio_level is None:
        return (b"", b"")
    return (bytes(((sh.audio_level << 4), 0x80 | 23)), bytes(((sh.audio_level << 4), 0x80 | 6)))


def chromium_offer(sdp: str, codec: str) -> str:
    """aiortc's offer made to look like Chromium's in what a gateway answers to: Chromium also
    offers abs-send-time and transport-wide-cc-01 extmaps for audio, and ``transport-cc`` feedback
    on Opus (none on G.711).  aiortc ignores what it does not support in the answer."""
    head, sep, rest = sdp.partition("m=audio")
    if not sep:
        return sdp
    audio, nxt, tail = rest.partition("\r\nm=")
    used = {int(x) for x in re.findall(r"a=extmap:(\d+)", audio)}
    free = [i for i in range(1, 15) if i not in used]
    lines = audio.split("\r\n")
    add = []
    for uri in (URI_ABS_SEND_TIME, URI_TWCC):
        if uri not in audio and free:
            add.append(f"a=extmap:{free.pop(0)} {uri}")
    if codec == "opus":
        m = re.search(r"a=rtpmap:(\d+) opus/48000", audio, re.IGNORECASE)
        if m and f"a=rtcp-fb:{m.group(1)} transport-cc" not in audio:
            add.append(f"a=rtcp-fb:{m.group(1)} transport-cc")
    at = max((i for i, ln in enumerate(lines) if ln.startswith(("a=extmap:", "a=rtpmap:", "a=mid:"))), default=len(lines) - 1)
    lines[at + 1 : at + 1] = add
    return head + sep + "\r\n".join(lines) + nxt + tail


class SilentTrack(MediaStreamTrack):
    """An audio track whose recv() never returns: aiortc's sender waits forever, sends nothing."""

    kind = "audio"

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()


def _set_ice_host(host: str) -> None:
    """'auto': aioice's default (every interface address but 127.0.0.1 / ::1, v4 and v6);
    'ipv4': the same, IPv4 only; else a comma list of addresses to gather on."""
    if host == "auto":
        return
    orig = aioice.ice.get_host_addresses
    if host == "ipv4":
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: orig(use_ipv4=True, use_ipv6=False)  # type: ignore[assignment]
        return
    hosts = [h for h in host.split(",") if h]
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(hosts)  # type: ignore[assignment]


class Sender:
    """Sends every call's 20 ms frames from one timer wheel.

    Spread (the default): each call gets a send phase drawn uniformly over the 20 ms period, in
    ``slot`` steps (1 ms: asyncio's epoll wait has a 1 ms resolution, so finer phases would
    merge anyway); the wheel wakes once per occupied slot and sends the calls of that slot, so
    the gateway sees packets arriving all through the period, as from independent browsers
    (whose capture clocks have unrelated phases).  Synchronised (``sync=True``, ``--sync``):
    every call has phase 0, one wake-up every 20 ms sends every call's frame at once (the
    bench's behaviour before issue 18: the worst case for latency, the best for a gateway that
    amortises its wake-ups).

    The schedule is absolute (slot k is due at t0 + k x slot, never drifts); a late wake-up sends
    the frames of every slot it passed (so a call sends its missed frames, at most 5 periods'
    worth); more than 200 ms behind, the wheel resynchronises.
    """

    def __init__(self, period: float = 0.02, slot: float = 0.001, sync: bool = False) -> None:
        self.period = period
        self.sync = sync
        self.nslots = 1 if sync else max(1, round(period / slot))
        self.slot = period / self.nslots
        self.slots: list[list[Call]] = [[] for _ in range(self.nslots)]
        self.n = 0              # calls sending
        self.late_max = 0.0
        self.late_5ms = 0       # wake-ups more than 5 ms / 10 ms late
        self.late_10ms = 0
        self.ticks = 0          # wake-ups that sent something
        self.frames = 0
        self._t0 = 0.0
        self._k = 0             # the next slot index (absolute) to send
        self._handle: asyncio.TimerHandle | None = None

    @property
    def calls(self) -> list[Call]:
        return [c for s in self.slots for c in s]

    def add(self, call: Call) -> None:
        s = 0 if self.sync else random.randrange(self.nslots)
        call.slot = s
        self.slots[s].append(call)
        self.n += 1
        if self._handle is None:
            self._t0 = mono()
            self._k = 0
            self._arm()

    def remove(self, call: Call) -> None:
        s = getattr(call, "slot", None)
        if s is None:
            return
        try:
            self.slots[s].remove(call)
            self.n -= 1
        except ValueError:
            pass

    def _arm(self) -> None:
        """Schedule the next occupied slot (or stop: no call sending)."""
        if self.n <= 0:
            self._handle = None
            return
        k = self._k
        while not self.slots[k % self.nslots]:
            k += 1
        self._k = k
        self._handle = asyncio.get_running_loop().call_at(self._t0 + k * self.slot, self._wake)

    def _wake(self) -> None:
        now = mono()
        due = self._t0 + self._k * self.slot
        late = now - due
        if late > 0.2:   # hopelessly behind: resynchronise the grid, skip the missed frames
            self._k += int(late / self.slot)
            due = self._t0 + self._k * self.slot
            late = now - due
        self.late_max = max(self.late_max, late)
        if late > 0.005:
            self.late_5ms += 1
            if late > 0.01:
                self.late_10ms += 1
        self.ticks += 1
        slots, ns, slot, t0 = self.slots, self.nslots, self.slot, self._t0
        k = self._k
        edge = now + 0.0002   # slots due within 0.2 ms go now too (the loop could not wake for them)
        while t0 + k * slot <= edge:
            for c in slots[k % ns]:
                c.send_frame()
                self.frames += 1
            k += 1
        self._k = k
        self._arm()


class Call:
    def __init__(self, gen: LoadGen, k: int) -> None:
        self.gen = gen
        self.k = k
        self.bench_id = random.randint(1000000000, 9999999999)
        self.codec = gen.args.codec
        self.rec: dict[str, Any] = {
            "bench_id": self.bench_id, "target": gen.args.target, "codec": self.codec,
            "ok": False, "error": None, "t_request": None, "t_accepted": None, "t_answered": None,
            "t_media_up": None, "t_first_audio": None, "t_end": None,
        }
        self.frames = sig.make_frames(self.codec)
        self.an = sig.Analyzer(self.codec)
        self.pc: RTCPeerConnection | None = None
        self.tx = 0
        self.marks_sent = 0
        self.srtp_errors = 0
        self.rtcp_rx = 0
        self.t_stop: float | None = None
        self.ended = asyncio.get_running_loop().create_future()
        self.at = mono()   # scheduled start (set by LoadGen._one)
        self.slot: int | None = None   # the send phase's slot in the Sender's wheel
        self._rtcp_handle: asyncio.TimerHandle | None = None
        self._rr_handle: asyncio.TimerHandle | None = None
        self._twcc_handle: asyncio.TimerHandle | None = None

    # ---------- media (hot path) ----------

    def take_over(self, pt: int, shape: AnswerShape, browser_rtcp: bool = True) -> None:
        tr = self.pc.getTransceivers()[0]  # type: ignore[union-attr]
        dtls = tr.sender.transport
        conn = dtls.transport._connection
        pair = conn._nominated[1]
        self._proto = pair.protocol
        self._sendto = pair.protocol.transport.sendto
        self._addr = pair.remote_addr
        self._protect = dtls._tx_srtp.protect
        self._protect_rtcp = dtls._tx_srtp.protect_rtcp
        self._unprotect = dtls._rx_srtp.unprotect
        self._unprotect_rtcp = dtls._rx_srtp.unprotect_rtcp
        self._ssrc = tr.sender._ssrc
        self._cname = getattr(tr.sender, "_RTCRtpSender__cname", None) or f"bench{self.bench_id}"
        self._pt = pt
        self._seq = random.randint(0, 0xFFFF)
        self._ts = random.randint(0, 0xFFFFFFFF)
        self._fi = 0
        self._spf = sig.CLOCK[self.codec] // 50
        self.shape = shape
        self._mid = (shape.mid, (getattr(tr, "mid", None) or "0").encode())
        self._send_mid = shape.mid is not None
        self._twcc_seq = 0
        self._ext_static = _ext_static(shape)
        self._ext = shape.ext_any
        self._tx_octets = 0
        # RTCP: aiortc's own sender would send an SR + SDES every 0.5-1.5 s (with zero counts, as it
        # sends no RTP itself here); it is silenced, and browser-shaped RTCP is sent instead
        if browser_rtcp:
            sender = tr.sender
            sender._send_rtcp = _no_rtcp    # shadows the method for this sender (BYE at close included)
            rtcp_task = getattr(sender, "_RTCRtpSender__rtcp_task", None)
            if rtcp_task is not None:
                rtcp_task.cancel()
        self._rssrc: int | None = None
        self._lsr = 0                  # middle 32 bits of the last SR's NTP time, and when it came
        self._lsr_at = 0.0
        self._rr_prev: tuple[int, int] = (0, 0)   # (expected, received) at the last report
        self._twcc_rx: list[tuple[int, float]] = []   # (transport seq, arrival) since the last feedback
        self._twcc_fb_count = 0
        self.rtcp_tx = 0
        self.twcc_tx = 0
        loop = asyncio.get_running_loop()
        self._rtcp_handle = self._rr_handle = self._twcc_handle = None
        cname = self._cname.encode()[:255]
        chunk = struct.pack("!I", self._ssrc) + bytes((1, len(cname))) + cname + b"\0"
        chunk += b"\0" * (-len(chunk) % 4)
        self._sdes = bytes((0x81, 202)) + struct.pack("!H", len(chunk) // 4) + chunk
        # Chromium (RTCPSender): first compound report after about half the audio interval, then
        # every 5 s x uniform(0.5, 1.5); one schedule for the send stream, one for the receive stream
        if browser_rtcp:
            self._rtcp_handle = loop.call_later(RTCP_INTERVAL_S / 2 * random.uniform(0.5, 1.5), self._rtcp_due)
            self._rr_handle = loop.call_later(RTCP_INTERVAL_S / 2 * random.uniform(0.5, 1.5), self._rr_due)
            if shape.twcc_feedback:
                self._twcc_handle = loop.call_later(TWCC_INTERVAL_S * random.random(), self._twcc_due)
        for proto in conn._protocols:
            orig = proto.datagram_received

            def hook(data: bytes, addr: Any, _orig: Any = orig) -> None:
                b = data[0]
                if 127 < b < 192:
                    self._on_srtp(data)
                else:
                    _orig(data, addr)

            proto.datagram_received = hook

    def stop_media(self) -> None:
        for h in (self._rtcp_handle, self._rr_handle, self._twcc_handle):
            if h is not None:
                h.cancel()
        self._rtcp_handle = self._rr_handle = self._twcc_handle = None

    def send_frame(self) -> None:
        i = self._fi % 25
        self._fi += 1
        payload = self.frames[i]
        if self._ext:
            # RTP header extensions as Chromium sends them for what the answer negotiated
            # (RFC 8285 one-byte form): audio level, abs-send-time, transport-wide sequence
            # number, and the MID until the remote's RTCP has acknowledged the stream
            ext = self._ext_static[i == 0]
            sh = self.shape
            if sh.abs_send_time is not None:
                v = int(mono() * 262144) & 0xFFFFFF
                ext += bytes(((sh.abs_send_time << 4) | 2, v >> 16, (v >> 8) & 0xFF, v & 0xFF))
            if sh.twcc_seq is not None:
                q = self._twcc_seq
                self._twcc_seq = (q + 1) & 0xFFFF
                ext += bytes(((sh.twcc_seq << 4) | 1, q >> 8, q & 0xFF))
            if self._send_mid:
                mid = self._mid[1]
                ext += bytes(((self._mid[0] << 4) | (len(mid) - 1),)) + mid
            ext += b"\0" * (-len(ext) % 4)
            self._hdr_len = 16 + len(ext)
            pkt = (_RTP_HDR.pack(0x90, self._pt | (0x80 if self._fi == 1 else 0), self._seq, self._ts, self._ssrc)
                   + _EXT_HDR.pack(0xBEDE, len(ext) // 4) + ext + payload)
        else:
            pkt = _RTP_HDR.pack(0x80, self._pt | (0x80 if self._fi == 1 else 0), self._seq, self._ts, self._ssrc) + payload
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + self._spf) & 0xFFFFFFFF
        try:
            self._sendto(self._protect(pkt), self._addr)
        except Exception:  # noqa: BLE001 - socket closed under us: the call is ending
            return
        self.tx += 1
        self._tx_octets += len(payload)
        if i == 0:
            self.an.mark_sent(mono())
            self.marks_sent += 1

    def _on_srtp(self, data: bytes) -> None:
        t = mono()
        if 191 < data[1] < 224:   # RTCP (PT 192..223)
            self.rtcp_rx += 1
            self._on_rtcp(data, t)
            return
        try:
            p = self._unprotect(data)
        except Exception:  # noqa: BLE001 - pylibsrtp.Error: replay / auth failure
            self.srtp_errors += 1
            return
        if self.rec["t_first_audio"] is None:
            self.rec["t_first_audio"] = t
            self._rssrc = struct.unpack_from("!I", p, 8)[0]
        off = 12 + 4 * (p[0] & 0x0F)
        if p[0] & 0x10:
            n = struct.unpack_from("!H", p, off + 2)[0]
            if self._twcc_handle is not None:
                self._twcc_note(p, off + 4, off + 4 + 4 * n, t)
            off += 4 + 4 * n
        seq, ts = _SEQ_TS.unpack_from(p, 2)
        if p[0] & 0x20:   # padding
            p = p[: len(p) - p[-1]]
        if (p[1] & 0x7F) != self._rx_pt and self._rx_pt >= 0:
            return   # telephone-event / comfort noise: not audio
        self.an.feed(p[off:], t, seq, ts)


    # ---------- RTCP, as Chromium sends it ----------

    def _on_rtcp(self, data: bytes, t: float) -> None:
        try:
            p = self._unprotect_rtcp(data)
        except Exception:  # noqa: BLE001 - pylibsrtp.Error
            self.srtp_errors += 1
            return
        pos = 0
        while pos + 8 <= len(p):
            rc, pt = p[pos] & 0x1F, p[pos + 1]
            end = pos + 4 * (struct.unpack_from("!H", p, pos + 2)[0] + 1)
            blocks = -1
            if pt == 200 and pos + 28 <= len(p):   # SR: remember its NTP time for our LSR/DLSR
                self._lsr = struct.unpack_from("!I", p, pos + 10)[0]
                self._lsr_at = t
                blocks = pos + 28
            elif pt == 201:
                blocks = pos + 8
            if blocks >= 0 and self._send_mid:
                for b in range(rc):   # a report block about our stream: Chromium stops sending the MID
                    if blocks + 24 * b + 4 <= len(p) and struct.unpack_from("!I", p, blocks + 24 * b)[0] == self._ssrc:
                        self._send_mid = False
            pos = end

    def _rtcp_due(self) -> None:
        """The send stream's compound RTCP: SR + SDES CNAME (Chromium's sending RTP module has no
        receive statistics, so its SR carries no report block)."""
        self._rtcp_handle = asyncio.get_running_loop().call_later(RTCP_INTERVAL_S * random.uniform(0.5, 1.5), self._rtcp_due)
        now = time.time() + 2208988800
        ntp_s = int(now)
        ntp_f = int((now - ntp_s) * 4294967296) & 0xFFFFFFFF
        sr = (bytes((0x80, 200)) + struct.pack("!H", 6)
              + struct.pack("!IIIIII", self._ssrc, ntp_s & 0xFFFFFFFF, ntp_f, self._ts, self.tx & 0xFFFFFFFF,
                            self._tx_octets & 0xFFFFFFFF))
        self._send_rtcp(sr + self._sdes)

    def _rr_due(self) -> None:
        """The receive stream's compound RTCP (Chromium runs one RTP module per stream direction):
        RR with a report block on the stream received + SDES CNAME, on its own 5 s schedule."""
        self._rr_handle = asyncio.get_running_loop().call_later(RTCP_INTERVAL_S * random.uniform(0.5, 1.5), self._rr_due)
        blocks = b""
        an = self.an
        if self._rssrc is not None and an.max_seq is not None:
            expected = an.max_seq - an.base_seq + 1
            lost = max(0, expected - an.rx)
            e0, r0 = self._rr_prev
            de, dr = expected - e0, an.rx - r0
            self._rr_prev = (expected, an.rx)
            frac = max(0, min(255, (256 * (de - dr)) // de)) if de > 0 else 0
            dlsr = int((mono() - self._lsr_at) * 65536) & 0xFFFFFFFF if self._lsr else 0
            blocks = _RB.pack(self._rssrc, (frac << 24) | min(lost, 0x7FFFFF), an.max_seq & 0xFFFFFFFF,
                              int(an.jitter) & 0xFFFFFFFF, self._lsr, dlsr)
        n_rb = len(blocks) // 24
        rr = bytes((0x80 | n_rb, 201)) + struct.pack("!HI", 1 + 6 * n_rb, self._ssrc) + blocks
        self._send_rtcp(rr + self._sdes)

    def _send_rtcp(self, compound: bytes) -> None:
        try:
            self._sendto(self._protect_rtcp(compound), self._addr)
            self.rtcp_tx += 1
        except Exception:  # noqa: BLE001, S110 - the call is ending
            pass

    def _twcc_note(self, p: bytes, start: int, end: int, t: float) -> None:
        """Find the transport-wide sequence number in a one-byte-form header extension block."""
        if p[start - 4 : start - 2] != b"\xbe\xde":
            return
        want = self.shape.twcc_seq
        i = start
        while i < end:
            b = p[i]
            if b == 0:
                i += 1
                continue
            eid, ln = b >> 4, (b & 0x0F) + 1
            if eid == want and ln == 2:
                self._twcc_rx.append((struct.unpack_from("!H", p, i + 1)[0], t))
                return
            i += 1 + ln

    def _twcc_due(self) -> None:
        """transport-cc feedback (RTPFB FMT 15) every 100 ms for what arrived since the last one."""
        self._twcc_handle = asyncio.get_running_loop().call_later(TWCC_INTERVAL_S, self._twcc_due)
        rx, self._twcc_rx = self._twcc_rx, []
        if not rx:
            return
        base = rx[0][0]
        at = {(s - base) & 0xFFFF: t for s, t in rx}
        count = max(at) + 1
        ref = int(rx[0][1] / 0.064)
        prev = ref * 0.064
        symbols, deltas = [], b""
        for k in range(count):
            t = at.get(k)
            if t is None:
                symbols.append(0)
                continue
            d = round((t - prev) / 0.00025)
            prev = t
            if 0 <= d <= 255:
                symbols.append(1)
                deltas += bytes((d,))
            else:
                symbols.append(2)
                deltas += struct.pack("!h", max(-32768, min(32767, d)))
        chunks = b""
        for k in range(0, count, 7):
            v = 0xC000
            for j, s in enumerate(symbols[k : k + 7]):
                v |= s << (12 - 2 * j)
            chunks += struct.pack("!H", v)
        body = (struct.pack("!IIHH", self._ssrc, self._rssrc or 0, base, count)
                + struct.pack("!I", ((ref & 0xFFFFFF) << 8) | (self._twcc_fb_count & 0xFF)) + chunks + deltas)
        body += b"\0" * (-len(body) % 4)
        self._twcc_fb_count += 1
        try:
            self._sendto(self._protect_rtcp(bytes((0x8F, 205)) + struct.pack("!H", len(body) // 4) + body), self._addr)
            self.twcc_tx += 1
        except Exception:  # noqa: BLE001, S110 - the call is ending
            pass

    # ---------- signalling ----------

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        tr = pc.addTransceiver(SilentTrack(), direction="sendrecv")
        want = "audio/pcmu" if self.codec == "pcmu" else "audio/opus"
        caps = RTCRtpSender.getCapabilities("audio").codecs
        tr.setCodecPreferences([c for c in caps if c.mimeType.lower() == want])
        self._connected = asyncio.get_running_loop().create_future()
        self._connected.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "not retrieved"

        @pc.on("connectionstatechange")
        def _state() -> None:
            st = pc.connectionState
            if st == "connected" and not self._connected.done():
                self._connected.set_result(mono())
            elif st in ("failed", "closed") and not self._connected.done():
                self._connected.set_exception(RuntimeError(f"connection {st}"))

        return pc

    async def _offer(self) -> str:
        self.pc = self._new_pc()
        await self.pc.setLocalDescription(await self.pc.createOffer())   # waits for gathering
        sdp = str(self.pc.localDescription.sdp)
        return sdp if self.gen.args.plain_rtp else chromium_offer(sdp, self.codec)

    def _answer_pt(self, sdp: str) -> int:
        if self.codec == "pcmu":
            return 0
        m = re.search(r"a=rtpmap:(\d+) opus/48000", sdp, re.IGNORECASE)
        if not m:
            raise RuntimeError("no opus in the answer")
        return int(m.group(1))

    async def run(self) -> None:
        args = self.gen.args
        try:
            if args.target == "webgate":
                await self._run_webgate()
            else:
                await self._run_janus()
            if self.rec["error"] is None:
                self.rec["ok"] = True
        except asyncio.CancelledError:
            self.rec["error"] = self.rec["error"] or "cancelled (hard cap)"
        except Exception as e:  # noqa: BLE001 - a failed call is a record, never a crash
            self.rec["error"] = self.rec["error"] or f"{type(e).__name__}: {e}"
        finally:
            self.gen.sender.remove(self)
            self.stop_media()
            if self.t_stop is None:
                self.t_stop = mono()
            with contextlib.suppress(BaseException):   # even cancelled: the record must be written
                if self.pc is not None:
                    await asyncio.wait_for(self.pc.close(), 5)
            self.rec["t_end"] = mono()
            self.gen.write(self.record())

    async def _media(self, pt: int, shape: AnswerShape) -> None:
        """After the answer: wait DTLS connected, take over media, hold, return."""
        args = self.gen.args
        t_up = await asyncio.wait_for(asyncio.shield(self._connected), args.timeout)
        self.rec["t_media_up"] = t_up
        self._rx_pt = pt
        self.rec["answer_shape"] = shape.summary()
        self.take_over(pt, shape, browser_rtcp=not self.gen.args.plain_rtp)
        steady = t_up + args.warmup
        self.an.jitter_max_after = steady
        self.an.win_start = steady
        self.gen.sender.add(self)
        end_at = t_up + args.hold
        try:
            await asyncio.wait_for(asyncio.shield(self.ended), max(0.0, end_at - mono()))
            self.rec["error"] = f"ended early: {self.ended.result()}"
        except TimeoutError:
            pass
        self.t_stop = mono()
        self.an.win_end = self.t_stop
        self.gen.sender.remove(self)
        self.stop_media()

    async def _run_webgate(self) -> None:
        wsc = self.gen.wsc
        args = self.gen.args
        offer = await self._offer()
        ws = await asyncio.wait_for(wsc.connect(args.url, max_size=None, ping_interval=None, compression=None), args.timeout)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def reader() -> None:
            try:
                async for raw in ws:
                    m = json.loads(raw)
                    kind = m.get("type")
                    if kind == "accepted":
                        self.rec["t_accepted"] = mono()
                    elif kind == "answer" and not answer.done():
                        answer.set_result(m["sdp"])
                    elif kind == "progress" and m.get("state") == "answered":
                        self.rec["t_answered"] = mono()
                    elif kind == "ended":
                        self._end(f"ended {m.get('cause')} {m.get('status') or ''}".strip())
                        if not answer.done():
                            answer.set_exception(RuntimeError(f"ended {m.get('cause')} {m.get('status') or ''}".strip()))
                    elif kind == "error" and not answer.done():
                        answer.set_exception(RuntimeError(f"error {m.get('code')}: {m.get('message')}"))
            except Exception:  # noqa: BLE001, S110 - connection closed: handled just below
                pass
            self._end("ws closed")
            if not answer.done():
                answer.set_exception(RuntimeError("ws closed"))

        async def pinger() -> None:   # webgate closes a WebSocket silent for idle_timeout_s (60)
            while True:
                await asyncio.sleep(20)
                await ws.send('{"type":"ping"}')

        rt = asyncio.ensure_future(reader())
        pt_task = asyncio.ensure_future(pinger())
        try:
            self.rec["t_request"] = mono()
            await ws.send(json.dumps({"type": "call", "destination": args.dest, "sdp": offer, "session_id": str(self.bench_id)}))
            try:
                sdp = await asyncio.wait_for(answer, args.timeout)
            except TimeoutError:
                raise RuntimeError(f"no answer within {args.timeout} s") from None
            await self._apply_answer(sdp)
            if not self.ended.done():
                await ws.send('{"type":"hangup"}')
                try:
                    await asyncio.wait_for(asyncio.shield(self.ended), 5)
                except TimeoutError:
                    self.rec["error"] = "no ended after hangup"
        finally:
            pt_task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(ws.close(), 2)
            rt.cancel()

    async def _apply_answer(self, sdp: str) -> None:
        """The gateway's answer: apply it and wait until media is up (ICE, DTLS, first packet path)."""
        pt = self._answer_pt(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))  # type: ignore[union-attr]
        try:
            await self._media(pt, AnswerShape.parse(sdp, pt, plain=self.gen.args.plain_rtp))
        except TimeoutError:
            raise RuntimeError(f"media not connected within {self.gen.args.timeout} s") from None

    async def _run_janus(self) -> None:
        JanusSipCall = self.gen.janus_cls
        args = self.gen.args
        offer = await self._offer()
        j = JanusSipCall(args.url)
        watch: asyncio.Task[None] | None = None
        try:
            # Janus's SIP plugin registers sessions one at a time (~100 ms each, see janus_sig):
            # the session is prepared ahead (as a browser registers at page load), the call
            # itself starts on schedule.  Janus serialises every process's registrations, so
            # the wait is bounded by the call's own start time (which the caller sets after them
            # all), not by this process's share.
            await asyncio.wait_for(j.start(), max(args.timeout, 0.15 * args.calls + 10, self.at - mono() + args.timeout))
            self.rec["t_ready"] = mono()
            if self.at > mono():
                await asyncio.sleep(self.at - mono())
            self.rec["t_request"] = mono()
            try:
                sdp = await asyncio.wait_for(j.call(args.uri, offer, {"X-Bench-Id": str(self.bench_id)}), args.timeout)
            except TimeoutError:
                raise RuntimeError(f"no answer within {args.timeout} s") from None
            self.rec["t_accepted"] = getattr(j, "t_calling", None)
            self.rec["t_answered"] = getattr(j, "t_accepted", None)
            self.rec["t_janus_ack"] = getattr(j, "t_ack", None)

            async def watch_hangup() -> None:   # the far end / Janus hung up: end the hold early
                while getattr(j, "t_hangup", None) is None:
                    await asyncio.sleep(0.5)
                self._end(f"janus hangup {getattr(j, 'hangup_reason', '')}".strip())

            watch = asyncio.ensure_future(watch_hangup())
            await self._apply_answer(sdp)
        finally:
            if watch is not None:
                watch.cancel()
            self.rec["t_webrtcup"] = getattr(j, "t_webrtcup", None)
            try:
                await asyncio.wait_for(j.hangup(), 7)
            except BaseException as e:  # noqa: BLE001
                if self.rec["error"] is None and self.rec["t_media_up"] is not None and not isinstance(e, asyncio.CancelledError):
                    self.rec["error"] = f"hangup: {type(e).__name__}: {e}"

    def _end(self, why: str) -> None:
        if not self.ended.done():
            self.ended.set_result(why)

    # ---------- record ----------

    def record(self) -> dict[str, Any]:
        an = self.an
        r = dict(self.rec)
        t_up = r["t_media_up"]
        seconds = (self.t_stop - t_up) if (t_up is not None and self.t_stop is not None) else 0.0
        win = max(0.0, self.t_stop - an.win_start) if (t_up is not None and self.t_stop is not None) else 0.0
        expected = round(win / sig.FRAME_S)
        rx_win = an.rx_win
        silent_win = sum(1 for t in an.silent if an.win_start <= t < (self.t_stop or 0))
        lat = [round(1000 * rtt / 2, 3) for (t, rtt) in an.onsets if an.win_start <= t < (self.t_stop or 0)]
        marks_win = sum(1 for t in an.marks if an.win_start <= t < (self.t_stop or 0))
        r.update(
            tx_packets=self.tx, rx_packets=an.rx, seconds=round(seconds, 3),
            expected_frames=expected, rx_frames=rx_win, silent_frames=silent_win,
            loss=(round(max(0.0, (expected - rx_win + silent_win) / expected), 5) if expected else None),
            rx_seq_lost=max(0, an.seq_expected - an.rx),
            jitter_ms=round(an.jitter_ms, 3), jitter_max_ms=round(an.jitter_max_ms, 3),
            latency_ms=lat, marks_sent=self.marks_sent, marks_sent_window=marks_win, marks_seen=len(lat),
            marks_seen_total=len(an.onsets),
            tx_late_max_ms=round(1000 * self.gen.sender.late_max, 3),
            srtp_errors=self.srtp_errors, rtcp_rx=self.rtcp_rx, decode_errors=an.decode_errors,
            rtcp_tx=getattr(self, "rtcp_tx", 0), twcc_tx=getattr(self, "twcc_tx", 0),
            send_slot=self.slot, rtp_header_bytes=getattr(self, "_hdr_len", 12),
            codec_delay_ms=round(1000 * an.offset, 3),
        )
        return r


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sender = Sender(slot=args.slot_ms / 1000, sync=args.sync)
        self.out = open(args.out, "a", buffering=1)  # noqa: SIM115 - open for the whole run, closed in main()
        self.n_ok = 0
        self.n_done = 0
        self.cpu_trace: list[list[float]] = []
        # import now, not inside the first call (an import blocks the loop, i.e. the sender)
        if args.target == "webgate":
            import websockets.asyncio.client as wsc

            self.wsc = wsc
        else:
            from bench.janus_sig import JanusSipCall

            self.janus_cls = JanusSipCall

    async def _trace(self) -> None:
        """Every second: [monotonic, own CPU s, calls sending media, CPU s of each --watch-pid]
        (steady-state CPU per call = slope over the seconds where the call count is flat)."""
        tick = os.sysconf("SC_CLK_TCK")

        def pid_cpu(pid: int) -> float | None:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    data = f.read()
                v = data[data.rindex(")") + 2 :].split()
                return round((int(v[11]) + int(v[12])) / tick, 3)
            except (OSError, ValueError, IndexError):
                return None

        while True:
            c = os.times()
            self.cpu_trace.append([round(mono(), 3), round(c.user + c.system, 3), self.sender.n]
                                  + [pid_cpu(p) for p in self.args.watch_pid])
            await asyncio.sleep(1.0)

    def write(self, rec: dict[str, Any]) -> None:
        self.n_done += 1
        if rec.get("ok"):
            self.n_ok += 1
        self.out.write(json.dumps(rec) + "\n")

    async def _one(self, k: int, at: float) -> None:
        d = at - self.args.prepare_ahead - mono()
        if d > 0:
            await asyncio.sleep(d)
        c = Call(self, k)
        c.at = at
        await c.run()

    async def main(self) -> int:
        a = self.args
        sig.make_frames(a.codec)
        sig.codec_delay_s(a.codec)
        # Everything imported and built so far lives for the whole run: keep it out of the
        # collector's generations, so that a full collection (20+ ms with hundreds of peer
        # connections alive) is rarer and shorter - it stalls the shared 20 ms sender.
        gc.collect()
        gc.freeze()
        start = a.start_at if a.start_at is not None else mono() + (0.12 * a.calls + 1 if a.target == "janus" else 0)
        cap = start + a.calls / a.rate + a.hold + 30
        tracer = asyncio.ensure_future(self._trace())
        tasks = [asyncio.ensure_future(self._one(k, start + k / a.rate)) for k in range(a.calls)]
        _done, pending = await asyncio.wait(tasks, timeout=max(1.0, cap - mono()))
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        tracer.cancel()
        cpu = os.times()
        self.out.write(json.dumps({
            "summary": True, "target": a.target, "codec": a.codec, "calls": a.calls, "ok": self.n_ok,
            "worker_cpu_s": round(cpu.user + cpu.system, 3), "wall_s": round(mono() - self.t0, 3),
            "tx_late_max_ms": round(1000 * self.sender.late_max, 3), "tx_ticks": self.sender.ticks,
            "tx_ticks_late_5ms": self.sender.late_5ms, "tx_ticks_late_10ms": self.sender.late_10ms,
            "tx_frames": self.sender.frames, "load_shape": "sync" if a.sync else "spread",
            "slot_ms": round(1000 * self.sender.slot, 3), "plain_rtp": a.plain_rtp,
            "pid": os.getpid(), "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "cpu_trace": self.cpu_trace,
        }) + "\n")
        self.out.close()
        if not a.quiet:
            sys.stderr.write(f"loadgen: {self.n_ok}/{a.calls} ok, cpu {cpu.user + cpu.system:.2f} s, "
                             f"tx late max {1000 * self.sender.late_max:.1f} ms\n")
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=["webgate", "janus"], default="webgate")
    p.add_argument("--url", default=None)
    p.add_argument("--dest", default="bench", help="webgate destination")
    p.add_argument("--uri", default="sip:bench@127.0.0.1:25060", help="Janus SIP URI")
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--rate", type=float, default=5.0, help="calls started per second")
    p.add_argument("--hold", type=float, default=10.0, help="seconds of media per call")
    p.add_argument("--codec", choices=["pcmu", "opus"], default="pcmu")
    p.add_argument("--out", required=True)
    p.add_argument("--start-at", type=float, default=None, help="time.monotonic() of the first call")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds after media up excluded from loss/jitter/latency")
    p.add_argument("--timeout", type=float, default=10.0, help="answer / media-up timeout")
    p.add_argument("--ice-host", default=None,
                   help="where aiortc gathers ICE host candidates: a comma list of addresses, 'ipv4' (the host's "
                        "IPv4 addresses but 127.0.0.1) or 'auto' (aioice's default, v4+v6).  Default: 127.0.0.1 for "
                        "webgate; 'ipv4' for Janus (libnice never gathers 127.0.0.1; packets between the host's own "
                        "addresses still go through the loopback device)")
    p.add_argument("--prepare-ahead", type=float, default=None,
                   help="start preparing a call (Janus: WebSocket session + SIP plugin register) this many "
                        "seconds before its scheduled start.  Default: webgate 0; Janus: all at launch (Janus "
                        "registers ~10 sessions/s; without --start-at the first Janus call starts 0.12 s x calls + 1 s "
                        "after launch)")
    p.add_argument("--watch-pid", type=int, action="append", default=[],
                   help="also trace this process's CPU seconds in the summary's cpu_trace (repeatable)")
    p.add_argument("--sync", action="store_true",
                   help="synchronised (burst) callers: every call sends its 20 ms frame in the same instant "
                        "(the bench before issue 18).  Default: each call's send phase is uniform over the period")
    p.add_argument("--slot-ms", type=float, default=1.0,
                   help="resolution of the spread send phases (default 1 ms: asyncio's timer resolution)")
    p.add_argument("--plain-rtp", action="store_true",
                   help="no browser shaping: aiortc's offer as it is, RTP without header extensions, aiortc's own "
                        "RTCP (an SR + SDES every 0.5-1.5 s with zero counts) - the bench before issue 18")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    if a.url is None:
        a.url = "ws://127.0.0.1:18080/ws" if a.target == "webgate" else "ws://127.0.0.1:18188/"
    if a.prepare_ahead is None:
        a.prepare_ahead = float("inf") if a.target == "janus" else 0.0
    if a.ice_host is None:
        a.ice_host = "127.0.0.1" if a.target == "webgate" else "ipv4"
    _set_ice_host(a.ice_host)
    lg = LoadGen(a)
    lg.t0 = mono()  # type: ignore[attr-defined]
    return asyncio.run(lg.main())


if __name__ == "__main__":
    sys.exit(main())

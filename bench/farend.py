#!/usr/bin/env python3
"""Lean SIP UAS with RTP echo: the "phone" at the far end of the benchmark.

One asyncio process answers hundreds of calls on UDP.  Per call: 100 Trying, optional 180, 200 OK with a
G.711 SDP answer (PCMU preferred, else PCMA, plus telephone-event when offered); until the caller's first
RTP packet arrives it sends its own quiet 400 Hz tone every 20 ms to the SDP address, then echoes every
received audio packet back to the packet's source with its own SSRC, sequence and timestamp.  Per-call
receive statistics (loss from sequence gaps, RFC 3550 jitter) go to a JSON Lines file when the call ends
(BYE/CANCEL) or when the process gets SIGTERM/SIGINT.

    python bench/farend.py [--sip 127.0.0.1:25060] [--rtp 23000-24999] --out FILE.jsonl [--ring-ms 0]
                           [--stats-interval S] [--bye-on-exit]

Prints ``READY <sip port>`` on stdout once listening.  Stdlib only; every timestamp is time.monotonic().
Record fields: call_id bench_id session_id t_invite t_200 t_first_rtp t_end rx_packets rx_lost rx_jitter_ms
rx_jitter_max_ms tx_packets echoed codec remote_rtp, plus extras (t_ack, end_reason, status, rtp_src,
local_rtp, dtmf_packets, tone_packets, rx_jitter_mean_ms, tx_errors).  bench_id is an int when the header is
all digits (the 10-digit ids of the harness), else the raw string, else null.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import resource
import signal
import socket
import sys
import time
from struct import pack, pack_into, unpack_from
from typing import Any

mono = time.monotonic
T1, T2, TIMER_B = 0.5, 4.0, 32.0
UA = "webgate-bench-farend"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY, PRACK, MESSAGE, REFER"

# --------------------------------------------------------------------------------------------- G.711 tone


def _ulaw(s: int) -> int:
    sign = 0x80 if s < 0 else 0
    if s < 0:
        s = -s
    s = min(s, 32635) + 0x84
    exp = max(0, (s >> 7).bit_length() - 1)
    return ~(sign | (exp << 4) | ((s >> (exp + 3)) & 0x0F)) & 0xFF


def _alaw(s: int) -> int:
    s >>= 3
    if s >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        s = -s - 1
    for seg, end in enumerate((0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)):
        if s <= end:
            break
    else:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= ((s >> 1) if seg < 2 else (s >> seg)) & 0x0F
    return aval ^ mask


def _tone(encode: Any, hz: float = 400.0, dbfs: float = -20.0) -> bytes:
    """One 20 ms frame (160 samples at 8 kHz) of a sine; 400 Hz fits exactly 8 periods, so it loops cleanly."""
    amp = 32767 * 10 ** (dbfs / 20)
    return bytes(encode(round(amp * math.sin(2 * math.pi * hz * i / 8000))) for i in range(160))


TONE = {0: _tone(_ulaw), 8: _tone(_alaw)}

# ------------------------------------------------------------------------------------------- SIP parsing

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding", "o": "event",
           "r": "refer-to", "b": "referred-by", "u": "allow-events", "x": "session-expires",
           "a": "accept-contact", "j": "reject-contact", "d": "request-disposition", "y": "identity"}
CANON = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq",
         "record-route": "Record-Route"}
RE_BRANCH = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)
RE_TAG = re.compile(r";\s*tag\s*=\s*([^;,\s>]+)", re.IGNORECASE)
RE_REQ = re.compile(r"^([A-Za-z][A-Za-z0-9.!%*_+`'~-]*)\s+(\S+)\s+SIP/2\.0$")
RE_RESP = re.compile(r"^SIP/2\.0\s+(\d{3})(?:\s+(.*))?$")


class Msg:
    __slots__ = ("body", "hdrs", "method", "status", "uri")

    def __init__(self) -> None:
        self.method: str | None = None
        self.uri = ""
        self.status = 0
        self.hdrs: list[tuple[str, str]] = []
        self.body = b""

    def get(self, name: str) -> str | None:
        for k, v in self.hdrs:
            if k == name:
                return v
        return None

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.hdrs if k == name]

    @property
    def call_id(self) -> str | None:
        return self.get("call-id")

    def cseq(self) -> tuple[int, str] | None:
        v = self.get("cseq")
        if not v:
            return None
        parts = v.split()
        if len(parts) != 2 or not parts[0].isdigit():
            return None
        return int(parts[0]), parts[1].upper()

    def branch(self) -> str:
        v = self.get("via") or ""
        m = RE_BRANCH.search(v.split(",", 1)[0])
        return m.group(1) if m else ""


def parse_sip(data: bytes) -> Msg | None:
    """Parse one UDP SIP message; None for keep-alives and anything without a valid start line."""
    idx, sep = data.find(b"\r\n\r\n"), 4
    if idx < 0:
        idx, sep = data.find(b"\n\n"), 2
    head, body = (data, b"") if idx < 0 else (data[:idx], data[idx + sep:])
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    msg = Msg()
    start = lines[0].strip()
    m = RE_REQ.match(start)
    if m:
        msg.method, msg.uri = m.group(1).upper(), m.group(2)
    else:
        m = RE_RESP.match(start)
        if not m:
            return None
        msg.status = int(m.group(1))
    hdrs = msg.hdrs
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0] in " \t" and hdrs:
            k, v = hdrs[-1]
            hdrs[-1] = (k, v + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        hdrs.append((COMPACT.get(name, name), value.strip()))
    clen = msg.get("content-length")
    if clen is not None and clen.strip().isdigit():
        body = body[: int(clen)]
    msg.body = body
    return msg


def tag_of(value: str | None) -> str | None:
    if not value:
        return None
    tail = value[value.rfind(">") + 1:] if "<" in value else value
    m = RE_TAG.search(tail)
    return m.group(1) if m else None


def uri_of(value: str | None) -> str | None:
    if not value:
        return None
    if "<" in value and ">" in value:
        return value[value.index("<") + 1: value.index(">")].strip()
    return value.split(";", 1)[0].strip() or None


def hostport_of(uri: str | None) -> tuple[str, int] | None:
    """host and port of a sip: URI (IPv4 / names only; default 5060)."""
    if not uri:
        return None
    m = re.match(r"^sips?:(?:[^@]*@)?([^:;>?]+)(?::(\d+))?", uri, re.IGNORECASE)
    if not m:
        return None
    return m.group(1), int(m.group(2) or 5060)


# ------------------------------------------------------------------------------------------- SDP


class Offer:
    __slots__ = ("addr", "direction", "idx", "law", "mlines", "ok", "port", "pt", "te")

    def __init__(self) -> None:
        self.ok = False
        self.pt = -1
        self.law = 0  # 0 = PCMU, 8 = PCMA (whatever PT carries it)
        self.te = -1
        self.addr = ""
        self.port = 0
        self.direction = "sendrecv"
        self.mlines: list[tuple[str, str, str]] = []  # (media, proto, first fmt) for every offered m-line
        self.idx = -1  # which m-line we accept


def parse_offer(body: bytes) -> Offer:
    """Pick the first usable RTP/AVP audio stream: PCMU if offered, else PCMA; telephone-event if offered."""
    off = Offer()
    sess_c, sess_dir = "", "sendrecv"
    media: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        k, v = line[0], line[2:].strip()
        if k == "m":
            parts = v.split()
            if len(parts) < 3:
                cur = {"media": parts[0] if parts else "audio", "port": 0, "proto": "RTP/AVP", "fmts": ["0"]}
            else:
                port = parts[1].split("/")[0]
                cur = {"media": parts[0].lower(), "port": int(port) if port.isdigit() else 0,
                       "proto": parts[2], "fmts": parts[3:] or ["0"]}
            cur.update(c="", dir="", rtpmap={})
            media.append(cur)
        elif k == "c":
            parts = v.split()
            addr = parts[2].split("/")[0] if len(parts) >= 3 else ""
            if cur is None:
                sess_c = addr
            else:
                cur["c"] = addr
        elif k == "a":
            if v in ("sendrecv", "sendonly", "recvonly", "inactive"):
                if cur is None:
                    sess_dir = v
                else:
                    cur["dir"] = v
            elif v.lower().startswith("rtpmap:") and cur is not None:
                pt, _, enc = v[7:].partition(" ")
                cur["rtpmap"][pt.strip()] = enc.strip().lower()
    for i, md in enumerate(media):
        off.mlines.append((md["media"], md["proto"], md["fmts"][0]))
        if off.ok or md["media"] != "audio" or md["port"] == 0 or md["proto"].upper() not in ("RTP/AVP", "RTP/AVPF"):
            continue
        rtpmap = md["rtpmap"]

        def find(name: str, static: str, md: dict[str, Any] = md, rtpmap: dict[str, str] = rtpmap) -> int:
            for f in md["fmts"]:
                enc = rtpmap.get(f)
                if (enc is None and f == static) or (enc is not None and enc.startswith(name)):
                    return int(f) if f.isdigit() else -1
            return -1

        pt, law = find("pcmu/8000", "0"), 0
        if pt < 0:
            pt, law = find("pcma/8000", "8"), 8
        if pt < 0:
            continue
        off.ok, off.pt, off.law, off.idx = True, pt, law, i
        off.te = find("telephone-event/8000", "")
        off.addr, off.port = md["c"] or sess_c, md["port"]
        off.direction = md["dir"] or sess_dir
    return off


ANSWER_DIR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


# ------------------------------------------------------------------------------------------- the call


class Call:
    __slots__ = (
        "answered",
        "bad_seq",
        "base_seq",
        "bench_id",
        "call_id",
        "cycles",
        "delayed_offer",
        "direction",
        "dtmf",
        "echoed",
        "end_reason",
        "fd",
        "fe",
        "invite",
        "invite_branch",
        "invite_cseq",
        "j_arr",
        "j_ts",
        "jafter",
        "jit",
        "jmax",
        "jn",
        "jsum",
        "law",
        "local_cseq",
        "local_tag",
        "max_seq",
        "next_due",
        "port",
        "prev_expected",
        "prev_received",
        "pt",
        "received",
        "remote",
        "ring_handle",
        "rt_keys",
        "rtcp",
        "rtp_src",
        "rx_packets",
        "rx_ssrc",
        "sdp_ver",
        "send_ok",
        "sess_id",
        "session_id",
        "sip_addr",
        "sock",
        "ssrc",
        "state",
        "status",
        "t_200",
        "t_ack",
        "t_end",
        "t_first_rtp",
        "t_invite",
        "te",
        "tone_on",
        "tone_packets",
        "tx_errors",
        "tx_packets",
        "tx_seq",
        "tx_ts",
    )

    def __init__(self, fe: FarEnd, msg: Msg, addr: tuple[str, int], sock: socket.socket,
                 rtcp: socket.socket | None, port: int) -> None:
        self.fe = fe
        self.call_id = msg.call_id or ""
        hv = {k: v for k, v in msg.hdrs}
        bid = hv.get("x-bench-id") or hv.get("x-session-id")
        self.bench_id: Any = (int(bid) if bid and bid.isdigit() else bid) if bid else None
        self.session_id = hv.get("x-session-id")
        self.invite, self.sip_addr = msg, addr
        self.local_tag = f"{random.getrandbits(32):08x}"
        self.invite_branch = msg.branch()
        cs = msg.cseq()
        self.invite_cseq = cs[0] if cs else 0
        self.state = "early"
        self.sock, self.fd, self.rtcp, self.port = sock, sock.fileno(), rtcp, port
        self.sess_id = random.randint(10**9, 2 * 10**9)
        self.sdp_ver = 1
        self.pt, self.law, self.te = 0, 0, -1
        self.remote: tuple[str, int] | None = None
        self.direction = "sendrecv"
        self.send_ok = False
        self.answered = False
        self.tone_on = False
        self.next_due = 0.0
        self.delayed_offer = False
        self.local_cseq = random.randint(1, 1000)
        self.t_invite = mono()
        self.t_200 = self.t_ack = self.t_first_rtp = self.t_end = None
        self.end_reason = None
        self.status = 0
        self.rtp_src: tuple[str, int] | None = None
        self.tx_seq = random.getrandbits(16)
        self.tx_ts = random.getrandbits(32)
        self.ssrc = random.getrandbits(32)
        self.tx_packets = self.echoed = self.tone_packets = self.tx_errors = self.dtmf = 0
        self.rx_packets = 0
        self.rx_ssrc = -1
        self.base_seq = self.max_seq = self.cycles = 0
        self.bad_seq = -1
        self.received = self.prev_expected = self.prev_received = 0
        self.jit = 0.0
        self.j_ts = 0
        self.j_arr = 0.0
        self.jmax = self.jsum = 0.0
        self.jn = 0
        self.jafter = 0.0
        self.ring_handle: asyncio.TimerHandle | None = None
        self.rt_keys: list[tuple[str, int]] = []  # 2xx retransmissions to stop when the call ends

    # -- media setup ------------------------------------------------------------------------
    def apply_offer(self, off: Offer) -> None:
        self.pt, self.law, self.te = off.pt, off.law, off.te
        self.direction = ANSWER_DIR.get(off.direction, "sendrecv")
        self.remote = (off.addr, off.port) if off.addr and off.port else None
        self.send_ok = (self.direction in ("sendrecv", "sendonly") and self.remote is not None
                        and off.addr not in ("0.0.0.0", "::"))

    def sdp(self, off: Offer | None) -> bytes:
        """Our answer to ``off``, or our own offer (delayed-offer INVITE) when ``off`` is None."""
        fe = self.fe
        lines = ["v=0", f"o=farend {self.sess_id} {self.sdp_ver} IN IP4 {fe.host}", "s=farend",
                 f"c=IN IP4 {fe.host}", "t=0 0"]
        audio = [f"a=rtpmap:{self.pt} {'PCMU' if self.law == 0 else 'PCMA'}/8000"]
        if off is None:
            lines.append(f"m=audio {self.port} RTP/AVP 0 8 101")
            lines += ["a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000",
                      "a=fmtp:101 0-16", "a=ptime:20", "a=sendrecv"]
        else:
            for i, (media, proto, fmt0) in enumerate(off.mlines):
                if i != off.idx:
                    lines.append(f"m={media} 0 {proto} {fmt0}")
                    continue
                fmts = str(self.pt) + (f" {self.te}" if self.te >= 0 else "")
                lines.append(f"m=audio {self.port} {proto} {fmts}")
                lines += audio
                if self.te >= 0:
                    lines += [f"a=rtpmap:{self.te} telephone-event/8000", f"a=fmtp:{self.te} 0-16"]
                lines += ["a=ptime:20", f"a={self.direction}"]
        return ("\r\n".join(lines) + "\r\n").encode()

    def start_tone(self) -> None:
        if self.send_ok and self.rx_ssrc < 0 and not self.tone_on:
            self.tone_on = True
            self.fe.tone_calls.add(self)
            self.send_tone(mono())

    def stop_tone(self) -> None:
        if self.tone_on:
            self.tone_on = False
            self.fe.tone_calls.discard(self)

    def send_tone(self, now: float) -> None:
        self.next_due = now + 0.02
        if not self.send_ok or self.remote is None:
            return
        pkt = pack("!BBHII", 0x80, self.pt, self.tx_seq, self.tx_ts, self.ssrc) + TONE[self.law]
        self.tx_seq = (self.tx_seq + 1) & 0xFFFF
        self.tx_ts = (self.tx_ts + 160) & 0xFFFFFFFF
        try:
            self.sock.sendto(pkt, self.remote)
            self.tx_packets += 1
            self.tone_packets += 1
        except OSError:
            self.tx_errors += 1

    # -- the packet path ---------------------------------------------------------------------
    def on_rtp(self) -> None:
        recvfrom = self.sock.recvfrom
        while True:
            try:
                data, addr = recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP errors surfacing on the socket
                return
            n = len(data)
            if n < 12:
                continue
            b0, b1, seq, ts, ssrc = unpack_from("!BBHII", data)
            if b0 & 0xC0 != 0x80 or 72 <= (b1 & 0x7F) <= 76:  # not RTP, or RTCP
                continue
            now = mono()
            self.rx_packets += 1
            if ssrc != self.rx_ssrc:
                self._new_source(seq, ts, ssrc, now, addr)
            else:
                udelta = (seq - self.max_seq) & 0xFFFF
                if udelta < 3000:
                    if seq < self.max_seq:
                        self.cycles += 65536
                    self.max_seq = seq
                    self.received += 1
                elif udelta <= 65436:  # a big jump: restart after two sequential packets (RFC 3550 A.1)
                    if seq == self.bad_seq:
                        self._resync(seq, ts, now)
                    else:
                        self.bad_seq = (seq + 1) & 0xFFFF
                else:  # late / reordered / duplicate
                    self.received += 1
            pt = b1 & 0x7F
            if pt == self.te:
                self.dtmf += 1
                continue
            # RFC 3550 interarrival jitter in 8 kHz units
            dts = (ts - self.j_ts) & 0xFFFFFFFF
            if dts & 0x80000000:
                dts -= 0x100000000
            d = (now - self.j_arr) * 8000.0 - dts
            if d < 0:
                d = -d
            j = self.jit + (d - self.jit) * 0.0625
            self.jit = j
            self.j_ts = ts
            self.j_arr = now
            if now > self.jafter:
                self.jmax = max(self.jmax, j)
                self.jsum += j
                self.jn += 1
            if not (self.answered and self.send_ok):
                continue
            if b0 == 0x80:
                buf = bytearray(data)
                pack_into("!HII", buf, 2, self.tx_seq, self.tx_ts, self.ssrc)
                plen = n - 12
            else:
                off = 12 + 4 * (b0 & 0x0F)
                if b0 & 0x10:
                    if n < off + 4:
                        continue
                    off += 4 + 4 * unpack_from("!H", data, off + 2)[0]
                end = n - (data[-1] if b0 & 0x20 else 0)
                if end <= off:
                    continue
                plen = end - off
                buf = pack("!BBHII", 0x80, b1, self.tx_seq, self.tx_ts, self.ssrc) + data[off:end]
            self.tx_seq = (self.tx_seq + 1) & 0xFFFF
            self.tx_ts = (self.tx_ts + plen) & 0xFFFFFFFF
            try:
                self.sock.sendto(buf, addr)
                self.tx_packets += 1
                self.echoed += 1
            except OSError:
                self.tx_errors += 1

    def _new_source(self, seq: int, ts: int, ssrc: int, now: float, addr: tuple[str, int]) -> None:
        if self.rx_ssrc < 0:
            self.t_first_rtp = now
            self.jafter = now + 2.0
            self.stop_tone()
        self.rtp_src = addr
        self.rx_ssrc = ssrc
        self._resync(seq, ts, now)

    def _resync(self, seq: int, ts: int, now: float) -> None:
        """Start counting a new sequence space (new SSRC, or a confirmed jump); keep the old one's totals."""
        if self.received:
            self.prev_expected += self.cycles + self.max_seq - self.base_seq + 1
            self.prev_received += self.received
        self.base_seq = self.max_seq = seq
        self.cycles = 0
        self.bad_seq = -1
        self.received = 1
        self.j_ts, self.j_arr = ts, now

    def rx_lost(self) -> int:
        if self.rx_ssrc < 0:
            return 0
        expected = self.prev_expected + self.cycles + self.max_seq - self.base_seq + 1
        return max(0, expected - self.prev_received - self.received)

    # -- teardown ----------------------------------------------------------------------------
    def close_media(self) -> None:
        self.stop_tone()
        if self.sock is not None:
            try:
                self.fe.loop.remove_reader(self.fd)
            except Exception:  # noqa: BLE001, S110 - already removed
                pass
            self.sock.close()
            self.fe.free_port(self.port)
        if self.rtcp is not None:
            self.rtcp.close()
            self.rtcp = None

    def record(self) -> dict[str, Any]:
        def rnd(v: float | None) -> float | None:
            return None if v is None else round(v, 6)

        return {
            "call_id": self.call_id, "bench_id": self.bench_id, "session_id": self.session_id,
            "t_invite": rnd(self.t_invite), "t_200": rnd(self.t_200), "t_first_rtp": rnd(self.t_first_rtp),
            "t_end": rnd(self.t_end), "rx_packets": self.rx_packets, "rx_lost": self.rx_lost(),
            "rx_jitter_ms": round(self.jit / 8.0, 3), "rx_jitter_max_ms": round(self.jmax / 8.0, 3),
            "tx_packets": self.tx_packets, "echoed": self.echoed,
            "codec": ("PCMU" if self.law == 0 else "PCMA") if self.status == 200 else None,
            "remote_rtp": f"{self.remote[0]}:{self.remote[1]}" if self.remote else None,
            # extras
            "t_ack": rnd(self.t_ack), "end_reason": self.end_reason, "status": self.status,
            "rtp_src": f"{self.rtp_src[0]}:{self.rtp_src[1]}" if self.rtp_src else None,
            "local_rtp": self.port, "dtmf_packets": self.dtmf, "tone_packets": self.tone_packets,
            "rx_jitter_mean_ms": round(self.jsum / self.jn / 8.0, 3) if self.jn else None,
            "tx_errors": self.tx_errors,
        }


# ------------------------------------------------------------------------------------------- the UAS


class FarEnd:
    def __init__(self, args: argparse.Namespace) -> None:
        host, _, port = args.sip.rpartition(":")
        self.host, self.sip_port = host or "127.0.0.1", int(port)
        lo, _, hi = args.rtp.partition("-")
        self.rtp_lo, self.rtp_hi = int(lo) + (int(lo) & 1), int(hi or lo)
        self.ring_ms = args.ring_ms
        self.bye_on_exit = args.bye_on_exit
        self.out = open(args.out, "w", encoding="utf-8")  # noqa: SIM115 - open for the process's life
        self.loop = asyncio.get_running_loop()
        self.calls: dict[str, Call] = {}
        self.tone_calls: set[Call] = set()
        self.txn: dict[tuple[str, str, str], tuple[bytes, tuple[str, int], float]] = {}  # response cache
        self.retrans: dict[Any, list[Any]] = {}  # (call_id, cseq) or branch -> [data, addr, interval, deadline, handle, on_timeout]
        self.ended: dict[str, float] = {}  # call_id -> expiry (late requests get 481 / cached answers)
        self.used_ports: set[int] = set()
        self.port_cursor = self.rtp_lo
        self.done_rx = self.done_tx = 0  # totals of ended calls, for --stats-interval
        self.n_records = 0
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sip.bind((self.host, self.sip_port))
        self.sip_port = self.sip.getsockname()[1]
        self.sip.setblocking(False)
        self.loop.add_reader(self.sip.fileno(), self.on_sip)

    # -- ports -------------------------------------------------------------------------------
    def alloc_rtp(self) -> tuple[socket.socket, socket.socket | None, int] | None:
        span = (self.rtp_hi - self.rtp_lo) // 2 + 1
        for _ in range(span):
            port = self.port_cursor
            self.port_cursor = port + 2 if port + 2 <= self.rtp_hi else self.rtp_lo
            if port in self.used_ports:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((self.host, port))
            except OSError:
                s.close()
                continue
            s.setblocking(False)
            rtcp: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:  # reserve port+1 so RTCP is silently absorbed (never read; the kernel drops when full)
                rtcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                rtcp.bind((self.host, port + 1))
            except OSError:
                rtcp.close()
                rtcp = None
            self.used_ports.add(port)
            return s, rtcp, port
        return None

    def free_port(self, port: int) -> None:
        self.used_ports.discard(port)

    # -- SIP I/O -----------------------------------------------------------------------------
    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sip.sendto(data, addr)
        except OSError:
            pass

    def on_sip(self) -> None:
        while True:
            try:
                data, addr = self.sip.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                msg = parse_sip(data)
                if msg is None:
                    continue
                if msg.method:
                    self.on_request(msg, addr)
                else:
                    self.on_response(msg)
            except Exception as e:  # noqa: BLE001 - never crash on garbage
                print(f"farend: error handling a message from {addr}: {e!r}", file=sys.stderr, flush=True)

    def response(self, req: Msg, code: int, reason: str, *, tag: str | None = None, contact: bool = False,
                 body: bytes = b"", extra: tuple[str, ...] = ()) -> bytes:
        lines = [f"SIP/2.0 {code} {reason}"]
        for k, v in req.hdrs:
            if k == "via":
                lines.append(f"Via: {v}")
        if req.method == "INVITE" and 100 < code < 300:
            lines += [f"Record-Route: {v}" for v in req.getall("record-route")]
        lines.append(f"From: {req.get('from') or ''}")
        to = req.get("to") or ""
        if tag and code > 100 and tag_of(to) is None:
            to += f";tag={tag}"
        lines.append(f"To: {to}")
        lines.append(f"Call-ID: {req.call_id or ''}")
        lines.append(f"CSeq: {req.get('cseq') or ''}")
        if contact:
            lines.append(f"Contact: <sip:farend@{self.host}:{self.sip_port}>")
        if code == 405 or req.method in ("INVITE", "OPTIONS") and 200 <= code < 300:
            lines.append(f"Allow: {ALLOW}")
        lines.append(f"Server: {UA}")
        lines += extra
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def reply(self, req: Msg, addr: tuple[str, int], code: int, reason: str, **kw: Any) -> bytes:
        data = self.response(req, code, reason, **kw)
        self.send(data, addr)
        cs = req.cseq()
        self.txn[(req.call_id or "", req.branch(), cs[1] if cs else "")] = (data, addr, mono() + TIMER_B)
        return data

    def start_retrans(self, key: Any, data: bytes, addr: tuple[str, int], on_timeout: Any = None) -> None:
        self.stop_retrans(key)
        entry = [data, addr, T1, mono() + TIMER_B, None, on_timeout]
        entry[4] = self.loop.call_later(T1, self._retrans, key)
        self.retrans[key] = entry

    def _retrans(self, key: Any) -> None:
        entry = self.retrans.get(key)
        if entry is None:
            return
        if mono() >= entry[3]:
            del self.retrans[key]
            if entry[5] is not None:
                entry[5]()
            return
        self.send(entry[0], entry[1])
        entry[2] = min(entry[2] * 2, T2)
        entry[4] = self.loop.call_later(min(entry[2], max(0.0, entry[3] - mono())), self._retrans, key)

    def stop_retrans(self, key: Any) -> None:
        entry = self.retrans.pop(key, None)
        if entry is not None and entry[4] is not None:
            entry[4].cancel()

    # -- requests ----------------------------------------------------------------------------
    def on_request(self, msg: Msg, addr: tuple[str, int]) -> None:
        method = msg.method or ""
        cid = msg.call_id
        cs = msg.cseq()
        if not cid or cs is None or not msg.get("via") or not msg.get("from") or not msg.get("to"):
            if method != "ACK" and msg.get("via"):
                self.send(self.response(msg, 400, "Bad Request"), addr)
            return
        if cs[1] != method and not (method == "ACK" and cs[1] == "ACK"):
            if method != "ACK":
                self.send(self.response(msg, 400, "CSeq Method Mismatch"), addr)
            return
        if method == "ACK":
            self.on_ack(msg, cs[0])
            return
        cached = self.txn.get((cid, msg.branch(), method))
        if cached is not None:  # a retransmission: answer it again
            self.send(cached[0], addr)
            return
        call = self.calls.get(cid)
        to_tag = tag_of(msg.get("to"))
        if method == "INVITE":
            if to_tag is None:
                if call is not None or cid in self.ended:
                    self.reply(msg, addr, 482, "Loop Detected")
                else:
                    self.on_invite(msg, addr)
            elif call is not None and call.local_tag == to_tag and call.state != "ended":
                self.on_reinvite(call, msg, addr)
            else:
                self.reply(msg, addr, 481, "Call/Transaction Does Not Exist")
            return
        if method == "CANCEL":
            self.on_cancel(call, msg, addr)
            return
        if method == "OPTIONS":
            self.reply(msg, addr, 200, "OK", tag=call.local_tag if call else f"{random.getrandbits(32):08x}")
            return
        in_dialog = call is not None and call.state != "ended" and to_tag == call.local_tag
        if method == "BYE":
            if not in_dialog:
                self.reply(msg, addr, 481, "Call/Transaction Does Not Exist")
                return
            assert call is not None
            self.reply(msg, addr, 200, "OK")
            if not call.answered:
                self.final_invite(call, 487, "Request Terminated")
            self.end_call(call, "bye")
            return
        if in_dialog:
            assert call is not None
            if method == "UPDATE" and msg.body:
                self.on_reinvite(call, msg, addr)
            else:
                self.reply(msg, addr, 200, "OK")
            return
        if to_tag is not None or method in ("INFO", "UPDATE", "PRACK", "NOTIFY"):
            self.reply(msg, addr, 481, "Call/Transaction Does Not Exist")
        else:
            self.reply(msg, addr, 405, "Method Not Allowed")

    def on_invite(self, msg: Msg, addr: tuple[str, int]) -> None:
        off = parse_offer(msg.body) if msg.body else None
        if off is not None and not off.ok:
            self.reject(msg, addr, 488, "Not Acceptable Here", "no_g711")
            return
        media = self.alloc_rtp()
        if media is None:
            self.reject(msg, addr, 503, "Service Unavailable", "no_rtp_port")
            return
        call = Call(self, msg, addr, media[0], media[1], media[2])
        self.calls[call.call_id] = call
        self.loop.add_reader(call.fd, call.on_rtp)
        if off is None:
            call.delayed_offer = True
        else:
            call.apply_offer(off)
        self.reply(msg, addr, 100, "Trying")
        if self.ring_ms > 0:
            self.reply(msg, addr, 180, "Ringing", tag=call.local_tag, contact=True)
            call.ring_handle = self.loop.call_later(self.ring_ms / 1000.0, self.answer, call, off)
        else:
            self.answer(call, off)

    def answer(self, call: Call, off: Offer | None) -> None:
        call.ring_handle = None
        if call.state != "early":
            return
        data = self.reply(call.invite, call.sip_addr, 200, "OK", tag=call.local_tag, contact=True,
                          body=call.sdp(off))
        call.state = "answered"
        call.status = 200
        call.answered = True
        call.t_200 = mono()
        call.rt_keys.append((call.call_id, call.invite_cseq))
        self.start_retrans((call.call_id, call.invite_cseq), data, call.sip_addr, lambda: self.no_ack(call))
        call.start_tone()

    def no_ack(self, call: Call) -> None:
        if call.state == "ended":
            return
        self.send_bye(call)
        self.end_call(call, "no_ack")

    def final_invite(self, call: Call, code: int, reason: str) -> None:
        data = self.reply(call.invite, call.sip_addr, code, reason, tag=call.local_tag)
        call.status = code
        self.start_retrans((call.call_id, call.invite_cseq), data, call.sip_addr)

    def on_reinvite(self, call: Call, msg: Msg, addr: tuple[str, int]) -> None:
        off = parse_offer(msg.body) if msg.body else None
        if off is not None and not off.ok:
            self.reply(msg, addr, 488, "Not Acceptable Here", tag=call.local_tag)
            return
        if off is not None:
            prev_pt = call.pt
            call.apply_offer(off)
            if prev_pt != call.pt and call.rx_ssrc >= 0:
                pass  # codec switch: the echo follows whatever arrives
            if not call.send_ok:
                call.stop_tone()
            elif call.rx_ssrc < 0 and call.answered:
                call.start_tone()
        call.sdp_ver += 1
        data = self.reply(msg, addr, 200, "OK", tag=call.local_tag, contact=True, body=call.sdp(off))
        if msg.method == "INVITE":
            cs = msg.cseq()
            if off is None:
                call.delayed_offer = True
            call.rt_keys.append((call.call_id, cs[0] if cs else 0))
            self.start_retrans(call.rt_keys[-1], data, addr, lambda: self.no_ack(call))

    def on_ack(self, msg: Msg, cseq: int) -> None:
        cid = msg.call_id or ""
        self.stop_retrans((cid, cseq))
        call = self.calls.get(cid)
        if call is None or call.state == "ended":
            return
        if call.delayed_offer and msg.body:
            off = parse_offer(msg.body)
            if off.ok:
                call.apply_offer(off)
                call.delayed_offer = False
                call.start_tone()
        if call.state == "answered":
            call.state = "confirmed"
            call.t_ack = mono()

    def on_cancel(self, call: Call | None, msg: Msg, addr: tuple[str, int]) -> None:
        if call is None or call.invite_branch != msg.branch():
            self.reply(msg, addr, 481, "Call/Transaction Does Not Exist")
            return
        self.reply(msg, addr, 200, "OK", tag=call.local_tag if call.answered else None)
        if call.state == "early":
            if call.ring_handle is not None:
                call.ring_handle.cancel()
            self.final_invite(call, 487, "Request Terminated")
            self.end_call(call, "cancel")

    def on_response(self, msg: Msg) -> None:
        if msg.status >= 200:
            self.stop_retrans(msg.branch())

    def send_bye(self, call: Call, retransmit: bool = True) -> None:
        inv = call.invite
        call.local_cseq += 1
        branch = f"z9hG4bK{random.getrandbits(64):016x}"
        target = uri_of(inv.get("contact")) or uri_of(inv.get("from")) or f"sip:{call.sip_addr[0]}"
        to = inv.get("to") or ""
        if tag_of(to) is None:
            to += f";tag={call.local_tag}"
        lines = [f"BYE {target} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.host}:{self.sip_port};branch={branch};rport"]
        lines += [f"Route: {v}" for v in inv.getall("record-route")]
        lines += [f"From: {to}", f"To: {inv.get('from')}", f"Call-ID: {call.call_id}",
                  f"CSeq: {call.local_cseq} BYE", "Max-Forwards: 70", f"User-Agent: {UA}", "Content-Length: 0"]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.send(data, call.sip_addr)
        if retransmit:
            self.start_retrans(branch, data, call.sip_addr)

    # -- records -----------------------------------------------------------------------------
    def end_call(self, call: Call, reason: str) -> None:
        if call.state == "ended":
            return
        call.state = "ended"
        call.end_reason = reason
        call.t_end = mono()
        if call.ring_handle is not None:
            call.ring_handle.cancel()
            call.ring_handle = None
        for key in call.rt_keys:
            self.stop_retrans(key)
        call.close_media()
        self.calls.pop(call.call_id, None)
        self.ended[call.call_id] = mono() + TIMER_B
        self.done_rx += call.rx_packets
        self.done_tx += call.tx_packets
        self.write(call.record())

    def reject(self, msg: Msg, addr: tuple[str, int], code: int, reason: str, why: str) -> None:
        """Final non-2xx to a new INVITE, retransmitted until the ACK; writes a record for it."""
        data = self.reply(msg, addr, code, reason, tag=f"{random.getrandbits(32):08x}")
        cs = msg.cseq()
        self.start_retrans((msg.call_id, cs[0] if cs else 0), data, addr)
        self.write_record_rejected(msg, code, why)

    def write_record_rejected(self, msg: Msg, status: int, reason: str) -> None:
        hv = {k: v for k, v in msg.hdrs}
        bid = hv.get("x-bench-id") or hv.get("x-session-id")
        now = round(mono(), 6)
        self.ended[msg.call_id or ""] = mono() + TIMER_B
        self.write({"call_id": msg.call_id, "bench_id": (int(bid) if bid and bid.isdigit() else bid) if bid else None,
                    "session_id": hv.get("x-session-id"), "t_invite": now, "t_200": None, "t_first_rtp": None,
                    "t_end": now, "rx_packets": 0, "rx_lost": 0, "rx_jitter_ms": 0.0, "rx_jitter_max_ms": 0.0,
                    "tx_packets": 0, "echoed": 0, "codec": None, "remote_rtp": None, "end_reason": reason,
                    "status": status})

    def write(self, rec: dict[str, Any]) -> None:
        self.out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.out.flush()
        self.n_records += 1

    # -- timers ------------------------------------------------------------------------------
    async def tone_ticker(self) -> None:
        nxt = self.loop.time()
        while True:
            nxt += 0.02
            now = self.loop.time()
            if nxt < now - 0.1:
                nxt = now + 0.02
            await asyncio.sleep(nxt - now)
            if self.tone_calls:
                now = mono()
                for call in list(self.tone_calls):
                    if now >= call.next_due - 0.010:
                        call.send_tone(now)

    async def housekeeping(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            now = mono()
            for k in [k for k, v in self.txn.items() if v[2] < now]:
                del self.txn[k]
            for k in [k for k, v in self.ended.items() if v < now]:
                del self.ended[k]

    async def stats(self, interval: float) -> None:
        last_rx = last_tx = 0
        last_cpu = sum(os.times()[:2])
        last_t = mono()
        while True:
            await asyncio.sleep(interval)
            rx = self.done_rx + sum(c.rx_packets for c in self.calls.values())
            tx = self.done_tx + sum(c.tx_packets for c in self.calls.values())
            cpu, t = sum(os.times()[:2]), mono()
            dt = max(1e-6, t - last_t)
            print(f"farend calls={len(self.calls)} rx_pps={(rx - last_rx) / dt:.0f} tx_pps={(tx - last_tx) / dt:.0f} "
                  f"cpu={100 * (cpu - last_cpu) / dt:.1f}% records={self.n_records}", file=sys.stderr, flush=True)
            last_rx, last_tx, last_cpu, last_t = rx, tx, cpu, t

    def shutdown(self) -> None:
        for call in list(self.calls.values()):
            if self.bye_on_exit and call.answered:
                self.send_bye(call, retransmit=False)
            self.end_call(call, "exit")
        for key in list(self.retrans):
            self.stop_retrans(key)
        self.out.close()
        self.loop.remove_reader(self.sip.fileno())
        self.sip.close()


async def amain(args: argparse.Namespace) -> int:
    fe = FarEnd(args)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        fe.loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(fe.tone_ticker()), asyncio.ensure_future(fe.housekeeping())]
    if args.stats_interval > 0:
        tasks.append(asyncio.ensure_future(fe.stats(args.stats_interval)))
    print(f"READY {fe.sip_port}", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    fe.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sip", default="127.0.0.1:25060", help="UDP SIP listen address host:port")
    ap.add_argument("--rtp", default="23000-24999", help="RTP port range (even ports are used, port+1 reserved)")
    ap.add_argument("--out", required=True, help="JSON Lines file for per-call records (truncated at start)")
    ap.add_argument("--ring-ms", type=int, default=0, help="send 180 and wait this long before 200 (0 = no 180)")
    ap.add_argument("--stats-interval", type=float, default=0.0, help="print live calls and pps to stderr every S s")
    ap.add_argument("--bye-on-exit", action="store_true", help="send one BYE for each live call at exit")
    args = ap.parse_args(argv)
    try:  # hundreds of calls x 2 sockets
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())

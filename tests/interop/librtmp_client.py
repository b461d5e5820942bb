"""A Flash-style RTMP client built on librtmp (python-librtmp 0.3 over Debian's librtmp1), run as a
subprocess by the interop tests so its blocking calls never stall the Twisted reactor.

    python librtmp_client.py SPEC_JSON

SPEC (JSON): ``url`` (librtmp URL string, options after spaces: ``app=``, ``playpath=``, ``conn=S:...``,
``live=1``, ``timeout=``), ``publish`` (bool: RTMP_EnableWrite + RTMP_ConnectStream, i.e. releaseStream,
FCPublish, createStream, publish PLAYPATH), ``swfhash`` (64 hex digits) + ``swfsize`` (int): with
these librtmp does the digest handshake and verifies the server's, ``steps`` (list, run in order):

* ``{"do": "call", "method": M, "args": [...], "timeout": s}`` -> sends the invoke, waits for its
  ``_result``/``_error``; event ``{"event": "reply", "method", "name", "tid", "args"}``
* ``{"do": "wait", "name": N, "timeout": s}`` -> waits for the next server->client invoke N (not
  seen by an earlier wait); event ``{"event": "waited", "name", "args"}`` or ``{"event": "timeout"}``
* ``{"do": "audio", "seconds": s, "hz": f, "codec": "nellymoser"|"pcmu"}`` -> paced FLV audio tags
  through ``RTMP_Write`` (20 ms µ-law / 32 ms Nellymoser per tag), a tone of ``hz``
* ``{"do": "flv", "what": "metadata"|"video"}`` -> an onMetaData / a video tag through ``RTMP_Write``
* ``{"do": "sleep", "seconds": s}``

Player mode instead: ``play_seconds`` + ``flv_out``: play PLAYPATH and write what ``RTMP_Read`` returns
(an FLV file) for that long; events ``playing``, ``played`` (bytes).

Watch mode: ``watch`` (bool): play PLAYPATH (``RTMP_ConnectStream``), event ``playing``, then run the
steps while the reader thread reports every data message (type 18/15) as
``{"event": "data_message", "name", "args"}`` (``RTMP_Read`` passes only ``onMetaData`` on).

Every server->client invoke is printed as ``{"event": "invoke", "name", "tid", "args"}``; the handshake
result as ``{"event": "handshake", "genuine_server": bool, "lines": [...]}`` (librtmp's own log lines
about verifying the server's digest and S2 signature). One JSON object per line on stdout; exit code
0 when all steps ran (a ``timeout`` or an ``_error`` is reported, not fatal), 2 on a librtmp error.

Threads: a reader thread only calls ``RTMP_ReadPacket`` (and lets librtmp handle control messages:
chunk size, window, peer bandwidth, user control); the main thread only sends (invokes under a lock,
``RTMP_Write``). Invokes from the server are decoded here, never handed to librtmp's HandleInvoke,
so librtmp's list of pending calls is touched by the main thread only.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import threading
import time
from typing import Any

from librtmp import RTMP, RTMPError, RTMPTimeoutError, add_log_callback  # type: ignore[import-untyped]
from librtmp import librtmp as lib  # the cffi library: librtmp's C functions
from librtmp.amf import AMFError, decode_amf  # type: ignore[import-untyped]

_out_lock = threading.Lock()


def emit(**event: Any) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(event, default=_jsonable) + "\n")
        sys.stdout.flush()


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("latin-1")
    return str(v)


# ---- librtmp log capture (handshake verification) -----------------------------------------------

HANDSHAKE_MARKERS = ("Genuine Adobe", "not genuine", "verify the server digest", "different position",
                     "FMS Version", "refuse signed", "Server digest offset", "handshake")
log_lines: list[str] = []


def _on_log(level: int, msg: str) -> None:
    msg = msg.strip()
    if any(m.lower() in msg.lower() for m in HANDSHAKE_MARKERS):
        log_lines.append(msg)


# ---- audio --------------------------------------------------------------------------------------

def _tone(hz: float, rate: int, n: int, start: int) -> list[float]:
    return [0.4 * math.sin(2 * math.pi * hz * (start + i) / rate) for i in range(n)]


def _ulaw(sample: float) -> int:
    """G.711 µ-law of one float sample in [-1, 1] (ITU-T G.711, written out here: no webgate import)."""
    x = int(max(-1.0, min(1.0, sample)) * 32767)
    sign = 0x80 if x < 0 else 0
    x = min(abs(x), 32635) + 0x84
    exp = 7
    mask = 0x4000
    while exp > 0 and not x & mask:
        exp -= 1
        mask >>= 1
    mant = (x >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def flv_tag(tag_type: int, ts_ms: int, data: bytes) -> bytes:
    head = bytes([tag_type]) + len(data).to_bytes(3, "big") + (ts_ms & 0xFFFFFF).to_bytes(3, "big")
    head += bytes([(ts_ms >> 24) & 0xFF]) + b"\x00\x00\x00"
    return head + data + struct.pack(">I", 11 + len(data))


class AudioSource:
    """Audio tags as Flash's Microphone sends them."""

    def __init__(self, codec: str, hz: float) -> None:
        self.codec = codec
        self.hz = hz
        self.samples = 0
        if codec == "nellymoser":
            import av  # PyAV's libavcodec Nellymoser encoder (Flash Player's default mic codec)
            import numpy as np

            self._np = np
            self.rate = 8000
            self.ctx = av.CodecContext.create("nellymoser", "w")
            self.ctx.sample_rate = self.rate
            self.ctx.layout = "mono"
            self.ctx.format = "flt"
            self.ctx.open()
            self.frame = 256  # 32 ms
            self.header = bytes([0x52])  # SoundFormat 5 (Nellymoser 8 kHz mono), 16-bit
        elif codec == "pcmu":
            self.rate = 8000
            self.frame = 160  # 20 ms
            self.header = bytes([0x82])  # SoundFormat 8 (G.711 µ-law), 5.5 kHz flag, 16-bit
        else:
            raise SystemExit(f"unknown codec {codec}")

    @property
    def frame_s(self) -> float:
        return self.frame / self.rate

    def next_payloads(self) -> list[bytes]:
        pcm = _tone(self.hz, self.rate, self.frame, self.samples)
        self.samples += self.frame
        if self.codec == "pcmu":
            return [self.header + bytes(_ulaw(s) for s in pcm)]
        import av

        arr = self._np.array(pcm, dtype=self._np.float32).reshape(1, -1)
        fr = av.AudioFrame.from_ndarray(arr, format="flt", layout="mono")
        fr.sample_rate = self.rate
        fr.pts = self.samples - self.frame
        return [self.header + bytes(p) for p in self.ctx.encode(fr)]


# ---- the client ---------------------------------------------------------------------------------

class Client:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        # swfhash + swfsize (SWF verification data) make librtmp use the Flash Player 9 digest handshake;
        # without them it does the plain one (handshake.h: FP9HandShake = encrypted || SWFSize)
        self.conn = RTMP(spec["url"], swfhash=spec.get("swfhash"), swfsize=spec.get("swfsize"))
        self.send_lock = threading.Lock()
        self.cond = threading.Condition()
        self.invokes: list[tuple[str, float, list[Any]]] = []  # (name, tid, args) from the server
        self.waited: dict[str, int] = {}  # name -> how many were consumed by "wait"
        self.running = True
        self.closed = False
        self.packets: dict[int, int] = {}
        self.reader: threading.Thread | None = None
        self.stream: Any = None
        self.media_ts0: float | None = None

    # -- reader thread
    def _read_loop(self) -> None:
        while self.running:
            try:
                pkt = self.conn.read_packet()
            except RTMPTimeoutError:
                continue
            except RTMPError as e:
                if self.running:
                    emit(event="closed", error=str(e))
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            self.packets[pkt.type] = self.packets.get(pkt.type, 0) + 1
            if pkt.type in (0x14, 0x11):
                body = pkt.body[1:] if pkt.type == 0x11 else pkt.body
                try:
                    values = decode_amf(body)
                except AMFError as e:
                    emit(event="bad_amf", error=str(e))
                    continue
                name, tid, args = values[0], values[1] if len(values) > 1 else 0, list(values[3:])
                emit(event="invoke", name=name, tid=tid, args=args)
                with self.cond:
                    self.invokes.append((name, tid, args))
                    self.cond.notify_all()
                if name == "close":
                    return
            elif pkt.type in (0x12, 0x0F):
                body = pkt.body[1:] if pkt.type == 0x0F else pkt.body
                try:
                    values = decode_amf(body)
                except AMFError as e:
                    emit(event="bad_amf", error=str(e))
                    continue
                emit(event="data_message", name=values[0] if values else None, args=list(values[1:]))
            elif pkt.type in (0x01, 0x03, 0x04, 0x05, 0x06):
                with self.send_lock:
                    self.conn.handle_packet(pkt)

    def _wait_invoke(self, pred: Any, timeout: float) -> tuple[str, float, list[Any]] | None:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for item in self.invokes:
                    if pred(item):
                        return item
                left = end - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(left)

    # -- steps
    def start(self) -> None:
        lib.RTMP_LogSetLevel(5)  # RTMP_LOGDEBUG: the handshake's verification messages
        add_log_callback(_on_log)
        try:
            self.conn.connect()
        except RTMPError as e:
            emit(event="handshake", genuine_server=any("Genuine Adobe Flash Media Server" in m for m in log_lines),
                 lines=log_lines)
            emit(event="connect_failed", error=str(e))
            raise SystemExit(2) from None
        emit(event="handshake", genuine_server=any("Genuine Adobe Flash Media Server" in m for m in log_lines),
             lines=list(log_lines))
        lib.RTMP_LogSetLevel(3)  # RTMP_LOGWARNING
        # the connect _result: librtmp's own packet loop (RTMP_ConnectStream) consumes it when publishing
        if self.spec.get("play_seconds"):
            self.play(float(self.spec["play_seconds"]), self.spec["flv_out"])
            return
        if self.spec.get("watch"):
            try:
                self.stream = self.conn.create_stream()
            except RTMPError as e:
                emit(event="play_failed", error=str(e))
                raise SystemExit(2) from None
            emit(event="playing")
        elif self.spec.get("publish"):
            try:
                self.stream = self.conn.create_stream(writeable=True)
            except RTMPError as e:
                emit(event="publish_failed", error=str(e))
                raise SystemExit(2) from None
            emit(event="publishing")
        else:
            res = self.conn.process_packets(transaction_id=1.0, timeout=10)
            emit(event="connected", result=res)
        self.reader = threading.Thread(target=self._read_loop, daemon=True)
        self.reader.start()

    def play(self, seconds: float, path: str) -> None:
        """Player mode: RTMP_ConnectStream (createStream, play PLAYPATH), then RTMP_Read's FLV to a file."""
        try:
            stream = self.conn.create_stream()
        except RTMPError as e:
            emit(event="play_failed", error=str(e))
            raise SystemExit(2) from None
        emit(event="playing")
        end = time.monotonic() + seconds
        n = 0
        with open(path, "wb") as f:
            while time.monotonic() < end:
                data = stream.read(4096)
                if not data:
                    break
                f.write(data)
                n += len(data)
        emit(event="played", bytes=n)

    def call(self, method: str, args: list[Any], timeout: float) -> None:
        with self.send_lock:
            rc = self.conn.call(method, *args)
        tid = float(rc.transaction_id)
        item = self._wait_invoke(lambda it: it[0] in ("_result", "_error") and float(it[1]) == tid, timeout)
        if item is None:
            emit(event="timeout", what=f"reply to {method}", closed=self.closed)
        else:
            emit(event="reply", method=method, name=item[0], tid=tid, args=item[2])

    def wait(self, name: str, timeout: float) -> None:
        n = self.waited.get(name, 0)

        def nth(_it: tuple[str, float, list[Any]]) -> bool:
            return sum(1 for x in self.invokes if x[0] == name) > n

        if self._wait_invoke(nth, timeout) is None:
            emit(event="timeout", what=name, closed=self.closed)
            return
        with self.cond:
            item = [x for x in self.invokes if x[0] == name][n]
        self.waited[name] = n + 1
        emit(event="waited", name=name, args=item[2])

    def _media_ts(self) -> int:
        if self.media_ts0 is None:
            self.media_ts0 = time.monotonic()
        return int((time.monotonic() - self.media_ts0) * 1000)

    def audio(self, seconds: float, hz: float, codec: str) -> None:
        src = AudioSource(codec, hz)
        start = time.monotonic()
        sent = 0
        ts0 = self._media_ts()
        while sent * src.frame_s < seconds and not self.closed:
            ts = ts0 + int(sent * src.frame * 1000 // src.rate)
            for p in src.next_payloads():
                with self.send_lock:
                    self.stream.write(flv_tag(8, ts, p))
            sent += 1
            delay = start + sent * src.frame_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        emit(event="audio_sent", tags=sent, seconds=round(sent * src.frame_s, 3), codec=codec)

    def flv(self, what: str) -> None:
        if what == "metadata":
            from librtmp.amf import encode_amf

            body = encode_amf("onMetaData") + encode_amf({"audiocodecid": 5.0, "videocodecid": 7.0, "duration": 0.0})
            tag = flv_tag(18, 0, body)
        elif what == "video":
            # an H.264 key frame NAL unit (AVC packet type 1): bytes a SIP phone must never see
            tag = flv_tag(9, self._media_ts(), bytes([0x17, 0x01, 0, 0, 0]) + b"\x00\x00\x00\x05\x65\x88\x84\x00\x33")
        else:
            raise SystemExit(f"unknown flv {what}")
        with self.send_lock:
            self.stream.write(tag)
        emit(event="flv_sent", what=what)

    def run(self) -> None:
        self.start()
        if self.spec.get("play_seconds"):
            emit(event="done", packets={}, closed=False)
            self.conn.close()
            return
        for step in self.spec.get("steps", []):
            do = step["do"]
            if do == "call":
                self.call(step["method"], step.get("args", []), step.get("timeout", 10))
            elif do == "wait":
                self.wait(step["name"], step.get("timeout", 10))
            elif do == "audio":
                self.audio(step["seconds"], step.get("hz", 800.0), step.get("codec", "nellymoser"))
            elif do == "flv":
                self.flv(step["what"])
            elif do == "sleep":
                time.sleep(step["seconds"])
            else:
                raise SystemExit(f"unknown step {do}")
        self.running = False  # the reader returns within the URL's timeout= (read_packet times out)
        if self.reader is not None:
            self.reader.join(5)
        emit(event="done", packets={str(k): v for k, v in sorted(self.packets.items())}, closed=self.closed)
        if self.reader is None or not self.reader.is_alive():
            self.conn.close()  # FCUnpublish + deleteStream when publishing, then the socket


def main() -> int:
    spec = json.loads(sys.argv[1])
    Client(spec).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

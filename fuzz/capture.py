"""Capture the seed corpus once: ``.venv/bin/python -m fuzz.capture`` (rewrites fuzz/corpus/).

Real traffic from the peers the tests use, plus what aiortc and webgate's own encoders emit:

- ``twistd -n webgate`` on loopback ports; SIPp calls its built-in echo (``uac_echo.xml``, UDP and
  TCP) with ``-trace_msg``: each message SIPp sent or received is a ``sip`` seed (its SDP bodies
  are ``sdp`` seeds); the TCP flow, concatenated, is a ``sip`` stream seed;
- ffmpeg publishes 1 kHz G.711 (and Speex) to ``rtmp://.../call/echo`` through a TCP proxy that
  records what ffmpeg sent: ``rtmp`` seeds (handshake + chunk stream + AMF0 commands);
- ffmpeg writes FLV files (G.711, Speex, Nellymoser, AAC, H.264): each tag body is an ``flv`` seed;
- ffmpeg streams G.711 over RTP to a UDP socket (RTP and its RTCP sender reports): ``rtp`` seeds,
  plus RFC 4733 events from webgate's DtmfSender; aioice builds the STUN binding requests a
  WebRTC peer sends on the same port (``stun`` seeds);
- aiortc's SDP offer (what a browser client sends) for ``sdp`` and ``ws`` seeds;
- webgate.example.toml and the embedded default for ``config``; minted tokens for ``jwt``.

Needs sipp and ffmpeg (installed by .ci/run). Not part of the test suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def put(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def sipp_messages(trace: str) -> list[bytes]:
    """SIPp -trace_msg log → the raw messages, in order."""
    out = []
    for block in re.split(r"\n-{10,}[^\n]*\n", trace):
        m = re.search(r"(?:message sent|message received)[^\n]*:\n\n?(.*)", block, re.DOTALL)
        if not m:
            continue
        text = m.group(1).strip("\n")
        if not re.match(r"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3})", text):
            continue
        head, _, body = text.partition("\n\n")
        msg = head.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")
        out.append(msg.encode())
    return out


class Recorder:
    """A TCP proxy that records the client → server bytes of each connection."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.flows: list[bytearray] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            rec = bytearray()
            self.flows.append(rec)
            threading.Thread(target=self._pipe, args=(c, u, rec), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, None), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket, rec: bytearray | None) -> None:
        try:
            while data := a.recv(65536):
                if rec is not None and len(rec) < 400_000:
                    rec += data
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def capture_gateway(tmp: Path) -> None:
    http, rtmp, sip = free_port(), free_port(), free_port()
    rtp = 42000
    conf = tmp / "webgate.toml"
    conf.write_text(f"""
[http]
listen = "127.0.0.1:{http}"
[rtmp]
listen = "127.0.0.1:{rtmp}"
[sip]
udp = "127.0.0.1:{sip}"
tcp = "127.0.0.1:{sip}"
[rtp]
port_min = {rtp}
port_max = {rtp + 19}
""")
    log = open(tmp / "twistd.log", "wb")  # noqa: SIM115
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "webgate", "--config", str(conf)], cwd=tmp, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", http), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        scen = ROOT / "tests" / "interop" / "scenarios" / "uac_echo.xml"
        stream = b""
        for transport, flag in (("udp", "u1"), ("tcp", "t1")):
            mf = tmp / f"sipp_{transport}.log"
            subprocess.run(["sipp", "-sf", str(scen), f"127.0.0.1:{sip}", "-s", "echo", "-m", "1", "-t", flag,
                            "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
                            "-d", "300", "-nostdin", "-trace_msg", "-message_file", str(mf), "-timeout", "15"],
                           cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
            msgs = sipp_messages(mf.read_text(errors="replace")) if mf.exists() else []
            for i, m in enumerate(msgs):
                put("sip", f"sipp_{transport}_{i:02d}", b"\x00" + m)
                body = m.split(b"\r\n\r\n", 1)[1]
                if body.startswith(b"v=0"):
                    put("sdp", f"sipp_{transport}_{i:02d}", body)
                if transport == "tcp":
                    stream += m
        if stream:
            put("sip", "sipp_tcp_stream", b"\x01" + stream)  # first byte: the split pattern of a stream case
        # ffmpeg → RTMP (through the recorder)
        rec = Recorder(rtmp)
        for codec, extra in (("pcm_mulaw", ["-ar", "8000"]), ("libspeex", ["-ar", "16000"])):
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                            "sine=frequency=1000:sample_rate=16000:duration=1", "-c:a", codec, *extra, "-ac", "1",
                            "-f", "flv", f"rtmp://127.0.0.1:{rec.port}/call/echo"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
            time.sleep(0.5)
        for i, flow in enumerate(rec.flows):
            put("rtmp", f"ffmpeg_{i}", b"\x00" + bytes(flow[3073:40_000]))  # after C0+C1 and C2
            if i == 0:
                put("rtmp", "ffmpeg_handshake", b"\x01" + bytes(flow[:6000]))
            amf_seeds(bytes(flow[3073:]), i)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def amf_seeds(chunks: bytes, flow: int) -> None:
    from webgate.proto.rtmp import amf
    from webgate.proto.rtmp.chunk import ChunkParser

    try:
        msgs = ChunkParser().feed(chunks)
    except Exception:  # noqa: BLE001 - a capture cut mid-message
        msgs = []
    n = 0
    for m in msgs:
        if m.type_id in (18, 20) and n < 6:
            put("amf", f"ffmpeg_{flow}_{n}", (b"\x02" if m.type_id == 20 else b"\x04") + bytes(m.payload))
            n += 1
    put("amf", "amf3_values", b"\x01" + amf.encode_amf3({"a": 1, "b": [1.5, "x", None, True]}, "text", 12345, [1, 2, 3]))
    put("amf", "amf3_command", b"\x03\x00" + amf.encode_amf0("connect", 1.0, {"app": "call", "objectEncoding": 3}, use_amf3=True))


def capture_flv(tmp: Path) -> None:
    from webgate.proto.flv import read_flv

    jobs = {
        "pcmu": ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=8000:duration=0.2", "-c:a", "pcm_mulaw"],
        "speex": ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=16000:duration=0.2", "-c:a", "libspeex"],
        "nelly": ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=8000:duration=0.2", "-c:a", "nellymoser"],
        "aac": ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100:duration=0.2", "-c:a", "aac"],
        "h264": ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=0.6", "-c:v", "libx264", "-g", "2"],
    }
    for name, args in jobs.items():
        out = tmp / f"{name}.flv"
        audio = ["-ac", "1"] if name != "h264" else []
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args, *audio, str(out)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
        if not out.exists():
            continue
        data = out.read_bytes()
        put("flv", f"{name}_file", b"\x02" + data[:8000])
        _, tags = read_flv(data)
        for i, tag in enumerate(tags):
            if i >= 3:
                break
            kind = 0 if tag.tag_type == 8 else 1 if tag.tag_type == 9 else 3
            put("flv", f"{name}_tag{i}", bytes([kind]) + tag.data[:4000])


def capture_rtp(tmp: Path) -> None:
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    port = rtp.getsockname()[1]
    if port % 2:
        rtp.close()
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        port = 43010
        rtp.bind(("127.0.0.1", port))
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp.bind(("127.0.0.1", port + 1))
    p = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                          "sine=frequency=1000:sample_rate=8000:duration=6", "-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1",
                          "-f", "rtp", f"rtp://127.0.0.1:{port}?rtcpport={port + 1}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got_rtp, got_rtcp = [], []
    end = time.time() + 8
    rtp.settimeout(0.2)
    rtcp.settimeout(0.01)
    while time.time() < end and (len(got_rtp) < 5 or not got_rtcp):
        try:
            got_rtp.append(rtp.recv(2048))
        except OSError:
            pass
        try:
            got_rtcp.append(rtcp.recv(2048))
        except OSError:
            pass
    p.kill()
    p.wait()
    for i, d in enumerate(got_rtp[:3]):
        put("rtp", f"ffmpeg_rtp_{i}", b"\x00" + d)
    for i, d in enumerate(got_rtcp[:2]):
        put("rtp", f"ffmpeg_rtcp_{i}", b"\x00" + d)
    from webgate.proto.rtp import DtmfSender, RtpSender

    sender = RtpSender(101, 8000)
    for i, pkt in enumerate(DtmfSender(101, 8000).packets("5", 120, sender)[:2] + DtmfSender(101, 8000).packets("#", 60, sender)[-1:]):
        put("rtp", f"webgate_rfc4733_{i}", b"\x00" + pkt.serialize())
    # STUN from aioice, as a WebRTC peer sends it to the port it was given
    from aioice import stun

    for i, (cls, attrs) in enumerate([
        (stun.Class.REQUEST, {"USERNAME": "abcd:efgh", "PRIORITY": 1853824767, "ICE-CONTROLLING": 0x1234567890,
                              "USE-CANDIDATE": None}),
        (stun.Class.RESPONSE, {"XOR-MAPPED-ADDRESS": ("127.0.0.1", 5000)}),
        (stun.Class.INDICATION, {}),
    ]):
        msg = stun.Message(message_method=stun.Method.BINDING, message_class=cls)
        for k, v in attrs.items():
            msg.attributes[k] = v
        if cls == stun.Class.REQUEST:
            msg.add_message_integrity(b"0123456789abcdef0123")
            msg.add_fingerprint()
        put("stun", f"aioice_{i}", bytes(msg))


def capture_aiortc() -> str:
    from aiortc import RTCPeerConnection

    async def offer() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    sdp = asyncio.run(offer())
    put("sdp", "aiortc_offer", sdp.encode())
    return sdp


def static_seeds(offer: str) -> None:
    from webgate.config import DEFAULT_TOML
    from webgate.security.tokens import mint_token

    put("config", "example", (ROOT / "webgate.example.toml").read_bytes())
    put("config", "default", DEFAULT_TOML.encode())
    ws = [
        {"type": "ping", "id": 1},
        {"type": "call", "destination": "echo", "sdp": offer},
        {"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
                                            "sdpMid": "0", "sdpMLineIndex": 0}},
        {"type": "dtmf", "digits": "123#", "duration_ms": 100},
        {"type": "hold", "on": True},
        {"type": "auth", "token": "x.y.z"},
        {"type": "register", "user": "alice"},
        {"type": "accept", "call_id": "1", "sdp": "v=0"},
        {"type": "hangup"},
    ]
    for i, m in enumerate(ws):
        put("ws", f"msg_{i}", json.dumps(m).encode())
    from fuzz.targets import JWT_KEY, JWT_NOW

    claims = [{}, {"sub": "alice", "dest": ["echo", "1234"]}, {"dest_pattern": r"\d{4}", "max_duration": 60},
              {"session_id": "12345678", "display_name": "A", "caller_id": "100"}]
    for i, c in enumerate(claims):
        put("jwt", f"minted_{i}", b"\x00" + mint_token(JWT_KEY, now=JWT_NOW, ttl_s=600, **c).encode())
        put("jwt", f"claims_{i}", b"\x01" + json.dumps({"exp": JWT_NOW + 600, **c}).encode())


def main() -> None:
    if shutil.which("sipp") is None or shutil.which("ffmpeg") is None:
        sys.exit("capture needs sipp and ffmpeg")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        capture_gateway(tmp)
        capture_flv(tmp)
        capture_rtp(tmp)
        offer = capture_aiortc()
        static_seeds(offer)
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()

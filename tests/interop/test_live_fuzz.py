"""Live fuzzing: a mutated stream of SIP (UDP and TCP), RTMP and WebSocket traffic at a running
``twistd -n webgate`` while an RTMP echo call is up (ffmpeg publishes 1 kHz to ``call/echo``).

Afterwards the call must still echo its tone (a second ffmpeg plays ``session/ID`` and the
recording's dominant frequency is measured), ``/health`` must answer 200 and the process must
still run. The mutations come from the fuzz seed corpus (fuzz/corpus/) through the same
deterministic mutator as the in-suite short runs (fixed seed).
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from fuzz import mutate
from tests.interop import peers
from tests.ops.helpers import ADMIN_KEY, TWISTD, twistd_env
from webgate.media.analysis import dominant_frequency, read_wav

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
TONE_HZ = 1000.0
FUZZ_S = 8.0


def _get(url: str, key: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _ffmpeg(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _send_tcp(port: int, data: bytes, pieces: int, read: bool = True) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            step = max(1, len(data) // pieces)
            for i in range(0, len(data), step):
                s.sendall(data[i : i + step])
            if read:
                s.settimeout(0.05)
                try:
                    s.recv(65536)
                except OSError:
                    pass
    except OSError:
        pass  # refused or reset by the gateway: an allowed answer to junk


def _ws_frame(payload: bytes, rng: random.Random, opcode: int = 1) -> bytes:
    mask = bytes(rng.randrange(256) for _ in range(4))
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _ws_session(port: int, frames: list[bytes]) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    hello = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(hello)
            s.settimeout(1.0)
            s.recv(4096)
            for f in frames:
                s.sendall(f)
            s.settimeout(0.05)
            try:
                s.recv(65536)
            except OSError:
                pass
    except OSError:
        pass


def _fuzz(rng: random.Random, sip: int, rtmp: int, http: int, seconds: float) -> dict[str, int]:
    sip_seeds = [d[1:] for d in mutate.load_corpus(CORPUS / "sip")]
    # ffmpeg's recorded flows: the handshake seed starts at C0; the others start after C2
    prelude = (CORPUS / "rtmp" / "ffmpeg_handshake").read_bytes()[1 : 1 + 1537 + 1536]
    rtmp_seeds = [prelude + p.read_bytes()[1:] for p in sorted((CORPUS / "rtmp").glob("ffmpeg_[0-9]*"))]
    ws_seeds = mutate.load_corpus(CORPUS / "ws")
    counts = {"sip_udp": 0, "sip_tcp": 0, "rtmp": 0, "ws": 0}
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for _ in range(20):
                udp.sendto(mutate.mutate(rng, rng.choice(sip_seeds), sip_seeds, 4000), ("127.0.0.1", sip))
                counts["sip_udp"] += 1
            stream = b"".join(mutate.mutate(rng, rng.choice(sip_seeds), sip_seeds, 4000) for _ in range(3))
            _send_tcp(sip, stream, rng.randint(1, 5))
            counts["sip_tcp"] += 1
            flow = rng.choice(rtmp_seeds)
            keep = 1537 + 1536 if rng.random() < 0.7 else 0  # mostly past the handshake
            _send_tcp(rtmp, flow[:keep] + mutate.mutate(rng, flow[keep:keep + 6000], rtmp_seeds, 8000), rng.randint(1, 8))
            counts["rtmp"] += 1
            frames = []
            for _ in range(3):
                seed = rng.choice(ws_seeds)
                text = seed if rng.random() < 0.25 else mutate.mutate(rng, seed, ws_seeds, 6000)  # some valid ones
                frames.append(_ws_frame(text, rng) if rng.random() < 0.9 else text)  # some raw junk frames
            _ws_session(http, frames)
            counts["ws"] += 1
            time.sleep(0.02)
    finally:
        udp.close()
    return counts


def test_live_fuzz_leaves_the_echo_call_and_health_intact(tmp_path: Path) -> None:
    http, rtmp = peers.free_port("tcp"), peers.free_port("tcp")
    sip = peers.free_port("both")
    rtp = peers.free_port_block(40, "udp", align=2)
    conf = tmp_path / "webgate.toml"
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
port_max = {rtp + 39}
[api]
admin_key = "{ADMIN_KEY}"
[limits]
max_attempts_per_ip_per_minute = 0
max_calls_per_ip = 0
""")
    log = open(tmp_path / "twistd.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "webgate", "--config", str(conf)], cwd=tmp_path, env=twistd_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{http}"
    pub = None
    try:
        for _ in range(300):
            try:
                if _get(base + "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "twistd.log").read_text()[-3000:]
            time.sleep(0.1)
        pub = _ffmpeg("-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=8000:duration=40",
                      "-c:a", "pcm_mulaw", "-ar", "8000", "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/call/echo")
        session = None
        for _ in range(100):
            status, body = _get(base + "/api/calls", ADMIN_KEY)
            calls = json.loads(body).get("calls", []) if status == 200 else []
            live = [c for c in calls if c["state"] == "answered" and c.get("from_sip", {}).get("packets", 0) > 10]
            if live:
                session = live[0]["session_id"]
                break
            time.sleep(0.1)
        assert session is not None, f"no echo call: {calls}"

        counts = _fuzz(random.Random(20261203), sip, rtmp, http, FUZZ_S)
        print(f"\nlive fuzz: {counts}")
        assert proc.poll() is None, (tmp_path / "twistd.log").read_text()[-3000:]
        assert pub.poll() is None, "the publisher's connection was dropped"

        wav = tmp_path / "back.wav"
        player = _ffmpeg("-i", f"rtmp://127.0.0.1:{rtmp}/session/{session}", "-t", "3", "-ac", "1", "-y", str(wav))
        _, err = player.communicate(timeout=30)
        assert player.returncode == 0, err.decode(errors="replace")
        pcm, rate = read_wav(wav)
        assert len(pcm) >= rate * 2.5
        freq = dominant_frequency(pcm[len(pcm) // 3 :], rate)
        assert abs(freq - TONE_HZ) < 25, f"echo measured at {freq:.1f} Hz"
        status, body = _get(base + "/health")
        assert status == 200, body
        assert proc.poll() is None
    finally:
        if pub is not None and pub.poll() is None:
            pub.kill()
            pub.wait()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()

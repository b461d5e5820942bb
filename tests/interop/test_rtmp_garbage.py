"""Garbage on the RTMP port while a real ffmpeg call is live: every bad connection is closed, the good
call keeps its tone without a gap, and nothing is logged as an unexpected failure.

ffmpeg publishes an 800 Hz tone (AAC) to ``call/echo``; a second ffmpeg plays ``call/echo`` and records
to WAV. Meanwhile a thread opens ~60 connections with blocking sockets: HTTP, random bytes, RTMPE, a
handshake followed by random bytes, absurd Set Chunk Size values, a 16 MB message length, invalid AMF,
commands before connect, unknown applications and commands, a publish the dial plan refuses, and
randomly mutated valid sessions. The recording is checked in 250 ms windows.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from tests.adapters.rtmp_helpers import Gateway, LogFailures, ffmpeg
from tests.calls.gw import sleep, wait_for
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs
from webgate.proto.rtmp import amf
from webgate.proto.rtmp.chunk import ChunkWriter

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1

TONE_HZ = 800.0


# ---- the attacker (blocking sockets, run in a thread) ---------------------------------------------

def _closed_by_server(s: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the server closes; returns everything it sent. Raises TimeoutError if it never does."""
    s.settimeout(0.5)
    got = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk
    raise TimeoutError("server did not close the connection")


def _handshake(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    c1 = bytes(8) + os.urandom(1528)
    s.sendall(b"\x03" + c1)
    need, got = 1 + 2 * 1536, b""
    while len(got) < need:
        chunk = s.recv(need - len(got))
        if not chunk:
            raise ConnectionError("closed during the handshake")
        got += chunk
    s.sendall(got[1:1537])  # C2 = echo of S1
    return s


def _command(w: ChunkWriter, name: str, tid: float, obj: Any, *args: Any, stream_id: int = 0) -> bytes:
    t, p = amf.encode_command(name, tid, obj, *args)
    return w.write(3, t, stream_id, 0, p)


def _connect(port: int, app: str) -> tuple[socket.socket, ChunkWriter]:
    s = _handshake(port)
    w = ChunkWriter()
    s.sendall(_command(w, "connect", 1, {"app": app, "tcUrl": f"rtmp://127.0.0.1:{port}/{app}", "flashVer": "FMLE/3.0"}))
    return s, w


def attack_all(port: int, seed: int = 7) -> dict[str, int]:
    rnd = random.Random(seed)
    results: dict[str, int] = {}

    def expect_close(name: str, s: socket.socket, data: bytes = b"") -> bytes:
        try:
            if data:
                s.sendall(data)
            got = _closed_by_server(s)
        except (BrokenPipeError, ConnectionResetError):
            got = b""
        finally:
            s.close()
        results[name] = results.get(name, 0) + 1
        return got

    def raw() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    expect_close("http", raw(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    expect_close("rtmpe", raw(), b"\x06" + os.urandom(1536))
    for _ in range(5):
        expect_close("random", raw(), bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4000))))
    for _ in range(5):
        expect_close("handshake+random", _handshake(port), bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4000))))
    w = ChunkWriter()
    for size in (0, 0x7FFFFFFF, 0xFFFFFFFF, 0x00FFFFFF):
        expect_close("chunk size", _handshake(port), ChunkWriter().write(2, 1, 0, 0, struct.pack(">I", size)))
    expect_close("16 MB message", _handshake(port),
                 b"\x03\x00\x00\x00" + (0xFFFFFF).to_bytes(3, "big") + b"\x14" + bytes(4) + b"\x02" * 100)
    expect_close("invalid AMF", _handshake(port), w.write(3, 20, 0, 0, b"\x02\x00\x07connect\x00\xff\xff" + b"\x11" * 20))
    expect_close("before connect", _handshake(port), _command(ChunkWriter(), "createStream", 2, None))
    s, _ = _connect(port, "live")
    got = expect_close("unknown app", s)
    assert b"NetConnection.Connect.InvalidApp" in got, got[-300:]
    s, w = _connect(port, "call")
    time.sleep(0.1)
    s.sendall(_command(w, "createStream", 2, None) + _command(w, "publish", 3, None, "+4930123456", "live", stream_id=1))
    got = expect_close("refused publish", s)
    assert b"NetStream.Publish.BadName" in got and b"destination_not_allowed" in got, got[-400:]
    # valid sessions with random byte flips and trailing junk
    for i in range(30):
        try:
            s, w = _connect(port, "call")
        except ConnectionError:
            continue
        data = bytearray(_command(w, "createStream", 2, None) + _command(w, "publish", 3, None, "echo", "live", stream_id=1)
                         + w.write(4, 8, 1, 0, b"\xaf\x01" + os.urandom(200)))
        for _ in range(rnd.randint(1, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            s.sendall(bytes(data) + os.urandom(rnd.randint(0, 300)))
            time.sleep(0.01)
        except OSError:
            pass
        s.close()  # mutated sessions may be valid: we close them ourselves
        results["mutated"] = results.get("mutated", 0) + 1
    return results


@pytest_twisted.ensureDeferred
async def test_garbage_connections_leave_a_live_ffmpeg_call_untouched(tmp_path: Path) -> None:
    gw = Gateway({"rtmp": {"max_connections_per_ip": 50}})
    failures = LogFailures()
    globalLogPublisher.addObserver(failures)
    try:
        pub = ffmpeg("-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=44100:duration=10",
                     "-c:a", "aac", "-b:a", "64k", "-f", "flv", gw.url("call/echo"), timeout=40)
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10)
        call = next(iter(gw.svc.registry))
        await sleep(0.5)
        wav = tmp_path / "good.wav"
        player = ffmpeg("-i", gw.url("call/echo?codec=pcmu"), "-map", "0:a", "-t", "6", "-ac", "1", "-y", str(wav), timeout=30)
        await sleep(0.5)
        t0 = time.monotonic()
        results = await deferToThread(attack_all, gw.rtmp_port)
        attack_s = time.monotonic() - t0
        code, _o, err = await player.wait()
        assert code == 0, err.decode(errors="replace")
        assert call.state is CallState.ANSWERED and not call.ended, call.end_cause
        assert len(gw.svc.registry) == 1, "garbage connections left calls behind"
        code, _o, err = await pub.wait()
        assert code == 0, err.decode(errors="replace")
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert await wait_for(lambda: len(gw.factory.connections) == 0, 5), len(gw.factory.connections)

        x, rate = read_wav(wav)
        win = rate // 4
        body = x[rate // 2:]
        windows = [body[i:i + win] for i in range(0, len(body) - win + 1, win)]
        freqs = [dominant_frequency(w, rate) for w in windows]
        levels = [rms_dbfs(w) for w in windows]
        print(f"\n{sum(results.values())} bad connections in {attack_s:.1f} s ({results});"
              f" good call: {len(windows)} windows of 250 ms, {min(freqs):.0f}-{max(freqs):.0f} Hz,"
              f" min level {min(levels):.1f} dBFS; AAC in: {call.leg.audio_in.dropped_ms} ms dropped")
        assert len(windows) >= 20
        assert all(abs(f - TONE_HZ) < 20 for f in freqs), freqs
        assert min(levels) > -35, levels  # no gap
        assert call.leg.audio_in.bad_tags == 0
        assert sum(results.values()) >= 50
        assert not failures.events, [e.get("log_format") for e in failures.events]
    finally:
        globalLogPublisher.removeObserver(failures)
        await gw.stop()

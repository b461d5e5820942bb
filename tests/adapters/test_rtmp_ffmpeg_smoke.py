"""Smoke test: real ffmpeg against the sans-IO RTMP core, driven by a plain socket thread on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from webgate.proto.flv import (
    SOUND_G711_MULAW,
    SOUND_NELLYMOSER,
    TAG_AUDIO,
    AudioTagHeader,
    audio_codec_of,
    build_audio_tag,
    read_flv,
)
from webgate.proto.rtmp.handshake import HandshakeKind
from webgate.proto.rtmp.server import (
    AudioReceived,
    ConnectRequested,
    DataReceived,
    Event,
    HandshakeCompleted,
    PlayRequested,
    ProtocolViolation,
    PublishRequested,
    RtmpServerConnection,
    StreamClosed,
)

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1


class _Server(threading.Thread):
    """Serves one RTMP connection; on play, sends 2.5 s of G.711 µ-law tags."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(20)
        self.port = self.sock.getsockname()[1]
        self.events: list[Event] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError as exc:
            self.error = exc
            return
        core = RtmpServerConnection()
        conn.settimeout(10)
        try:
            while not core.closed:
                try:
                    data = conn.recv(65536)
                except (TimeoutError, ConnectionError):
                    break
                if not data:
                    break
                for ev in core.receive_data(data, 0.0):
                    self.events.append(ev)
                    self._handle(core, ev)
                conn.sendall(core.data_to_send())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            conn.close()
            self.sock.close()

    def _handle(self, core: RtmpServerConnection, ev: Any) -> None:
        if isinstance(ev, ConnectRequested):
            core.accept_connect()
        elif isinstance(ev, PublishRequested):
            core.accept_publish(ev.stream_id, {"sessionId": "abc"})
        elif isinstance(ev, PlayRequested):
            core.accept_play(
                ev.stream_id,
                metadata={"audiocodecid": 8, "audiosamplerate": 8000, "stereo": False},
            )
            header = AudioTagHeader(SOUND_G711_MULAW, 0, 1, 0)
            for i in range(
                125
            ):  # 2.5 s of 20 ms frames (160 bytes each) of a 1 kHz-ish µ-law pattern
                core.send_audio(
                    ev.stream_id,
                    i * 20,
                    build_audio_tag(header, bytes([0xFF, 0x8F, 0x80, 0x8F] * 40)),
                )


def test_ffmpeg_publishes_nellymoser() -> None:
    srv = _Server()
    srv.start()
    proc = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=44100:duration=2",
            "-c:a",
            "nellymoser",
            "-f",
            "flv",
            f"rtmp://127.0.0.1:{srv.port}/call/echo",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    srv.join(15)
    assert srv.error is None, srv.error
    assert proc.returncode == 0, proc.stderr.decode()
    kinds = [type(e).__name__ for e in srv.events]
    hs = next(e for e in srv.events if isinstance(e, HandshakeCompleted))
    assert hs.kind in (HandshakeKind.DIGEST_SCHEMA0, HandshakeKind.DIGEST_SCHEMA1)
    assert not any(isinstance(e, ProtocolViolation) for e in srv.events), srv.events[-1]
    connect = next(e for e in srv.events if isinstance(e, ConnectRequested))
    assert connect.app == "call"
    pub = next(e for e in srv.events if isinstance(e, PublishRequested))
    assert pub.name == "echo"
    audio = [e for e in srv.events if isinstance(e, AudioReceived)]
    assert len(audio) > 50, kinds
    assert audio[0].data[0] >> 4 == SOUND_NELLYMOSER
    assert audio_codec_of(audio[0].data) == ("nellymoser", 44100, 1)
    duration = audio[-1].timestamp_ms - audio[0].timestamp_ms
    assert 1700 <= duration <= 2100, duration
    assert any(
        isinstance(e, DataReceived) and e.name == "onMetaData" for e in srv.events
    )
    assert any(isinstance(e, StreamClosed) for e in srv.events)


def test_ffmpeg_plays_g711(tmp_path: Path) -> None:
    srv = _Server()
    srv.start()
    out = tmp_path / "out.flv"
    proc = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            f"rtmp://127.0.0.1:{srv.port}/call/echo",
            "-t",
            "2",
            "-c",
            "copy",
            "-y",
            str(out),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    srv.join(15)
    assert srv.error is None, srv.error
    assert proc.returncode == 0, proc.stderr.decode()
    assert any(isinstance(e, PlayRequested) and e.name == "echo" for e in srv.events)
    _, tags = read_flv(out.read_bytes())
    audio = [t for t in tags if t.tag_type == TAG_AUDIO]
    assert len(audio) >= 90
    assert audio[0].data[0] >> 4 == SOUND_G711_MULAW
    assert 1800 <= audio[-1].timestamp - audio[0].timestamp <= 2100

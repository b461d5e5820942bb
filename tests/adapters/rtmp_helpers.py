"""Helpers for RTMP adapter tests: a gateway with an RTMP listener, subprocesses on the reactor,
and a scripted RTMP client over a real socket."""

from __future__ import annotations

import os
import shutil
import signal
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet import reactor as _reactor

from tests.calls.gw import make_config, start_telephony
from webgate.adapters.rtmp import RtmpFactory

reactor: Any = _reactor


class Gateway:
    """Telephony + an RTMP listener on 127.0.0.1:<ephemeral>."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.svc = start_telephony(make_config(extra))
        self.factory = RtmpFactory(self.svc.manager, self.svc.config.rtmp, reactor, video_config=self.svc.config.video)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.rtmp_port: int = self.port.getHost().port

    @property
    def manager(self) -> Any:
        return self.svc.manager

    def url(self, path: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{path}"

    async def stop(self) -> None:
        self.factory.close_all()
        await self.port.stopListening()
        await self.svc.stopService()


class _Proc(protocol.ProcessProtocol):
    def __init__(self, done: defer.Deferred[tuple[int | None, bytes, bytes]]) -> None:
        self.done = done
        self.out = bytearray()
        self.err = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        if not self.done.called:
            self.done.callback((code, bytes(self.out), bytes(self.err)))


class Process:
    """A child process run on the reactor (never blocks it), killed on timeout."""

    def __init__(self, argv: list[str], timeout: float = 30.0) -> None:
        self.done: defer.Deferred[tuple[int | None, bytes, bytes]] = defer.Deferred()
        self.proto = _Proc(self.done)
        self.transport = reactor.spawnProcess(self.proto, argv[0], argv, env=dict(os.environ))
        self._killer = reactor.callLater(timeout, self.kill)

    def kill(self) -> None:
        try:
            self.transport.signalProcess(signal.SIGKILL)
        except Exception:  # noqa: BLE001, S110 - already gone
            pass

    def interrupt(self) -> None:
        try:
            self.transport.signalProcess(signal.SIGINT)
        except Exception:  # noqa: BLE001, S110 - already gone
            pass

    async def wait(self) -> tuple[int | None, bytes, bytes]:
        result = await self.done
        if self._killer.active():
            self._killer.cancel()
        return result


def ffmpeg(*args: str, timeout: float = 30.0) -> Process:
    return Process([shutil.which("ffmpeg") or "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", *args], timeout)


# ---- a scripted RTMP client over a real socket ------------------------------------------------

from twisted.internet import endpoints
from twisted.logger import globalLogPublisher

from tests.calls.gw import sleep, wait_for
from webgate.media.codecs import create_encoder
from webgate.media.tones import ToneGenerator
from webgate.proto import flv
from webgate.proto.rtmp import amf
from webgate.proto.rtmp.chunk import (
    ChunkLimits,
    ChunkParser,
    ChunkWriter,
    RtmpMessage,
    set_chunk_size_payload,
)
from webgate.proto.rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake


class RtmpClient(protocol.Protocol):
    """Speaks the client side: digest handshake (verifying the server's), commands, audio."""

    def __init__(self, digest: bool = True) -> None:
        self.hs = ClientHandshake(schema=1, digest=digest)
        self._hs_buf = bytearray()
        self.handshake_done = False
        self.parser = ChunkParser(ChunkLimits(max_chunk_size=1 << 24, max_message_length=1 << 24))
        self.writer = ChunkWriter()
        self.messages: list[RtmpMessage] = []
        self.commands: list[amf.Command] = []
        self.command_streams: list[int] = []
        self.audio: dict[int, list[tuple[int, bytes]]] = {}
        self.lost = False
        self.tid = 1

    # Twisted
    def connectionMade(self) -> None:
        self.transport.write(self.hs.c0c1())

    def dataReceived(self, data: bytes) -> None:
        if not self.handshake_done:
            self._hs_buf += data
            n = 1 + 2 * HANDSHAKE_SIZE
            if len(self._hs_buf) < n:
                return
            c2 = self.hs.process_server(bytes(self._hs_buf[:n]))  # raises if the digest is wrong
            self.transport.write(c2)
            self.handshake_done = True
            data = bytes(self._hs_buf[n:])
        for m in self.parser.feed(data):
            self.messages.append(m)
            if m.type_id in (17, 20):
                self.commands.append(amf.decode_command(m.type_id, m.payload))
                self.command_streams.append(m.stream_id)
            elif m.type_id == 8:
                self.audio.setdefault(m.stream_id, []).append((m.timestamp, m.payload))

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True

    # sending
    def raw(self, data: bytes) -> None:
        self.transport.write(data)

    def message(self, csid: int, type_id: int, stream_id: int, ts: int, payload: bytes) -> None:
        self.raw(self.writer.write(csid, type_id, stream_id, ts, payload))

    def command(self, name: str, *args: Any, stream_id: int = 0, obj: Any = None, tid: float | None = None) -> float:
        if tid is None:
            self.tid += 1
            tid = self.tid
        type_id, payload = amf.encode_command(name, tid, obj, *args)
        self.message(3 if stream_id == 0 else 8, type_id, stream_id, 0, payload)
        return tid

    def set_chunk_size(self, size: int) -> None:
        self.message(2, 1, 0, 0, set_chunk_size_payload(size))
        self.writer.chunk_size = size

    def send_audio(self, stream_id: int, ts: int, tag: bytes) -> None:
        self.message(4, 8, stream_id, ts, tag)

    # waiting
    def find(self, name: str, tid: float | None = None) -> amf.Command | None:
        for c in self.commands:
            if c.name == name and (tid is None or c.transaction_id == tid):
                return c
        return None

    def statuses(self, stream_id: int | None = None) -> list[dict[str, Any]]:
        out = []
        for c, sid in zip(self.commands, self.command_streams):
            if c.name == "onStatus" and (stream_id is None or sid == stream_id) and c.args and isinstance(c.args[0], dict):
                out.append(c.args[0])
        return out

    async def reply(self, tid: float, timeout: float = 5.0) -> amf.Command:
        def got() -> bool:
            return any(c.name in ("_result", "_error") and c.transaction_id == tid for c in self.commands)

        assert await wait_for(got, timeout), f"no reply to transaction {tid}: {[c.name for c in self.commands]}"
        return next(c for c in self.commands if c.name in ("_result", "_error") and c.transaction_id == tid)

    async def callback(self, name: str, timeout: float = 5.0) -> amf.Command:
        assert await wait_for(lambda: self.find(name) is not None, timeout), f"no {name}: {[c.name for c in self.commands]}"
        c = self.find(name)
        assert c is not None
        return c

    async def status(self, stream_id: int, code: str, timeout: float = 5.0) -> dict[str, Any]:
        assert await wait_for(lambda: any(s.get("code") == code for s in self.statuses(stream_id)), timeout), self.statuses()
        return next(s for s in self.statuses(stream_id) if s.get("code") == code)

    async def connect(self, app: str, *args: Any, flash_ver: str = "WIN 11,2,202,235", port: int = 1935) -> amf.Command:
        assert await wait_for(lambda: self.handshake_done or self.lost, 5)
        obj = {"app": app, "flashVer": flash_ver, "tcUrl": f"rtmp://127.0.0.1:{port}/{app}", "objectEncoding": 0}
        type_id, payload = amf.encode_command("connect", 1, obj, *args)
        self.message(3, type_id, 0, 0, payload)
        return await self.reply(1)

    async def create_stream(self) -> int:
        c = await self.reply(self.command("createStream"))
        assert c.name == "_result", c
        return int(c.args[0])


async def open_client(port: int, digest: bool = True, source: str | None = None) -> RtmpClient:
    """A scripted client connected to 127.0.0.1:``port``, from the loopback address ``source``
    (e.g. ``127.0.0.2``: another client address on Linux loopback) when given."""
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0) if source else None)
    client: RtmpClient = await endpoints.connectProtocol(ep, RtmpClient(digest))
    return client


async def flash_client(port: int, user: str, *args: Any, flash_ver: str = "WIN 11,2,202,235") -> RtmpClient:
    """A Flash RPC client connected to ``sip/USER`` with the connect arguments ``args``; the
    connect must succeed."""
    c = await open_client(port)
    res = await c.connect(f"sip/{user}", *args, flash_ver=flash_ver, port=port)
    assert res.name == "_result" and res.args[0]["code"] == "NetConnection.Connect.Success", res
    return c


async def play_status(port: int, app: str, name: str, source: str | None = None) -> str:
    """Play ``name`` on ``app`` (e.g. ``session``/ID) on a new connection (from ``source``, see
    :func:`open_client`): the final onStatus code."""
    c = await open_client(port, source=source)
    await c.connect(app, port=port)
    sid = await c.create_stream()
    c.command("play", name, stream_id=sid)
    final = ("NetStream.Play.Start", "NetStream.Play.StreamNotFound", "NetStream.Play.Failed")
    assert await wait_for(lambda: any(s.get("code") in final for s in c.statuses(sid)), 5), c.statuses(sid)
    code = next(s["code"] for s in c.statuses(sid) if s.get("code") in final)
    c.transport.loseConnection()
    return code


async def send_nellymoser(c: RtmpClient, stream_id: int, seconds: float, hz: float) -> None:
    """What Flash's Microphone does with the Nellymoser codec at 8 kHz: one tag per 256 samples
    of an ``hz`` tone, paced in real time."""
    enc = create_encoder("nellymoser", 8000)
    gen = ToneGenerator(hz, 8000, 0.4)
    header = flv.build_audio_tag(flv.audio_header_for("nellymoser", 8000), b"")
    sent = 0
    for _ in range(int(seconds * 8000 / 256)):
        for p in enc.encode(gen.generate(256)):
            c.send_audio(stream_id, sent * 1000 // 8000, header + p)
            sent += 256
        await sleep(0.032)


class LogFailures:
    """Collects log.failure events (unexpected exceptions in the adapter); a context manager
    that observes the global log publisher, or an observer to add by hand."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if "log_failure" in event:
            self.events.append(event)

    def __enter__(self) -> LogFailures:  # noqa: PYI034
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

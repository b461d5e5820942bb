"""A scripted RTMP client for tests: builds client bytes and decodes what the server sends."""

from __future__ import annotations

from typing import Any

from webgate.proto.rtmp import amf
from webgate.proto.rtmp.chunk import (
    ChunkParser,
    ChunkWriter,
    RtmpMessage,
    set_chunk_size_payload,
)
from webgate.proto.rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake
from webgate.proto.rtmp.server import Event, RtmpServerConnection


class ScriptedClient:
    def __init__(
        self, server: RtmpServerConnection, digest: bool = True, schema: int = 1
    ) -> None:
        self.server = server
        self.hs = ClientHandshake(schema=schema, digest=digest)
        self.writer = ChunkWriter()
        self.parser = ChunkParser()
        self.received: list[RtmpMessage] = []
        self.events: list[Event] = []
        self.tid = 1

    def handshake(self, trailing: bytes = b"") -> list[Event]:
        ev = self.server.receive_data(self.hs.c0c1(), 0.0)
        s = self.server.data_to_send()
        assert len(s) == 1 + 2 * HANDSHAKE_SIZE
        c2 = self.hs.process_server(s)
        ev += self.server.receive_data(c2 + trailing, 0.0)
        self.events += ev
        return ev

    def send_raw(self, data: bytes) -> list[Event]:
        ev = self.server.receive_data(data, 0.0)
        self.events += ev
        self.pump()
        return ev

    def pump(self) -> list[RtmpMessage]:
        msgs = self.parser.feed(self.server.data_to_send())
        self.received += msgs
        return msgs

    def message(
        self, csid: int, type_id: int, stream_id: int, ts: int, payload: bytes
    ) -> list[Event]:
        return self.send_raw(self.writer.write(csid, type_id, stream_id, ts, payload))

    def command(
        self,
        name: str,
        *args: Any,
        stream_id: int = 0,
        obj: Any = None,
        tid: float | None = None,
        amf3: bool = False,
    ) -> list[Event]:
        if tid is None:
            self.tid += 1
            tid = self.tid
        type_id, payload = amf.encode_command(name, tid, obj, *args, amf3=amf3)
        return self.message(3 if stream_id == 0 else 8, type_id, stream_id, 0, payload)

    def set_chunk_size(self, size: int) -> list[Event]:
        ev = self.message(2, 1, 0, 0, set_chunk_size_payload(size))
        self.writer.chunk_size = size
        return ev

    def commands_received(self) -> list[amf.Command]:
        return [
            amf.decode_command(m.type_id, m.payload)
            for m in self.received
            if m.type_id in (17, 20)
        ]

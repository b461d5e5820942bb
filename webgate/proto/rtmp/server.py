"""Sans-IO RTMP server connection: handshake, chunk stream, NetConnection / NetStream commands.

Usage by an adapter::

    conn = RtmpServerConnection(RtmpServerConfig())
    events = conn.receive_data(data, now)      # never raises for bad input: ProtocolViolation event
    transport.write(conn.data_to_send())
    if conn.closed: transport.loseConnection()  (after writing data_to_send())

Decisions the core leaves to the adapter come as events (``ConnectRequested``,
``PublishRequested``, ``PlayRequested``, ``CommandReceived``); the adapter answers with the
``accept_*`` / ``reject_*`` / ``send_*`` methods.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.rtmp import amf
from webgate.proto.rtmp.chunk import (
    MSG_AUDIO,
    MSG_COMMAND_AMF0,
    MSG_COMMAND_AMF3,
    MSG_DATA_AMF0,
    MSG_DATA_AMF3,
    MSG_SHARED_OBJECT_AMF0,
    MSG_SHARED_OBJECT_AMF3,
    MSG_VIDEO,
    UC_PING_REQUEST,
    UC_STREAM_BEGIN,
    UC_STREAM_EOF,
    ChunkLimits,
    ChunkSession,
    ControlEvent,
    RtmpMessage,
)
from webgate.proto.rtmp.handshake import HandshakeKind, ServerHandshake

CSID_COMMAND = 3
CSID_STREAM_COMMAND = 5
CSID_AUDIO = 6
CSID_VIDEO = 7
CSID_DATA = 5


@dataclass(frozen=True)
class RtmpLimits:
    max_chunk_size: int = 65536
    max_message_length: int = 4 * 1024 * 1024
    max_streams: int = 8
    max_chunk_streams: int = 64
    max_buffered_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class RtmpServerConfig:
    limits: RtmpLimits = field(default_factory=RtmpLimits)
    #: Chunk size we announce and use for sending after connect.
    out_chunk_size: int = 4096
    window_ack_size: int = 2_500_000
    peer_bandwidth: int = 2_500_000
    fms_ver: str = "FMS/3,5,7,7009"
    capabilities: int = 31
    random_bytes: Callable[[int], bytes] = os.urandom


# ---- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class HandshakeCompleted(Event):
    kind: HandshakeKind


@dataclass(frozen=True)
class ConnectRequested(Event):
    app: str
    tc_url: str
    command_object: dict[str, Any]
    args: list[Any]
    object_encoding: int = 0


@dataclass(frozen=True)
class PublishRequested(Event):
    stream_id: int
    name: str
    publish_type: str
    args: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class PlayRequested(Event):
    stream_id: int
    name: str
    start: float = -2
    duration: float = -1
    reset: bool = True


@dataclass(frozen=True)
class StreamCreated(Event):
    stream_id: int


@dataclass(frozen=True)
class StreamClosed(Event):
    stream_id: int
    reason: str = ""


@dataclass(frozen=True)
class CommandReceived(Event):
    name: str
    transaction_id: float
    args: list[Any]
    command_object: Any = None
    stream_id: int = 0


@dataclass(frozen=True)
class AudioReceived(Event):
    stream_id: int
    timestamp_ms: int
    data: bytes


@dataclass(frozen=True)
class VideoReceived(Event):
    stream_id: int
    timestamp_ms: int
    data: bytes


@dataclass(frozen=True)
class DataReceived(Event):
    """Data message (type 18/15). ``@setDataFrame`` is unwrapped: name = its first argument
    (normally ``onMetaData``), ``values`` = the rest; ``set_data_frame`` tells which it was."""

    stream_id: int
    name: str
    values: list[Any]
    timestamp_ms: int = 0
    set_data_frame: bool = False


@dataclass(frozen=True)
class ControlReceived(Event):
    """Protocol control notification (ack, window, ping response, buffer length, ...)."""

    control: ControlEvent


@dataclass(frozen=True)
class ProtocolViolation(Event):
    """Fatal input; the connection is closed (``closed`` is True)."""

    message: str
    error: RemoteProtocolError | None = None


class _State(Enum):
    HANDSHAKE = 0
    AWAIT_CONNECT = 1
    CONNECT_PENDING = 2
    CONNECTED = 3
    CLOSED = 4


class _StreamState(Enum):
    IDLE = 0
    PUBLISH_PENDING = 1
    PUBLISHING = 2
    PLAY_PENDING = 3
    PLAYING = 4


@dataclass
class _Stream:
    stream_id: int
    state: _StreamState = _StreamState.IDLE
    name: str = ""
    transaction_id: float = 0


def _status(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"level": level, "code": code, "description": description}
    d.update(extra)
    return d


class RtmpServerConnection:
    def __init__(self, config: RtmpServerConfig | None = None) -> None:
        self.config = config or RtmpServerConfig()
        lim = self.config.limits
        self._chunks = ChunkSession(
            ChunkLimits(
                lim.max_chunk_size,
                lim.max_message_length,
                lim.max_chunk_streams,
                lim.max_buffered_bytes,
            )
        )
        self._handshake = ServerHandshake(random_bytes=self.config.random_bytes)
        self._state = _State.HANDSHAKE
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._connect_tid: float = 1
        self._amf3_replies = False
        self.app = ""
        self.tc_url = ""
        self.object_encoding = 0
        self.error: RemoteProtocolError | None = None
        self.last_receive: float = 0.0

    # ---- properties
    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def connected(self) -> bool:
        return self._state is _State.CONNECTED

    @property
    def handshake_kind(self) -> HandshakeKind | None:
        return self._handshake.kind

    @property
    def bytes_received(self) -> int:
        return self._chunks.bytes_received

    @property
    def pending_input(self) -> int:
        """Bytes received and not yet part of a complete message (for partial-message timeouts)."""
        return self._chunks.parser.pending_bytes

    def stream_ids(self) -> list[int]:
        return sorted(self._streams)

    # ---- I/O
    def data_to_send(self) -> bytes:
        self._out += self._chunks.data_to_send()
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Feed received bytes. Bad input gives a final ``ProtocolViolation`` event and closes."""
        if self._state is _State.CLOSED:
            return []
        self.last_receive = now
        events: list[Event] = []
        try:
            if self._state is _State.HANDSHAKE:
                rest = self._handshake.receive_data(data)
                self._out += self._handshake.data_to_send()
                self._chunks.bytes_received += len(data) - len(rest)
                if not self._handshake.done:
                    return events
                kind = self._handshake.kind
                events.append(
                    HandshakeCompleted(
                        kind if kind is not None else HandshakeKind.PLAIN
                    )
                )
                self._state = _State.AWAIT_CONNECT
                data = rest
                if not data:
                    return events
            messages, controls = self._chunks.receive_data(data)
            events.extend(ControlReceived(c) for c in controls)
            for msg in messages:
                self._on_message(msg, events)
                if self._state is _State.CLOSED:
                    break
        except RemoteProtocolError as exc:
            self._fail(exc, events)
        return events

    def _fail(self, exc: RemoteProtocolError, events: list[Event]) -> None:
        self.error = exc
        self._state = _State.CLOSED
        events.append(ProtocolViolation(exc.message, exc))

    # ---- message dispatch
    def _on_message(self, msg: RtmpMessage, events: list[Event]) -> None:
        t = msg.type_id
        if t in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
            cmd = amf.decode_command(t, msg.payload)
            self._on_command(msg, cmd, t, events)
        elif self._state is not _State.CONNECTED:
            raise RemoteProtocolError(f"message type {t} before connect")
        elif t in (MSG_DATA_AMF0, MSG_DATA_AMF3):
            values = amf.decode_message_values(t, msg.payload)
            if not values or not isinstance(values[0], str):
                raise RemoteProtocolError("data message without a name")
            name, rest, sdf = values[0], values[1:], False
            if name == "@setDataFrame" and rest and isinstance(rest[0], str):
                name, rest, sdf = rest[0], rest[1:], True
            if msg.stream_id == 0 or msg.stream_id in self._streams:
                events.append(
                    DataReceived(msg.stream_id, name, rest, msg.timestamp, sdf)
                )
        elif t in (MSG_AUDIO, MSG_VIDEO):
            st = self._streams.get(msg.stream_id)
            if st is None or st.state not in (
                _StreamState.PUBLISHING,
                _StreamState.PUBLISH_PENDING,
            ):
                return  # media on a stream that is not publishing: dropped
            cls = AudioReceived if t == MSG_AUDIO else VideoReceived
            events.append(cls(msg.stream_id, msg.timestamp, msg.payload))
        elif t in (MSG_SHARED_OBJECT_AMF0, MSG_SHARED_OBJECT_AMF3):
            return  # shared objects unsupported: ignored
        else:
            return  # unknown message types are ignored (spec: forward compatibility)

    def _on_command(
        self, msg: RtmpMessage, cmd: amf.Command, type_id: int, events: list[Event]
    ) -> None:
        name = cmd.name
        if self._state is _State.AWAIT_CONNECT:
            if name != "connect":
                raise RemoteProtocolError(f"command {name!r} before connect")
            self._on_connect(cmd, type_id, events)
            return
        if name == "connect":
            raise RemoteProtocolError("second connect on the same connection")
        if self._state is _State.CONNECT_PENDING:
            raise RemoteProtocolError(f"command {name!r} while connect is pending")
        tid = cmd.transaction_id
        args = cmd.args
        if name == "createStream":
            self._create_stream(tid, events)
        elif name in ("releaseStream", "FCPublish"):
            if name == "FCPublish" and args and isinstance(args[0], str):
                self.call_client(
                    "onFCPublish",
                    _status(
                        "status", "NetStream.Publish.Start", args[0], details=args[0]
                    ),
                )
            if tid:
                self.send_result(tid, amf.Undefined)
        elif name == "FCUnpublish":
            stream_name = args[0] if args and isinstance(args[0], str) else None
            for st in list(self._streams.values()):
                if st.state in (
                    _StreamState.PUBLISHING,
                    _StreamState.PUBLISH_PENDING,
                ) and (stream_name is None or st.name == stream_name):
                    st.state = _StreamState.IDLE
                    events.append(StreamClosed(st.stream_id, "FCUnpublish"))
            if tid:
                self.send_result(tid, amf.Undefined)
        elif name == "getStreamLength":
            if tid:
                self.send_result(tid, 0)
        elif name == "deleteStream":
            sid = args[0] if args else None
            if (
                isinstance(sid, (int, float))
                and not isinstance(sid, bool)
                and int(sid) in self._streams
            ):
                del self._streams[int(sid)]
                events.append(StreamClosed(int(sid), "deleteStream"))
        elif name == "closeStream":
            closing = self._streams.get(msg.stream_id)
            if closing is not None and closing.state is not _StreamState.IDLE:
                closing.state = _StreamState.IDLE
                events.append(StreamClosed(closing.stream_id, "closeStream"))
        elif name == "publish":
            self._on_publish(msg, cmd, events)
        elif name == "play":
            self._on_play(msg, cmd, events)
        else:
            events.append(
                CommandReceived(
                    name, tid, list(args), cmd.command_object, msg.stream_id
                )
            )

    def _on_connect(self, cmd: amf.Command, type_id: int, events: list[Event]) -> None:
        obj = cmd.command_object
        if not isinstance(obj, dict):
            raise RemoteProtocolError("connect without a command object")
        app = obj.get("app", "")
        tc_url = obj.get("tcUrl", "")
        if not isinstance(app, str) or not isinstance(tc_url, (str, type(None))):
            raise RemoteProtocolError("connect: app / tcUrl must be strings")
        enc = obj.get("objectEncoding", 0)
        self.object_encoding = 3 if enc == 3 else 0
        self._amf3_replies = type_id == MSG_COMMAND_AMF3
        self.app = app
        self.tc_url = tc_url or ""
        self._connect_tid = cmd.transaction_id or 1
        self._state = _State.CONNECT_PENDING
        events.append(
            ConnectRequested(
                app, self.tc_url, dict(obj), list(cmd.args), self.object_encoding
            )
        )

    def _create_stream(self, tid: float, events: list[Event]) -> None:
        if len(self._streams) >= self.config.limits.max_streams:
            self.send_error(
                tid, _status("error", "NetConnection.Call.Failed", "too many streams")
            )
            return
        sid = self._next_stream_id
        self._next_stream_id += 1
        self._streams[sid] = _Stream(sid)
        self.send_result(tid, sid)
        events.append(StreamCreated(sid))

    def _on_publish(
        self, msg: RtmpMessage, cmd: amf.Command, events: list[Event]
    ) -> None:
        st = self._streams.get(msg.stream_id)
        name = cmd.args[0] if cmd.args and isinstance(cmd.args[0], str) else None
        if st is None:
            self._send_status(
                msg.stream_id,
                _status("error", "NetStream.Publish.Failed", "unknown stream"),
            )
            return
        if name is None or name == "":
            self._send_status(
                st.stream_id,
                _status("error", "NetStream.Publish.BadName", "missing stream name"),
            )
            return
        if st.state is not _StreamState.IDLE:
            self._send_status(
                st.stream_id,
                _status("error", "NetStream.Publish.BadName", "stream busy"),
            )
            return
        ptype = (
            cmd.args[1]
            if len(cmd.args) > 1 and isinstance(cmd.args[1], str)
            else "live"
        )
        st.state = _StreamState.PUBLISH_PENDING
        st.name = name
        st.transaction_id = cmd.transaction_id
        events.append(PublishRequested(st.stream_id, name, ptype, list(cmd.args[2:])))

    def _on_play(self, msg: RtmpMessage, cmd: amf.Command, events: list[Event]) -> None:
        st = self._streams.get(msg.stream_id)
        a = cmd.args
        name = a[0] if a and isinstance(a[0], str) else None
        if st is None:
            self._send_status(
                msg.stream_id,
                _status("error", "NetStream.Play.Failed", "unknown stream"),
            )
            return
        if not name:
            self._send_status(
                st.stream_id,
                _status(
                    "error", "NetStream.Play.StreamNotFound", "missing stream name"
                ),
            )
            return
        if st.state is not _StreamState.IDLE:
            self._send_status(
                st.stream_id, _status("error", "NetStream.Play.Failed", "stream busy")
            )
            return

        def num(i: int, default: float) -> float:
            v = a[i] if len(a) > i else None
            return (
                float(v)
                if isinstance(v, (int, float)) and not isinstance(v, bool)
                else default
            )

        reset_v = a[3] if len(a) > 3 else True
        st.state = _StreamState.PLAY_PENDING
        st.name = name
        st.transaction_id = cmd.transaction_id
        events.append(
            PlayRequested(st.stream_id, name, num(1, -2), num(2, -1), bool(reset_v))
        )

    # ---- sending helpers
    def _require_open(self) -> None:
        if self._state is _State.CLOSED:
            raise LocalProtocolError("connection is closed")

    def _send_command(
        self, csid: int, stream_id: int, name: str, tid: float, obj: Any, *args: Any
    ) -> None:
        self._require_open()
        type_id, payload = amf.encode_command(
            name, tid, obj, *args, amf3=self._amf3_replies
        )
        self._chunks.send(csid, type_id, stream_id, 0, payload)

    def _send_status(self, stream_id: int, info: dict[str, Any]) -> None:
        self._send_command(CSID_STREAM_COMMAND, stream_id, "onStatus", 0, None, info)

    def _stream(self, stream_id: int, *states: _StreamState) -> _Stream:
        st = self._streams.get(stream_id)
        if st is None:
            raise LocalProtocolError(f"no stream {stream_id}")
        if states and st.state not in states:
            raise LocalProtocolError(f"stream {stream_id} is {st.state.name}")
        return st

    def play_pending(self, stream_id: int) -> bool:
        """Whether ``stream_id`` has a play waiting for :meth:`accept_play` / :meth:`reject_play`
        (an adapter that answers later checks that the client did not give up meanwhile)."""
        st = self._streams.get(stream_id)
        return st is not None and st.state is _StreamState.PLAY_PENDING

    def publish_pending(self, stream_id: int) -> bool:
        """Whether ``stream_id`` has a publish waiting for :meth:`accept_publish` / :meth:`reject_publish`."""
        st = self._streams.get(stream_id)
        return st is not None and st.state is _StreamState.PUBLISH_PENDING

    # ---- adapter API: connection
    def accept_connect(
        self,
        extra: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Answer connect: window ack size, peer bandwidth, chunk size, ``_result`` Connect.Success.
        ``extra`` is merged into the info object (e.g. ``{"data": {...}}``)."""
        if self._state is not _State.CONNECT_PENDING:
            raise LocalProtocolError("no connect pending")
        c = self._chunks
        c.send_window_ack_size(self.config.window_ack_size)
        c.send_peer_bandwidth(self.config.peer_bandwidth, 2)
        c.set_chunk_size(self.config.out_chunk_size)
        props: dict[str, Any] = {
            "fmsVer": self.config.fms_ver,
            "capabilities": self.config.capabilities,
            "mode": 1,
        }
        if properties:
            props.update(properties)
        info = _status(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
            objectEncoding=self.object_encoding,
        )
        if extra:
            info.update(extra)
        self._state = _State.CONNECTED
        self._send_command(CSID_COMMAND, 0, "_result", self._connect_tid, props, info)

    def reject_connect(
        self,
        code: str = "NetConnection.Connect.Rejected",
        description: str = "Connection rejected.",
    ) -> None:
        """Send ``_error`` with the given code; the connection is then closed."""
        if self._state is not _State.CONNECT_PENDING:
            raise LocalProtocolError("no connect pending")
        self._send_command(
            CSID_COMMAND,
            0,
            "_error",
            self._connect_tid,
            None,
            _status("error", code, description),
        )
        self._state = _State.CLOSED

    def close(self) -> None:
        self._state = _State.CLOSED

    def send_result(self, transaction_id: float, value: Any = None) -> None:
        self._send_command(CSID_COMMAND, 0, "_result", transaction_id, None, value)

    def send_error(self, transaction_id: float, info: Any = None) -> None:
        self._send_command(CSID_COMMAND, 0, "_error", transaction_id, None, info)

    def call_client(self, name: str, *args: Any) -> None:
        """Server-to-client invocation (transaction id 0, null command object)."""
        self._send_command(CSID_COMMAND, 0, name, 0, None, *args)

    def send_ping(self, timestamp: int) -> None:
        self._require_open()
        self._chunks.send_user_control(UC_PING_REQUEST, timestamp)

    # ---- adapter API: streams
    def accept_publish(
        self, stream_id: int, info: dict[str, Any] | None = None
    ) -> None:
        st = self._stream(stream_id, _StreamState.PUBLISH_PENDING)
        self._chunks.send_user_control(UC_STREAM_BEGIN, stream_id)
        status = _status(
            "status",
            "NetStream.Publish.Start",
            f"{st.name} is now published.",
            details=st.name,
        )
        if info:
            status.update(info)
        st.state = _StreamState.PUBLISHING
        self._send_status(stream_id, status)

    def reject_publish(
        self,
        stream_id: int,
        code: str = "NetStream.Publish.BadName",
        description: str = "Publish rejected.",
    ) -> None:
        st = self._stream(stream_id, _StreamState.PUBLISH_PENDING)
        st.state = _StreamState.IDLE
        self._send_status(
            stream_id, _status("error", code, description, details=st.name)
        )

    def accept_play(
        self,
        stream_id: int,
        metadata: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        """Stream Begin, Play.Reset, Play.Start, |RtmpSampleAccess and (if given) onMetaData."""
        st = self._stream(stream_id, _StreamState.PLAY_PENDING)
        self._chunks.send_user_control(UC_STREAM_BEGIN, stream_id)
        self._send_status(
            stream_id,
            _status(
                "status",
                "NetStream.Play.Reset",
                f"Playing and resetting {st.name}.",
                details=st.name,
            ),
        )
        start = _status(
            "status",
            "NetStream.Play.Start",
            f"Started playing {st.name}.",
            details=st.name,
        )
        if info:
            start.update(info)
        self._send_status(stream_id, start)
        st.state = _StreamState.PLAYING
        self.send_data(stream_id, "|RtmpSampleAccess", True, True)
        if metadata is not None:
            self.send_data(stream_id, "onMetaData", metadata)

    def reject_play(
        self,
        stream_id: int,
        code: str = "NetStream.Play.StreamNotFound",
        description: str = "Stream not found.",
        **extra: Any,
    ) -> None:
        """Refuse a pending play; ``extra`` goes into the info object (e.g. ``redirect``)."""
        st = self._stream(stream_id, _StreamState.PLAY_PENDING)
        st.state = _StreamState.IDLE
        self._send_status(
            stream_id, _status("error", code, description, details=st.name, **extra)
        )

    def send_status(
        self, stream_id: int, level: str, code: str, description: str, **extra: Any
    ) -> None:
        self._send_status(stream_id, _status(level, code, description, **extra))

    def end_stream(self, stream_id: int) -> None:
        """Tell a player the stream ended (Stream EOF + NetStream.Play.Stop)."""
        st = self._stream(stream_id)
        self._chunks.send_user_control(UC_STREAM_EOF, stream_id)
        self._send_status(
            stream_id,
            _status("status", "NetStream.Play.Stop", f"Stopped playing {st.name}."),
        )
        st.state = _StreamState.IDLE

    def send_audio(self, stream_id: int, timestamp_ms: int, data: bytes) -> None:
        self._require_open()
        self._stream(stream_id)
        self._chunks.send(CSID_AUDIO, MSG_AUDIO, stream_id, timestamp_ms, data)

    def send_video(self, stream_id: int, timestamp_ms: int, data: bytes) -> None:
        self._require_open()
        self._stream(stream_id)
        self._chunks.send(CSID_VIDEO, MSG_VIDEO, stream_id, timestamp_ms, data)

    def send_data(
        self, stream_id: int, name: str, *values: Any, timestamp_ms: int = 0
    ) -> None:
        self._require_open()
        type_id, payload = amf.encode_data(name, *values)
        self._chunks.send(CSID_DATA, type_id, stream_id, timestamp_ms, payload)

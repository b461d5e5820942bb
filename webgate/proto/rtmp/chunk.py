"""RTMP chunk stream (sans-IO): parser, writer and protocol control messages.

* :class:`ChunkParser` turns bytes into complete :class:`RtmpMessage` objects. It applies Set Chunk
  Size (type 1) and Abort (type 2) itself, since they change how the following bytes parse, and
  still returns them.
* :class:`ChunkWriter` serializes messages into chunks with header compression.
* :class:`ChunkSession` joins both and handles the other protocol control messages: it answers
  pings, sends Acknowledgements when the received byte count crosses the peer's window, splits
  aggregate messages, and returns application messages plus :class:`ControlEvent` values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

# Message type ids
MSG_SET_CHUNK_SIZE = 1
MSG_ABORT = 2
MSG_ACK = 3
MSG_USER_CONTROL = 4
MSG_WINDOW_ACK_SIZE = 5
MSG_SET_PEER_BANDWIDTH = 6
MSG_AUDIO = 8
MSG_VIDEO = 9
MSG_DATA_AMF3 = 15
MSG_SHARED_OBJECT_AMF3 = 16
MSG_COMMAND_AMF3 = 17
MSG_DATA_AMF0 = 18
MSG_SHARED_OBJECT_AMF0 = 19
MSG_COMMAND_AMF0 = 20
MSG_AGGREGATE = 22

# User control event types
UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_STREAM_DRY = 2
UC_SET_BUFFER_LENGTH = 3
UC_STREAM_IS_RECORDED = 4
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7

DEFAULT_CHUNK_SIZE = 128
MAX_CSID = 65599
CSID_PROTOCOL_CONTROL = 2
_EXTENDED = 0xFFFFFF
_TS_MOD = 1 << 32


@dataclass(frozen=True)
class ChunkLimits:
    max_chunk_size: int = 65536
    max_message_length: int = 4 * 1024 * 1024
    max_chunk_streams: int = 64
    #: Sum of all partially reassembled messages.
    max_buffered_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class RtmpMessage:
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes
    csid: int = 0


@dataclass
class _InState:
    timestamp: int = 0
    ts_field: int = 0  # last timestamp field (absolute for fmt 0, delta for 1/2)
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    partial: bytearray = field(default_factory=bytearray)
    #: timestamp of the message being reassembled
    msg_timestamp: int = 0
    in_message: bool = False


class ChunkParser:
    def __init__(self, limits: ChunkLimits | None = None) -> None:
        self.limits = limits or ChunkLimits()
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._buf = bytearray()
        self._streams: dict[int, _InState] = {}
        self._buffered = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes received and not yet part of a complete message (unparsed + reassembling)."""
        return len(self._buf) + self._buffered

    def feed(self, data: bytes) -> list[RtmpMessage]:
        self._buf += data
        out: list[RtmpMessage] = []
        pos = 0
        buf = self._buf
        try:
            while True:
                result = self._parse_chunk(buf, pos)
                if result is None:
                    break
                pos, msg = result
                if msg is not None:
                    out.append(msg)
                    if msg.type_id == MSG_SET_CHUNK_SIZE:
                        self.chunk_size = parse_set_chunk_size(
                            msg.payload, self.limits.max_chunk_size
                        )
                    elif msg.type_id == MSG_ABORT:
                        self._abort(msg.payload)
        finally:
            del buf[:pos]
        return out

    def _abort(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RemoteProtocolError("Abort message too short")
        (csid,) = struct.unpack(">I", payload[:4])
        st = self._streams.get(csid)
        if st is not None and st.in_message:
            self._buffered -= len(st.partial)
            st.partial = bytearray()
            st.in_message = False

    def _parse_chunk(
        self, buf: bytearray, pos: int
    ) -> tuple[int, RtmpMessage | None] | None:
        n = len(buf)
        if pos >= n:
            return None
        b0 = buf[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        p = pos + 1
        if csid == 0:
            if p + 1 > n:
                return None
            csid = 64 + buf[p]
            p += 1
        elif csid == 1:
            if p + 2 > n:
                return None
            csid = 64 + buf[p] + (buf[p + 1] << 8)
            p += 2
        st = self._streams.get(csid)
        if st is None:
            if fmt != 0:
                raise RemoteProtocolError(
                    f"chunk fmt {fmt} on chunk stream {csid} without a previous header"
                )
            if len(self._streams) >= self.limits.max_chunk_streams:
                raise RemoteProtocolError("too many chunk streams")
        hdr_len = (11, 7, 3, 0)[fmt]
        if p + hdr_len > n:
            return None
        ts_field = 0
        length = st.length if st is not None else 0
        type_id = st.type_id if st is not None else 0
        stream_id = st.stream_id if st is not None else 0
        if fmt <= 2:
            ts_field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
        if fmt <= 1:
            length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
            type_id = buf[p + 6]
        if fmt == 0:
            stream_id = struct.unpack_from("<I", buf, p + 7)[0]
        p += hdr_len
        if fmt <= 2:
            extended = ts_field == _EXTENDED
        elif st is not None:
            extended = st.extended
        else:  # unreachable: fmt != 0 without state was rejected above
            raise RemoteProtocolError("chunk without header state")
        if extended:
            if p + 4 > n:
                return None
            ext = struct.unpack_from(">I", buf, p)[0]
            p += 4
            if fmt <= 2:
                ts_field = ext
        # Decide the message this chunk belongs to
        continuing = st is not None and st.in_message
        if continuing and fmt != 3:
            # A new header in the middle of a message: FMS and librtmp treat it as restarting.
            raise RemoteProtocolError(
                f"chunk header fmt {fmt} interrupts an unfinished message on chunk stream {csid}"
            )
        if not continuing and length > self.limits.max_message_length:
            raise RemoteProtocolError(
                f"message length {length} exceeds limit {self.limits.max_message_length}"
            )
        remaining = length - (len(st.partial) if (st is not None and continuing) else 0)
        take = min(self.chunk_size, remaining)
        if p + take > n:
            return None
        # Commit state
        if st is None:
            st = _InState()
            self._streams[csid] = st
        if not continuing:
            if fmt == 0:
                timestamp = ts_field
                st.ts_field = ts_field
            elif fmt in (1, 2):
                timestamp = (st.timestamp + ts_field) % _TS_MOD
                st.ts_field = ts_field
            else:
                timestamp = (st.timestamp + st.ts_field) % _TS_MOD
            st.timestamp = timestamp
            st.length = length
            st.type_id = type_id
            st.stream_id = stream_id
            st.extended = extended
            st.msg_timestamp = timestamp
            st.in_message = True
            st.partial = bytearray()
        if self._buffered + take > self.limits.max_buffered_bytes:
            raise RemoteProtocolError("too much partially received data")
        st.partial += buf[p : p + take]
        self._buffered += take
        p += take
        if len(st.partial) >= st.length:
            payload = bytes(st.partial)
            self._buffered -= len(st.partial)
            st.partial = bytearray()
            st.in_message = False
            return p, RtmpMessage(
                st.type_id, st.stream_id, st.msg_timestamp, payload, csid
            )
        return p, None


def parse_set_chunk_size(payload: bytes, max_chunk_size: int) -> int:
    if len(payload) < 4:
        raise RemoteProtocolError("Set Chunk Size message too short")
    size: int = struct.unpack(">I", payload[:4])[0]
    if size & 0x80000000 or size < 1:
        raise RemoteProtocolError(f"invalid chunk size {size}")
    if size > max_chunk_size:
        raise RemoteProtocolError(f"chunk size {size} exceeds limit {max_chunk_size}")
    return size


def encode_basic_header(fmt: int, csid: int) -> bytes:
    if csid < 2 or csid > MAX_CSID:
        raise LocalProtocolError(f"invalid chunk stream id {csid}")
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    v = csid - 64
    return bytes([(fmt << 6) | 1, v & 0xFF, v >> 8])


@dataclass
class _OutState:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    fmt: int = 0
    extended: bool = False


class ChunkWriter:
    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _OutState] = {}

    def write(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> bytes:
        if len(payload) > 0xFFFFFF:
            raise LocalProtocolError("message too long for RTMP")
        timestamp %= _TS_MOD
        st = self._streams.get(csid)
        length = len(payload)
        if st is None or st.stream_id != stream_id or timestamp < st.timestamp:
            fmt = 0
            field_value = timestamp
        else:
            delta = timestamp - st.timestamp
            field_value = delta
            if length != st.length or type_id != st.type_id:
                fmt = 1
            elif st.fmt == 0 or delta != st.delta:
                fmt = 2
            else:
                fmt = 3
        if st is None:
            st = _OutState()
            self._streams[csid] = st
        extended = field_value >= _EXTENDED if fmt != 3 else st.extended
        out = bytearray(encode_basic_header(fmt, csid))
        ts3 = min(_EXTENDED, field_value)
        if fmt <= 2:
            out += ts3.to_bytes(3, "big")
        if fmt <= 1:
            out += length.to_bytes(3, "big") + bytes([type_id])
        if fmt == 0:
            out += struct.pack("<I", stream_id & 0xFFFFFFFF)
        if extended:
            out += struct.pack(">I", field_value)
        st.timestamp = timestamp
        if fmt != 3:
            st.delta = field_value
            st.fmt = fmt
            st.extended = extended
        st.length = length
        st.type_id = type_id
        st.stream_id = stream_id
        cont = encode_basic_header(3, csid)
        if extended:
            cont += struct.pack(">I", field_value)
        size = self.chunk_size
        out += payload[:size]
        for i in range(size, length, size):
            out += cont
            out += payload[i : i + size]
        return bytes(out)


# ---- protocol control message builders -------------------------------------------------------


def set_chunk_size_payload(size: int) -> bytes:
    return struct.pack(">I", size)


def user_control_payload(event: int, *values: int) -> bytes:
    return struct.pack(">H", event) + b"".join(
        struct.pack(">I", v & 0xFFFFFFFF) for v in values
    )


@dataclass(frozen=True)
class ControlEvent:
    """Base class of protocol control notifications returned by :class:`ChunkSession`."""


@dataclass(frozen=True)
class ChunkSizeChanged(ControlEvent):
    size: int


@dataclass(frozen=True)
class AckReceived(ControlEvent):
    sequence_number: int


@dataclass(frozen=True)
class WindowAckSizeReceived(ControlEvent):
    size: int


@dataclass(frozen=True)
class PeerBandwidthReceived(ControlEvent):
    size: int
    limit_type: int


@dataclass(frozen=True)
class UserControlReceived(ControlEvent):
    event_type: int
    stream_id: int
    value: int | None = None


@dataclass(frozen=True)
class PingResponseReceived(ControlEvent):
    timestamp: int


@dataclass(frozen=True)
class BufferLengthSet(ControlEvent):
    stream_id: int
    buffer_ms: int


class ChunkSession:
    """Chunk parser + writer + protocol control handling for one connection."""

    def __init__(self, limits: ChunkLimits | None = None) -> None:
        self.limits = limits or ChunkLimits()
        self.parser = ChunkParser(self.limits)
        self.writer = ChunkWriter()
        self._out = bytearray()
        self.bytes_received = 0
        self._last_ack = 0
        self.peer_window: int = (
            0  # window the peer asked us to acknowledge (0 = none yet)
        )
        self.own_window: int = 0
        self.peer_acked = 0

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- sending
    def send(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> None:
        self._out += self.writer.write(csid, type_id, stream_id, timestamp, payload)

    def send_control(self, type_id: int, payload: bytes) -> None:
        self.send(CSID_PROTOCOL_CONTROL, type_id, 0, 0, payload)

    def set_chunk_size(self, size: int) -> None:
        if size < 1 or size > 0x7FFFFFFF:
            raise LocalProtocolError(f"invalid chunk size {size}")
        self.send_control(MSG_SET_CHUNK_SIZE, set_chunk_size_payload(size))
        self.writer.chunk_size = size

    def send_window_ack_size(self, size: int) -> None:
        self.own_window = size
        self.send_control(MSG_WINDOW_ACK_SIZE, struct.pack(">I", size))

    def send_peer_bandwidth(self, size: int, limit_type: int = 2) -> None:
        self.send_control(MSG_SET_PEER_BANDWIDTH, struct.pack(">IB", size, limit_type))

    def send_user_control(self, event: int, *values: int) -> None:
        self.send_control(MSG_USER_CONTROL, user_control_payload(event, *values))

    def send_abort(self, csid: int) -> None:
        self.send_control(MSG_ABORT, struct.pack(">I", csid))

    # -- receiving
    def receive_data(
        self, data: bytes, counted: int | None = None
    ) -> tuple[list[RtmpMessage], list[ControlEvent]]:
        """Parse ``data``; ``counted`` is the byte count for acknowledgements (default len(data))."""
        self.bytes_received += len(data) if counted is None else counted
        messages: list[RtmpMessage] = []
        events: list[ControlEvent] = []
        for msg in self.parser.feed(data):
            self._handle(msg, messages, events)
        if (
            self.peer_window > 0
            and self.bytes_received - self._last_ack >= self.peer_window
        ):
            self._last_ack = self.bytes_received
            self.send_control(
                MSG_ACK, struct.pack(">I", self.bytes_received & 0xFFFFFFFF)
            )
        return messages, events

    def _handle(
        self, msg: RtmpMessage, messages: list[RtmpMessage], events: list[ControlEvent]
    ) -> None:
        t = msg.type_id
        p = msg.payload
        if t == MSG_SET_CHUNK_SIZE:
            events.append(ChunkSizeChanged(self.parser.chunk_size))
        elif t == MSG_ABORT:
            pass
        elif t == MSG_ACK:
            if len(p) < 4:
                raise RemoteProtocolError("Acknowledgement too short")
            self.peer_acked = struct.unpack(">I", p[:4])[0]
            events.append(AckReceived(self.peer_acked))
        elif t == MSG_WINDOW_ACK_SIZE:
            if len(p) < 4:
                raise RemoteProtocolError("Window Acknowledgement Size too short")
            size = struct.unpack(">I", p[:4])[0]
            if size == 0 or size & 0x80000000:
                raise RemoteProtocolError(f"invalid window acknowledgement size {size}")
            self.peer_window = size
            events.append(WindowAckSizeReceived(size))
        elif t == MSG_SET_PEER_BANDWIDTH:
            if len(p) < 5:
                raise RemoteProtocolError("Set Peer Bandwidth too short")
            size, limit = struct.unpack(">IB", p[:5])
            events.append(PeerBandwidthReceived(size, limit))
        elif t == MSG_USER_CONTROL:
            self._user_control(p, events)
        elif t == MSG_AGGREGATE:
            messages.extend(split_aggregate(msg))
        else:
            messages.append(msg)

    def _user_control(self, p: bytes, events: list[ControlEvent]) -> None:
        if len(p) < 6:
            raise RemoteProtocolError("User Control message too short")
        event, value = struct.unpack(">HI", p[:6])
        if event == UC_PING_REQUEST:
            self.send_user_control(UC_PING_RESPONSE, value)
        elif event == UC_PING_RESPONSE:
            events.append(PingResponseReceived(value))
        elif event == UC_SET_BUFFER_LENGTH:
            if len(p) < 10:
                raise RemoteProtocolError("SetBufferLength too short")
            (buffer_ms,) = struct.unpack(">I", p[6:10])
            events.append(BufferLengthSet(value, buffer_ms))
        else:
            events.append(UserControlReceived(event, value))


def split_aggregate(msg: RtmpMessage) -> list[RtmpMessage]:
    """Split an aggregate message (type 22) into its sub-messages with adjusted timestamps."""
    out: list[RtmpMessage] = []
    p = msg.payload
    pos = 0
    first_ts: int | None = None
    while pos < len(p):
        if pos + 11 > len(p):
            raise RemoteProtocolError("truncated aggregate sub-message header")
        type_id = p[pos]
        size = int.from_bytes(p[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(p[pos + 4 : pos + 7], "big") | (p[pos + 7] << 24)
        pos += 11
        if pos + size + 4 > len(p):
            raise RemoteProtocolError("truncated aggregate sub-message")
        if type_id not in (MSG_AUDIO, MSG_VIDEO, MSG_DATA_AMF0, MSG_DATA_AMF3):
            raise RemoteProtocolError(
                f"message type {type_id} not allowed in an aggregate"
            )
        if first_ts is None:
            first_ts = ts
        data = p[pos : pos + size]
        pos += size + 4  # skip back pointer
        out.append(
            RtmpMessage(
                type_id,
                msg.stream_id,
                (msg.timestamp + ts - first_ts) % _TS_MOD,
                data,
                msg.csid,
            )
        )
    return out


def build_aggregate(submessages: list[tuple[int, int, bytes]]) -> bytes:
    """Build an aggregate body from (type_id, timestamp, data) tuples (for tests / relaying)."""
    out = bytearray()
    for type_id, ts, data in submessages:
        out += (
            bytes([type_id])
            + len(data).to_bytes(3, "big")
            + (ts & 0xFFFFFF).to_bytes(3, "big")
        )
        out += (
            bytes([(ts >> 24) & 0xFF])
            + b"\x00\x00\x00"
            + data
            + struct.pack(">I", 11 + len(data))
        )
    return bytes(out)

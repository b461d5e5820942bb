"""RTP/RTCP (RFC 3550), RFC 4733 telephone events, stream rewriting and a jitter buffer.

Sans-IO: functions take bytes and ``now`` (seconds, any monotonic origin) and return values.
Parsers raise :class:`RemoteProtocolError` on malformed input and nothing else.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DTMF_EVENTS",
    "DtmfDigit",
    "DtmfReceiver",
    "DtmfSender",
    "Goodbye",
    "JitterBuffer",
    "JitterBufferStats",
    "Loss",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtpPacket",
    "RtpRewriter",
    "RtpSender",
    "RtpStats",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "TelephoneEvent",
    "is_rtcp",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_payload",
    "parse_rtcp",
    "seq_diff",
    "serialize_rtcp",
    "ts_diff",
]

RTP_VERSION = 2
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 16-bit sequence numbers (-32768..32767)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 32-bit timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _u32(value: int, what: str) -> None:
    if not 0 <= value < _TS_MOD:
        raise LocalProtocolError(f"{what} out of range: {value}")


# ---------------------------------------------------------------------------------------------
# RTP


@dataclass(frozen=True)
class RtpPacket:
    """An RTP packet. ``padding_size`` is the number of padding octets (0: P bit clear)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_data: bytes = b""
    padding_size: int = 0
    version: int = RTP_VERSION

    @property
    def padding(self) -> bool:
        return self.padding_size > 0

    @property
    def extension(self) -> bool:
        return self.extension_profile is not None

    @classmethod
    def _fields(cls, payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool,
                csrcs: tuple[int, ...] = (), extension_profile: int | None = None, extension_data: bytes = b"",
                padding_size: int = 0, version: int = RTP_VERSION) -> RtpPacket:
        """The packet with these fields, without the frozen dataclass's ``__init__`` (one
        ``object.__setattr__`` per field): the per-packet path (parse, :class:`RtpSender`) of a relay.
        The caller gives every field its type (the dataclass checks none either)."""
        packet = _new_object(cls)
        packet.__dict__.update(payload_type=payload_type, sequence=sequence, timestamp=timestamp, ssrc=ssrc,
                               payload=payload, marker=marker, csrcs=csrcs, extension_profile=extension_profile,
                               extension_data=extension_data, padding_size=padding_size, version=version)
        return packet

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        if n < 12:
            raise RemoteProtocolError(f"RTP packet too short ({n} bytes)")
        b0, b1, sequence, timestamp, ssrc = _HDR.unpack_from(data)
        if b0 == 0x80:  # version 2, no padding, extension or CSRC: most packets
            return cls._fields(b1 & 0x7F, sequence, timestamp, ssrc, data[12:], b1 > 127)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RemoteProtocolError(f"RTP version {version} not supported")
        has_padding = bool(b0 & 0x20)
        has_extension = bool(b0 & 0x10)
        cc = b0 & 0x0F
        offset = 12 + 4 * cc
        if len(data) < offset:
            raise RemoteProtocolError("RTP packet truncated in CSRC list")
        csrcs = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
        extension_profile: int | None = None
        extension_data = b""
        if has_extension:
            if len(data) < offset + 4:
                raise RemoteProtocolError("RTP packet truncated in extension header")
            extension_profile, words = struct.unpack_from("!HH", data, offset)
            offset += 4
            end = offset + 4 * words
            if len(data) < end:
                raise RemoteProtocolError("RTP packet truncated in extension")
            extension_data = data[offset:end]
            offset = end
        end = len(data)
        padding_size = 0
        if has_padding:
            padding_size = data[-1]
            if padding_size == 0 or end - padding_size < offset:
                raise RemoteProtocolError("bad RTP padding length")
            end -= padding_size
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[offset:end],
            marker=bool(b1 & 0x80),
            csrcs=tuple(csrcs),
            extension_profile=extension_profile,
            extension_data=extension_data,
            padding_size=padding_size,
            version=version,
        )

    def serialize(self) -> bytes:
        if (not self.csrcs and self.extension_profile is None and not self.padding_size
                and 0 <= self.payload_type <= 127 and 0 <= self.sequence < _SEQ_MOD
                and 0 <= self.timestamp < _TS_MOD and 0 <= self.ssrc < _TS_MOD):
            # the common packet (a relay's): the same bytes as below, in one pack
            return _HDR.pack(0x80, self.payload_type | (0x80 if self.marker else 0), self.sequence,
                             self.timestamp, self.ssrc) + self.payload
        if not 0 <= self.payload_type <= 127:
            raise LocalProtocolError(f"bad payload type {self.payload_type}")
        if not 0 <= self.sequence < _SEQ_MOD:
            raise LocalProtocolError(f"bad sequence {self.sequence}")
        _u32(self.timestamp, "timestamp")
        _u32(self.ssrc, "ssrc")
        if len(self.csrcs) > 15:
            raise LocalProtocolError("more than 15 CSRCs")
        if len(self.extension_data) % 4 or len(self.extension_data) > 4 * 0xFFFF:
            raise LocalProtocolError("extension data must be whole 32-bit words")
        if not 0 <= self.padding_size <= 255:
            raise LocalProtocolError("bad padding size")
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding_size:
            b0 |= 0x20
        if self.extension_profile is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        out = bytearray(struct.pack("!BBHII", b0, b1, self.sequence, self.timestamp, self.ssrc))
        for csrc in self.csrcs:
            _u32(csrc, "csrc")
            out += struct.pack("!I", csrc)
        if self.extension_profile is not None:
            out += struct.pack("!HH", self.extension_profile & 0xFFFF,
                               len(self.extension_data) // 4)
            out += self.extension_data
        out += self.payload
        if self.padding_size:
            out += bytes(self.padding_size - 1) + bytes([self.padding_size])
        return bytes(out)

    def __bytes__(self) -> bytes:
        return self.serialize()


_SEQ_TS = struct.Struct("!HI")
_HDR = struct.Struct("!BBHII")
_new_object = object.__new__


def parse_payload(data: bytes) -> tuple[int, int, int, bool, bytes] | None:
    """(payload type, sequence, timestamp, marker, payload) of an RTP packet, without building an
    :class:`RtpPacket` (a relay's per-packet path: about a fifth of :meth:`RtpPacket.parse`'s cost).
    None exactly where :meth:`RtpPacket.parse` would raise."""
    n = len(data)
    if n < 12:
        return None
    b0, b1 = data[0], data[1]
    if b0 >> 6 != RTP_VERSION:
        return None
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if n < off + 4:
            return None
        off += 4 + 4 * int.from_bytes(data[off + 2 : off + 4], "big")
    if n < off:
        return None
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or end - pad < off:
            return None
        end -= pad
    seq, ts = _SEQ_TS.unpack_from(data, 2)
    return b1 & 0x7F, seq, ts, bool(b1 & 0x80), bytes(data[off:end])


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192..223 (RTP PTs 64..95 with marker)."""
    return len(data) >= 2 and (data[0] >> 6) == RTP_VERSION and 192 <= data[1] <= 223


# ---------------------------------------------------------------------------------------------
# RTCP

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203

_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp for a Unix time in seconds."""
    seconds = int(t) + _NTP_EPOCH_OFFSET
    fraction = int((t - int(t)) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds & 0xFFFFFFFF) << 32) | fraction


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (the LSR field)."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 0..255 (fixed point /256)
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended highest sequence number received
    jitter: int
    lsr: int = 0
    dlsr: int = 0  # units of 1/65536 s

    def serialize(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return struct.pack(
            "!IIIIII", self.ssrc & 0xFFFFFFFF,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_sequence & 0xFFFFFFFF, self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF, self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)


def _rtcp_header(count: int, packet_type: int, body_len: int) -> bytes:
    # body_len excludes the 4-byte header and is a multiple of 4
    return struct.pack("!BBH", (RTP_VERSION << 6) | count, packet_type, body_len // 4)


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        if len(self.reports) > 31:
            raise LocalProtocolError("more than 31 report blocks")
        body = struct.pack(
            "!IQIII", self.ssrc & 0xFFFFFFFF, self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF, self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        ) + b"".join(r.serialize() for r in self.reports)
        return _rtcp_header(len(self.reports), RTCP_SR, len(body)) + body


@dataclass(frozen=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        if len(self.reports) > 31:
            raise LocalProtocolError("more than 31 report blocks")
        body = struct.pack("!I", self.ssrc & 0xFFFFFFFF) + b"".join(
            r.serialize() for r in self.reports)
        return _rtcp_header(len(self.reports), RTCP_RR, len(body)) + body


SDES_CNAME = 1


@dataclass(frozen=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value.decode("utf-8", errors="replace")
        return None


@dataclass(frozen=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...] = ()

    def serialize(self) -> bytes:
        if len(self.chunks) > 31:
            raise LocalProtocolError("more than 31 SDES chunks")
        body = bytearray()
        for chunk in self.chunks:
            part = bytearray(struct.pack("!I", chunk.ssrc & 0xFFFFFFFF))
            for item_type, value in chunk.items:
                if not 1 <= item_type <= 255 or len(value) > 255:
                    raise LocalProtocolError("bad SDES item")
                part += bytes([item_type, len(value)]) + value
            part += b"\x00"  # end of list
            part += bytes(-len(part) % 4)
            body += part
        return _rtcp_header(len(self.chunks), RTCP_SDES, len(body)) + bytes(body)


@dataclass(frozen=True)
class Goodbye:
    ssrcs: tuple[int, ...] = ()
    reason: str | None = None

    def serialize(self) -> bytes:
        if len(self.ssrcs) > 31:
            raise LocalProtocolError("more than 31 SSRCs in BYE")
        body = bytearray(b"".join(struct.pack("!I", s & 0xFFFFFFFF) for s in self.ssrcs))
        if self.reason is not None:
            reason = self.reason.encode("utf-8")[:255]
            body += bytes([len(reason)]) + reason
            body += bytes(-len(body) % 4)
        return _rtcp_header(len(self.ssrcs), RTCP_BYE, len(body)) + bytes(body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < offset + 24 * count:
        raise RemoteProtocolError("RTCP report blocks truncated")
    return tuple(ReportBlock.parse(body, offset + 24 * i) for i in range(count))


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks: list[SdesChunk] = []
    offset = 0
    for _ in range(count):
        if len(body) < offset + 4:
            raise RemoteProtocolError("SDES chunk truncated")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if offset >= len(body):
                raise RemoteProtocolError("SDES item list not terminated")
            item_type = body[offset]
            if item_type == 0:
                offset += 1
                offset += -offset % 4  # chunk padding to a 32-bit boundary
                break
            if offset + 2 > len(body):
                raise RemoteProtocolError("SDES item truncated")
            length = body[offset + 1]
            if offset + 2 + length > len(body):
                raise RemoteProtocolError("SDES item truncated")
            items.append((item_type, body[offset + 2:offset + 2 + length]))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Goodbye:
    if len(body) < 4 * count:
        raise RemoteProtocolError("BYE truncated")
    ssrcs = struct.unpack_from(f"!{count}I", body) if count else ()
    reason: str | None = None
    offset = 4 * count
    if offset < len(body):
        length = body[offset]
        if offset + 1 + length > len(body):
            raise RemoteProtocolError("BYE reason truncated")
        reason = body[offset + 1:offset + 1 + length].decode("utf-8", errors="replace")
    return Goodbye(tuple(ssrcs), reason)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet; unknown packet types (APP, RTPFB, XR, ...) are skipped."""
    data = bytes(data)
    if len(data) < 4:
        raise RemoteProtocolError("RTCP packet too short")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise RemoteProtocolError("RTCP trailing bytes")
        b0, packet_type, length = struct.unpack_from("!BBH", data, offset)
        if b0 >> 6 != RTP_VERSION:
            raise RemoteProtocolError("bad RTCP version")
        end = offset + 4 + 4 * length
        if end > len(data):
            raise RemoteProtocolError("RTCP packet truncated")
        body = data[offset + 4:end]
        if b0 & 0x20:
            if not body or body[-1] == 0 or body[-1] > len(body):
                raise RemoteProtocolError("bad RTCP padding")
            body = body[:-body[-1]]
        count = b0 & 0x1F
        if packet_type == RTCP_SR:
            if len(body) < 24:
                raise RemoteProtocolError("SR truncated")
            ssrc, ntp, rtp_ts, pkts, octets = struct.unpack_from("!IQIII", body)
            packets.append(SenderReport(ssrc, ntp, rtp_ts, pkts, octets,
                                        _parse_blocks(body, 24, count)))
        elif packet_type == RTCP_RR:
            if len(body) < 4:
                raise RemoteProtocolError("RR truncated")
            (ssrc,) = struct.unpack_from("!I", body)
            packets.append(ReceiverReport(ssrc, _parse_blocks(body, 4, count)))
        elif packet_type == RTCP_SDES:
            packets.append(_parse_sdes(body, count))
        elif packet_type == RTCP_BYE:
            packets.append(_parse_bye(body, count))
        offset = end
    return packets


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """A compound RTCP packet (RFC 3550 says: SR or RR first, then SDES with a CNAME)."""
    return b"".join(p.serialize() for p in packets)


# ---------------------------------------------------------------------------------------------
# Statistics (RFC 3550 A.1, A.3, A.8)

MAX_DROPOUT = 3000
MAX_MISORDER = 100


class RtpStats:
    """Receiver statistics for one source: sequence tracking, loss, jitter, LSR/DLSR."""

    def __init__(self, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise LocalProtocolError("clock rate must be positive")
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.bad_seq: int | None = None
        self.received = 0
        self.octets = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.duplicates_or_late = 0
        self._jitter = 0.0
        self._transit: int | None = None
        self._lsr = 0
        self._lsr_time: float | None = None

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.cycles = 0
        self.bad_seq = None
        self.received = 0
        self.octets = 0
        self.expected_prior = 0
        self.received_prior = 0
        self._transit = None
        self._jitter = 0.0

    def update(self, packet: RtpPacket, now: float, *, jitter: bool = True) -> bool:
        """Account for a received packet; False if it was judged invalid (big jump, A.1).

        Every packet of the source counts toward received/expected, whatever its payload type;
        ``jitter=False`` leaves it out of the interarrival jitter only (RFC 4733 events, whose
        timestamp is the event's start, not their sampling instant: docs/decisions.md)."""
        seq = packet.sequence
        if self.ssrc != packet.ssrc:
            self.ssrc = packet.ssrc
            self._init_seq(seq)
        else:
            udelta = (seq - self.max_seq) & 0xFFFF
            if udelta < MAX_DROPOUT:
                if seq < self.max_seq:
                    self.cycles += _SEQ_MOD
                self.max_seq = seq
            elif udelta <= _SEQ_MOD - MAX_MISORDER:
                # a very large jump
                if self.bad_seq is not None and seq == self.bad_seq:
                    self._init_seq(seq)  # two sequential packets: the source restarted
                else:
                    self.bad_seq = (seq + 1) & 0xFFFF
                    return False
            else:
                self.duplicates_or_late += 1  # duplicate or reordered packet
        self.received += 1
        self.octets += len(packet.payload)
        if jitter:
            self._update_jitter(packet.timestamp, now)
        return True

    def _update_jitter(self, timestamp: int, now: float) -> None:
        arrival = round(now * self.clock_rate)
        transit = (arrival - timestamp) & 0xFFFFFFFF
        if self._transit is not None:
            d = abs(ts_diff(transit, self._transit))
            self._jitter += (d - self._jitter) / 16.0
        self._transit = transit

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (may be negative with duplicates), clamped to 24 bits signed."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units."""
        return int(self._jitter)

    def on_sender_report(self, report: SenderReport, now: float) -> None:
        """Remember an SR's NTP time (LSR) and when it arrived (for DLSR)."""
        self._lsr = ntp_middle32(report.ntp_timestamp)
        self._lsr_time = now

    def report_block(self, now: float) -> ReportBlock:
        """A report block for this source; advances the interval for ``fraction_lost`` (A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self._lsr_time is not None:
            dlsr = max(0, int((now - self._lsr_time) * 65536)) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc or 0,
            fraction_lost=fraction,
            cumulative_lost=self.lost,
            highest_sequence=self.extended_max_seq & 0xFFFFFFFF,
            jitter=self.jitter,
            lsr=self._lsr,
            dlsr=dlsr,
        )


# ---------------------------------------------------------------------------------------------
# Sending and rewriting


def _rng(rng: random.Random | None) -> random.Random:
    return rng if rng is not None else random.SystemRandom()


class RtpSender:
    """Keeps one outgoing stream's SSRC, sequence and timestamp; builds packets and SRs."""

    def __init__(
        self,
        payload_type: int,
        clock_rate: int = 8000,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        r = _rng(rng)
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ssrc = r.getrandbits(32) if ssrc is None else ssrc
        self.sequence = r.getrandbits(16) if sequence is None else sequence & 0xFFFF
        self.timestamp = r.getrandbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self.packet_count = 0
        self.octet_count = 0

    def next_packet(self, payload: bytes, samples: int, marker: bool = False,
                    payload_type: int | None = None) -> RtpPacket:
        """A packet stamped with the current timestamp; then advance ts by ``samples``."""
        packet = RtpPacket._fields(self.payload_type if payload_type is None else payload_type, self.sequence,
                                   self.timestamp, self.ssrc, bytes(payload), marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packet_count += 1
        self.octet_count += len(payload)
        return packet

    def packet_at(self, payload: bytes, timestamp: int, marker: bool = False,
                  payload_type: int | None = None) -> RtpPacket:
        """A packet with the next sequence number and an explicit timestamp (DTMF events)."""
        packet = RtpPacket(
            payload_type=self.payload_type if payload_type is None else payload_type,
            sequence=self.sequence,
            timestamp=timestamp & 0xFFFFFFFF,
            ssrc=self.ssrc,
            payload=bytes(payload),
            marker=marker,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packet_count += 1
        self.octet_count += len(payload)
        return packet

    def skip(self, samples: int) -> None:
        """Advance the timestamp without sending (silence, hold, a DTMF event)."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF

    def sender_report(self, wallclock: float, reports: Sequence[ReportBlock] = (),
                      rtp_timestamp: int | None = None) -> SenderReport:
        """An SR for Unix time ``wallclock``; the RTP time defaults to the next packet's."""
        return SenderReport(
            ssrc=self.ssrc,
            ntp_timestamp=ntp_from_unix(wallclock),
            rtp_timestamp=self.timestamp if rtp_timestamp is None else rtp_timestamp,
            packet_count=self.packet_count & 0xFFFFFFFF,
            octet_count=self.octet_count & 0xFFFFFFFF,
            reports=tuple(reports),
        )


class RtpRewriter:
    """Maps packets of one or more incoming streams onto one continuous outgoing stream.

    Packet path of the relay: payloads are untouched; SSRC is replaced, sequence numbers and
    timestamps are offset so that a change of source SSRC (or a restart of the same source with a
    big jump) continues smoothly: seq +1, ts + the elapsed time (or one packet's worth). The first
    packet after a switch gets the marker bit. Stragglers of a source we switched away from are
    dropped (``rewrite`` returns None) for ``straggler_window`` packets, then they count as a switch.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
        payload_type_map: dict[int, int] | None = None,
        rng: random.Random | None = None,
        straggler_window: int = 50,
    ) -> None:
        r = _rng(rng)
        self.clock_rate = clock_rate
        self.ssrc = r.getrandbits(32) if ssrc is None else ssrc
        self.payload_type_map = dict(payload_type_map or {})
        self._start_seq = r.getrandbits(16) if sequence is None else sequence & 0xFFFF
        self._start_ts = r.getrandbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self._source: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_out_seq: int | None = None
        self._last_out_ts = 0
        self._last_in_seq = 0
        self._last_in_ts = 0
        self._last_now: float | None = None
        self._ts_step = clock_rate // 50  # 20 ms until we learn better
        self._retired: dict[int, int] = {}
        self._since_switch = 0
        self._straggler_window = straggler_window
        self.switches = 0
        self.dropped = 0

    def _switch(self, packet: RtpPacket, now: float | None) -> None:
        if self._last_out_seq is None:
            out_seq = self._start_seq
            out_ts = self._start_ts
        else:
            out_seq = (self._last_out_seq + 1) & 0xFFFF
            gap = self._ts_step
            if now is not None and self._last_now is not None and now > self._last_now:
                gap = max(gap, round((now - self._last_now) * self.clock_rate))
            out_ts = (self._last_out_ts + gap) & 0xFFFFFFFF
            self.switches += 1
        if self._source is not None and self._source != packet.ssrc:
            self._retired[self._source] = 0
        self._retired.pop(packet.ssrc, None)
        self._source = packet.ssrc
        self._seq_offset = (out_seq - packet.sequence) & 0xFFFF
        self._ts_offset = (out_ts - packet.timestamp) & 0xFFFFFFFF
        self._since_switch = 0

    def rewrite(self, packet: RtpPacket, now: float | None = None) -> RtpPacket | None:
        marker = packet.marker
        if packet.ssrc != self._source:
            if packet.ssrc in self._retired and self._since_switch < self._straggler_window:
                self.dropped += 1
                return None
            self._switch(packet, now)
            marker = True
        else:
            jump = seq_diff(packet.sequence, self._last_in_seq)
            tjump = ts_diff(packet.timestamp, self._last_in_ts)
            if abs(jump) > MAX_DROPOUT or abs(tjump) > 10 * 60 * self.clock_rate:
                self._switch(packet, now)  # the source restarted its numbering
                marker = True
            elif jump == 1 and 0 < tjump <= self.clock_rate:
                self._ts_step = tjump
        self._since_switch += 1
        out_seq = (packet.sequence + self._seq_offset) & 0xFFFF
        out_ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        if self._last_out_seq is None or seq_diff(out_seq, self._last_out_seq) > 0:
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_in_seq = packet.sequence
            self._last_in_ts = packet.timestamp
            if now is not None:
                self._last_now = now
        return RtpPacket(
            payload_type=self.payload_type_map.get(packet.payload_type, packet.payload_type),
            sequence=out_seq,
            timestamp=out_ts,
            ssrc=self.ssrc,
            payload=packet.payload,
            marker=marker,
            csrcs=packet.csrcs,
            extension_profile=packet.extension_profile,
            extension_data=packet.extension_data,
        )


# ---------------------------------------------------------------------------------------------
# RFC 4733 telephone events

DTMF_EVENTS = "0123456789*#ABCD"


@dataclass(frozen=True)
class TelephoneEvent:
    """The 4-byte RFC 4733 payload: event, end bit, volume (0..63, -dBm0), duration (ts units)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @property
    def digit(self) -> str | None:
        return DTMF_EVENTS[self.event] if 0 <= self.event < 16 else None

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        if len(data) < 4:
            raise RemoteProtocolError("telephone-event payload too short")
        event, flags, duration = struct.unpack_from("!BBH", data)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63:
            raise LocalProtocolError("bad telephone event")
        if not 0 <= self.duration <= 0xFFFF:
            raise LocalProtocolError("telephone event duration out of range")
        return struct.pack("!BBH", self.event, (0x80 if self.end else 0) | self.volume,
                           self.duration)


@dataclass(frozen=True)
class DtmfDigit:
    digit: str
    duration_ms: int


class DtmfSender:
    """Builds the RFC 4733 packet train for one digit.

    ``packets(digit, duration_ms, rtp)`` returns packets meant to be sent ``interval_ms`` apart:
    a start packet with the marker bit, updates with growing duration, then the end packet three
    times, all with the event's start timestamp. The sender's timestamp is advanced by the
    event's duration so audio continues in step after it.
    """

    def __init__(self, payload_type: int, clock_rate: int = 8000, *, interval_ms: int = 20,
                 volume: int = 10, end_repeats: int = 3) -> None:
        if not 0 <= payload_type <= 127 or clock_rate <= 0 or interval_ms <= 0:
            raise LocalProtocolError("bad DTMF sender parameters")
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.interval_ms = interval_ms
        self.volume = volume
        self.end_repeats = end_repeats

    def events(self, digit: str, duration_ms: int) -> list[TelephoneEvent]:
        index = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
        if index < 0:
            raise LocalProtocolError(f"not a DTMF digit: {digit!r}")
        if duration_ms <= 0:
            raise LocalProtocolError("DTMF duration must be positive")
        step = self.clock_rate * self.interval_ms // 1000
        total = min(0xFFFF, self.clock_rate * duration_ms // 1000)
        total = max(total, 1)
        out: list[TelephoneEvent] = []
        elapsed = step
        while elapsed < total:
            out.append(TelephoneEvent(index, False, self.volume, elapsed))
            elapsed += step
        for _ in range(self.end_repeats):
            out.append(TelephoneEvent(index, True, self.volume, total))
        return out

    def packets(self, digit: str, duration_ms: int, rtp: RtpSender) -> list[RtpPacket]:
        events = self.events(digit, duration_ms)
        start_ts = rtp.timestamp
        packets = [
            rtp.packet_at(ev.serialize(), start_ts, marker=(i == 0),
                          payload_type=self.payload_type)
            for i, ev in enumerate(events)
        ]
        rtp.skip(events[-1].duration)
        return packets


class DtmfReceiver:
    """Turns RFC 4733 event packets into digits, each exactly once.

    An event is identified by (SSRC, timestamp). A digit is emitted at its first end packet; the
    repeated end packets and late updates are ignored. If the end packets are all lost, the digit is
    emitted when an event with a new timestamp starts, or by :meth:`poll` after ``timeout`` seconds
    of silence. A lost start packet does not matter (the marker bit is not relied upon).
    """

    def __init__(self, clock_rate: int = 8000, *, timeout: float = 0.5,
                 memory: int = 32) -> None:
        if clock_rate <= 0:
            raise LocalProtocolError("clock rate must be positive")
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._done: deque[tuple[int, int]] = deque(maxlen=memory)
        self._current: tuple[int, int] | None = None
        self._current_event: TelephoneEvent | None = None
        self._last_seen: float | None = None

    def _digit(self, event: TelephoneEvent) -> DtmfDigit | None:
        digit = event.digit
        if digit is None:
            return None
        return DtmfDigit(digit, event.duration * 1000 // self.clock_rate)

    def _finish_current(self) -> list[DtmfDigit]:
        out: list[DtmfDigit] = []
        if self._current is not None and self._current_event is not None:
            self._done.append(self._current)
            digit = self._digit(self._current_event)
            if digit is not None:
                out.append(digit)
        self._current = None
        self._current_event = None
        return out

    def receive(self, packet: RtpPacket, now: float | None = None) -> list[DtmfDigit]:
        """Feed one telephone-event packet; returns the digits completed by it (0, 1 or 2)."""
        event = TelephoneEvent.parse(packet.payload)
        key = (packet.ssrc, packet.timestamp)
        if now is not None:
            self._last_seen = now
        if key in self._done:
            return []
        out: list[DtmfDigit] = []
        if self._current is not None and self._current != key:
            out.extend(self._finish_current())  # previous event lost its end packets
        if self._current is None:
            self._current = key
            self._current_event = event
        elif self._current_event is None or event.duration >= self._current_event.duration:
            self._current_event = event
        if event.end:
            out.extend(self._finish_current())
        return out

    def poll(self, now: float) -> list[DtmfDigit]:
        """Emit an event whose end packets never came, once ``timeout`` has passed."""
        if (self._current is not None and self._last_seen is not None
                and now - self._last_seen >= self.timeout):
            return self._finish_current()
        return []

    def flush(self) -> list[DtmfDigit]:
        return self._finish_current()


# ---------------------------------------------------------------------------------------------
# Jitter buffer


@dataclass(frozen=True)
class Loss:
    """Packets that never arrived in time: the decoder should conceal ``count`` frames
    starting at ``sequence`` (count > 1 only when the buffer skipped a gap it was late for)."""

    sequence: int
    ssrc: int
    count: int = 1


@dataclass
class JitterBufferStats:
    received: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    overflow: int = 0
    resyncs: int = 0


class JitterBuffer:
    """Adaptive playout buffer keyed by (extended) sequence number.

    ``put(packet, now)`` on arrival; ``get(now)`` every ``ptime`` by the media clock returns the next
    packet once its playout time has come, a :class:`Loss` for a missing packet whose slot has
    passed (a later packet is already due), or None (nothing to play yet / underrun).

    Playout time of a packet = its RTP time mapped onto the local clock through the smallest
    transit seen + the target delay. The target delay follows the largest recent extra transit
    (roughly the last ``window`` packets), clamped to [min_delay, max_delay]. An SSRC change or a
    big sequence/timestamp jump resyncs the buffer.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        *,
        ptime: float = 0.02,
        min_delay: float = 0.02,
        max_delay: float = 0.2,
        max_packets: int = 64,
        window: int = 100,
    ) -> None:
        if clock_rate <= 0 or ptime <= 0 or not 0 <= min_delay <= max_delay or max_packets < 2:
            raise LocalProtocolError("bad jitter buffer parameters")
        self.clock_rate = clock_rate
        self.ptime = ptime
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.max_packets = max_packets
        self.stats = JitterBufferStats()
        self._window: deque[float] = deque(maxlen=window)
        self.target_delay = min_delay
        self._reset()

    def _reset(self) -> None:
        self._packets: dict[int, RtpPacket] = {}
        self._ssrc: int | None = None
        self._high_seq = 0  # extended
        self._next_seq: int | None = None  # extended
        self._played_any = False
        self._last_ts = 0
        self._ext_ts = 0
        self._ref: float | None = None  # local time of RTP time 0 (min transit)
        self._ts_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._packets)

    def _extend_seq(self, seq: int) -> int:
        return self._high_seq + seq_diff(seq, self._high_seq & 0xFFFF)

    def _extend_ts(self, ts: int) -> int:
        return self._ext_ts + ts_diff(ts, self._last_ts)

    def _playout(self, ext_seq: int) -> float:
        ref = self._ref if self._ref is not None else 0.0
        return ref + self._ts_of[ext_seq] / self.clock_rate + self.target_delay

    def _start(self, packet: RtpPacket, now: float) -> None:
        had_stream = self._ssrc is not None
        self._reset()
        if had_stream:
            self.stats.resyncs += 1
        self._ssrc = packet.ssrc
        self._high_seq = packet.sequence + _SEQ_MOD  # leave room below for reordering
        self._next_seq = self._high_seq
        self._last_ts = packet.timestamp
        self._ext_ts = 1 << 33
        self._ref = now - self._ext_ts / self.clock_rate

    def put(self, packet: RtpPacket, now: float) -> None:
        self.stats.received += 1
        if self._ssrc != packet.ssrc or self._next_seq is None:
            self._start(packet, now)
        else:
            seq_jump = seq_diff(packet.sequence, self._high_seq & 0xFFFF)
            ts_jump = ts_diff(packet.timestamp, self._last_ts)
            if abs(seq_jump) > MAX_MISORDER * 5 or abs(ts_jump) > 30 * self.clock_rate:
                self._start(packet, now)
        if self._next_seq is None or self._ref is None:  # pragma: no cover - set by _start
            return
        ext_seq = self._extend_seq(packet.sequence)
        if ext_seq in self._packets:
            self.stats.duplicates += 1
            return
        ext_ts = self._extend_ts(packet.timestamp)
        # adapt (late packets count too): transit relative to the fastest packet seen
        transit = now - ext_ts / self.clock_rate
        self._ref = min(self._ref, transit)
        self._window.append(transit - self._ref)
        self.target_delay = min(self.max_delay,
                                max(self.min_delay, max(self._window) + self.ptime / 2))
        if ext_seq < self._next_seq:
            if self._played_any:
                self.stats.late += 1
                return
            self._next_seq = ext_seq  # reordered before playout started
        if ext_seq > self._high_seq:
            self._high_seq = ext_seq
            self._last_ts = packet.timestamp
            self._ext_ts = ext_ts
        self._packets[ext_seq] = packet
        self._ts_of[ext_seq] = ext_ts
        while len(self._packets) > self.max_packets:
            oldest = min(self._packets)
            del self._packets[oldest]
            del self._ts_of[oldest]
            self.stats.overflow += 1
            self._next_seq = max(self._next_seq, oldest + 1)

    def peek(self) -> RtpPacket | None:
        """The earliest packet held, left in place (after a :class:`Loss`: the packet that
        follows the lost one, whose in-band FEC may rebuild it)."""
        if not self._packets:
            return None
        return self._packets[min(self._packets)]

    def get(self, now: float) -> RtpPacket | Loss | None:
        if self._next_seq is None or not self._packets or self._ssrc is None:
            return None
        seq = self._next_seq
        # too far behind (sender clock faster, or a stall): skip old due packets
        while (len(self._packets) > 1 and seq in self._packets
               and self._playout(seq) < now - self.max_delay):
            del self._packets[seq]
            del self._ts_of[seq]
            self.stats.overflow += 1
            seq += 1
            self._next_seq = seq
        if seq in self._packets:
            if self._playout(seq) <= now:
                packet = self._packets.pop(seq)
                del self._ts_of[seq]
                self._next_seq = seq + 1
                self._played_any = True
                self.stats.played += 1
                return packet
            return None
        if not self._packets:
            return None
        following = min(self._packets)
        if following < seq:  # cannot happen (older ones are dropped); stay safe
            self._next_seq = following
            return None
        # the missing packet's slot: one ptime per missing packet before the next one present
        slot = self._playout(following) - (following - seq) * self.ptime
        if slot > now:
            return None
        self._played_any = True
        if self._playout(following) <= now:
            count = following - seq  # the next packet is due already: skip the whole gap
        else:
            count = 1
        self._next_seq = seq + count
        self.stats.lost += count
        return Loss(sequence=seq & 0xFFFF, ssrc=self._ssrc, count=count)


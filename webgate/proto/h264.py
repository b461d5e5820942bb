"""H.264 for forwarding video by session ID (sans-IO): FLV AVC ↔ NAL units ↔ RTP (RFC 6184).

- FLV side: the AVCDecoderConfigurationRecord (:class:`AvcDecoderConfig`), length-prefixed NAL unit
  payloads (:func:`split_length_prefixed`, :func:`join_length_prefixed`), AVC video tag bodies
  (:func:`parse_avc_tag`, :func:`build_avc_tag`), and two small state machines, :class:`AvcTagReader`
  (tag bodies → :class:`AccessUnit`) and :class:`AvcTagWriter` (access units → tag bodies).
- RTP side, packetization-mode 1: :class:`Packetizer` (single NAL unit packets, STAP-A, FU-A) and
  :class:`Depacketizer` (reassembly, access units by timestamp, loss → wait for the next IDR).
- :func:`parse_sps` (width, height, profile-level-id), :class:`GopCache` (what a new watcher starts from).

The depacketizer never raises on what the network sends: a malformed payload is dropped and counted.
The explicit parse functions raise :class:`RemoteProtocolError`. Nothing here loops over bytes in
Python on the per-packet path: NAL units are cut with slices, ``bytes.find`` and ``bytes.replace``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.flv import (
    AVC_END_OF_SEQUENCE,
    AVC_NALU,
    AVC_SEQUENCE_HEADER,
    FRAME_INTER,
    FRAME_KEY,
    VIDEO_AVC,
    VideoTagHeader,
    build_video_tag,
    parse_video_tag,
)

__all__ = [
    "AccessUnit",
    "AvcDecoderConfig",
    "AvcTag",
    "AvcTagReader",
    "AvcTagWriter",
    "Depacketizer",
    "DepacketizerStats",
    "GopCache",
    "H264Payload",
    "Packetizer",
    "SpsInfo",
    "build_avc_tag",
    "has_parameter_sets",
    "is_keyframe",
    "join_annexb",
    "join_length_prefixed",
    "nal_type",
    "parse_avc_tag",
    "parse_sps",
    "profile_level_id",
    "split_annexb",
    "split_length_prefixed",
    "sprop_parameter_sets",
    "with_parameter_sets",
]

# NAL unit types (H.264 table 7-1) and the RTP payload structures of RFC 6184.
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_END_OF_SEQUENCE = 10
NAL_END_OF_STREAM = 11
NAL_FILLER = 12
STAP_A = 24
FU_A = 28

#: RTP clock of H.264 video (RFC 6184 §8.2.1)
CLOCK_RATE = 90000

_START_CODE = b"\x00\x00\x00\x01"
#: a packet this far behind the last one is a restarted sequence, not a late packet
_MAX_MISORDER = 100
_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135, 144))
#: profiles whose AVCDecoderConfigurationRecord has no chroma format/bit depth extension; ISO 14496-15
#: lists 100, 110, 122 and 144 for it, FFmpeg writes it for every profile but these
_AVCC_NO_EXT_PROFILES = frozenset((66, 77, 88))


def nal_type(nal: bytes) -> int:
    """The nal_unit_type of a NAL unit (0 for an empty one)."""
    return nal[0] & 0x1F if nal else 0


def is_keyframe(nals: Iterable[bytes]) -> bool:
    """Whether the access unit holds an IDR slice (NAL type 5)."""
    return any(nal and nal[0] & 0x1F == NAL_IDR for nal in nals)


def has_parameter_sets(nals: Iterable[bytes]) -> bool:
    """Whether the NAL units hold both an SPS and a PPS."""
    types = {nal[0] & 0x1F for nal in nals if nal}
    return NAL_SPS in types and NAL_PPS in types


def with_parameter_sets(
    nals: Sequence[bytes], sps: Sequence[bytes], pps: Sequence[bytes]
) -> list[bytes]:
    """``nals`` with ``sps``/``pps`` inserted (after a leading access unit delimiter) when it is an
    IDR access unit lacking them; otherwise a copy of ``nals``."""
    out = list(nals)
    types = {nal[0] & 0x1F for nal in out if nal}
    if NAL_IDR not in types:
        return out
    missing: list[bytes] = []
    if NAL_SPS not in types:
        missing.extend(sps)
    if NAL_PPS not in types:
        missing.extend(pps)
    if missing:
        at = 1 if out and nal_type(out[0]) == NAL_AUD else 0
        out[at:at] = missing
    return out


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """The NAL units of one picture and its timestamp (RTP: 90 kHz; the caller's clock otherwise)."""

    timestamp: int
    nals: tuple[bytes, ...]

    @property
    def is_keyframe(self) -> bool:
        return is_keyframe(self.nals)

    @property
    def size(self) -> int:
        """Bytes of NAL units (no start codes, no length prefixes)."""
        return sum(len(n) for n in self.nals)


# ---------------------------------------------------------------------------------------------
# Byte stream formats


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of an AVC sample (each preceded by a ``length_size``-byte big-endian length).
    Zero-length entries are skipped; a truncated one raises :class:`RemoteProtocolError`."""
    if length_size not in (1, 2, 3, 4):
        raise LocalProtocolError(f"NAL unit length size {length_size} not in 1..4")
    out: list[bytes] = []
    pos = 0
    end = len(data)
    from_bytes = int.from_bytes
    while pos < end:
        body = pos + length_size
        if body > end:
            raise RemoteProtocolError("truncated NAL unit length")
        size = from_bytes(data[pos:body], "big")
        pos = body + size
        if pos > end:
            raise RemoteProtocolError(f"NAL unit of {size} bytes overruns the sample")
        if size:
            out.append(bytes(data[body:pos]))
    return out


def join_length_prefixed(nals: Iterable[bytes], length_size: int = 4) -> bytes:
    """The AVC sample of ``nals``: each preceded by its ``length_size``-byte big-endian length."""
    if length_size not in (1, 2, 3, 4):
        raise LocalProtocolError(f"NAL unit length size {length_size} not in 1..4")
    limit = 1 << (8 * length_size)
    parts: list[bytes] = []
    for nal in nals:
        if len(nal) >= limit:
            raise LocalProtocolError(f"NAL unit of {len(nal)} bytes does not fit a {length_size}-byte length")
        parts.append(len(nal).to_bytes(length_size, "big"))
        parts.append(nal)
    return b"".join(parts)


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes; trailing zeros dropped)."""
    out: list[bytes] = []
    find = data.find
    i = find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = find(b"\x00\x00\x01", start)
        nal = bytes(data[start : len(data) if j < 0 else j]).rstrip(b"\x00")
        if nal:
            out.append(nal)
        i = j
    return out


def join_annexb(nals: Iterable[bytes]) -> bytes:
    """An Annex B byte stream: each NAL unit preceded by ``00 00 00 01``."""
    parts: list[bytes] = []
    for nal in nals:
        parts.append(_START_CODE)
        parts.append(nal)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1)


@dataclass(frozen=True)
class AvcDecoderConfig:
    """The body of an FLV AVC sequence header (and of an MP4 ``avcC`` box).

    ``chroma_format``/``bit_depth_*``/``sps_ext`` are the High-profile extension; None when absent.
    """

    profile: int
    compatibility: int
    level: int
    nalu_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    version: int = 1
    chroma_format: int | None = None
    bit_depth_luma: int | None = None
    bit_depth_chroma: int | None = None
    sps_ext: tuple[bytes, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> AvcDecoderConfig:
        n = len(data)
        if n < 7:
            raise RemoteProtocolError(f"AVCDecoderConfigurationRecord too short ({n} bytes)")
        version, profile, compat, level, b4, b5 = data[0], data[1], data[2], data[3], data[4], data[5]
        if version != 1:
            raise RemoteProtocolError(f"AVCDecoderConfigurationRecord version {version}")
        pos = 6

        def sets(count: int) -> tuple[bytes, ...]:
            nonlocal pos
            out: list[bytes] = []
            for _ in range(count):
                if pos + 2 > n:
                    raise RemoteProtocolError("AVCDecoderConfigurationRecord truncated")
                size = int.from_bytes(data[pos : pos + 2], "big")
                pos += 2
                if pos + size > n:
                    raise RemoteProtocolError("parameter set overruns the AVCDecoderConfigurationRecord")
                out.append(bytes(data[pos : pos + size]))
                pos += size
            return tuple(out)

        sps = sets(b5 & 0x1F)
        if pos >= n:
            raise RemoteProtocolError("AVCDecoderConfigurationRecord without PPS count")
        pps_count = data[pos]
        pos += 1
        pps = sets(pps_count)
        chroma: int | None = None
        depth_luma: int | None = None
        depth_chroma: int | None = None
        ext: tuple[bytes, ...] = ()
        if profile not in _AVCC_NO_EXT_PROFILES and pos + 4 <= n:  # older muxers omit it
            chroma = data[pos] & 3
            depth_luma = (data[pos + 1] & 7) + 8
            depth_chroma = (data[pos + 2] & 7) + 8
            ext_count = data[pos + 3]
            pos += 4
            ext = sets(ext_count)
        return cls(profile, compat, level, (b4 & 3) + 1, sps, pps, version, chroma, depth_luma,
                   depth_chroma, ext)

    @classmethod
    def from_parameter_sets(
        cls, sps: Sequence[bytes], pps: Sequence[bytes], nalu_length_size: int = 4
    ) -> AvcDecoderConfig:
        """A record for these SPS/PPS (profile and level from the first SPS; the High-profile
        extension filled in from it when the profile has one)."""
        if not sps or len(sps[0]) < 4:
            raise LocalProtocolError("an AVCDecoderConfigurationRecord needs an SPS")
        first = sps[0]
        chroma: int | None = None
        depth_luma: int | None = None
        depth_chroma: int | None = None
        if first[1] in _HIGH_PROFILES:
            try:
                info = parse_sps(first)
            except RemoteProtocolError:
                pass
            else:
                chroma, depth_luma, depth_chroma = (
                    info.chroma_format_idc, info.bit_depth_luma, info.bit_depth_chroma)
        return cls(first[1], first[2], first[3], nalu_length_size, tuple(bytes(s) for s in sps),
                   tuple(bytes(p) for p in pps), 1, chroma, depth_luma, depth_chroma)

    def serialize(self) -> bytes:
        if self.nalu_length_size not in (1, 2, 4):
            raise LocalProtocolError(f"NAL unit length size {self.nalu_length_size} not 1, 2 or 4")
        if len(self.sps) > 31 or len(self.pps) > 255 or len(self.sps_ext) > 255:
            raise LocalProtocolError("too many parameter sets")
        parts = [bytes([self.version, self.profile, self.compatibility, self.level,
                        0xFC | (self.nalu_length_size - 1), 0xE0 | len(self.sps)])]
        parts.extend(_sized(s) for s in self.sps)
        parts.append(bytes([len(self.pps)]))
        parts.extend(_sized(p) for p in self.pps)
        if self.chroma_format is not None:
            luma = self.bit_depth_luma or 8
            chroma = self.bit_depth_chroma or 8
            parts.append(bytes([0xFC | (self.chroma_format & 3), 0xF8 | ((luma - 8) & 7),
                                0xF8 | ((chroma - 8) & 7), len(self.sps_ext)]))
            parts.extend(_sized(s) for s in self.sps_ext)
        return b"".join(parts)

    def __bytes__(self) -> bytes:
        return self.serialize()


def _sized(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise LocalProtocolError("parameter set longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


# ---------------------------------------------------------------------------------------------
# FLV AVC video tags


@dataclass(frozen=True)
class AvcTag:
    """An FLV video tag body with CodecID 7: ``payload`` is the AVCDecoderConfigurationRecord
    (``packet_type`` 0), length-prefixed NAL units (1) or empty (2, end of sequence)."""

    frame_type: int
    packet_type: int
    composition_time: int
    payload: bytes

    @property
    def is_keyframe(self) -> bool:
        return self.frame_type == FRAME_KEY


def parse_avc_tag(data: bytes) -> AvcTag:
    """Parse an FLV AVC video tag body; :class:`RemoteProtocolError` if it is not AVC or too short."""
    header, payload = parse_video_tag(data)
    if header.codec_id != VIDEO_AVC:
        raise RemoteProtocolError(f"video tag codec {header.codec_id} is not AVC")
    packet_type = header.avc_packet_type
    if packet_type not in (AVC_SEQUENCE_HEADER, AVC_NALU, AVC_END_OF_SEQUENCE):
        raise RemoteProtocolError(f"unknown AVCPacketType {packet_type}")
    return AvcTag(header.frame_type, packet_type, header.composition_time, payload)


def build_avc_tag(
    packet_type: int, payload: bytes = b"", *, keyframe: bool = True, composition_time: int = 0
) -> bytes:
    """An FLV AVC video tag body (FrameType key/inter, CodecID 7, AVCPacketType, SI24 time)."""
    if packet_type not in (AVC_SEQUENCE_HEADER, AVC_NALU, AVC_END_OF_SEQUENCE):
        raise LocalProtocolError(f"unknown AVCPacketType {packet_type}")
    if not -(1 << 23) <= composition_time < (1 << 23):
        raise LocalProtocolError(f"composition time {composition_time} out of SI24 range")
    header = VideoTagHeader(FRAME_KEY if keyframe else FRAME_INTER, VIDEO_AVC, packet_type,
                            composition_time)
    return build_video_tag(header, payload)


class AvcTagReader:
    """FLV AVC tag bodies (as an RTMP publisher sends them) → access units.

    :meth:`feed` keeps the last sequence header's configuration and returns an
    :class:`AccessUnit` for each NALU tag, stamped ``(timestamp_ms + composition_time) * 90``
    (the 90 kHz presentation time, modulo 2**32). With ``parameter_sets_in_keyframes`` (the
    default) an IDR access unit lacking SPS/PPS gets the configuration's, so every keyframe can
    be decoded on its own (RTP watchers, the GOP cache). Raises :class:`RemoteProtocolError` on
    a malformed tag (the RTMP adapter's edge handles it).
    """

    def __init__(self, *, parameter_sets_in_keyframes: bool = True) -> None:
        self.parameter_sets_in_keyframes = parameter_sets_in_keyframes
        self.config: AvcDecoderConfig | None = None

    def feed(self, body: bytes, timestamp_ms: int) -> AccessUnit | None:
        tag = parse_avc_tag(body)
        if tag.packet_type == AVC_SEQUENCE_HEADER:
            self.config = AvcDecoderConfig.parse(tag.payload)
            return None
        if tag.packet_type != AVC_NALU:
            return None
        length_size = self.config.nalu_length_size if self.config is not None else 4
        nals = split_length_prefixed(tag.payload, length_size)
        if not nals:
            return None
        if self.parameter_sets_in_keyframes and self.config is not None:
            nals = with_parameter_sets(nals, self.config.sps, self.config.pps)
        timestamp = ((timestamp_ms + tag.composition_time) * 90) & 0xFFFFFFFF
        return AccessUnit(timestamp, tuple(nals))


class AvcTagWriter:
    """Access units (e.g. from a :class:`Depacketizer`) → FLV AVC tag bodies for RTMP players.

    :meth:`write` returns a sequence header tag when the access unit's SPS/PPS differ from the
    last ones sent (the first time, and on a resolution change), then the NALU tag with SPS/PPS
    taken out. Nothing is written before a keyframe with known parameter sets
    (:attr:`needs_keyframe`). Timestamps are the caller's (the RTMP message's, in ms).
    """

    def __init__(self, *, nalu_length_size: int = 4) -> None:
        self.nalu_length_size = nalu_length_size
        self.config: AvcDecoderConfig | None = None
        self.needs_keyframe = True
        self._sps: tuple[bytes, ...] = ()
        self._pps: tuple[bytes, ...] = ()

    def write(self, nals: Sequence[bytes], composition_time: int = 0) -> list[bytes]:
        sps = tuple(n for n in nals if n and n[0] & 0x1F == NAL_SPS)
        pps = tuple(n for n in nals if n and n[0] & 0x1F == NAL_PPS)
        if sps:
            self._sps = sps
        if pps:
            self._pps = pps
        key = is_keyframe(nals)
        out: list[bytes] = []
        if self.needs_keyframe:
            if not (key and self._sps and self._pps):
                return out
            self.needs_keyframe = False
        if self.config is None or self.config.sps != self._sps or self.config.pps != self._pps:
            self.config = AvcDecoderConfig.from_parameter_sets(self._sps, self._pps,
                                                               self.nalu_length_size)
            out.append(build_avc_tag(AVC_SEQUENCE_HEADER, self.config.serialize()))
        body = [n for n in nals if n and n[0] & 0x1F not in (NAL_SPS, NAL_PPS)]
        if body:
            out.append(build_avc_tag(AVC_NALU, join_length_prefixed(body, self.nalu_length_size),
                                     keyframe=key, composition_time=composition_time))
        return out

    def end_of_sequence(self) -> bytes:
        return build_avc_tag(AVC_END_OF_SEQUENCE, keyframe=False)


# ---------------------------------------------------------------------------------------------
# RTP packetization, RFC 6184 packetization-mode 1


class H264Payload(NamedTuple):
    """One RTP payload of an access unit; ``marker`` is set on the access unit's last one."""

    payload: bytes
    marker: bool


class Packetizer:
    """Access units → RTP payloads of at most ``max_payload_size`` bytes (RFC 6184 mode 1).

    A NAL unit that fits goes alone (single NAL unit packet) or, with its small neighbours, into
    a STAP-A; a larger one is cut into FU-A fragments of near-equal size. ``max_payload_size`` is
    the RTP payload budget: the path MTU less IP/UDP/RTP (and SRTP, header extension) overhead.

    With ``insert_parameter_sets`` (the default) an IDR access unit lacking SPS/PPS gets the last
    ones seen in-band or given to :meth:`set_parameter_sets`. NAL types 0 and 24–31 (which would
    be read as RTP aggregation/fragmentation units) and empty NAL units are dropped
    (``dropped_nals``).
    """

    def __init__(self, max_payload_size: int = 1200, *, insert_parameter_sets: bool = True) -> None:
        if not 3 <= max_payload_size <= 0xFFFF:  # room for an FU-A fragment; STAP-A sizes are 16 bits
            raise LocalProtocolError(f"max_payload_size {max_payload_size} not in 3..65535")
        self.max_payload_size = max_payload_size
        self.insert_parameter_sets = insert_parameter_sets
        self.sps: tuple[bytes, ...] = ()
        self.pps: tuple[bytes, ...] = ()
        self.dropped_nals = 0

    def set_parameter_sets(self, sps: Sequence[bytes], pps: Sequence[bytes]) -> None:
        self.sps = tuple(bytes(s) for s in sps)
        self.pps = tuple(bytes(p) for p in pps)

    def packetize(self, nals: Sequence[bytes]) -> list[H264Payload]:
        """The payloads of one access unit, in order; the caller stamps them all with the access
        unit's timestamp and consecutive sequence numbers."""
        clean: list[bytes] = []
        sps: list[bytes] = []
        pps: list[bytes] = []
        for nal in nals:
            t = nal[0] & 0x1F if nal else 0
            if t == 0 or t >= STAP_A:
                self.dropped_nals += 1
                continue
            if t == NAL_SPS:
                sps.append(nal)
            elif t == NAL_PPS:
                pps.append(nal)
            clean.append(nal)
        if sps:
            self.sps = tuple(sps)
        if pps:
            self.pps = tuple(pps)
        if self.insert_parameter_sets and (self.sps or self.pps):
            clean = with_parameter_sets(clean, self.sps, self.pps)
        return self._payloads(clean)

    def _payloads(self, nals: list[bytes]) -> list[H264Payload]:
        limit = self.max_payload_size
        out: list[bytes] = []
        i = 0
        count = len(nals)
        while i < count:
            nal = nals[i]
            size = len(nal)
            if size > limit:
                out.extend(self._fragments(nal))
                i += 1
                continue
            # aggregate the following NAL units while the STAP-A fits
            total = 1 + 2 + size
            j = i + 1
            while j < count and total + 2 + len(nals[j]) <= limit:
                total += 2 + len(nals[j])
                j += 1
            if j - i == 1:
                out.append(bytes(nal))
            else:
                group = nals[i:j]
                nri = 0
                forbidden = 0
                parts: list[bytes] = [b""]
                for n in group:
                    nri = max(nri, n[0] & 0x60)
                    forbidden |= n[0] & 0x80
                    parts.append(len(n).to_bytes(2, "big"))
                    parts.append(n)
                parts[0] = bytes([forbidden | nri | STAP_A])
                out.append(b"".join(parts))
            i = j
        last = len(out) - 1
        return [H264Payload(p, k == last) for k, p in enumerate(out)]

    def _fragments(self, nal: bytes) -> list[bytes]:
        head = nal[0]
        indicator = bytes([(head & 0xE0) | FU_A])
        t = head & 0x1F
        view = memoryview(nal)[1:]
        data_len = len(view)
        room = self.max_payload_size - 2
        n = -(-data_len // room)
        base, extra = divmod(data_len, n)  # sizes differ by one byte at most
        out: list[bytes] = []
        pos = 0
        for k in range(n):
            end = pos + base + (1 if k < extra else 0)
            flags = (0x80 if k == 0 else 0) | (0x40 if k == n - 1 else 0)
            out.append(indicator + bytes([flags | t]) + view[pos:end])
            pos = end
        return out


@dataclass
class DepacketizerStats:
    packets: int = 0
    access_units: int = 0
    #: packets missing from the sequence (gaps)
    lost: int = 0
    #: packets older than or equal to the last one (duplicates, late reordered packets): dropped
    late: int = 0
    #: payloads that are not valid RFC 6184 mode-1 payloads (or break the FU-A/size rules)
    malformed: int = 0
    #: access units dropped as incomplete (loss, malformed payloads, size limits)
    broken: int = 0
    #: complete access units dropped while waiting for a keyframe
    skipped: int = 0
    #: times the depacketizer started waiting for a keyframe (a PLI is due)
    keyframe_requests: int = 0


class Depacketizer:
    """RTP payloads in arrival order → complete access units (RFC 6184 packetization-mode 1).

    :meth:`push` takes each packet's sequence number, timestamp, marker and payload and returns the
    access units it completed (marker bit, or a new timestamp). Single NAL unit packets, STAP-A
    and FU-A are understood; anything else is malformed. Packets are not reordered: one older
    than the last is dropped (``late``), a jump forward is loss.

    After loss, or a malformed payload, the access unit in progress is dropped and so is every
    access unit until the next IDR (decoding them would show corruption): :attr:`needs_keyframe`
    is then True and :meth:`take_keyframe_request` returns True once, so the caller sends one
    PLI (and may repeat on its own timer while :attr:`needs_keyframe` stays True). With
    ``wait_for_keyframe`` (the default) the stream also starts by waiting for an IDR.

    An access unit right after a gap (or first in the stream) counts as complete only if its first
    packet can start a picture: not an FU-A continuation, not a slice (whole or FU-A start) whose
    first_mb_in_slice is not 0. (So an IDR whose SPS/PPS packet was the one lost is taken without
    them: a decoder has them from before, and a :class:`Packetizer` puts the last ones back.)
    Never raises on input.
    """

    def __init__(
        self,
        *,
        wait_for_keyframe: bool = True,
        max_access_unit_size: int = 4 * 1024 * 1024,
        max_nals: int = 1024,
    ) -> None:
        self.max_access_unit_size = max_access_unit_size
        self.max_nals = max_nals
        self.stats = DepacketizerStats()
        self.needs_keyframe = wait_for_keyframe
        self._request = False
        self._requested_at_start = not wait_for_keyframe
        self._last_seq: int | None = None
        self._ts: int | None = None  # timestamp of the access unit in progress
        self._nals: list[bytes] = []
        self._size = 0
        self._ok = True
        self._fu: list[bytes] | None = None  # fragments of the FU-A in progress (first: NAL header)
        self._fu_type = 0

    def reset(self, *, wait_for_keyframe: bool = True) -> None:
        """Forget the stream (a new SSRC); counters are kept."""
        self._last_seq = None
        self._discard()
        self._ts = None
        if wait_for_keyframe and not self.needs_keyframe:
            self._start_waiting()

    def take_keyframe_request(self) -> bool:
        """True once after the depacketizer started waiting for a keyframe."""
        request, self._request = self._request, False
        return request

    def push(self, sequence: int, timestamp: int, marker: bool, payload: bytes) -> list[AccessUnit]:
        stats = self.stats
        stats.packets += 1
        out: list[AccessUnit] = []
        gap = False
        last = self._last_seq
        if last is not None:
            d = ((sequence - last + 0x8000) & 0xFFFF) - 0x8000
            if d != 1:
                if -_MAX_MISORDER < d <= 0:
                    stats.late += 1
                    return out
                gap = True  # loss, or a jump so big that it is a new start
                if d > 1:
                    stats.lost += d - 1
        self._last_seq = sequence & 0xFFFF
        if gap:
            if self._ts is not None:
                self._break()  # the access unit in progress may have lost its tail
            if not self.needs_keyframe:
                self._start_waiting()  # a whole reference picture may be gone
        if self._ts is not None and timestamp != self._ts:
            self._finish(out)
        if self._ts is None:
            self._ts = timestamp
            if (gap or last is None) and not _starts_picture(payload):
                self._break()  # the lost packets (or the stream before us) may hold its head
        if self._ok:
            self._add(payload)
        if marker:
            self._finish(out)
        return out

    def flush(self) -> list[AccessUnit]:
        """The access unit in progress (its marker packet never came), if it is complete."""
        out: list[AccessUnit] = []
        if self._ts is not None:
            self._finish(out)
        return out

    # -- internals

    def _start_waiting(self) -> None:
        self.needs_keyframe = True
        self._request = True
        self.stats.keyframe_requests += 1

    def _discard(self) -> None:
        self._nals = []
        self._size = 0
        self._fu = None
        self._ok = True

    def _break(self) -> None:
        """The access unit in progress is incomplete: drop what it has, ignore the rest of it."""
        self._ok = False
        self._nals = []
        self._size = 0
        self._fu = None

    def _bad(self) -> None:
        self.stats.malformed += 1
        self._break()

    def _grow(self, n: int) -> bool:
        self._size += n
        if self._size > self.max_access_unit_size:
            self._break()
            return False
        return True

    def _append(self, nal: bytes) -> None:
        self._nals.append(nal)
        if len(self._nals) > self.max_nals:
            self._break()

    def _add(self, payload: bytes) -> None:
        n = len(payload)
        if n == 0:
            self._bad()
            return
        head = payload[0]
        t = head & 0x1F
        if head & 0x80:  # forbidden_zero_bit: a NAL unit known to be damaged
            self._bad()
            return
        if t == FU_A:
            if n < 3:
                self._bad()
                return
            fu_header = payload[1]
            ftype = fu_header & 0x1F
            if fu_header & 0x80:  # start
                if self._fu is not None or fu_header & 0x40 or ftype == 0 or ftype >= STAP_A:
                    self._bad()
                    return
                if self._grow(n - 1):
                    self._fu = [bytes([(head & 0xE0) | ftype]), payload[2:]]
                    self._fu_type = ftype
                return
            if self._fu is None or ftype != self._fu_type:
                self._bad()
                return
            if not self._grow(n - 2):
                return
            self._fu.append(payload[2:])
            if fu_header & 0x40:  # end
                nal = b"".join(self._fu)
                self._fu = None
                self._append(nal)
            return
        if self._fu is not None:  # an FU-A never finished
            self._bad()
            return
        if t == STAP_A:
            pos = 1
            found = 0
            while pos + 2 < n:
                size = (payload[pos] << 8) | payload[pos + 1]
                pos += 2
                end_pos = pos + size
                if size == 0 or end_pos > n:
                    self._bad()
                    return
                inner_head = payload[pos]
                it = inner_head & 0x1F
                if it == 0 or it >= STAP_A or inner_head & 0x80:
                    self._bad()
                    return
                if not self._grow(size):
                    return
                self._append(payload[pos:end_pos])
                found += 1
                pos = end_pos
            if pos != n or not found:
                self._bad()
            return
        if t == 0 or t > 23:  # STAP-B, MTAP, FU-B are not mode 1; 0, 30, 31 are undefined
            self._bad()
            return
        if self._grow(n):
            self._append(bytes(payload))

    def _finish(self, out: list[AccessUnit]) -> None:
        ts = self._ts
        self._ts = None
        if self._ok and self._fu is not None:  # the access unit ended inside an FU-A
            self._bad()
        nals = self._nals
        ok = self._ok
        self._discard()
        if ts is None:
            return
        if not ok or not nals:
            self.stats.broken += 1
            if not self.needs_keyframe:
                self._start_waiting()
            return
        au = AccessUnit(ts, tuple(nals))
        if self.needs_keyframe:
            if not au.is_keyframe:
                self.stats.skipped += 1
                if not self._requested_at_start:
                    self._requested_at_start = True
                    self._request = True
                    self.stats.keyframe_requests += 1
                return
            self.needs_keyframe = False
        self._requested_at_start = True
        self.stats.access_units += 1
        out.append(au)


def _starts_picture(payload: bytes) -> bool:
    """Whether an RTP payload can be the first of an access unit: not an FU-A continuation, not a
    data partition B/C, not a slice whose first_mb_in_slice (the first ue(v)) is not 0."""
    n = len(payload)
    if not n:
        return False
    t = payload[0] & 0x1F
    at = 1  # where the NAL unit's payload (after its header) starts
    if t == STAP_A:
        if n < 4:
            return False
        t = payload[3] & 0x1F
        at = 4
    elif t == FU_A:
        if n < 2 or not payload[1] & 0x80:
            return False
        t = payload[1] & 0x1F
        at = 2
    if t in (NAL_SLICE, 2, NAL_IDR):  # 2: data partition A
        return at < n and bool(payload[at] & 0x80)
    return t not in (3, 4)


# ---------------------------------------------------------------------------------------------
# SPS (H.264 §7.3.2.1.1)


class _Bits:
    """MSB-first bit reader over an RBSP held as one integer (no per-byte loop)."""

    __slots__ = ("_left", "_value")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def u(self, n: int) -> int:
        if n > self._left:
            raise RemoteProtocolError("SPS truncated")
        self._left -= n
        return (self._value >> self._left) & ((1 << n) - 1)

    def ue(self) -> int:
        rest = self._value & ((1 << self._left) - 1)
        if not rest:
            raise RemoteProtocolError("SPS truncated")
        zeros = self._left - rest.bit_length()
        if zeros > 31:
            raise RemoteProtocolError("exp-Golomb code longer than 32 bits in SPS")
        self._left -= zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """The NAL unit payload with emulation prevention bytes (00 00 03) removed."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(frozen=True)
class SpsInfo:
    """What the gateway needs from a sequence parameter set."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    frame_mbs_only: bool
    #: (left, right, top, bottom) in luma samples
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    pic_order_cnt_type: int = 0
    max_num_ref_frames: int = 0

    @property
    def profile_level_id(self) -> str:
        """The SDP fmtp ``profile-level-id`` (RFC 6184 §8.1), e.g. ``42e01f``."""
        return f"{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


def profile_level_id(sps: bytes) -> str:
    """``profile-level-id`` straight from an SPS NAL unit's bytes 1..3."""
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise RemoteProtocolError("not an SPS NAL unit")
    return bytes(sps[1:4]).hex()


def sprop_parameter_sets(sps: Sequence[bytes], pps: Sequence[bytes]) -> str:
    """The SDP fmtp ``sprop-parameter-sets`` value: base64 parameter sets, comma separated."""
    return ",".join(base64.b64encode(bytes(p)).decode("ascii") for p in (*sps, *pps))


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt:
            delta = bits.se()
            if not -128 <= delta <= 127:
                raise RemoteProtocolError("delta_scale out of range in SPS")
            nxt = (last + delta + 256) % 256
        if nxt:
            last = nxt


def parse_sps(nal: bytes) -> SpsInfo:
    """Parse an SPS NAL unit (with its one-byte header) up to the frame cropping: the picture
    size in luma samples, cropping applied. :class:`RemoteProtocolError` if it is malformed."""
    if len(nal) < 4 or nal[0] & 0x1F != NAL_SPS:
        raise RemoteProtocolError("not an SPS NAL unit")
    bits = _Bits(_rbsp(bytes(nal[1:])))
    profile = bits.u(8)
    constraints = bits.u(8)
    level = bits.u(8)
    sps_id = bits.ue()
    if sps_id > 31:
        raise RemoteProtocolError(f"seq_parameter_set_id {sps_id} > 31")
    chroma_format_idc = 1
    separate_planes = False
    depth_luma = depth_chroma = 8
    if profile in _HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc > 3:
            raise RemoteProtocolError(f"chroma_format_idc {chroma_format_idc} > 3")
        if chroma_format_idc == 3:
            separate_planes = bool(bits.u(1))
        depth_luma = bits.ue() + 8
        depth_chroma = bits.ue() + 8
        if depth_luma > 14 or depth_chroma > 14:
            raise RemoteProtocolError("bit depth > 14 in SPS")
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    log2_max_frame_num = bits.ue() + 4
    if log2_max_frame_num > 16:
        raise RemoteProtocolError("log2_max_frame_num > 16 in SPS")
    poc_type = bits.ue()
    if poc_type == 0:
        if bits.ue() > 12:
            raise RemoteProtocolError("log2_max_pic_order_cnt_lsb > 16 in SPS")
    elif poc_type == 1:
        bits.u(1)  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        cycle = bits.ue()
        if cycle > 255:
            raise RemoteProtocolError("num_ref_frames_in_pic_order_cnt_cycle > 255 in SPS")
        for _ in range(cycle):
            bits.se()
    elif poc_type != 2:
        raise RemoteProtocolError(f"pic_order_cnt_type {poc_type} > 2")
    max_refs = bits.ue()
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bool(bits.u(1))
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if bits.u(1):
        crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue())
    chroma_array_type = 0 if separate_planes else chroma_format_idc
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma_array_type]
    field_factor = 1 if frame_mbs_only else 2
    unit_x = sub_w if chroma_array_type else 1
    unit_y = (sub_h if chroma_array_type else 1) * field_factor
    left, right, top, bottom = crop[0] * unit_x, crop[1] * unit_x, crop[2] * unit_y, crop[3] * unit_y
    width = width_mbs * 16 - left - right
    height = height_units * 16 * field_factor - top - bottom
    if width <= 0 or height <= 0:
        raise RemoteProtocolError("SPS crops the whole picture")
    return SpsInfo(profile, constraints, level, sps_id, chroma_format_idc, depth_luma, depth_chroma,
                   width, height, frame_mbs_only, (left, right, top, bottom), poc_type, max_refs)


# ---------------------------------------------------------------------------------------------
# GOP cache


class GopCache:
    """The last IDR access unit and the ones after it, for starting a new watcher at once.

    :meth:`add` every access unit of the stream in order. An IDR starts the cache afresh; an
    access unit that would take it past ``max_bytes`` or ``max_access_units`` empties it until
    the next IDR (the new watcher then waits for a keyframe, i.e. a PLI upstream). :meth:`frames`
    is what to send a new watcher first: the IDR (with the last SPS/PPS seen if it lacks them)
    and the access units after it.
    """

    def __init__(self, max_bytes: int = 8 * 1024 * 1024, max_access_units: int = 600) -> None:
        self.max_bytes = max_bytes
        self.max_access_units = max_access_units
        self.sps: tuple[bytes, ...] = ()
        self.pps: tuple[bytes, ...] = ()
        self._units: list[AccessUnit] = []
        self.size = 0

    def __len__(self) -> int:
        return len(self._units)

    @property
    def has_keyframe(self) -> bool:
        return bool(self._units)

    def set_parameter_sets(self, sps: Sequence[bytes], pps: Sequence[bytes]) -> None:
        self.sps = tuple(bytes(s) for s in sps)
        self.pps = tuple(bytes(p) for p in pps)

    def clear(self) -> None:
        self._units = []
        self.size = 0

    def add(self, au: AccessUnit) -> None:
        sps = tuple(n for n in au.nals if n and n[0] & 0x1F == NAL_SPS)
        pps = tuple(n for n in au.nals if n and n[0] & 0x1F == NAL_PPS)
        if sps:
            self.sps = sps
        if pps:
            self.pps = pps
        size = au.size
        if au.is_keyframe:
            self._units = []
            self.size = 0
        elif not self._units:
            return
        if self.size + size > self.max_bytes or len(self._units) >= self.max_access_units:
            self.clear()
            return
        self._units.append(au)
        self.size += size

    def frames(self) -> list[AccessUnit]:
        if not self._units:
            return []
        first = self._units[0]
        nals = with_parameter_sets(first.nals, self.sps, self.pps)
        head = first if len(nals) == len(first.nals) else AccessUnit(first.timestamp, tuple(nals))
        return [head, *self._units[1:]]

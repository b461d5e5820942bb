"""The per-call media hub: a web call's video and data, reachable by session ID (issue 14).

The audio of a web call goes to SIP; its video and data stay here. Every web call has one
:class:`MediaHub` (``call.hub``, made by the call's leg), found through the one place a
session ID is looked up, the :class:`~webgate.calls.registry.CallRegistry`. The caller's leg
feeds it and is its :class:`HubCaller`; each watcher (an agent's browser, a supervisor's aiortc
client, an RTMP player of ``watch/SESSIONID``) is a :class:`HubWatcher`.

Nothing here decodes or re-encodes video. Two feeds leave the hub:

- **RTP** (:class:`RtpVideo`) for WebRTC watchers: a WebRTC caller's packets as they came (the
  watcher's sender maps SSRC, payload type and sequence numbers), or an RTMP caller's FLV AVC
  repackaged as RTP H.264 (RFC 6184, ``proto/h264.py``);
- **FLV** (:class:`FlvVideo`) for RTMP watchers: an RTMP caller's video tags as they came, or a
  WebRTC caller's RTP H.264 depacketized into FLV AVC tags with a sequence header.

Other pairs (VP8 toward an RTMP watcher, Sorenson/VP6 toward a WebRTC watcher) give the watcher
``video_started(None, ...)`` and data only. An RTMP publisher cannot be asked for a keyframe, so
the hub keeps its last GOP and starts a new watcher from it; a WebRTC caller is asked for one
(PLI) when a watcher joins or its decoder lost the picture (rate-limited).

Data messages are relayed by label, in order, to every watcher (from the caller) or to the
caller (from a watcher, with the watcher's identity); a message over ``max_data_bytes`` or past
a sender's rate is dropped and counted. A watcher that joins late gets nothing from before.
Sans-IO: time comes from ``clock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.proto import h264
from webgate.proto.errors import RemoteProtocolError

__all__ = [
    "FlvVideo",
    "HubCaller",
    "HubWatcher",
    "MediaHub",
    "RtpVideo",
    "TOO_MANY_WATCHERS",
    "WatchRefused",
    "attach_hub",
    "vp8_keyframe_size",
]

log = Logger()

TOO_MANY_WATCHERS = "too_many_watchers"
MAX_DATA_BYTES = 64 * 1024

_FLV_AVC = 7
_FLV_CODECS = {2: "H263", 3: "SCREEN", 4: "VP6", 5: "VP6A", 6: "SCREEN2", 7: "H264", 12: "HEVC"}
_KEYFRAME_REQUEST_INTERVAL_S = 0.5
_RTP_MTU_PAYLOAD = 1200


class WatchRefused(Exception):
    """A watch the hub cannot take (``code``: ``too_many_watchers`` or ``not_found``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RtpVideo:
    """One video RTP packet of the caller's stream (header fields the watchers need)."""

    codec: str  # "VP8", "H264", "VP9", "AV1" (upper case)
    seq: int
    timestamp: int  # 90 kHz
    marker: bool
    payload: bytes
    keyframe: bool = False  # the first packet of a keyframe, when known


@dataclass(frozen=True, slots=True)
class FlvVideo:
    """One FLV video tag body (frame type and codec byte first) at ``timestamp_ms``."""

    timestamp_ms: int
    body: bytes

    @property
    def is_keyframe(self) -> bool:
        return bool(self.body) and self.body[0] >> 4 == 1

    @property
    def is_sequence_header(self) -> bool:
        return len(self.body) > 1 and self.body[0] & 0x0F == _FLV_AVC and self.body[1] == 0


class HubCaller(Protocol):
    """What the hub needs of the caller's leg."""

    def watchers_changed(self, count: int) -> None: ...

    def data_to_caller(self, label: str, data: str | bytes, sender: str | None) -> None: ...

    def request_keyframe(self) -> None:
        """Ask the caller's encoder for a keyframe (WebRTC: PLI). RTMP: nothing to do."""
        ...

    def limit_bitrate(self, bps: int) -> None:
        """Bound the caller's video bitrate (WebRTC: REMB). RTMP: nothing to do."""
        ...


class HubWatcher(Protocol):
    """What the hub needs of one watcher."""

    identity: str | None  # the watcher token's ``sub``
    wants: str  # "rtp" (WebRTC watcher) or "flv" (RTMP watcher)

    def video_started(self, codec: str | None, width: int | None, height: int | None) -> None: ...

    def rtp_video(self, packet: RtpVideo) -> None: ...

    def flv_video(self, tag: FlvVideo) -> None: ...

    def data(self, label: str, data: str | bytes) -> None: ...

    def ended(self, cause: str) -> None: ...


@dataclass
class _Bucket:
    """A token bucket: ``rate`` messages per second, bursts of ``2 * rate``."""

    rate: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        burst = 2 * self.rate
        if self.tokens < 0:
            self.tokens, self.at = burst, now
        self.tokens = min(burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class HubStats:
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    packets_in: int = 0
    bytes_in: int = 0
    packets_forwarded: int = 0
    bytes_forwarded: int = 0
    keyframe_requests: int = 0
    data_from_caller: int = 0
    data_to_caller: int = 0
    data_dropped_too_big: int = 0
    data_dropped_rate: int = 0


@dataclass
class _FlvWatch:
    """An RTMP watcher of an RTP H.264 caller: its own writer, so it starts at a keyframe."""

    writer: h264.AvcTagWriter = field(default_factory=h264.AvcTagWriter)


def vp8_keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """Width and height when ``payload`` (an RTP VP8 payload, RFC 7741) starts a keyframe."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x07:  # S (start of partition) and partition index 0
        return None
    i = 1
    if b0 & 0x80:  # X: extension byte
        if n < 2:
            return None
        x = payload[1]
        i = 2
        if x & 0x80:  # I: picture ID, 7 or 15 bits
            if n <= i:
                return None
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/KEYIDX
            i += 1
    frame = payload[i:]
    if len(frame) < 10 or frame[0] & 0x01:  # P bit set: an interframe
        return None
    if frame[3:6] != b"\x9d\x01\x2a":
        return None
    w = (frame[6] | frame[7] << 8) & 0x3FFF
    h = (frame[8] | frame[9] << 8) & 0x3FFF
    return w, h


class MediaHub:
    """One web call's video and data (see the module doc)."""

    def __init__(
        self,
        session_id: str,
        caller: HubCaller,
        *,
        caller_identity: str | None = None,
        max_watchers: int = 4,
        max_bitrate_bps: int = 1_500_000,
        max_data_bytes: int = MAX_DATA_BYTES,
        data_rate_per_s: float = 100.0,
        gop_max_bytes: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = session_id
        self.caller = caller
        self.caller_identity = caller_identity
        self.max_watchers = max_watchers
        self.max_bitrate_bps = max_bitrate_bps
        self.max_data_bytes = max_data_bytes
        self.data_rate_per_s = data_rate_per_s
        self.clock = clock
        self.watchers: list[HubWatcher] = []
        self.stats = HubStats()
        self.closed = False
        self.end_cause: str | None = None
        self.source: str | None = None  # "rtp" or "flv" once the caller's first video arrived
        self._buckets: dict[int, _Bucket] = {}
        self._estimates: dict[int, int] = {}
        self.bitrate_limit = max_bitrate_bps
        self._last_keyframe_request = -1e9
        self._asked: set[int] = set()  # watchers (by id) that made their first keyframe request
        # RTP source (WebRTC caller)
        self._depacketizer: h264.Depacketizer | None = None  # H.264 toward FLV watchers / snapshot
        self._flv_watch: dict[int, _FlvWatch] = {}
        self._rtp_t0: int | None = None
        self._keyframe: tuple[str, bytes] | None = None  # (codec, bitstream) for the snapshot
        self._vp8_frame: list[bytes] | None = None
        # FLV source (RTMP caller)
        self._flv_header: FlvVideo | None = None  # the AVC sequence header
        self._flv_gop: list[FlvVideo] = []
        self._flv_gop_bytes = 0
        self._gop_max_bytes = gop_max_bytes
        self._reader: h264.AvcTagReader | None = None
        self._packetizer: h264.Packetizer | None = None
        self._au_gop = h264.GopCache(max_bytes=gop_max_bytes)
        self._seq = 0  # the hub's own RTP sequence numbers (FLV source)

    # --- watchers -------------------------------------------------------------------
    def add_watcher(self, watcher: HubWatcher) -> None:
        """Start ``watcher``; raises :class:`WatchRefused` when the call ended or is full."""
        if self.closed:
            raise WatchRefused("not_found", "no such call")
        if len(self.watchers) >= self.max_watchers:
            raise WatchRefused(TOO_MANY_WATCHERS, f"at most {self.max_watchers} watchers per call")
        self.watchers.append(watcher)
        if watcher.wants == "flv" and self.source == "rtp":
            self._flv_watch[id(watcher)] = _FlvWatch()
        self._safe(self.caller.watchers_changed, len(self.watchers))
        if self.source is not None:
            self._announce(watcher)
            self._start(watcher)

    def remove_watcher(self, watcher: HubWatcher) -> None:
        if watcher not in self.watchers:
            return
        self.watchers.remove(watcher)
        self._flv_watch.pop(id(watcher), None)
        self._buckets.pop(id(watcher), None)
        self._asked.discard(id(watcher))
        if self._estimates.pop(id(watcher), None) is not None:
            self._update_bitrate()
        if not self.closed:
            self._safe(self.caller.watchers_changed, len(self.watchers))

    def close(self, cause: str) -> None:
        """The call ended: every watcher gets ``ended(cause)``."""
        if self.closed:
            return
        self.closed, self.end_cause = True, cause
        watchers, self.watchers = self.watchers, []
        for w in watchers:
            self._safe(w.ended, cause)
        self._flv_watch.clear()
        self._flv_gop.clear()
        self._au_gop.clear()

    def video_codec_for(self, wants: str) -> str | None:
        """The codec a watcher of kind ``wants`` receives (None: no video for it), or None
        before the caller's first video."""
        c = self.stats.codec
        if c is None:
            return None
        if wants == "rtp":
            return c if self.source == "rtp" or c == "H264" else None
        return c if self.source == "flv" or c == "H264" else None

    def _announce(self, w: HubWatcher) -> None:
        self._safe(w.video_started, self.video_codec_for(w.wants), self.stats.width, self.stats.height)

    def _start(self, w: HubWatcher) -> None:
        """A new watcher: a keyframe as soon as possible."""
        if self.source == "rtp":
            self.keyframe_wanted()
        elif self.source == "flv":
            self._replay(w)

    # --- keyframes and bitrate -------------------------------------------------------
    def keyframe_wanted(self, watcher: HubWatcher | None = None) -> None:
        """A watcher's decoder needs a keyframe (its PLI/FIR, or it just joined)."""
        if self.source == "flv":
            # an RTMP encoder cannot be asked; a joining watcher got the GOP (``_start``). Not
            # replayed on PLI: those sequence numbers are behind the watcher's, and a PLI
            # must not make the hub send a whole GOP (up to gop_max_bytes) each time
            return
        now = self.clock()
        first = watcher is not None and id(watcher) not in self._asked and watcher in self.watchers
        if first:
            # a watcher's first own request comes when its transport is up (a WebRTC watcher's
            # DTLS): the keyframe asked for at its join went out before it could receive it, so
            # this one is not throttled (otherwise its first frame waits for the next interval)
            self._asked.add(id(watcher))
        elif now - self._last_keyframe_request < _KEYFRAME_REQUEST_INTERVAL_S:
            return
        self._last_keyframe_request = now
        self.stats.keyframe_requests += 1
        self._safe(self.caller.request_keyframe)

    def report_bitrate(self, watcher: HubWatcher, bps: int) -> None:
        """A watcher's receive estimate (its REMB): the caller is held to the lowest."""
        if self.closed or watcher not in self.watchers:
            return  # a late REMB of a watcher that left must not hold the caller down for good
        self._estimates[id(watcher)] = max(0, int(bps))
        self._update_bitrate()

    def _update_bitrate(self) -> None:
        limit = min([self.max_bitrate_bps, *self._estimates.values()])
        if limit != self.bitrate_limit:
            self.bitrate_limit = limit
            self._safe(self.caller.limit_bitrate, limit)

    # --- video from a WebRTC caller (RTP) ---------------------------------------------
    def rtp_from_caller(self, packet: RtpVideo) -> None:
        if self.closed:
            return
        st = self.stats
        st.packets_in += 1
        st.bytes_in += len(packet.payload)
        first = self.source is None
        if first:
            self.source = "rtp"
            st.codec = packet.codec
            if packet.codec == "H264":
                self._depacketizer = h264.Depacketizer()
                for w in self.watchers:
                    if w.wants == "flv":
                        self._flv_watch[id(w)] = _FlvWatch()
            self._safe(self.caller.limit_bitrate, self.bitrate_limit)
        if packet.codec == "VP8":
            self._vp8(packet)
        elif self._depacketizer is not None and st.width is None:
            sps = _sps_in_rtp(packet.payload)  # browsers send SPS/PPS first: the size, at once
            if sps is not None:
                self._note_sps([sps])
        if first:  # before any video reaches a watcher
            for w in self.watchers:
                self._announce(w)
            if self.watchers:
                self.keyframe_wanted()
        if self._depacketizer is not None and packet.codec != "VP8":
            self._h264_from_rtp(packet)
        for w in self.watchers:
            if w.wants == "rtp":
                st.packets_forwarded += 1
                st.bytes_forwarded += len(packet.payload)
                self._safe(w.rtp_video, packet)

    def _vp8(self, packet: RtpVideo) -> None:
        size = vp8_keyframe_size(packet.payload)
        if size is not None:
            if (self.stats.width, self.stats.height) != size:
                self.stats.width, self.stats.height = size
            self._vp8_frame = []
        if self._vp8_frame is not None:
            self._vp8_frame.append(_vp8_strip(packet.payload))
            if packet.marker:
                self._keyframe = ("VP8", b"".join(self._vp8_frame))
                self._vp8_frame = None

    def _h264_from_rtp(self, packet: RtpVideo) -> None:
        d = self._depacketizer
        assert d is not None
        for au in d.push(packet.seq, packet.timestamp, packet.marker, packet.payload):
            if au.is_keyframe:
                self._note_sps(au.nals)
                self._keyframe = ("H264", h264.join_annexb(au.nals))
            if self._rtp_t0 is None:
                self._rtp_t0 = au.timestamp
            ts_ms = ((au.timestamp - self._rtp_t0) & 0xFFFFFFFF) // 90
            for w in self.watchers:
                fw = self._flv_watch.get(id(w))
                if fw is None:
                    continue
                for body in fw.writer.write(list(au.nals)):
                    tag = FlvVideo(ts_ms, body)
                    self.stats.packets_forwarded += 1
                    self.stats.bytes_forwarded += len(body)
                    self._safe(w.flv_video, tag)
                if fw.writer.needs_keyframe:
                    self.keyframe_wanted()
        if d.take_keyframe_request():
            self.keyframe_wanted()

    def _note_sps(self, nals: tuple[bytes, ...] | list[bytes]) -> None:
        for nal in nals:
            if h264.nal_type(nal) == h264.NAL_SPS:
                try:
                    info = h264.parse_sps(nal)
                except RemoteProtocolError:
                    return
                self.stats.width, self.stats.height = info.width, info.height
                return

    # --- video from an RTMP caller (FLV) ----------------------------------------------
    def flv_from_caller(self, tag: FlvVideo) -> None:
        if self.closed or not tag.body:
            return
        st = self.stats
        st.packets_in += 1
        st.bytes_in += len(tag.body)
        codec = _FLV_CODECS.get(tag.body[0] & 0x0F, "unknown")
        first = self.source is None
        if first:
            self.source = "flv"
            st.codec = codec
            if codec == "H264":
                self._reader = h264.AvcTagReader()
                self._packetizer = h264.Packetizer(_RTP_MTU_PAYLOAD)
        if tag.is_sequence_header:
            self._flv_header = tag
            self._flv_gop.clear()
            self._flv_gop_bytes = 0
        elif tag.is_keyframe:
            self._flv_gop = [tag]
            self._flv_gop_bytes = len(tag.body)
        elif self._flv_gop and self._flv_gop_bytes + len(tag.body) <= self._gop_max_bytes:
            self._flv_gop.append(tag)
            self._flv_gop_bytes += len(tag.body)
        au = self._avc_access_unit(tag) if self._reader is not None else None
        if first:
            for w in self.watchers:
                self._announce(w)
        for w in self.watchers:
            if w.wants == "flv":
                st.packets_forwarded += 1
                st.bytes_forwarded += len(tag.body)
                self._safe(w.flv_video, tag)
        if au is not None:
            self._au_gop.add(au)
            rtp = [w for w in self.watchers if w.wants == "rtp"]
            if rtp:
                for pkt in self._packetize(au):
                    for w in rtp:
                        st.packets_forwarded += 1
                        st.bytes_forwarded += len(pkt.payload)
                        self._safe(w.rtp_video, pkt)

    def _avc_access_unit(self, tag: FlvVideo) -> h264.AccessUnit | None:
        reader, packetizer = self._reader, self._packetizer
        assert reader is not None and packetizer is not None
        try:
            au = reader.feed(tag.body, tag.timestamp_ms)
        except RemoteProtocolError:
            return None
        config = reader.config
        if tag.is_sequence_header and config is not None:
            packetizer.set_parameter_sets(config.sps, config.pps)
            self._au_gop.set_parameter_sets(config.sps, config.pps)
            if config.sps:
                self._note_sps(list(config.sps))
        if au is not None and au.is_keyframe:
            self._keyframe = ("H264", h264.join_annexb(au.nals))
        return au

    def _packetize(self, au: h264.AccessUnit, seq: int | None = None) -> list[RtpVideo]:
        assert self._packetizer is not None
        out = []
        first = True
        for p in self._packetizer.packetize(list(au.nals)):
            if seq is None:
                s = self._seq
                self._seq = (self._seq + 1) & 0xFFFF
            else:
                s = seq
                seq = (seq + 1) & 0xFFFF
            out.append(RtpVideo("H264", s, au.timestamp, p.marker, p.payload, keyframe=first and au.is_keyframe))
            first = False
        return out

    def _replay(self, w: HubWatcher) -> None:
        """Start a watcher of an RTMP caller from the cached GOP."""
        if w.wants == "flv":
            tags = ([self._flv_header] if self._flv_header is not None else []) + list(self._flv_gop)
            for tag in tags:
                self._safe(w.flv_video, tag)
        elif self._packetizer is not None and self._au_gop.has_keyframe:
            # numbered so that they end right before the live stream's next packet: the
            # watcher never saw those numbers, so it sees one gap-free sequence
            packets = [p for au in self._au_gop.frames() for p in self._packetize(au, seq=0)]
            start = (self._seq - len(packets)) & 0xFFFF
            for i, p in enumerate(packets):
                self._safe(w.rtp_video, RtpVideo(p.codec, (start + i) & 0xFFFF, p.timestamp, p.marker, p.payload, p.keyframe))

    def last_keyframe(self) -> tuple[str, bytes] | None:
        """The latest keyframe as (codec, bitstream): H.264 Annex B or one VP8 frame, for the
        on-demand snapshot (the only place video is ever decoded)."""
        return self._keyframe

    # --- data -------------------------------------------------------------------------
    def _admit_data(self, key: int, data: str | bytes) -> bool:
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        if size > self.max_data_bytes:
            self.stats.data_dropped_too_big += 1
            return False
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.data_rate_per_s)
        if not bucket.take(self.clock()):
            self.stats.data_dropped_rate += 1
            return False
        return True

    def data_from_caller(self, label: str, data: str | bytes) -> None:
        """A message on one of the caller's channels: to every watcher now present."""
        if self.closed or not self._admit_data(0, data):
            return
        self.stats.data_from_caller += 1
        for w in list(self.watchers):
            self._safe(w.data, label, data)

    def data_from_watcher(self, watcher: HubWatcher, label: str, data: str | bytes) -> None:
        """A watcher's message: to the caller, with the watcher's identity."""
        if self.closed or watcher not in self.watchers or not self._admit_data(id(watcher), data):
            return
        self.stats.data_to_caller += 1
        self._safe(self.caller.data_to_caller, label, data, watcher.identity)

    # --- reporting --------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The ``video`` and ``data`` objects of ``GET /api/calls/{id}``."""
        st = self.stats
        return {
            "video": {
                "codec": st.codec,
                "width": st.width,
                "height": st.height,
                "watchers": len(self.watchers),
                "packets_in": st.packets_in,
                "bytes_in": st.bytes_in,
                "packets_forwarded": st.packets_forwarded,
                "bytes_forwarded": st.bytes_forwarded,
                "keyframe_requests": st.keyframe_requests,
            },
            "data": {
                "from_caller": st.data_from_caller,
                "to_caller": st.data_to_caller,
                "dropped_too_big": st.data_dropped_too_big,
                "dropped_rate": st.data_dropped_rate,
            },
        }

    @staticmethod
    def _safe(fn: Callable[..., None], *args: Any) -> None:
        """One peer's failure never reaches another's: a watcher or caller callback that
        raises is the adapter's bug, reported there, not a reason to stop the fan-out."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - isolate peers from each other
            log.failure("media hub: a peer's callback failed")


def _sps_in_rtp(payload: bytes) -> bytes | None:
    """The SPS NAL unit in an RTP H.264 payload (single NAL unit or STAP-A), if there is one."""
    if not payload:
        return None
    t = payload[0] & 0x1F
    if t == h264.NAL_SPS:
        return payload
    if t != h264.STAP_A:
        return None
    i, n = 1, len(payload)
    while i + 2 < n:
        size = int.from_bytes(payload[i : i + 2], "big")
        nal = payload[i + 2 : i + 2 + size]
        if nal and nal[0] & 0x1F == h264.NAL_SPS:
            return nal
        i += 2 + size
    return None


def _vp8_strip(payload: bytes) -> bytes:
    """The VP8 bitstream part of an RTP VP8 payload (RFC 7741 descriptor removed)."""
    if not payload:
        return b""
    i = 1
    if payload[0] & 0x80 and len(payload) > 1:
        x = payload[1]
        i = 2
        if x & 0x80 and len(payload) > i:
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    return payload[i:]



def attach_hub(call: Any, caller: HubCaller, video: Any | None = None, clock: Callable[[], float] = time.monotonic) -> MediaHub:
    """Make ``call``'s hub with the ``[video]`` settings (``config.video``; None: the defaults),
    ``caller`` being the call's leg, and set it as ``call.hub``. The leg closes it
    (``hub.close(cause)``) when the call ends."""
    grant = getattr(call, "grant", None)
    kw: dict[str, Any] = {}
    if video is not None:
        kw = {
            "max_watchers": video.max_watchers_per_call,
            "max_bitrate_bps": video.max_bitrate_kbps * 1000,
            "max_data_bytes": video.max_data_bytes,
            "data_rate_per_s": float(video.data_rate_per_s),
        }
    hub = MediaHub(call.session_id, caller, caller_identity=getattr(grant, "sub", None), clock=clock, **kw)
    call.hub = hub
    return hub

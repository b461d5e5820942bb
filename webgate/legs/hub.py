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
A call's recording taps the hub (:meth:`MediaHub.add_recorder`, ``legs/hub_recording.py``): the
caller's video and the data of both directions, without being a watcher. Sans-IO: time comes
from ``clock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.logger import Logger

from webgate.legs.hub_bits import sps_in_rtp, vp8_keyframe_size, vp8_strip
from webgate.legs.hub_transcode import TRANSCODABLE_CODECS, Vp8Feed
from webgate.legs.hub_types import (
    FLV_VIDEO_CODECS,
    TOO_MANY_WATCHERS,
    FlvVideo,
    HubCaller,
    HubRecorder,
    HubStats,
    HubWatcher,
    RtpVideo,
    WatchRefused,
)
from webgate.legs.monitor import CallMonitor
from webgate.proto import h264
from webgate.proto.errors import RemoteProtocolError

__all__ = ["MediaHub", "attach_hub"]

log = Logger()

MAX_DATA_BYTES = 64 * 1024

_KEYFRAME_REQUEST_INTERVAL_S = 0.5
#: the lowest bitrate a watcher's REMB may hold the caller to: one watcher's REMB of 0 (or a
#: collapsed estimate) must not stop the video for every watcher
MIN_BITRATE_BPS = 30_000
_MAX_SANE_BPS = 10_000_000_000  # a REMB above 10 Gbit/s is garbage, not an estimate: ignored
_RTP_MTU_PAYLOAD = 1200
_TRANSCODE_MAX_BPS = 800_000  # the VP8 re-encoder's bitrate, at most
_REPLAY_GAP_TICKS = 3000  # a GOP replayed to a running watcher starts 1/30 s after its last frame


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
class _FlvWatch:
    """An RTMP watcher of an RTP H.264 caller: its own writer, so it starts at a keyframe."""

    writer: h264.AvcTagWriter = field(default_factory=h264.AvcTagWriter)


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
        transcode: bool = False,
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
        #: [video] transcode: an RTMP caller's Sorenson/VP6 re-encoded to VP8 for WebRTC watchers,
        #: by ``_vp8_feed`` (made while such a watcher exists)
        self.transcode = transcode
        self._vp8_feed: Vp8Feed | None = None
        self._ts_shift: dict[int, list[int]] = {}  # FLV source, per RTP watcher: [offset, last timestamp sent]
        self._sps: tuple[bytes, ...] = ()  # the last H.264 parameter sets seen (snapshot keyframes)
        self._pps: tuple[bytes, ...] = ()
        self.recorders: list[HubRecorder] = []
        # supervisor audio: ``monitor_factory(deliver)`` makes the call's mixer (attach_hub);
        # it runs only while an audio watcher is present
        self.monitor_factory: Callable[[Callable[[Any, int], None]], Any] | None = None
        self.monitor: Any = None

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
        self.refresh_audio()
        if self.source is not None:
            self._announce(watcher)
            self._start(watcher)

    def remove_watcher(self, watcher: HubWatcher) -> None:
        if watcher not in self.watchers:
            return
        self.watchers.remove(watcher)
        self._flv_watch.pop(id(watcher), None)
        self._ts_shift.pop(id(watcher), None)
        self._buckets.pop(id(watcher), None)
        self._asked.discard(id(watcher))
        if self._estimates.pop(id(watcher), None) is not None:
            self._update_bitrate()
        if not any(w.wants == "rtp" for w in self.watchers):
            self._vp8_feed = None  # no WebRTC watcher left: no more decoding
        self.refresh_audio()
        if not self.closed:
            self._safe(self.caller.watchers_changed, len(self.watchers))

    def close(self, cause: str) -> None:
        """The call ended: every watcher gets ``ended(cause)``."""
        if self.closed:
            return
        self.closed, self.end_cause = True, cause
        watchers, self.watchers = self.watchers, []
        self.refresh_audio()
        for w in watchers:
            self._safe(w.ended, cause)
        self._flv_watch.clear()
        self._flv_gop.clear()
        self._au_gop.clear()
        self._vp8_feed = None
        self.recorders.clear()  # the recording closes its files itself

    # --- supervisor audio ---------------------------------------------------------------
    def refresh_audio(self) -> None:
        """Run the call's mixer exactly while an audio watcher is present (and the call lives).
        A watcher whose ``audio`` changed after its join calls this."""
        wanted = not self.closed and any(getattr(w, "audio", False) for w in self.watchers)
        if wanted and self.monitor is None and self.monitor_factory is not None:
            try:
                self.monitor = self.monitor_factory(self._audio_out)
                self.monitor.start()
            except Exception:  # noqa: BLE001 - no audio for the watchers, the call goes on
                log.failure("media hub: supervisor audio could not start")
                self.monitor = None
        elif not wanted and self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            self._safe(monitor.stop)

    def _audio_out(self, pcm: Any, rate: int) -> None:
        for w in list(self.watchers):
            take = getattr(w, "audio_pcm", None) if getattr(w, "audio", False) else None
            if take is not None:
                self._safe(take, pcm, rate)

    def video_codec_for(self, wants: str) -> str | None:
        """The codec a watcher of kind ``wants`` receives (None: no video for it), or None
        before the caller's first video."""
        c = self.stats.codec
        if c is None:
            return None
        if wants == "rtp":
            if self.transcode and self.source == "flv" and c in TRANSCODABLE_CODECS:
                return "VP8"  # re-encoded (media/transcode.py)
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

    # --- recorders (issue 17) ----------------------------------------------------------
    def add_recorder(self, recorder: HubRecorder) -> None:
        """Tap the caller's video and the data for a recording (not a watcher); the caller
        is asked for a keyframe (an RTMP caller's: its cached GOP is replayed to the tap)."""
        if self.closed or recorder in self.recorders:
            return
        self.recorders.append(recorder)
        if self.source == "flv":
            tags = ([self._flv_header] if self._flv_header is not None else []) + list(self._flv_gop)
            for tag in tags:
                self._safe(recorder.flv_video, tag)
        else:
            self.request_keyframe(now=True)

    def remove_recorder(self, recorder: HubRecorder) -> None:
        if recorder in self.recorders:
            self.recorders.remove(recorder)

    def request_keyframe(self, now: bool = False) -> None:
        """A recording needs a keyframe: at once when it starts (``now``), else at most every
        0.5 s like the watchers' requests."""
        t = self.clock()
        if self.closed or self.source == "flv" or (
                not now and t - self._last_keyframe_request < _KEYFRAME_REQUEST_INTERVAL_S):
            return
        self._ask_caller(t)

    # --- keyframes and bitrate -------------------------------------------------------
    def keyframe_wanted(self, watcher: HubWatcher | None = None) -> None:
        """A watcher's decoder needs a keyframe (its PLI/FIR, or it just joined)."""
        if self.source == "flv":
            # an RTMP encoder cannot be asked; a joining watcher got the GOP (``_start``), but a
            # WebRTC watcher's transport is not up at its join, so its first own request (DTLS
            # up) gets the GOP once more, timestamps kept moving forward (``_rtp_to``). Never
            # again after that: a PLI must not make the hub send a whole GOP (up to
            # gop_max_bytes) each time
            if watcher is not None and watcher.wants == "rtp" and watcher in self.watchers and id(watcher) not in self._asked:
                self._asked.add(id(watcher))
                self._replay(watcher)
            elif self._vp8_feed is not None and self.clock() - self._last_keyframe_request >= _KEYFRAME_REQUEST_INTERVAL_S:
                self._last_keyframe_request = self.clock()
                self._vp8_feed.force_keyframe()  # our own encoder can be asked
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
        self._ask_caller(now)

    def _ask_caller(self, now: float) -> None:
        """A keyframe request to the caller's encoder (its PLI), counted; ``now`` starts the next
        interval."""
        self._last_keyframe_request = now
        self.stats.keyframe_requests += 1
        self._safe(self.caller.request_keyframe)

    def report_bitrate(self, watcher: HubWatcher, bps: int) -> None:
        """A watcher's receive estimate (its REMB): the caller is held to the lowest."""
        if self.closed or watcher not in self.watchers:
            return  # a late REMB of a watcher that left must not hold the caller down for good
        try:
            value = int(bps)
        except (TypeError, ValueError, OverflowError):  # NaN, inf, not a number
            return
        if value < 0 or value > _MAX_SANE_BPS:
            return  # absurd: ignored (the watcher's last sane estimate stands)
        self._estimates[id(watcher)] = max(MIN_BITRATE_BPS, value)
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
            sps = sps_in_rtp(packet.payload)  # browsers send SPS/PPS first: the size, at once
            if sps is not None:
                self._note_sps([sps])
        if first:  # before any video reaches a watcher
            for w in self.watchers:
                self._announce(w)
            if self.watchers or self.recorders:
                self.keyframe_wanted()
        if self._depacketizer is not None and packet.codec != "VP8":
            self._h264_from_rtp(packet)
        for w in self.watchers:
            if w.wants == "rtp":
                st.packets_forwarded += 1
                st.bytes_forwarded += len(packet.payload)
                self._safe(w.rtp_video, packet)
        for r in self.recorders:
            self._safe(r.rtp_video, packet)

    def _vp8(self, packet: RtpVideo) -> None:
        size = vp8_keyframe_size(packet.payload)
        if size is not None:
            if (self.stats.width, self.stats.height) != size:
                self.stats.width, self.stats.height = size
            self._vp8_frame = []
        if self._vp8_frame is not None:
            self._vp8_frame.append(vp8_strip(packet.payload))
            if packet.marker:
                self._keyframe = ("VP8", b"".join(self._vp8_frame))
                self._vp8_frame = None

    def _h264_from_rtp(self, packet: RtpVideo) -> None:
        d = self._depacketizer
        assert d is not None
        for au in d.push(packet.seq, packet.timestamp, packet.marker, packet.payload):
            self._note_parameter_sets(au)
            if au.is_keyframe:
                self._note_sps(au.nals)
                self._keyframe = ("H264", self._annexb_keyframe(au))
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
        if d.take_keyframe_request() and (self.watchers or self.recorders):
            self.keyframe_wanted()  # nobody to see the loss: no PLI (the next joiner asks anyway)

    def _note_parameter_sets(self, au: h264.AccessUnit) -> None:
        sps = tuple(n for n in au.nals if h264.nal_type(n) == h264.NAL_SPS)
        pps = tuple(n for n in au.nals if h264.nal_type(n) == h264.NAL_PPS)
        if sps:
            self._sps = sps
        if pps:
            self._pps = pps

    def _annexb_keyframe(self, au: h264.AccessUnit) -> bytes:
        """An IDR access unit as Annex B, with the last SPS/PPS seen when it came without them
        (a decoder, the snapshot's, can do nothing with an IDR alone)."""
        return h264.join_annexb(h264.with_parameter_sets(au.nals, self._sps, self._pps))

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
        codec = FLV_VIDEO_CODECS.get(tag.body[0] & 0x0F, "unknown")
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
            fits = len(tag.body) <= self._gop_max_bytes
            self._flv_gop = [tag] if fits else []
            self._flv_gop_bytes = len(tag.body) if fits else 0
        elif self._flv_gop:
            if self._flv_gop_bytes + len(tag.body) <= self._gop_max_bytes:
                self._flv_gop.append(tag)
                self._flv_gop_bytes += len(tag.body)
            else:
                # a GOP cut short would start a new watcher at the keyframe and then jump to the
                # live frames with the rest missing: cleared, cached again from the next keyframe
                self._flv_gop.clear()
                self._flv_gop_bytes = 0
        au = self._avc_access_unit(tag) if self._reader is not None else None
        if first:
            for w in self.watchers:
                self._announce(w)
        for w in self.watchers:
            if w.wants == "flv":
                st.packets_forwarded += 1
                st.bytes_forwarded += len(tag.body)
                self._safe(w.flv_video, tag)
        for r in self.recorders:
            self._safe(r.flv_video, tag)
        if au is not None:
            self._au_gop.add(au)
            rtp = [w for w in self.watchers if w.wants == "rtp"]
            if rtp:
                for pkt in self._packetize(au):
                    for w in rtp:
                        st.packets_forwarded += 1
                        st.bytes_forwarded += len(pkt.payload)
                        self._rtp_to(w, pkt)
        if self.transcode and codec in TRANSCODABLE_CODECS:
            self._transcoded(tag)

    def _transcoded(self, tag: FlvVideo) -> None:
        """An RTMP caller's Sorenson/VP6 tag, re-encoded to VP8 for the WebRTC watchers (only
        while there are some; a feed is made when one joins, ``_replay``)."""
        rtp = [w for w in self.watchers if w.wants == "rtp"]
        if not rtp:
            self._vp8_feed = None
            return
        if self._vp8_feed is None and tag.is_keyframe:  # none made at a join (no GOP cached then)
            self._new_vp8_feed()
        if self._vp8_feed is not None:
            self._vp8_to(rtp, self._vp8_feed.packets(tag.body, tag.timestamp_ms))

    def _new_vp8_feed(self) -> Vp8Feed:
        self._vp8_feed = Vp8Feed(min(self.bitrate_limit, _TRANSCODE_MAX_BPS), _RTP_MTU_PAYLOAD)
        return self._vp8_feed

    def _vp8_to(self, watchers: list[HubWatcher], packets: list[tuple[int, int, bool, bytes, bool]]) -> None:
        st = self.stats
        for seq, ts, marker, payload, key in packets:
            pkt = RtpVideo("VP8", seq, ts, marker, payload, key)
            for w in watchers:
                st.packets_forwarded += 1
                st.bytes_forwarded += len(payload)
                self._rtp_to(w, pkt)

    def _avc_access_unit(self, tag: FlvVideo) -> h264.AccessUnit | None:
        reader, packetizer = self._reader, self._packetizer
        assert reader is not None and packetizer is not None
        try:
            au = reader.feed(tag.body, tag.timestamp_ms)
        except RemoteProtocolError:
            return None
        config = reader.config
        if tag.is_sequence_header and config is not None:
            self._sps, self._pps = tuple(config.sps), tuple(config.pps)
            packetizer.set_parameter_sets(config.sps, config.pps)
            self._au_gop.set_parameter_sets(config.sps, config.pps)
            if config.sps:
                self._note_sps(list(config.sps))
        if au is not None:
            self._note_parameter_sets(au)
            if au.is_keyframe:
                self._keyframe = ("H264", self._annexb_keyframe(au))
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
        elif self.transcode and self.stats.codec in TRANSCODABLE_CODECS:
            if self._vp8_feed is not None:
                self._vp8_feed.force_keyframe()  # the running encoder: a keyframe next
            elif self._flv_gop:  # the first WebRTC watcher: decode from the cached GOP on
                feed = self._new_vp8_feed()
                self._vp8_to([w], [p for t in self._flv_gop for p in feed.packets(t.body, t.timestamp_ms)])
        elif self._packetizer is not None and self._au_gop.has_keyframe:
            # numbered so that they end right before the live stream's next packet: the
            # watcher never saw those numbers, so it sees one gap-free sequence
            packets = [p for au in self._au_gop.frames() for p in self._packetize(au, seq=0)]
            start = (self._seq - len(packets)) & 0xFFFF
            shift = self._ts_shift.get(id(w))
            if shift is not None and packets:
                # a running watcher: its timestamps go on from the last it got (one frame
                # later), and so does the live stream after the GOP
                behind = (shift[1] + _REPLAY_GAP_TICKS - packets[0].timestamp - shift[0]) & 0xFFFFFFFF
                if behind < 0x80000000:
                    shift[0] = (shift[0] + behind) & 0xFFFFFFFF
            for i, p in enumerate(packets):
                self._rtp_to(w, RtpVideo(p.codec, (start + i) & 0xFFFF, p.timestamp, p.marker, p.payload, p.keyframe))

    def _rtp_to(self, w: HubWatcher, packet: RtpVideo) -> None:
        """One packet of the hub's own RTP (an RTMP caller's video) to a WebRTC watcher, on the
        watcher's timeline: never behind a timestamp it already got."""
        shift = self._ts_shift.get(id(w))
        if shift is None:
            shift = self._ts_shift[id(w)] = [0, packet.timestamp]
        if shift[0]:
            packet = replace(packet, timestamp=(packet.timestamp + shift[0]) & 0xFFFFFFFF)
        shift[1] = packet.timestamp
        self._safe(w.rtp_video, packet)

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
        for r in list(self.recorders):
            self._safe(r.data, "caller", self.caller_identity, label, data)

    def data_from_watcher(self, watcher: HubWatcher, label: str, data: str | bytes) -> None:
        """A watcher's message: to the caller, with the watcher's identity."""
        if self.closed or watcher not in self.watchers or not self._admit_data(id(watcher), data):
            return
        self.stats.data_to_caller += 1
        self._safe(self.caller.data_to_caller, label, data, watcher.identity)
        for r in list(self.recorders):
            self._safe(r.data, "watcher", watcher.identity, label, data)

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
                "audio_watchers": sum(1 for w in self.watchers if getattr(w, "audio", False)),
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
            "transcode": bool(getattr(video, "transcode", False)),
        }
    hub = MediaHub(call.session_id, caller, caller_identity=getattr(grant, "sub", None), clock=clock, **kw)
    if getattr(getattr(call, "manager", None), "rtp_pool", None) is not None:
        hub.monitor_factory = lambda deliver: CallMonitor(call, deliver)
    call.hub = hub
    return hub

"""The caller's video of a recorded call, remuxed without transcoding, with the call's stereo audio
(issue 17; docs/recording.md "Video and data").

:class:`VideoRemuxer` takes the caller's video as it reaches the media hub, never decoding it:

- RTP from a WebRTC caller (:meth:`VideoRemuxer.rtp`): VP8 frames reassembled from their RTP
  packets (RFC 7741) go to a WebM file; H.264 access units from ``proto/h264.py``'s
  :class:`~webgate.proto.h264.Depacketizer` go to Matroska, with an ``avcC`` built from the
  stream's SPS/PPS;
- FLV from an RTMP caller (:meth:`VideoRemuxer.flv`): AVC tags go to Matroska as they came: the
  sequence header's AVCDecoderConfigurationRecord is the track's CodecPrivate byte for byte and
  the NAL units keep their length prefixes, so the recording's codec parameters are the
  publisher's.

The file starts at a keyframe: everything before the first one is dropped, and so is everything
after loss (or a pause) until the next one; :meth:`VideoRemuxer.take_keyframe_request` says when
to ask the caller for one. Each frame's time is on the recording's timeline: the caller's clock
(RTP 90 kHz, FLV ms) anchored on the timeline by its least delayed frame (a frame's time is
never after its arrival), re-anchored when frames come more than a second after their media
time (a new RTP stream), and kept strictly increasing.

The stereo audio (:meth:`VideoRemuxer.audio`, contiguous from timeline 0) is encoded to Opus in
both containers (docs/decisions.md): it waits in a bounded buffer until the first keyframe opens
the file. A write that fails (disk full) sets :attr:`VideoRemuxer.error` and stops this file
only. PyAV's Matroska muxer writes clusters as it goes, so a file cut by a crash still plays up to
its last cluster. Sans-IO apart from the file: time comes in as ``t``.
"""

from __future__ import annotations

import errno
import io
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from webgate.media.recording import write_error
from webgate.media.recording.ogg import OPUS_RATES
from webgate.proto import h264
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.flv import AVC_NALU, AVC_SEQUENCE_HEADER, VIDEO_AVC

__all__ = ["CONTAINERS", "RemuxThread", "VideoRemuxer", "Vp8Assembler", "vp8_frame_size"]

#: codec → (container format, file suffix)
CONTAINERS = {"VP8": ("webm", ".webm"), "H264": ("matroska", ".mkv")}
_MS = Fraction(1, 1000)
_REANCHOR_S = 1.0
_MUX_OPTIONS = {"cluster_time_limit": "1000", "flush_packets": "1"}


def vp8_frame_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height of a VP8 keyframe (the frame itself, RFC 6386 §9.1); None otherwise."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    return (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF


def _vp8_descriptor(payload: bytes) -> tuple[bool, int] | None:
    """(start of a frame, descriptor length) of an RTP VP8 payload; None when malformed."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    i = 1
    if b0 & 0x80:
        if n < 2:
            return None
        x = payload[1]
        i = 2
        if x & 0x80:
            if n <= i:
                return None
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    if i > n:
        return None
    return bool(b0 & 0x10) and b0 & 0x07 == 0, i


class Vp8Assembler:
    """RTP VP8 payloads in arrival order → whole frames (no reordering; loss drops the frame)."""

    def __init__(self, max_frame_bytes: int = 4 * 1024 * 1024) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.lost = False  # set on loss; the owner waits for a keyframe and clears it
        self._last_seq: int | None = None
        self._ts: int | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._ok = False

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> bytes | None:
        """The frame this packet completed, if any."""
        last = self._last_seq
        if last is not None:
            d = ((seq - last + 0x8000) & 0xFFFF) - 0x8000
            if d <= 0 and d > -100:
                return None  # late or duplicate
            if d != 1:
                self.lost = True
                self._ok = False
        self._last_seq = seq & 0xFFFF
        desc = _vp8_descriptor(payload)
        if desc is None:
            self._ok = False
            self.lost = True
            return None
        start, skip = desc
        if start:
            self._ts, self._parts, self._size, self._ok = timestamp, [], 0, True
        elif timestamp != self._ts:
            self._ok = False
        if not self._ok:
            return None
        part = payload[skip:]
        self._size += len(part)
        if self._size > self.max_frame_bytes:
            self._ok = False
            return None
        self._parts.append(part)
        if not marker:
            return None
        self._ok = False
        frame = b"".join(self._parts)
        self._parts = []
        return frame or None


class _Clock:
    """The caller's media clock (``hz``, wrapping at ``wrap``) → timeline milliseconds.

    Anchored on the least delayed frame so far (the smallest arrival time less media time), so a
    first frame that came late does not push every later one late; re-anchored when a frame
    comes more than a second after its media time says (a new stream, a clock that stalled)."""

    def __init__(self, hz: int, wrap: int) -> None:
        self.hz, self.wrap = hz, wrap
        self._last_raw: int | None = None
        self._ext = 0
        self._anchor = 0.0
        self.last_ms = -1

    def ms(self, raw: int, t: float) -> int:
        if self._last_raw is None:
            self._ext = 0
            self._anchor = t
        else:
            d = (raw - self._last_raw) % self.wrap
            if d >= self.wrap // 2:
                d -= self.wrap
            self._ext += d
            at = t - self._ext / self.hz
            if at < self._anchor or at - self._anchor > _REANCHOR_S:
                self._anchor = at
        self._last_raw = raw
        ms = max(round((self._anchor + self._ext / self.hz) * 1000), self.last_ms + 1)
        self.last_ms = ms
        return ms


class VideoRemuxer:
    """One call's video file (see the module doc). ``base``: the path without extension;
    ``rate``: the sample rate of the stereo audio; ``audio_buffer_s``: how much audio waits for
    the first keyframe (older audio is dropped, the file then starts its audio later)."""

    def __init__(self, base: Path, *, rate: int, audio_buffer_s: float = 30.0, bitrate: int = 64000) -> None:
        self.base = base
        self.rate = rate
        self.bitrate = bitrate
        self.codec: str | None = None  # "VP8" / "H264" once the caller's video is known
        self.path: Path | None = None  # once the file is open
        self.error: str | None = None
        self.frames = 0
        self.width: int | None = None
        self.height: int | None = None
        self.closed = False
        self._paused = False
        self._waiting = True  # for a keyframe
        self._want_keyframe = True  # asked for once at the start
        self._out: Any = None
        self._vstream: Any = None
        self._astream: Any = None
        self._resampler: Any = None
        self._arate = rate if rate in OPUS_RATES else 48000
        self._pending: list[np.ndarray] = []  # audio before the file opens / not yet a whole frame
        self._pending_n = 0
        self._audio_max = int(audio_buffer_s * rate)
        self._audio_pts = 0  # samples (at the encoder's rate) written or dropped so far
        self._vp8 = Vp8Assembler()
        self._depacketizer: h264.Depacketizer | None = None
        self._sps: tuple[bytes, ...] = ()
        self._pps: tuple[bytes, ...] = ()
        self._clock: _Clock | None = None
        self._flv_config: bytes | None = None
        self._flv_length_size = 4

    # --- control ---------------------------------------------------------------------
    @property
    def container(self) -> str | None:
        return CONTAINERS[self.codec][0] if self.codec in CONTAINERS else None

    def take_keyframe_request(self) -> bool:
        """True once whenever the remuxer starts waiting for a keyframe (start, loss, resume)."""
        want, self._want_keyframe = self._want_keyframe, False
        return want and not self.closed and self.error is None

    def pause(self, on: bool) -> None:
        """Drop video while paused; after it, wait for (and ask for) a keyframe."""
        if on == self._paused:
            return
        self._paused = on
        if not on:
            self._wait()

    def gap(self) -> None:
        """Video was lost before it reached the remuxer (a full queue): wait for a keyframe."""
        self._vp8 = Vp8Assembler()
        if self._depacketizer is not None:
            self._depacketizer.reset()
        self._wait()

    def _wait(self) -> None:
        if not self._waiting:
            self._waiting = True
            self._want_keyframe = True

    # --- video in ------------------------------------------------------------------------
    def rtp(self, codec: str, seq: int, timestamp: int, marker: bool, payload: bytes, t: float) -> None:
        """One RTP video packet of a WebRTC caller, arrived at timeline second ``t``."""
        if not self._accepts(codec.upper()):
            return
        if self.codec == "VP8":
            frame = self._vp8.push(seq, timestamp, marker, payload)
            if self._vp8.lost:
                self._vp8.lost = False
                self._wait()
            if frame is not None:
                self._vp8_frame(frame, timestamp, t)
            return
        if self._depacketizer is None:
            self._depacketizer = h264.Depacketizer()
        for au in self._depacketizer.push(seq, timestamp, marker, payload):
            self._h264_access_unit(au, t)
        if self._depacketizer.take_keyframe_request():
            self._wait()

    def flv(self, timestamp_ms: int, body: bytes, t: float) -> None:
        """One FLV video tag body of an RTMP caller (AVC only), arrived at timeline second ``t``."""
        if not body or body[0] & 0x0F != VIDEO_AVC or not self._accepts("H264"):
            return
        try:
            tag = h264.parse_avc_tag(body)
            if tag.packet_type == AVC_SEQUENCE_HEADER:
                config = h264.AvcDecoderConfig.parse(tag.payload)
                if self._flv_config is not None and self._flv_config != tag.payload and self._out is not None:
                    return  # one CodecPrivate per file: a changed configuration is not followed
                self._flv_config, self._flv_length_size = bytes(tag.payload), config.nalu_length_size
                self._sps, self._pps = config.sps, config.pps
                return
            if tag.packet_type != AVC_NALU or self._paused or self._flv_config is None:
                return
            key = tag.is_keyframe or h264.is_keyframe(h264.split_length_prefixed(tag.payload, self._flv_length_size))
        except RemoteProtocolError:
            return
        if self._waiting and not key:
            return
        if self._out is None and not self._open_h264(self._flv_config, 1000):
            return
        self._waiting = False
        assert self._clock is not None
        dts = self._clock.ms(timestamp_ms, t)
        self._write(tag.payload, dts, dts + max(0, tag.composition_time), key)

    def _accepts(self, codec: str) -> bool:
        if self.closed or self.error is not None:
            return False
        if self.codec is None:
            if codec not in CONTAINERS:
                return False
            self.codec = codec
        return codec == self.codec

    def _vp8_frame(self, frame: bytes, timestamp: int, t: float) -> None:
        if self._paused:
            return
        size = vp8_frame_size(frame)
        if self._waiting and size is None:
            return
        if self._out is None:
            assert size is not None
            if not self._open("VP8", size, None):
                return
            self._clock = _Clock(90000, 1 << 32)  # RTP's video clock
        self._waiting = False
        assert self._clock is not None
        ms = self._clock.ms(timestamp, t)
        self._write(frame, ms, ms, size is not None)

    def _h264_access_unit(self, au: h264.AccessUnit, t: float) -> None:
        sps = tuple(n for n in au.nals if h264.nal_type(n) == h264.NAL_SPS)
        pps = tuple(n for n in au.nals if h264.nal_type(n) == h264.NAL_PPS)
        if sps and pps:
            self._sps, self._pps = sps, pps
        if self._paused:
            return
        key = au.is_keyframe
        if self._waiting and not key:
            return
        if self._out is None:
            if not (self._sps and self._pps):
                self._want_keyframe = True
                return
            try:
                config = h264.AvcDecoderConfig.from_parameter_sets(self._sps, self._pps, 4).serialize()
            except (RemoteProtocolError, LocalProtocolError):
                return
            if not self._open_h264(config, 90000):
                return
        self._waiting = False
        assert self._clock is not None
        ms = self._clock.ms(au.timestamp, t)
        self._write(h264.join_length_prefixed(au.nals, 4), ms, ms, key)

    def _open_h264(self, avcc: bytes, hz: int) -> bool:
        """Open the file for H.264 with ``avcc`` as CodecPrivate; ``hz``: the caller's clock."""
        try:
            config = h264.AvcDecoderConfig.parse(avcc)
            info = h264.parse_sps(config.sps[0]) if config.sps else None
        except RemoteProtocolError:
            info = None
        if info is None or not self._open("H264", (info.width, info.height), avcc):
            return False
        self._clock = _Clock(hz, 1 << 32)
        return True

    # --- the file ----------------------------------------------------------------------
    def _open(self, codec: str, size: tuple[int, int], extradata: bytes | None) -> bool:
        fmt, suffix = CONTAINERS[codec]
        path = Path(f"{self.base}{suffix}")
        try:
            # a cluster a second, each packet flushed: a crash loses at most the last second
            out = av.open(str(path), "w", format=fmt, container_options=_MUX_OPTIONS)
            self._out = out
            self.path = path
            template = av.open(io.BytesIO(), "w", format="matroska")
            try:
                # a stream whose codec context is never opened (no encoder is made): the
                # packets are the caller's
                vs = out.add_stream_from_template(template.add_stream(codec.lower()))
            finally:
                template.close()
            vs.time_base = _MS
            cc = vs.codec_context
            assert isinstance(cc, av.VideoCodecContext)
            cc.width, cc.height = size
            cc.pix_fmt = "yuv420p"
            if extradata is not None:
                cc.extradata = extradata
            self._vstream = vs
            astream = out.add_stream("libopus", rate=self._arate, layout="stereo")
            astream.codec_context.bit_rate = self.bitrate
            self._astream = astream
            out.start_encoding()
        except Exception as e:  # noqa: BLE001 - any failure to make the file stops this file only
            self._fail(e)
            return False
        self.width, self.height = size
        if self.rate != self._arate:
            self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=self._arate)
        self._flush_audio()
        return True

    def _write(self, data: bytes, dts_ms: int, pts_ms: int, key: bool) -> None:
        if self._out is None or self.error is not None:
            return
        packet = av.Packet(data)
        packet.stream = self._vstream
        packet.time_base = _MS
        packet.dts, packet.pts = dts_ms, max(pts_ms, dts_ms)
        packet.is_keyframe = key
        try:
            self._out.mux(packet)
        except Exception as e:  # noqa: BLE001 - a write failure stops this file, never the call
            self._fail(e)
            return
        self.frames += 1

    # --- audio -------------------------------------------------------------------------
    def audio(self, stereo: np.ndarray) -> None:
        """int16 samples, shape (n, 2), at ``rate``, contiguous from timeline 0."""
        if self.closed or self.error is not None or stereo.size == 0:
            return
        block = np.ascontiguousarray(stereo, dtype=np.int16).reshape(-1, 2)
        if self._out is None:
            self._pending.append(block)
            self._pending_n += len(block)
            while self._pending_n - len(self._pending[0]) >= self._audio_max:
                # nobody waits forever for a first keyframe: the oldest audio goes
                self._pending_n -= len(self._pending[0])
                self._audio_pts += len(self._pending.pop(0)) * self._arate // self.rate
            return
        self._encode(block)

    def _flush_audio(self) -> None:
        pending, self._pending, self._pending_n = self._pending, [], 0
        if pending:
            self._encode(np.concatenate(pending))

    def _encode(self, block: np.ndarray) -> None:
        if self._resampler is not None:
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = self.rate
            parts = [f.to_ndarray().reshape(-1, 2) for f in self._resampler.resample(frame)]
            block = np.concatenate(parts) if parts else np.zeros((0, 2), np.int16)
        self._pending.append(block)
        self._pending_n += len(block)
        self._drain(final=False)

    def _drain(self, final: bool) -> None:
        if self._astream is None or self.error is not None:
            return
        size = self._astream.codec_context.frame_size or self._arate // 50
        if self._pending_n < size and not final:
            return
        buf = np.concatenate(self._pending) if self._pending else np.zeros((0, 2), np.int16)
        whole = len(buf) // size * size
        rest = buf[whole:]
        if final and len(rest):
            buf = np.concatenate([buf, np.zeros((size - len(rest), 2), np.int16)])
            whole, rest = len(buf), buf[:0]
        self._pending, self._pending_n = ([rest] if len(rest) else []), len(rest)
        try:
            for i in range(0, whole, size):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(buf[i : i + size]).reshape(1, -1),
                                                   format="s16", layout="stereo")
                frame.sample_rate = self._arate
                frame.time_base = Fraction(1, self._arate)
                frame.pts = self._audio_pts
                self._audio_pts += size
                for packet in self._astream.encode(frame):
                    self._out.mux(packet)
            if final:
                for packet in self._astream.encode(None):
                    self._out.mux(packet)
        except Exception as e:  # noqa: BLE001 - a write failure stops this file, never the call
            self._fail(e)

    # --- the end -----------------------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        self.error = write_error(e, "video")
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001, S110 - the file is already failing
                pass

    def close(self) -> None:
        """Finish the file (idempotent): the audio's last frame, the encoder's tail, the cues."""
        if self.closed:
            return
        self.closed = True
        out = self._out
        if out is None:
            return
        if self.error is None:
            self._drain(final=True)
        out, self._out = self._out, None
        if out is None:
            return
        try:
            out.close()
        except Exception as e:  # noqa: BLE001 - the trailer could not be written
            self.error = self.error or ("disk full" if getattr(e, "errno", None) == errno.ENOSPC
                                        else f"video write failed: {type(e).__name__}")


class RemuxThread:
    """A :class:`VideoRemuxer` run by a thread of its own, so that the caller's packets and the
    audio's Opus encoding never hold the reactor (PyAV releases the GIL while it encodes and
    writes): every call here only queues. Video waiting beyond ``max_queue`` items is dropped
    (the file then resumes at a keyframe); audio never is, so the file's audio stays contiguous.
    :meth:`close` waits for the queue to drain (at most ``close_timeout_s``)."""

    def __init__(self, remuxer: VideoRemuxer, *, max_queue: int = 2000, close_timeout_s: float = 10.0) -> None:
        self.remuxer = remuxer
        self.max_queue = max_queue
        self.close_timeout_s = close_timeout_s
        self.dropped = 0
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._gap = False
        self._keyframe = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"recording {remuxer.base.name}", daemon=True)
        self._thread.start()

    # what the owner reads (attributes written by the worker; single reads are safe)
    @property
    def error(self) -> str | None:
        return self.remuxer.error

    @property
    def path(self) -> Path | None:
        return self.remuxer.path

    @property
    def codec(self) -> str | None:
        return self.remuxer.codec

    @property
    def container(self) -> str | None:
        return self.remuxer.container

    @property
    def frames(self) -> int:
        return self.remuxer.frames

    def take_keyframe_request(self) -> bool:
        """True once after the worker's remuxer started waiting for a keyframe."""
        if self._keyframe.is_set():
            self._keyframe.clear()
            return not self._closed and self.remuxer.error is None
        return False

    # what the owner feeds
    def rtp(self, codec: str, seq: int, timestamp: int, marker: bool, payload: bytes, t: float) -> None:
        self._video(("rtp", codec, seq, timestamp, marker, payload, t))

    def flv(self, timestamp_ms: int, body: bytes, t: float) -> None:
        self._video(("flv", timestamp_ms, body, t))

    def audio(self, stereo: np.ndarray) -> None:
        if not self._closed:
            self._queue.put(("audio", np.array(stereo, dtype=np.int16, copy=True)))

    def pause(self, on: bool) -> None:
        if not self._closed:
            self._queue.put(("pause", on))

    def _video(self, item: tuple[Any, ...]) -> None:
        if self._closed or self.remuxer.error is not None:
            return
        if self._queue.qsize() >= self.max_queue:
            self.dropped += 1
            self._gap = True
            return
        if self._gap:
            self._gap = False
            self._queue.put(("gap",))
        self._queue.put(item)

    def close(self) -> None:
        """Finish the file (idempotent); returns when the worker is done or the timeout passed."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(self.close_timeout_s)

    def _run(self) -> None:
        r = self.remuxer
        while True:
            item = self._queue.get()
            if item is None:
                break
            try:
                kind = item[0]
                if kind == "rtp":
                    r.rtp(*item[1:])
                elif kind == "flv":
                    r.flv(*item[1:])
                elif kind == "audio":
                    r.audio(item[1])
                elif kind == "pause":
                    r.pause(item[1])
                elif kind == "gap":
                    r.gap()
            except Exception as e:  # noqa: BLE001 - never a dead worker with a queue growing behind it
                r._fail(e)
            if r.take_keyframe_request():
                self._keyframe.set()
        try:
            r.close()
        except Exception as e:  # noqa: BLE001 - the file is what it is
            r.error = r.error or f"video close failed: {type(e).__name__}"

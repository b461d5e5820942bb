"""The media hub's vocabulary (``legs/hub.py``): the packets it carries (:class:`RtpVideo` for
WebRTC watchers, :class:`FlvVideo` for RTMP watchers), what it needs of the caller's leg
(:class:`HubCaller`), of a watcher (:class:`HubWatcher`) and of a recording's tap
(:class:`HubRecorder`), its refusal (:class:`WatchRefused`) and its counters (:class:`HubStats`).
Kept apart from the hub so that legs, adapters and the recorder can name them without the hub's
machinery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["FLV_VIDEO_CODECS", "TOO_MANY_WATCHERS", "FlvVideo", "HubCaller", "HubRecorder", "HubStats", "HubWatcher", "RtpVideo",
           "WatchRefused"]

TOO_MANY_WATCHERS = "too_many_watchers"
_FLV_AVC = 7
#: FLV VideoTagHeader CodecID -> the hub's codec name (``HubStats.codec`` of an FLV source)
FLV_VIDEO_CODECS = {2: "H263", 3: "SCREEN", 4: "VP6", 5: "VP6A", 6: "SCREEN2", _FLV_AVC: "H264", 12: "HEVC"}


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
    """What the hub needs of one watcher. A watcher whose ``audio`` attribute is true (optional,
    read at join) also gets the call's audio, both parties mixed: ``audio_pcm(pcm, rate)`` every
    20 ms (``webgate.legs.monitor``)."""

    identity: str | None  # the watcher token's ``sub``
    wants: str  # "rtp" (WebRTC watcher) or "flv" (RTMP watcher)

    def video_started(self, codec: str | None, width: int | None, height: int | None) -> None: ...

    def rtp_video(self, packet: RtpVideo) -> None: ...

    def flv_video(self, tag: FlvVideo) -> None: ...

    def data(self, label: str, data: str | bytes) -> None: ...

    def ended(self, cause: str) -> None: ...


class HubRecorder(Protocol):
    """A recording's tap (``legs/hub_recording.py``): the caller's video as it arrives and the
    data in both directions. Not a watcher: no count, no cap, no ``watchers`` event."""

    def rtp_video(self, packet: RtpVideo) -> None: ...

    def flv_video(self, tag: FlvVideo) -> None: ...

    def data(self, origin: str, sender: str | None, label: str, data: str | bytes) -> None:
        """``origin``: "caller" (toward the watchers) or "watcher" (toward the caller)."""
        ...


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

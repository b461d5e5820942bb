"""The video and data half of a call's recording (issue 17; docs/recording.md "Video and data").

:class:`HubRecordingFactory` is the :class:`~webgate.calls.interfaces.RecordingSinkFactory` that
``calls/recording.py`` calls when a recording starts; the :class:`HubRecording` it makes taps the
call's :class:`~webgate.legs.hub.MediaHub` (``hub.add_recorder``: not a watcher) and writes

- the caller's video, remuxed without transcoding, with the stereo audio the recording pushes
  (:class:`~webgate.media.recording.video.VideoRemuxer`: ``{base}.webm`` for VP8, ``{base}.mkv``
  for H.264), in ``"audio+video"`` mode only, in a thread of its own
  (:class:`~webgate.media.recording.video.RemuxThread`): the reactor only queues;
- the data messages of both directions (:class:`~webgate.media.recording.data.DataLog`:
  ``{base}.data.jsonl``), in both modes.

Every time is ``timeline()``, the recording's clock. A paused recording drops video and data; a
failed write (disk full) stops that file, says why in :attr:`HubRecording.error`, and never
reaches the call or the hub's other peers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from twisted.logger import Logger

from webgate.legs.hub import MediaHub

from webgate.legs.hub_types import FlvVideo, RtpVideo
from webgate.logsafe import safe
from webgate.media.recording.data import DataLog
from webgate.media.recording.video import RemuxThread, VideoRemuxer

if TYPE_CHECKING:
    from webgate.calls.interfaces import RecordingSink

__all__ = ["HubRecording", "HubRecordingFactory"]

log = Logger()


class HubRecording:
    """One call's video and data files, fed by its hub (see the module doc)."""

    def __init__(self, hub: MediaHub, base: Path, rate: int, timeline: Callable[[], float], video: bool) -> None:
        self.hub = hub
        self.base = base
        self.timeline = timeline
        self._paused = False
        self._closed = False
        self._reported: set[str] = set()
        base.parent.mkdir(parents=True, exist_ok=True)
        self.video: RemuxThread | None = None
        if video:
            remuxer = VideoRemuxer(base, rate=rate)
            remuxer.take_keyframe_request()  # add_recorder asks for the first one
            self.video = RemuxThread(remuxer)
        self.data_log = DataLog(Path(f"{base}.data.jsonl"))
        hub.add_recorder(self)

    # --- HubRecorder: what the hub gives ---------------------------------------------
    def rtp_video(self, packet: RtpVideo) -> None:
        v = self.video
        if v is None or self._paused:
            return
        v.rtp(packet.codec, packet.seq, packet.timestamp, packet.marker, packet.payload, self.timeline())
        self._keyframe()
        self._check()

    def flv_video(self, tag: FlvVideo) -> None:
        v = self.video
        if v is None or self._paused:
            return
        v.flv(tag.timestamp_ms, tag.body, self.timeline())
        self._check()

    def data(self, origin: str, sender: str | None, label: str, data: str | bytes) -> None:
        if self._paused or self._closed:
            return
        self.data_log.write(self.timeline(), origin, sender, label, data)
        self._check()

    def _keyframe(self) -> None:
        v = self.video
        if v is not None and v.take_keyframe_request():
            self.hub.request_keyframe()

    def _check(self) -> None:
        for name, part in (("video", self.video), ("data", self.data_log)):
            if part is not None and part.error is not None and name not in self._reported:
                self._reported.add(name)
                log.error("recording {session_id}: the {part} file stopped: {why}",
                          session_id=safe(self.hub.session_id), part=name, why=part.error)

    # --- RecordingSink: what the recording drives --------------------------------------
    def audio(self, stereo: np.ndarray) -> None:
        if self.video is not None:
            self.video.audio(stereo)
            self._check()

    def paused(self, on: bool) -> None:
        if on == self._paused:
            return
        self._paused = on
        if self.video is not None:
            self.video.pause(on)
            self._keyframe()

    def files(self) -> dict[str, str]:
        out: dict[str, str] = {}
        v = self.video
        if v is not None and v.path is not None and v.path.exists():
            out["video"] = str(v.path)
        if self.data_log.exists:
            out["data"] = str(self.data_log.path)
        return out

    def codecs(self) -> dict[str, str]:
        v = self.video
        if v is None or v.path is None or v.codec is None or v.container is None:
            return {}
        return {"video": v.codec, "container": v.container, "video_audio": "opus"}

    @property
    def error(self) -> str | None:
        if self.video is not None and self.video.error is not None:
            return f"video: {self.video.error}"
        if self.data_log.error is not None:
            return f"data: {self.data_log.error}"
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.hub.remove_recorder(self)
        if self.video is not None:
            self.video.close()
        self.data_log.close()
        self._check()


class HubRecordingFactory:
    """The :class:`~webgate.calls.interfaces.RecordingSinkFactory`: None for a call with no
    hub (no video or data side), else a :class:`HubRecording` on ``call.hub``."""

    def __call__(
        self, call: Any, base: Path, rate: int, timeline: Callable[[], float], video: bool
    ) -> RecordingSink | None:
        hub = getattr(call, "hub", None)
        if not isinstance(hub, MediaHub) or hub.closed:
            return None
        try:
            return HubRecording(hub, base, rate, timeline, video)
        except OSError as e:  # the directory could not be made: the audio goes on without it
            log.error("recording {session_id}: no video/data files: {why}",
                      session_id=safe(hub.session_id), why=str(e)[:200])
            return None

"""An RTMP player of ``rtmp://HOST/watch/SESSIONID``: a :class:`~webgate.legs.hub_types.HubWatcher` of FLV.

No sockets here. The RTMP adapter (:mod:`webgate.adapters.rtmp`) authorises the play, hands
:class:`RtmpWatcher` a :class:`WatchSink` (one RTMP stream of one connection) and adds it to the
call's hub. The watcher turns what the hub gives it into what an RTMP player expects
(docs/protocol.md, "Watching a call"):

- ``onMetaData`` (``width``, ``height``, ``videocodecid``) once the caller's video is known;
- the AVC sequence header first, then video tags from a keyframe on (the hub replays its cached
  GOP to a new watcher);
- the caller's data messages as ``onData`` AMF data messages with one object ``{label, data}``
  (binary data as base64 with ``encoding: "base64"``).

Timestamps are the watch's own clock, milliseconds since the play started: the first keyframe
sent is stamped with that time (0 for the replayed GOP) and the caller's video keeps its own
spacing from there; data messages get the time they arrive. Players start near 0 whatever the
call's age, and a data-only watch (no video for this watcher) still moves forward in time.

Supervisor audio (``audio=both``, ``audio_codec`` set): the call's audio, both parties mixed
(:mod:`webgate.legs.monitor`, run by the hub while such a watcher is present), is encoded by a
:class:`~webgate.legs.rtmp_audio.Player` in the play's ``codec=`` exactly as for a player of
``session/ID`` (G.711, Nellymoser, Speex, AAC with its sequence header first; timestamps from
the samples sent, from 0 at the play's start), and ``onMetaData`` says ``hasAudio: true`` with
the player's audio fields. Audio tags take the players' back-pressure (``audio_wanted``:
dropped, never queued; the AAC sequence header never dropped).

Back-pressure: a watcher never queues. While the sink says its connection is behind
(``writable()`` False: its unsent data waited past ``[rtmp] player_max_queue_ms``) video and
data are dropped, and video resumes at the next keyframe (a decoder can do nothing with the
frames between). The AVC sequence header is never dropped.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Protocol

from webgate.legs.hub_types import FLV_VIDEO_CODECS, FlvVideo
from webgate.legs.rtmp_audio import Player

__all__ = ["FLV_VIDEO_CODEC_IDS", "RtmpWatcher", "WatchSink", "watch_metadata"]

#: FLV VideoTagHeader CodecID of the hub's codec names (FLV sources come as they are)
FLV_VIDEO_CODEC_IDS = {name: cid for cid, name in FLV_VIDEO_CODECS.items()}


class WatchSink(Protocol):
    """Where one watcher's messages go (one RTMP stream of one connection)."""

    @property
    def open(self) -> bool: ...

    def writable(self) -> bool:
        """False while the connection's unsent data has waited too long (drop, do not queue)."""
        ...

    def accept(self, metadata: dict[str, Any] | None) -> None:
        """Answer the play (``NetStream.Play.Start``, then ``onMetaData`` when given)."""
        ...

    def send_video(self, timestamp_ms: int, body: bytes) -> None: ...

    def send_data(self, timestamp_ms: int, name: str, value: Any) -> None: ...

    def send_audio(self, timestamp_ms: int, data: bytes) -> None:
        """One FLV audio tag body (supervisor audio); the sink applies the players' back-pressure."""
        ...

    def end(self, cause: str) -> None:
        """The call ended: Stream EOF + ``NetStream.Play.Stop``."""
        ...


def watch_metadata(codec: str | None, width: int | None, height: int | None, audio: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``onMetaData`` object of a watch stream; ``audio``: a player's audio metadata
    (``audio=both``), None for ``audio=none``."""
    md: dict[str, Any] = {"hasAudio": False, "hasVideo": False}
    if audio is not None:
        md.update({k: v for k, v in audio.items() if k.startswith("audio") or k == "stereo"})
        md["hasAudio"] = True
    cid = FLV_VIDEO_CODEC_IDS.get(codec or "")
    if cid is not None:
        md["hasVideo"] = True
        md["videocodecid"] = cid
        if width:
            md["width"] = width
        if height:
            md["height"] = height
    return md


class _AudioOut:
    """The watcher's stream as a :class:`~webgate.legs.rtmp_audio.Player`'s sink."""

    def __init__(self, watcher: RtmpWatcher) -> None:
        self.watcher = watcher

    @property
    def open(self) -> bool:
        w = self.watcher
        return w.began and w.live and w.sink.open

    def send_audio_tag(self, timestamp_ms: int, data: bytes) -> None:
        self.watcher.sink.send_audio(timestamp_ms, data)
        self.watcher.audio_tags_sent += 1


class RtmpWatcher:
    """One ``watch/SESSIONID`` play (``wants = "flv"``): see the module doc.

    Until :meth:`begin` (the adapter calls it once the hub took the watcher) everything the hub
    gives it is held, so that ``NetStream.Play.Start`` goes out before the first tag; what is
    held is at most the hub's cached GOP."""

    wants = "flv"

    def __init__(
        self, sink: WatchSink, identity: str | None = None, session_id: str = "",
        clock: Callable[[], float] | None = None, audio_codec: str | None = None,
    ) -> None:
        self.sink = sink
        #: ``audio=both``: the call's audio mixed, encoded as for a player of ``codec=audio_codec``
        self.audio = audio_codec is not None
        self.player = Player(_AudioOut(self), audio_codec) if audio_codec is not None else None
        self.audio_tags_sent = 0
        self.clock = clock  # seconds (the reactor's); None: the watch's clock stands at 0
        self.identity = identity
        self.session_id = session_id
        self.metadata: dict[str, Any] | None = None
        if self.player is not None:  # audio from the start, whether or not the caller has video
            self.metadata = watch_metadata(None, None, None, self.player.metadata())
        self.codec: str | None = None
        self.live = True
        self.began = False
        self.end_cause: str | None = None
        self._held: list[tuple[str, Any]] = []
        self._t0 = 0.0  # the clock when the play started
        self._base: int | None = None  # caller timestamp minus the watch's at the first keyframe
        self._last_ts = 0  # of video
        self._last_data_ts = 0
        self._at_keyframe = False  # video flows (False: waiting for a keyframe)
        self.tags_sent = 0
        self.tags_dropped = 0  # not sent: the connection was behind, or waiting for a keyframe
        self.data_sent = 0
        self.data_dropped = 0

    # ---- the adapter
    def begin(self) -> None:
        """The hub took this watcher: answer the play and send what was held."""
        if self.began:
            return
        self.began = True
        self._t0 = self.clock() if self.clock is not None else 0.0
        if self.sink.open:
            self.sink.accept(self.metadata)
        held, self._held = self._held, []
        for kind, item in held:
            if kind == "video":
                self.flv_video(item)
            elif kind == "data":
                self.data(*item)
            elif kind == "ended":
                self.ended(item)

    # ---- HubWatcher
    def video_started(self, codec: str | None, width: int | None, height: int | None) -> None:
        self.codec = codec
        self.metadata = watch_metadata(codec, width, height, self.player.metadata() if self.player is not None else None)
        if self.began and self.live and self.sink.open:
            self.sink.send_data(self._data_ts(), "onMetaData", self.metadata)

    def rtp_video(self, packet: Any) -> None:
        """Not for an FLV watcher (the hub sends it FLV only)."""

    def audio_pcm(self, pcm: Any, rate: int) -> None:
        """The call's mixed audio (every 20 ms, from the play's start): encoded and sent."""
        if self.player is not None and self.player.sink.open:  # not open: no encoding either
            self.player.pcm(pcm, rate)

    def flv_video(self, tag: FlvVideo) -> None:
        if not self.began:
            self._held.append(("video", tag))
            return
        if not self.live or not self.sink.open or self.codec is None:
            return
        if tag.is_sequence_header:  # tiny, and nothing decodes without it
            self.sink.send_video(self._last_ts, tag.body)
            self.tags_sent += 1
            return
        if not self.sink.writable():
            self._at_keyframe = False
            self.tags_dropped += 1
            return
        if not self._at_keyframe:
            if not tag.is_keyframe:
                self.tags_dropped += 1
                return
            self._at_keyframe = True
        if self._base is None:
            self._base = tag.timestamp_ms - self._now_ms()
        ts = max(self._last_ts, tag.timestamp_ms - self._base)
        self._last_ts = ts
        self.sink.send_video(ts, tag.body)
        self.tags_sent += 1

    def data(self, label: str, data: str | bytes) -> None:
        if not self.began:
            self._held.append(("data", (label, data)))
            return
        if not self.live or not self.sink.open:
            return
        if not self.sink.writable():
            self.data_dropped += 1
            return
        value: dict[str, Any]
        if isinstance(data, str):
            value = {"label": label, "data": data}
        else:
            value = {"label": label, "data": base64.b64encode(data).decode("ascii"), "encoding": "base64"}
        self.sink.send_data(self._data_ts(), "onData", value)
        self.data_sent += 1

    def _now_ms(self) -> int:
        return max(0, round((self.clock() - self._t0) * 1000)) if self.clock is not None else 0

    def _data_ts(self) -> int:
        self._last_data_ts = max(self._last_data_ts, self._now_ms())
        return self._last_data_ts

    def ended(self, cause: str) -> None:
        if not self.began:
            self._held.append(("ended", cause))
            return
        if not self.live:
            return
        self.live = False
        self.end_cause = cause
        self.sink.end(cause)

"""The WebRTC leg's media beside its call control (the rest of :mod:`webgate.legs.webrtc`).

The audio the browser hears: :class:`SipAudioSource` paces the SIP side's audio in 20 ms frames
for the peer's aiortc track (``webgate.adapters.webrtc.SipAudioTrack``), as PCM on the frame
path and as :class:`EncodedAudio` payloads on the packet path (:func:`packet_samples` reads a
payload's duration). :class:`LegStats` are the leg's counters.

Video and data (issue 14) never reach SIP: the leg gives the call its media hub
(:func:`~webgate.legs.hub.attach_hub`, ``call.hub``) and is the hub's :class:`HubCaller`. The
peer answers the browser's video ``recvonly`` with only the codecs a watcher can take as they
are (VP8, H.264 packetization-mode 1; a browser offering neither keeps video ``inactive``), and
from DTLS connected on reads its RTP off the socket, never through aiortc's decoder
(:class:`VideoPort`, ``webgate.adapters.webrtc_video``; ``stats.video_frames_decoded`` stays 0,
``webgate_webrtc_video_frames_decoded_total`` in /metrics). The packets go to
:meth:`~webgate.legs.hub.MediaHub.rtp_from_caller` as they came; the hub's keyframe requests
become PLIs and its bitrate bound a REMB toward the browser. Messages on any of the browser's
data channels go to the watchers by label (``data_from_browser``); a watcher's message comes
back on a channel the peer opens with the watcher's identity as its ``protocol``
(:meth:`data_to_caller`). A ``watchers`` signalling event tells the page how many watch.

:class:`HubCallerSide` holds that half of :class:`~webgate.legs.webrtc.WebRtcCallLeg` (a mixin of
the leg, as ``adapters/rtmp_rpc.py``'s ``FlashRpc`` is of the RTMP connection: one object, its
state declared here and set by the leg); :class:`VideoPeer` is the part of the leg's
``PeerLink`` it uses.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
from twisted.logger import Logger

from webgate.calls.call import Call
from webgate.legs.hub import MediaHub
from webgate.legs.hub_types import RtpVideo
from webgate.logsafe import safe
from webgate.media.audio import PCM, Framer, Resampler
from webgate.media.codecs import OPUS_SILENCE, mono_frame, opus_packet_samples

log = Logger()

__all__ = [
    "EncodedAudio",
    "HubCallerSide",
    "LegStats",
    "SipAudioSource",
    "VideoFormat",
    "VideoPeer",
    "VideoPort",
    "packet_samples",
]


def _silence(codec: str, samples: int) -> bytes:
    """What the browser gets while no SIP packet is queued on the packet path."""
    if codec == "OPUS":
        return OPUS_SILENCE  # one 20 ms frame
    return (b"\xff" if codec == "PCMU" else b"\xd5") * samples


def packet_samples(codec: str, payload: bytes) -> int:
    """How many samples (at the codec's RTP clock) one payload of ``codec`` covers.
    Raises RemoteProtocolError for an Opus payload with a bad TOC."""
    if codec == "OPUS":
        return opus_packet_samples(payload)
    return len(payload)  # G.711: one byte per 8 kHz sample


class EncodedAudio:
    """A pre-encoded payload for aiortc's sender (it calls ``encoder.pack()`` on anything that
    is not an ``av.Frame``; the G.711 and Opus packers need only ``pts``, ``time_base`` and bytes)."""

    __slots__ = ("payload", "pts", "time_base")

    def __init__(self, payload: bytes, pts: int, time_base: Fraction) -> None:
        self.payload = payload
        self.pts = pts
        self.time_base = time_base

    def __bytes__(self) -> bytes:
        return self.payload


class SipAudioSource:
    """The audio the browser hears: PCM from the SIP leg, paced in 20 ms frames with pts.

    Frames are produced at one fixed rate per track (``rate``, chosen to match the codec
    negotiated with the browser: 8 kHz for G.711, 16 kHz for G.722, 48 kHz for Opus), so
    aiortc's encoder never resamples; SIP audio at another rate is resampled once here.
    Silence is sent while nothing is queued (before answer, packet loss).

    Packet path: :meth:`push_payload` queues G.711/Opus payloads from SIP as they are;
    :meth:`next_frame` then returns :class:`EncodedAudio` (paced by each payload's own length)
    and aiortc only packetizes. ``packet_codec`` names the codec (the silence used while nothing
    is queued).

    No clock of its own: the aiortc track (``webgate.adapters.webrtc.SipAudioTrack``) asks
    :meth:`due_in` how long to wait, waits, and sends :meth:`next_frame`.
    """

    def __init__(self, rate: int, max_queue_ms: int = 200) -> None:
        self.rate = rate
        self.samples = rate // 50
        self._time_base = Fraction(1, rate)
        self._queue: collections.deque[PCM] = collections.deque(maxlen=max(2, max_queue_ms // 20))
        self._framer = Framer(self.samples)
        self._resamplers: dict[int, Resampler] = {}
        self._ts = 0
        self._last_samples = self.samples
        self._t0: float | None = None
        self.frames_sent = 0
        self.frames_silent = 0
        self.frames_dropped = 0
        self.packet_codec: str | None = None
        self._payloads: collections.deque[tuple[bytes, int]] = collections.deque(maxlen=max(2, max_queue_ms // 20))
        self.payloads_sent = 0
        # set by the leg when it sends the audio itself (webrtc_direct): aiortc's sender then
        # gets no frame from this track (its recv waits until the track is stopped)
        self.direct = False

    def set_rate(self, rate: int) -> None:
        """Fix the output rate (before the first frame is sent)."""
        self.rate = rate
        self.samples = rate // 50
        self._time_base = Fraction(1, rate)
        self._last_samples = self.samples
        self._framer = Framer(self.samples)
        self._resamplers.clear()  # made for the old rate: their output would be taken as the new one's
        self._queue.clear()

    def push(self, pcm: PCM, rate: int) -> None:
        if rate != self.rate:
            rs = self._resamplers.get(rate)
            if rs is None:
                rs = self._resamplers[rate] = Resampler(rate, self.rate)
            pcm = rs.resample(pcm)
        for frame in self._framer.push(pcm):
            if len(self._queue) == self._queue.maxlen:
                self.frames_dropped += 1
            self._queue.append(frame)

    def push_payload(self, payload: bytes, samples: int | None = None) -> None:
        """Packet path: one G.711 (8 kHz) or Opus (48 kHz) payload from SIP covering
        ``samples`` at the track's rate (default: one byte per sample, G.711)."""
        if len(self._payloads) == self._payloads.maxlen:
            self.frames_dropped += 1
        self._payloads.append((payload, len(payload) if samples is None else samples))

    def clear(self) -> None:
        """Drop what is queued and forget the packet codec (the SIP codec changed mid-call)."""
        self.packet_codec = None  # set again by the first payload on the packet path
        self._payloads.clear()
        self._queue.clear()

    def due_in(self, now: float) -> float:
        """Seconds (monotonic clock) until the next frame is due; the first call starts the
        clock (0). Each call after it moves the timestamp past the last frame sent."""
        if self._t0 is None:
            self._t0 = now
            return 0.0
        self._ts += self._last_samples
        return self._t0 + self._ts / self.rate - now

    def next_frame(self) -> object:
        """The frame due now: :class:`EncodedAudio` on the packet path, else a PyAV audio frame."""
        if self.packet_codec is not None:
            if self._payloads:
                payload, self._last_samples = self._payloads.popleft()
                self.payloads_sent += 1
            else:
                payload, self._last_samples = _silence(self.packet_codec, self.samples), self.samples
                self.frames_silent += 1
            self.frames_sent += 1
            return EncodedAudio(payload, self._ts, self._time_base)
        self._last_samples = self.samples
        if self._queue:
            pcm = self._queue.popleft()
        else:
            pcm = np.zeros(self.samples, dtype=np.int16)
            self.frames_silent += 1
        frame = mono_frame(pcm, self.rate, self._ts)
        self.frames_sent += 1
        return frame


@dataclass
class LegStats:
    frames_from_browser: int = 0
    frames_to_browser: int = 0
    video_frames_decoded: int = 0  # frames aiortc's video decoder produced: stays 0 (video is read off the socket)
    video_packets: int = 0  # video RTP packets from the browser, to the hub undecoded
    data_messages: int = 0  # messages on the browser's data channels (to the watchers)
    data_messages_dropped: int = 0  # ... of which no watcher was there to take
    data_to_browser: int = 0  # watchers' messages sent to the browser
    data_channels: int = 0
    video_tracks: int = 0
    packets_relayed: int = 0
    bad_packets: int = 0  # packet path: payloads dropped because their framing was invalid
    dtmf_from_browser: int = 0
    browser_codec: str | None = None
    transcoded: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoFormat:
    """A video codec as negotiated: the hub's name ("VP8", "H264") and its fmtp parameters
    (H.264: ``packetization-mode``, ``profile-level-id``)."""

    codec: str
    parameters: tuple[tuple[str, str], ...] = ()

    def param(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.parameters if k == name), default)


class VideoPort(Protocol):
    """The browser's video RTP read off the socket and our RTCP toward it
    (``webgate.adapters.webrtc_video.CallerVideo``)."""

    def request_keyframe(self) -> None: ...

    def limit_bitrate(self, bps: int) -> None: ...

    def stop(self) -> None: ...


class VideoPeer(Protocol):
    """The video and data part of the leg's peer connection (``webgate.legs.webrtc.PeerLink``)."""

    def start_video(self, on_rtp: Callable[[str, int, int, bool, bytes], None]) -> VideoPort | None:
        """Read the answered video RTP off the socket (connected; None: it cannot)."""
        ...

    def send_data(self, label: str, data: str | bytes, protocol: str) -> bool:
        """A message to the browser on a channel labelled ``label`` that the gateway opens with
        ``protocol`` (one per pair). False: dropped."""
        ...


class HubCallerSide:
    """The hub's caller (``webgate.legs.hub_types.HubCaller``) side of
    :class:`~webgate.legs.webrtc.WebRtcCallLeg`: the browser's video and data to the call's hub,
    the watchers' messages, keyframe requests and bitrate bound back to the browser."""

    # the leg's state this half uses (set by WebRtcCallLeg.__init__)
    call: Call | None
    hub: MediaHub | None  # the call's (call.hub), from attach on
    peer: VideoPeer
    stats: LegStats
    closed: bool
    signal: Callable[[dict[str, Any]], None]
    _video_pts: tuple[tuple[int, str], ...]  # the answered video: payload type -> hub codec name
    _video: VideoPort | None  # the browser's video read off the socket (from DTLS connected on)
    _bitrate_bps: int | None

    @property
    def session_id(self) -> str | None:
        return self.call.session_id if self.call is not None else None

    # -- what the peer connection receives: video and data ---------------------------------
    def video_track_added(self) -> None:
        self.stats.video_tracks += 1

    def video_frame_decoded(self) -> None:
        """aiortc's video receiver is never started (the video is read off the socket), so this
        never happens; should aiortc decode a frame anyway it is counted (and dropped, so
        nothing queues)."""
        self.stats.video_frames_decoded += 1
        if self.stats.video_frames_decoded == 1:
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                "call {session_id}: aiortc decoded browser video (it should never decode any)", session_id=self.session_id
            )

    def data_channel_opened(self, label: str) -> None:
        """A data channel of the browser: kept open with the session, relayed by its label."""
        self.stats.data_channels += 1
        log.debug("call {session_id}: data channel {label} accepted", session_id=self.session_id, label=safe(label, 64))

    def data_from_browser(self, label: str, data: str | bytes) -> None:
        """A message on one of the browser's channels: to every watcher now present (the hub
        drops it past ``[video] max_data_bytes`` or the rate); never to SIP."""
        self.stats.data_messages += 1
        hub = self._live_hub()
        if hub is None or not hub.watchers:
            self.data_message_dropped(len(data))
        if hub is not None:
            hub.data_from_caller(label, data)

    def data_message_dropped(self, size: int) -> None:
        self.stats.data_messages_dropped += 1
        log.debug(
            "call {session_id}: data channel message reached no watcher ({n} bytes)",
            session_id=self.session_id,
            n=size,
        )

    def _live_hub(self) -> MediaHub | None:
        call, hub = self.call, self.hub
        if call is None or call.ended or hub is None or hub.closed or call.hub is not hub:
            return None
        return hub

    def _video_rtp(self, codec: str, seq: int, timestamp: int, marker: bool, payload: bytes) -> None:
        """One video RTP packet from the browser (unprotected, undecoded): to the hub."""
        self.stats.video_packets += 1
        hub = self._live_hub()
        if hub is not None:
            hub.rtp_from_caller(RtpVideo(codec, seq, timestamp, marker, payload))

    # -- HubCaller (the hub's side of this leg) ---------------------------------------------
    def watchers_changed(self, count: int) -> None:
        self.signal({"type": "watchers", "count": count, "session_id": self.session_id})

    def data_to_caller(self, label: str, data: str | bytes, sender: str | None) -> None:
        """A watcher's message: on the channel the peer opens for (label, the watcher's identity)."""
        if self.closed:
            return
        if self.peer.send_data(label, data, sender or ""):
            self.stats.data_to_browser += 1

    def request_keyframe(self) -> None:
        """A PLI to the browser (the hub rate-limits the requests)."""
        if self._video is not None:
            self._video.request_keyframe()

    def limit_bitrate(self, bps: int) -> None:
        """A REMB to the browser: ``[video] max_bitrate_kbps``, or the lowest watcher's estimate."""
        self._bitrate_bps = bps
        if self._video is not None:
            self._video.limit_bitrate(bps)

    def _start_video(self) -> None:
        """DTLS is up: read the browser's video RTP off the socket (never through aiortc)."""
        if self._video is not None or self.closed or not self._video_pts:
            return
        video = self.peer.start_video(self._video_rtp)
        if video is None:
            return
        self._video = video
        if self._bitrate_bps is not None:
            video.limit_bitrate(self._bitrate_bps)

    def _close_hub(self, cause: str) -> None:
        """The call is over: every watcher gets ``ended`` with its cause."""
        hub = self.hub
        if hub is not None and hub.caller is self:
            hub.close(cause)

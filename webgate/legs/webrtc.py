"""The WebRTC ingress leg: what a call does with a browser's audio.

The browser's peer connection (aiortc: ICE, DTLS-SRTP, RTCP, offer/answer, data channels) is
protocol I/O and lives in :mod:`webgate.adapters.webrtc`; it is handed to the leg as a
:class:`PeerLink` and reports what it receives to the leg's ``*_from_browser`` / ``peer_*``
methods. This module has no asyncio and no PyAV: it holds the audio paths, the pacing of the
audio toward the browser, DTMF, and the watchdogs that end a call whose browser is gone.

Media paths (see docs/decisions.md). The answer toward the browser prefers the trunk's own
codec order (PCMU first by default), so with a G.711 trunk (or an Opus one) browser and phone
speak the same codec and the call takes the **packet path**: the leg declares
``packet_codecs`` (the browser's G.711 or Opus codec), the call manager then hands SIP
payloads to :meth:`WebRtcCallLeg.payload_from_sip` undecoded, :class:`SipAudioSource` gives
them to aiortc's sender as pre-encoded packets (aiortc only packetizes them), and the browser's
RTP payloads are taken off the audio receiver before aiortc's jitter buffer/decoder
(:meth:`WebRtcCallLeg.rtp_from_browser`) and relayed with :meth:`Call.send_payload`. Nothing is
decoded or encoded; each payload's duration comes from the payload (G.711: its length; Opus:
its TOC byte), so ptimes may differ per leg. Otherwise (G.722 toward the browser, or the phone
answered another codec) the call takes the **frame path**: aiortc decodes the browser's audio
(:meth:`WebRtcCallLeg.audio_from_browser` -> :meth:`Call.send_audio`) and encodes the PCM that
:meth:`WebRtcCallLeg.audio_from_sip` queues. The path is ``call.media_path`` and the manager's
``packet_path``/``frame_path`` counters, and it is logged at answer. Once DTLS is connected the
peer's direct audio (:mod:`webgate.adapters.webrtc_direct`, a :class:`DirectAudioPort` here)
replaces aiortc's media pipeline on both paths; the codec work is then done here.

DTMF from the browser: the answer carries the offer's telephone-event (at the chosen codec's
clock rate), so the browser's ``RTCDTMFSender`` works; its RFC 4733 packets are taken off the
receiver and sent to SIP by the trunk's DTMF method. Digits from SIP go to the browser as
``dtmf`` signalling events (browsers do not surface received RFC 4733).

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
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
from twisted.logger import Logger

from webgate.calls.call import Call, CallState
from webgate.config import WebRtcConfig
from webgate.legs.hub import MediaHub, attach_hub
from webgate.legs.hub_types import RtpVideo
from webgate.logsafe import safe
from webgate.media.audio import PCM, Framer, Resampler
from webgate.media.codecs import (
    OPUS_SILENCE,
    Decoder,
    Encoder,
    create_decoder,
    create_encoder,
    get_codec,
    mono_frame,
    opus_packet_samples,
)
from webgate.proto import rtp
from webgate.proto.errors import RemoteProtocolError
from webgate.proto.rtp import DtmfReceiver

log = Logger()

__all__ = [
    "PACKET_CODECS",
    "AnswerInfo",
    "DirectAudioPort",
    "EncodedAudio",
    "LegStats",
    "PeerLink",
    "SipAudioSource",
    "VideoFormat",
    "VideoPort",
    "WebRtcCallLeg",
    "WebRtcSettings",
    "packet_samples",
]

# codecs whose payloads go between browser and SIP untouched when both sides use them
PACKET_CODECS = ("PCMU", "PCMA", "OPUS")
_OPUS_INPUT_RATES = (8000, 12000, 16000, 24000)  # what libopus encodes without resampling (besides 48 kHz)
# the rate the browser's audio is played out at, by the answer's codec: aiortc's encoder never resamples
_PLAYOUT_RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 16000}


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


@dataclass(frozen=True)
class WebRtcSettings(WebRtcConfig):
    """The ``[webrtc]`` config section (:class:`webgate.config.WebRtcConfig`: same fields and
    defaults) with its ICE servers as the dicts handed to aiortc and to the browser."""

    #: ICE servers handed to aiortc AND to the browser: [{"urls": [...], "username": ..., "credential": ...}]
    ice_servers: tuple[dict[str, Any], ...] = ()  # type: ignore[assignment]

    @classmethod
    def from_config(cls, config: Any) -> WebRtcSettings:
        sec = getattr(config, "webrtc", None)
        if sec is None:
            return cls()
        kw = {f.name: getattr(sec, f.name) for f in fields(cls) if hasattr(sec, f.name)}
        if "ice_servers" in kw:
            kw["ice_servers"] = tuple(_ice_server_dict(s) for s in kw["ice_servers"])
        return cls(**kw)


def _ice_server_dict(s: Any) -> dict[str, Any]:
    if isinstance(s, dict):
        d = dict(s)
    else:
        d = {k: getattr(s, k) for k in ("urls", "username", "credential") if getattr(s, k, None)}
    urls = d.get("urls")
    d["urls"] = [urls] if isinstance(urls, str) else list(urls or [])
    return d


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


@dataclass(frozen=True)
class AnswerInfo:
    """What the answer to the browser's offer settled (found by the peer)."""

    codec: str  #: the audio codec as answered ("PCMU", "PCMA", "G722", "opus")
    audio_pt: int | None  #: its payload type
    event_pt: int | None = None  #: the telephone-event payload type answered, if any
    event_rate: int = 8000  #: and its clock rate
    #: the video the browser may send (answered recvonly): payload type -> hub codec name
    video_pts: tuple[tuple[int, str], ...] = ()
    #: the video codec it will send (the answer's first); None: video not received
    video: VideoFormat | None = None
    #: the browser negotiated data channels (an SCTP section)
    data: bool = False


class VideoPort(Protocol):
    """The browser's video RTP read off the socket and our RTCP toward it
    (``webgate.adapters.webrtc_video.CallerVideo``)."""

    def request_keyframe(self) -> None: ...

    def limit_bitrate(self, bps: int) -> None: ...

    def stop(self) -> None: ...


class DirectAudioPort(Protocol):
    """The call's audio RTP sent by webgate itself (``webgate.adapters.webrtc_direct.DirectAudio``)."""

    def send(self, payload_type: int, payload: bytes, samples: int, marker: bool = False) -> None: ...

    def stop(self) -> None: ...


class PeerLink(Protocol):
    """What the leg asks of the browser's peer connection (``webgate.adapters.webrtc.WebRtcPeer``)."""

    @property
    def state(self) -> str:
        """The connection state ("new", "connecting", "connected", "failed", "closed")."""
        ...

    def packets_received(self) -> int:
        """Packets received so far by the connection's DTLS transports (RTP, RTCP, DTLS, SCTP)."""
        ...

    def start_direct(
        self, payload_types: set[int], on_rtp: Callable[[int, int, int, bool, bytes], None]
    ) -> DirectAudioPort | None:
        """Take the audio RTP of ``payload_types`` off aiortc's media path (None: it cannot)."""
        ...

    def close(self) -> None:
        """Stop media and close the connection."""
        ...

    def start_video(self, on_rtp: Callable[[str, int, int, bool, bytes], None]) -> VideoPort | None:
        """Read the answered video RTP off the socket (connected; None: it cannot)."""
        ...

    def send_data(self, label: str, data: str | bytes, protocol: str) -> bool:
        """A message to the browser on a channel labelled ``label`` that the gateway opens with
        ``protocol`` (one per pair). False: dropped."""
        ...


class WebRtcCallLeg:
    """The ingress leg of one browser call (implements ``webgate.calls.call.IngressLeg``).

    ``signal(msg)`` sends a JSON-able dict to the browser. ``peer`` is the browser's peer
    connection; ``out_track`` (set at offer time) is the audio toward the browser.
    """

    kind = "webrtc"

    def __init__(
        self,
        client: str,
        settings: WebRtcSettings,
        signal: Callable[[dict[str, Any]], None],
        reactor: Any,
        peer: PeerLink,
        video: Any = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.video_config = video  # [video] (config.video) for the call's hub; None: its defaults
        self.hub: MediaHub | None = None  # the call's (call.hub), from attach on
        self.signal = signal
        self.reactor = reactor
        self.peer = peer
        self.call: Call | None = None
        self.out_track: SipAudioSource | None = None
        self.stats = LegStats()
        self.closed = False
        self._ice_timer: Any = None
        self._watchdog: Any = None  # the inbound-media watchdog (runs while connected)
        self._rx_seen: tuple[int, int] = (-1, -1)  # (DTLS packets, audio RTP packets) at the last check
        self._rx_at = 0.0  # reactor time the browser was last heard from
        self._rx_rtp = 0  # audio RTP packets seen by the receiver hook
        self._audio_pt: int | None = None  # the browser codec's payload type (packet path)
        self._codec = ""  # the browser codec, upper case (set once at answer)
        self._event_pt: int | None = None  # the negotiated telephone-event payload type
        self._dtmf_rx: DtmfReceiver | None = None
        # direct audio (webrtc_direct), from DTLS connected on: the codec work done here
        self._direct: DirectAudioPort | None = None
        self._rx_decoder: Decoder | None = None
        self._tx_encoder: Encoder | None = None
        self._tx_resamplers: dict[int, Resampler] = {}
        self._tx_step = 0  # RTP clock ticks per encoded frame toward the browser
        # video (read off the socket from DTLS connected on) and data, for the hub
        self._video_pts: tuple[tuple[int, str], ...] = ()
        self.video_format: VideoFormat | None = None  # what a watcher's answer offers (None: no video)
        self.data_negotiated = False
        self._video: VideoPort | None = None
        self._bitrate_bps: int | None = None

    @property
    def session_id(self) -> str | None:
        return self.call.session_id if self.call is not None else None

    # -- offer / answer (driven by the peer's adapter) -------------------------------------
    def answered(self, answer: AnswerInfo) -> str:
        """The answer to the browser's offer is built: remember its codec and payload types and
        play out at the codec's own rate. Returns the codec."""
        self._audio_pt = answer.audio_pt
        if answer.event_pt is not None:
            self._event_pt = answer.event_pt
            self._dtmf_rx = DtmfReceiver(answer.event_rate)
        self.stats.browser_codec = answer.codec
        self._codec = answer.codec.upper()
        self._video_pts = answer.video_pts
        self.video_format = answer.video
        self.data_negotiated = answer.data
        if self.out_track is not None:
            self.out_track.set_rate(_PLAYOUT_RATES.get(self._codec, 48000))
        return answer.codec

    def answer_applied(self) -> None:
        """The answer is applied: ICE and DTLS have ``ice_timeout_s`` to connect."""
        self._ice_timer = self.reactor.callLater(self.settings.ice_timeout_s, self._ice_timeout)

    def attach(self, call: Call) -> None:
        """The call is placed (or accepted): it gets its media hub, with this leg as the caller."""
        self.call = call
        self.stats.transcoded = None
        hub = self.hub = attach_hub(call, caller=self, video=self.video_config)
        if call.ended or self.closed:  # ended while it was being placed: nobody may watch it
            hub.close(call.end_cause or "ended")

    @property
    def packet_codecs(self) -> tuple[str, ...]:
        """The SIP codecs this leg relays undecoded (the call manager picks the packet path
        when the phone answered one of them): the browser's codec when it is G.711 or Opus
        (Opus is 48 kHz on both legs, so its RTP timestamps need no conversion)."""
        return (self._codec,) if self._codec in PACKET_CODECS else ()

    def payload_from_sip(self, call: Call, payload: bytes, samples: int) -> None:
        """Packet path: a G.711 or Opus payload from SIP, queued for the browser as it is
        (its duration taken from the payload itself: the SIP side may use another ptime)."""
        track = self.out_track
        if track is not None and payload:
            codec = self._codec or "PCMU"
            try:
                n = packet_samples(codec, payload)
            except RemoteProtocolError:
                self.stats.bad_packets += 1
                return
            if track.packet_codec is None:
                track.packet_codec = codec
            self.stats.frames_to_browser += 1
            if self._direct is not None and self._audio_pt is not None:
                self._direct.send(self._audio_pt, payload, n)
                track.payloads_sent += 1
                return
            track.push_payload(payload, n)

    def media_path_changed(self, call: Call, old: str, new: str) -> None:
        """The SIP side moved to another codec mid-call (re-INVITE): the browser codec stays
        what was negotiated with it, so the track switches between relaying payloads and
        encoding PCM (browser -> SIP follows ``call.media_path`` in :meth:`rtp_from_browser`)."""
        track = self.out_track
        if track is not None:
            track.clear()
        self._rx_decoder = self._tx_encoder = None
        self._tx_resamplers.clear()
        self.stats.transcoded = new != "packet"
        log.info(
            "call {session_id}: browser {browser} <-> SIP {sip}: now {path} path",
            session_id=call.session_id,
            browser=self.stats.browser_codec,
            sip=call.codec,
            path=new,
        )

    # -- what the peer connection receives ------------------------------------------------
    def rtp_from_browser(self, pt: int, ssrc: int, timestamp: int, payload: bytes) -> bool:
        """One audio RTP packet off aiortc's receiver, before its jitter buffer and decoder.
        True when it was handled here (relayed to SIP, a DTMF event, or dropped); False: the
        frame path (or not answered yet), aiortc decodes it."""
        self._rx_rtp += 1
        if pt == self._event_pt and self._event_pt is not None:
            self._browser_event(pt, ssrc, timestamp, payload)
            return True
        call = self.call
        if pt == self._audio_pt and call is not None and call.media_path == "packet":
            if not call.ended and payload:
                self._relay_to_sip(call, payload)
            return True
        return False

    def audio_from_browser(self, pcm: PCM, rate: int) -> None:
        """Frame path: audio aiortc decoded."""
        call = self.call
        if call is None or call.ended:
            return
        self.stats.frames_from_browser += 1
        call.send_audio(pcm, rate)

    def video_track_added(self) -> None:
        self.stats.video_tracks += 1

    def video_frame_decoded(self) -> None:
        """aiortc's video receiver is never started (the video is read off the socket), so this
        never happens; should aiortc decode a frame anyway it is counted (and dropped, so
        nothing queues)."""
        self.stats.video_frames_decoded += 1
        if self.stats.video_frames_decoded == 1:
            log.warn("call {session_id}: aiortc decoded browser video (it should never decode any)", session_id=self.session_id)

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

    def peer_state_changed(self, state: str) -> None:
        log.info("call {session_id}: WebRTC {state}", session_id=self.session_id, state=state)
        if state == "connected":
            if self._ice_timer is not None and self._ice_timer.active():
                self._ice_timer.cancel()
            self._ice_timer = None
            self._start_direct()
            self._start_video()
            self._start_watchdog()
        elif state == "failed":
            self._end_from_browser("ice_failed")
        elif state == "closed" and not self.closed:
            # the browser closed its peer connection (DTLS close_notify): aiortc closes ours
            self._end_from_browser("ice_failed")

    def _ice_timeout(self) -> None:
        self._ice_timer = None
        if self.peer.state != "connected":
            self._end_from_browser("ice_timeout")

    def _relay_to_sip(self, call: Call, payload: bytes) -> None:
        """Packet path: one browser payload to SIP undecoded (its duration read from the payload)."""
        try:
            samples = packet_samples(self._codec, payload)
        except RemoteProtocolError:
            self.stats.bad_packets += 1
            return
        self.stats.packets_relayed += 1
        self.stats.frames_from_browser += 1
        call.send_payload(payload, samples)

    def _browser_event(self, pt: int, ssrc: int, timestamp: int, payload: bytes) -> None:
        assert self._dtmf_rx is not None
        packet = rtp.RtpPacket(payload_type=pt, sequence=0, timestamp=timestamp, ssrc=ssrc, payload=payload)
        try:
            digits = self._dtmf_rx.receive(packet, time.monotonic())
        except RemoteProtocolError:
            return
        call = self.call
        for d in digits:
            self.stats.dtmf_from_browser += 1
            log.info("call {session_id}: DTMF {digit} from the browser (RFC 4733)", session_id=self.session_id, digit=d.digit)
            if call is not None and not call.ended:
                call.send_dtmf(d.digit, max(40, min(d.duration_ms, 2000)))

    # -- lost browser: the inbound-media watchdog --------------------------------------------
    # aiortc has no "disconnected" ICE/connection state: a browser whose network vanishes stays
    # "connected" until aioice's consent checks give up (6 x 5 s = ~30 s). So while connected,
    # the leg checks that *something* arrives from the browser (RTP, RTCP, DTLS/SCTP: the DTLS
    # transport's packet counter, plus the audio RTP seen by the receiver hook); silence on the
    # wire for ice_timeout_s ends the call with cause ``ice_failed`` (BYE to SIP).
    # Browsers send audio RTP continuously (a muted track sends silence) and RTCP every few seconds.

    def _start_watchdog(self) -> None:
        if self._watchdog is not None or self.closed:
            return
        self._rx_seen = self._rx_counters()
        self._rx_at = self.reactor.seconds()
        self._watchdog = self.reactor.callLater(self._watchdog_interval(), self._watchdog_tick)

    def _watchdog_interval(self) -> float:
        return max(0.1, min(1.0, self.settings.ice_timeout_s / 4))

    def _rx_counters(self) -> tuple[int, int]:
        """(packets received by the peer connection's DTLS transports, audio RTP packets)."""
        return self.peer.packets_received(), self._rx_rtp

    def _watchdog_tick(self) -> None:
        self._watchdog = None
        if self.closed or self.peer.state != "connected":
            return
        now = self.reactor.seconds()
        seen = self._rx_counters()
        if seen != self._rx_seen:
            self._rx_seen, self._rx_at = seen, now
        elif now - self._rx_at >= self.settings.ice_timeout_s:
            log.info(
                "call {session_id}: nothing received from the browser for {s:.1f} s: media lost",
                session_id=self.session_id,
                s=now - self._rx_at,
            )
            self._end_from_browser("ice_failed")
            return
        self._watchdog = self.reactor.callLater(self._watchdog_interval(), self._watchdog_tick)

    def _end_from_browser(self, cause: str) -> None:
        call = self.call
        if call is not None and not call.ended:
            call.hangup(cause)  # the manager notifies us through call_ended (cause is not client_hangup)
        else:
            self.close()

    # -- IngressLeg -------------------------------------------------------------------------
    def call_progress(self, call: Call, state: CallState) -> None:
        if state is CallState.ANSWERED:
            self.stats.transcoded = call.media_path != "packet"
            log.info(
                "call {session_id}: browser {browser} <-> SIP {sip}: {path} path ({what})",
                session_id=call.session_id,
                browser=self.stats.browser_codec,
                sip=call.codec,
                path=call.media_path,
                what="transcoded" if self.stats.transcoded else "payloads relayed, nothing decoded",
            )
        self.signal({"type": "progress", "state": state.value})

    def call_ended(self, call: Call, cause: str, status: int | None) -> None:
        msg: dict[str, Any] = {"type": "ended", "cause": cause}
        if status is not None:
            msg["status"] = status
        self.signal(msg)
        self._close_hub(cause)
        self.close()

    def _close_hub(self, cause: str) -> None:
        """The call is over: every watcher gets ``ended`` with its cause."""
        hub = self.hub
        if hub is not None and hub.caller is self:
            hub.close(cause)

    def dtmf_received(self, call: Call, digit: str, method: str) -> None:
        self.signal({"type": "dtmf", "digit": digit, "method": method})

    def audio_from_sip(self, call: Call, pcm: PCM, rate: int) -> None:
        if self._direct is not None and self._audio_pt is not None:
            self._send_pcm_direct(pcm, rate)
            return
        if self.out_track is not None:
            self.out_track.push(pcm, rate)
            self.stats.frames_to_browser += 1

    # -- direct audio (webrtc_direct) --------------------------------------------------------
    def _start_direct(self) -> None:
        """DTLS is up: send and receive the call's audio RTP here instead of through aiortc."""
        if self._direct is not None or self.closed or self.out_track is None or self._audio_pt is None:
            return
        if not self.settings.direct_audio:
            return
        pts = {self._audio_pt} | ({self._event_pt} if self._event_pt is not None else set())
        direct = self.peer.start_direct(pts, self._direct_rtp)
        if direct is not None:
            self._direct = direct
            self.out_track.direct = True

    def _direct_rtp(self, pt: int, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        """One audio RTP packet from the browser (already SRTP-unprotected)."""
        self._rx_rtp += 1
        if pt == self._event_pt:
            if self._dtmf_rx is not None:
                self._browser_event(pt, 0, ts, payload)
            return
        call = self.call
        if call is None or call.ended or not payload or call.stream is None:
            return  # not answered yet (or over): nothing to send it to
        if call.media_path == "packet":
            self._relay_to_sip(call, payload)
            return
        dec = self._rx_decoder
        if dec is None:
            dec = self._rx_decoder = create_decoder(self._codec)
        try:
            pcm = dec.decode(payload)
        except RemoteProtocolError:
            self.stats.bad_packets += 1
            return
        self.stats.frames_from_browser += 1
        call.send_audio(pcm, dec.sample_rate)

    def _send_pcm_direct(self, pcm: PCM, rate: int) -> None:
        """Frame path toward the browser: encode SIP's decoded audio and send it at once."""
        assert self._direct is not None and self._audio_pt is not None
        enc = self._tx_encoder
        if enc is None or (self._codec == "OPUS" and rate in _OPUS_INPUT_RATES and enc.info.sample_rate != rate):
            info = get_codec(self._codec)
            if self._codec == "OPUS" and rate in _OPUS_INPUT_RATES:
                # libopus encodes narrow/wide band input at its own rate: no resampling up to
                # 48 kHz and a cheaper encode (a phone's audio has no more band to lose); the
                # RTP clock stays 48 kHz (RFC 7587), so the timestamp step stays 960
                info = replace(info, sample_rate=rate, frame_samples=rate // 50, codec_frame_samples=rate // 50)
            enc = self._tx_encoder = create_encoder(info)
            self._tx_step = info.frame_samples * info.rtp_clock_rate // info.sample_rate
        if rate != enc.info.sample_rate:
            rs = self._tx_resamplers.get(rate)
            if rs is None:
                rs = self._tx_resamplers[rate] = Resampler(rate, enc.info.sample_rate)
            pcm = rs.resample(pcm)
        for payload in enc.encode(pcm):
            self._direct.send(self._audio_pt, payload, self._tx_step)
            self.stats.frames_to_browser += 1

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop media and close the peer connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self._ice_timer is not None and self._ice_timer.active():
            self._ice_timer.cancel()
        self._ice_timer = None
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        self._close_hub(getattr(self.call, "end_cause", None) or "client_hangup")
        if self._video is not None:
            self._video.stop()
            self._video = None
        self.peer.close()

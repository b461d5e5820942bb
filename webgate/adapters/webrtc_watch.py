"""One WebRTC watcher of a web call's video and data: its own peer connection (issue 14).

A watcher (an agent's browser, a supervisor's aiortc client) sends a ``watch`` with a recvonly
offer; :class:`WebRtcWatcher` is that watch: a :class:`~webgate.legs.hub_types.HubWatcher` of the
call's hub on an aiortc ``RTCPeerConnection`` of its own.

- **Answer.** The video section is answered ``sendonly`` with ONLY the caller's codec, one
  payload type (the watcher's own number for it): VP8, or H.264 packetization-mode 1 with the
  caller's ``profile-level-id`` (:func:`watch_video_format`), with ``nack``, ``nack pli``,
  ``ccm fir`` and ``goog-remb`` as offered, no RTX. Its track never yields a frame, so aiortc
  creates no encoder; the video is sent by :class:`~webgate.adapters.webrtc_video.WatcherVideo`
  from DTLS connected on. A watcher that cannot get the caller's video (no video, or a codec it
  cannot take as it is) gets its video section ``inactive``.
- **Audio** (supervisors: ``audio=True``, the ``watch`` message's ``audio: true``). The watcher's
  recvonly audio section is answered ``sendonly`` with its first Opus, PCMU or PCMA payload type;
  the call's audio, both parties mixed (:mod:`webgate.legs.monitor`, started by the hub only
  while such a watcher is present), goes into a
  :class:`~webgate.adapters.webrtc.SipAudioTrack` (the caller's own track type: 20 ms pacing at
  the codec's rate) that aiortc encodes. Without ``audio`` (or without a usable audio section)
  an audio section is ``inactive``.
- **Data.** The watcher's channels (``webgate`` by default) go to the caller by label, with the
  watcher's identity; the caller's messages come on the watcher's channel of their label, or on
  one the gateway opens (:mod:`webgate.adapters.webrtc_data`).
- **End.** ``ended(cause)`` from the hub (the call ended) or :meth:`WebRtcWatcher.close` (the
  watcher hung up or its WebSocket closed) closes the peer connection; ICE that does not connect
  within ``[webrtc] ice_timeout_s``, or fails, ends the watch (``ice_timeout`` / ``ice_failed``).
  ``on_end(watcher, cause)`` tells the signalling side.

Remote candidates pass the same :class:`~webgate.security.candidates.CandidateGate` as a call's.
All asyncio work is started through :mod:`webgate.adapters.aio`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription as AiortcSdp
from twisted.logger import Logger

from webgate.adapters import aio
from webgate.adapters.webrtc import (
    InvalidOffer,
    SipAudioTrack,
    add_remote_candidate,
    ice_servers_for_aiortc,
)
from webgate.adapters.webrtc_data import DataChannels
from webgate.adapters.webrtc_video import WatcherVideo
from webgate.legs.hub import MediaHub
from webgate.legs.hub_types import FlvVideo, RtpVideo
from webgate.legs.webrtc import WebRtcSettings
from webgate.legs.webrtc_media import VideoFormat
from webgate.logsafe import safe
from webgate.proto import h264
from webgate.proto.errors import RemoteProtocolError
from webgate.security.candidates import CandidateGate

__all__ = ["WebRtcWatcher", "watch_video_format"]

log = Logger()

_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
_AST_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_FEEDBACK = {("nack", None), ("nack", "pli"), ("ccm", "fir"), ("goog-remb", None)}
_DEFAULT_H264_PROFILE = "42e01f"  # constrained baseline 3.1: until an RTMP caller's SPS is known
_AUDIO_RATES = {"OPUS": 48000, "PCMU": 8000, "PCMA": 8000}  # what a supervisor's audio may be sent as


def watch_video_format(call: Any) -> VideoFormat | None:
    """The video a WebRTC watcher of ``call`` is answered with (None: none for it).

    A WebRTC caller: the codec its browser sends (``leg.video_format``, from its answer). An
    RTMP caller: H.264 with the profile of its SPS (the only FLV codec a WebRTC watcher takes
    as it is), or of the default until its first video; VP8 for Sorenson/VP6 with ``[video]
    transcode``; None once its video turned out to be another codec."""
    leg: Any = getattr(call, "leg", None)
    if hasattr(leg, "video_format"):
        fmt = leg.video_format
        return fmt if isinstance(fmt, VideoFormat) else None
    hub = getattr(call, "hub", None)
    if isinstance(hub, MediaHub) and hub.stats.codec is not None and hub.video_codec_for("rtp") != "H264":
        # Sorenson/VP6 re-encoded with [video] transcode: VP8; any other: none for it
        return VideoFormat("VP8") if hub.video_codec_for("rtp") == "VP8" else None
    profile = _DEFAULT_H264_PROFILE
    keyframe = hub.last_keyframe() if isinstance(hub, MediaHub) else None
    if keyframe is not None and keyframe[0] == "H264":
        sps = next((n for n in h264.split_annexb(keyframe[1]) if h264.nal_type(n) == h264.NAL_SPS), None)
        if sps is not None:
            try:
                profile = h264.profile_level_id(sps)
            except RemoteProtocolError:
                pass
    return VideoFormat("H264", (("packetization-mode", "1"), ("profile-level-id", profile)))


class _NoFrames(MediaStreamTrack):
    """The watcher's video track as aiortc's sender sees it: it never yields a frame, so aiortc
    encodes nothing (the video is written below it by :class:`WatcherVideo`)."""

    kind = "video"

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        await aio.wait_cancelled()  # cancelled when the sender stops
        raise MediaStreamError


class WebRtcWatcher:
    """One WebRTC watch of a call's video and data (implements ``webgate.legs.hub_types.HubWatcher``).

    ``signal(msg)`` sends a JSON-able dict to the watcher's WebSocket; ``on_end(watcher,
    cause)`` is called once when the watch is over, whichever side ended it."""

    wants = "rtp"

    def __init__(
        self,
        hub: MediaHub,
        *,
        identity: str | None,
        settings: WebRtcSettings,
        signal: Callable[[dict[str, Any]], None],
        reactor: Any,
        client: str = "",
        on_end: Callable[[WebRtcWatcher, str], None] | None = None,
        audio: bool = False,
    ) -> None:
        self.hub = hub
        self.audio = audio  # the call's audio, both parties mixed (read by the hub at join)
        self.identity = identity
        self.settings = settings
        self.signal = signal
        self.reactor = reactor
        self.client = client
        self.session_id = hub.session_id
        self.on_end = on_end
        self.pc: RTCPeerConnection | None = None
        self.video: WatcherVideo | None = None
        self.channels: DataChannels | None = None
        self.candidates = CandidateGate(settings.max_remote_candidates, settings.allow_private_candidates)
        self.video_info: dict[str, Any] | None = None  # the caller's video as last announced
        self.joined = False
        self.announced = False  # ``watching`` sent: later video_started() calls are ``video`` events
        self.closed = False
        self.end_cause: str | None = None
        self._track: _NoFrames | None = None
        self._video_tr: Any = None
        self._audio_track: SipAudioTrack | None = None
        self._audio_tr: Any = None
        self.audio_codec: str | None = None  # negotiated for the mixed audio (OPUS, PCMU, PCMA)
        self._video_pt: int | None = None
        self._video_codec: str | None = None
        self._header_ids: dict[str, int] = {}
        self._ice_timer: Any = None

    # -- joining ------------------------------------------------------------------------------
    def join(self) -> dict[str, Any] | None:
        """Join the hub (raises :class:`~webgate.legs.hub_types.WatchRefused`); returns the ``video``
        object of the ``watching`` message (None: the caller has sent no video yet)."""
        self.hub.add_watcher(self)
        self.joined = True
        return self.video_info

    async def answer(self, offer_sdp: str, fmt: VideoFormat | None) -> str:
        """Apply the watcher's offer and answer it with ``fmt`` (the caller's codec; None: no
        video) and the data channels; returns the answer SDP with the gateway's candidates.
        Raises :class:`~webgate.adapters.webrtc.InvalidOffer`."""
        offer_sdp, refused = self.candidates.filter_sdp(offer_sdp)
        for r in refused:
            log.info("watch {client}: offer candidate dropped: {reason}", client=self.client, reason=safe(r.message))
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers_for_aiortc(self.settings.ice_servers)))
        self.channels = DataChannels(pc, self._data_from_watcher)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        if fmt is not None:
            self._track = _NoFrames()
            self._video_tr = pc.addTransceiver(self._track, direction="sendonly")
        if self.audio:
            self._audio_track = SipAudioTrack(48000)
            self._audio_tr = pc.addTransceiver(self._audio_track, direction="sendonly")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as e:  # noqa: BLE001 - aiortc raises ValueError, KeyError, OperationError... on garbage
            raise InvalidOffer(f"unusable SDP offer: {type(e).__name__}: {e}") from None
        if self.closed:
            raise InvalidOffer("the watch ended")
        offer: AiortcSdp | None = None
        if self._video_tr is not None or self._audio_tr is not None:
            try:  # once for both sections
                offer = AiortcSdp.parse(offer_sdp)
            except Exception:  # noqa: BLE001 - parsed once already by setRemoteDescription
                offer = None
        self._choose_codec(offer, fmt)
        self._choose_audio(offer)
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as e:  # noqa: BLE001 - any aiortc failure on a remote offer is the offer's fault
            raise InvalidOffer(f"cannot answer the offer: {type(e).__name__}: {e}") from None
        if not self.closed:
            self._ice_timer = self.reactor.callLater(self.settings.ice_timeout_s, self._ice_timeout)
        return str(pc.localDescription.sdp)

    @staticmethod
    def _offered(offer: AiortcSdp | None, tr: Any) -> Any | None:
        """``tr``'s media section of the (applied) offer; None when it has none."""
        if offer is None or tr.mid is None:
            return None
        try:
            return offer.media[tr._get_mline_index()]
        except Exception:  # noqa: BLE001 - the offer was applied: not expected
            return None

    def _choose_codec(self, offer: AiortcSdp | None, fmt: VideoFormat | None) -> None:
        """Only the caller's codec in the video answer (the watcher's payload type for it); every
        other audio/video section inactive."""
        assert self.pc is not None
        tr = self._video_tr
        for other in self.pc.getTransceivers():
            if other is not tr and other is not self._audio_tr:
                other.direction = "inactive"
        if tr is None or fmt is None or tr.mid is None:
            return
        media = self._offered(offer, tr)
        if media is None:
            tr.direction = "inactive"
            return
        chosen = _pick(media.rtp.codecs, fmt)
        if chosen is None or media.direction not in (None, "recvonly", "sendrecv"):
            log.info("watch {client}: the watcher cannot take {codec}: no video for it", client=self.client, codec=fmt.codec)
            tr.direction = "inactive"
            return
        tr._codecs = [chosen]
        self._header_ids = {x.uri: int(x.id) for x in (tr._headerExtensions or [])}
        tr._headerExtensions = [x for x in (tr._headerExtensions or []) if x.uri in (_MID_URI, _AST_URI)]
        self._video_pt = int(chosen.payloadType)
        self._video_codec = fmt.codec

    def _choose_audio(self, offer: AiortcSdp | None) -> None:
        """Supervisor audio: the watcher's first Opus/PCMU/PCMA codec, or no audio (the hub's
        mixer then stops unless another watcher listens)."""
        tr = self._audio_tr
        if tr is None:
            return
        chosen = None
        media = self._offered(offer, tr)
        if media is not None and media.direction in (None, "recvonly", "sendrecv"):
            chosen = next((c for c in media.rtp.codecs if str(c.mimeType).split("/")[-1].upper() in _AUDIO_RATES), None)
        if chosen is None:
            log.info("watch {client}: no audio section it can take: no audio for it", client=self.client)
            if tr.mid is not None:
                tr.direction = "inactive"
            self.audio = False
            self.hub.refresh_audio()
            return
        chosen = copy.deepcopy(chosen)
        chosen.rtcpFeedback = []
        tr._codecs = [chosen]
        self.audio_codec = str(chosen.mimeType).split("/")[-1].upper()
        assert self._audio_track is not None
        self._audio_track.set_rate(_AUDIO_RATES[self.audio_codec])

    def admit_candidate(self, candidate: str) -> None:
        """Count one trickled candidate against the watch's cap and address rules; raises
        :class:`~webgate.security.candidates.CandidateRefused`."""
        self.candidates.check(candidate)

    async def add_candidate(self, cand: dict[str, Any] | None) -> None:
        if self.pc is not None and not self.closed:
            await add_remote_candidate(self.pc, cand)

    # -- the connection ------------------------------------------------------------------------
    def _on_connection_state(self) -> None:
        pc = self.pc
        if pc is None or self.closed:
            return
        state = pc.connectionState
        log.info("watch {client} of {session_id}: WebRTC {state}", client=self.client, session_id=self.session_id, state=state)
        if state == "connected":
            self._cancel_ice_timer()
            self._start_video()
        elif state in ("failed", "closed"):
            self.close("ice_failed")

    def _start_video(self) -> None:
        tr = self._video_tr
        if self.video is not None or tr is None or self._video_pt is None or self._video_codec is None:
            return
        video = WatcherVideo(
            tr.sender, self._video_pt, self._video_codec,
            keyframe_wanted=lambda: self.hub.keyframe_wanted(self),
            bitrate=lambda bps: self.hub.report_bitrate(self, bps),
            mid=tr.mid, mid_id=self._header_ids.get(_MID_URI), abs_send_time_id=self._header_ids.get(_AST_URI),
        )
        self.video = video
        if not video.start():
            self.video = None

    def _ice_timeout(self) -> None:
        self._ice_timer = None
        if self.pc is not None and self.pc.connectionState != "connected":
            self.close("ice_timeout")

    def _cancel_ice_timer(self) -> None:
        if self._ice_timer is not None and self._ice_timer.active():
            self._ice_timer.cancel()
        self._ice_timer = None

    # -- data ------------------------------------------------------------------------------
    def _on_datachannel(self, channel: Any) -> None:
        if self.channels is not None:
            self.channels.adopt(channel)

    def _data_from_watcher(self, label: str, data: str | bytes) -> None:
        if not self.closed:
            self.hub.data_from_watcher(self, label, data)

    # -- HubWatcher ------------------------------------------------------------------------
    def video_started(self, codec: str | None, width: int | None, height: int | None) -> None:
        """The caller's video: in ``watching`` when it is already known, else a ``video`` event."""
        if codec is not None and self.pc is not None and self._video_codec != codec:
            codec = None  # negotiated before the caller's video was known, and not that codec
        self.video_info = {"codec": codec, "width": width, "height": height}
        if self.announced and not self.closed:
            self.signal({"type": "video", "codec": codec, "width": width, "height": height, "session_id": self.session_id})

    def rtp_video(self, packet: RtpVideo) -> None:
        video = self.video
        if video is not None:
            video.send(packet, own_numbers=self.hub.source == "flv")

    def flv_video(self, tag: FlvVideo) -> None:
        """A WebRTC watcher takes RTP only."""

    def audio_pcm(self, pcm: Any, rate: int) -> None:
        """The call's mixed audio (every 20 ms): queued on the track, which aiortc encodes."""
        track = self._audio_track
        if track is not None and self.audio and self.audio_codec is not None and not self.closed:
            track.push(pcm, rate)

    def data(self, label: str, data: str | bytes) -> None:
        if self.channels is not None and not self.closed:
            self.channels.send(label, data)

    def ended(self, cause: str) -> None:
        """The call ended (the hub is closing)."""
        self.joined = False
        self._finish(cause)

    # -- end -------------------------------------------------------------------------------
    def close(self, cause: str = "client_hangup") -> None:
        """End the watch from this side (hung up, WebSocket gone, ICE lost)."""
        if self.closed:
            return
        if self.joined:
            self.joined = False
            self.hub.remove_watcher(self)
        self._finish(cause)

    def _finish(self, cause: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.end_cause = cause
        self._cancel_ice_timer()
        if self.video is not None:
            self.video.stop()
        if self.channels is not None:
            self.channels.close()
        if self._track is not None:
            self._track.stop()
        if self._audio_track is not None:
            self._audio_track.stop()
        if self.pc is not None:
            aio.spawn(self.pc.close(), "watcher RTCPeerConnection.close", session_id=self.session_id)
        log.info("watch {client} of {session_id} ended: {cause}", client=self.client, session_id=self.session_id, cause=cause)
        if self.on_end is not None:
            self.on_end(self, cause)


def _pick(offered: list[Any], fmt: VideoFormat) -> Any:
    """The watcher's offered codec matching the caller's (a copy, answer-ready), or None."""
    want = fmt.codec.upper()
    candidates = [c for c in offered if str(c.mimeType).split("/")[-1].upper() == want]
    if want == "H264":
        candidates = [c for c in candidates if str(c.parameters.get("packetization-mode", "0")) == "1"]
        profile = fmt.param("profile-level-id", _DEFAULT_H264_PROFILE).lower()

        def rank(c: Any) -> int:
            offered_profile = str(c.parameters.get("profile-level-id", "42e01f")).lower()
            if offered_profile[:4] == profile[:4]:
                return 0
            if offered_profile[:2] == profile[:2]:
                return 1
            return 2

        candidates.sort(key=rank)
    if not candidates:
        return None
    chosen = copy.deepcopy(candidates[0])
    chosen.rtcpFeedback = [f for f in chosen.rtcpFeedback if (f.type, f.parameter) in _FEEDBACK]
    if want == "H264":
        params = dict(chosen.parameters)
        params["packetization-mode"] = 1
        params["profile-level-id"] = fmt.param("profile-level-id", _DEFAULT_H264_PROFILE)
        params.setdefault("level-asymmetry-allowed", 1)
        chosen.parameters = params
    else:
        chosen.parameters = {}
    return chosen

"""The WebRTC peer connection of a browser call: aiortc's ``RTCPeerConnection``, protocol I/O only.

:class:`WebRtcPeer` owns one call's peer connection: offer/answer (codec preferences, the
telephone-event answered, video answered ``recvonly`` in the codecs a watcher can take), ICE
candidates, the connection state, the hook that takes audio RTP off aiortc's receiver, the task
that reads decoded audio off aiortc's track, the data channels (:mod:`webgate.adapters.webrtc_data`),
the direct-SRTP audio of :mod:`webgate.adapters.webrtc_direct` and the caller's video read off
the socket (:mod:`webgate.adapters.webrtc_video`).
Everything it receives goes to the call leg (:class:`webgate.legs.webrtc.WebRtcCallLeg`), which
holds what the call does with the media. :class:`SipAudioTrack` is the leg's paced audio toward
the browser as an aiortc track.

:class:`WebRtcLeg` is the leg the web side (``webgate/web``) makes per call: the call leg wired to
its peer, with the signalling methods (``prepare_answer``, ``complete_answer``,
``admit_candidate``, ``add_candidate``, ``close``).

Remote ICE candidates (the offer's and trickled ones) pass the call's
:class:`~webgate.security.candidates.CandidateGate` first: a cap for the call's life and no
address of the gateway's own host or link (``[webrtc] max_remote_candidates`` /
``allow_private_candidates``).

DTMF from the browser: aiortc does not negotiate ``telephone-event`` by itself, so the peer adds
the offer's telephone-event (at the chosen codec's clock rate) to the answer; its packets are
taken off the receiver before aiortc would try to decode them.

Video (issue 14): the first video section is answered ``recvonly`` with only VP8 and H.264
packetization-mode 1, in the offer's order, without RTX and without header extensions but
``mid`` (:meth:`WebRtcPeer._accept_video`); an offer with neither, and every further video
section, is answered ``inactive``. aiortc's video receiver is never started (its ``receive`` is
replaced on the instance): no decoder thread, no jitter buffer, and a video packet that reaches
aiortc anyway (before the socket hook, or a peer ignoring the answer) is discarded by its RTP
router, which has no receiver for it. From DTLS connected on the video RTP is read off the
socket for the call's hub (:class:`~webgate.adapters.webrtc_video.CallerVideo`).

All asyncio work is started through :mod:`webgate.adapters.aio`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription as AiortcSdp
from aiortc.sdp import candidate_from_sdp
from twisted.logger import Logger

from webgate.adapters import aio
from webgate.adapters.webrtc_data import DataChannels
from webgate.adapters.webrtc_direct import DirectAudio
from webgate.adapters.webrtc_video import CallerVideo, forwardable
from webgate.legs.webrtc import AnswerInfo, WebRtcCallLeg, WebRtcSettings
from webgate.legs.webrtc_media import SipAudioSource, VideoFormat
from webgate.logsafe import safe
from webgate.media.frames import audio_frame_pcm
from webgate.security.candidates import CandidateGate

log = Logger()

__all__ = ["InvalidOffer", "SipAudioTrack", "WebRtcLeg", "WebRtcPeer", "add_remote_candidate", "ice_servers_for_aiortc"]

# aiortc codec names (mimeType subtype, lower case) by the names the trunk config uses
_AIORTC_NAMES = {"pcmu": "pcmu", "pcma": "pcma", "g722": "g722", "opus": "opus"}


def ice_servers_for_aiortc(servers: tuple[dict[str, Any], ...]) -> list[RTCIceServer]:
    """An explicit list (possibly empty): aiortc then never asks its default public STUN server."""
    return [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in servers]


async def add_remote_candidate(pc: RTCPeerConnection, cand: dict[str, Any] | None) -> None:
    """A peer's trickled candidate (``None`` or an empty candidate: end of candidates), already
    admitted by its connection's :class:`~webgate.security.candidates.CandidateGate`."""
    if not cand or not cand.get("candidate"):
        await pc.addIceCandidate(None)
        return
    text = str(cand["candidate"])
    text = text.removeprefix("candidate:")
    c = candidate_from_sdp(text)
    c.sdpMid = cand.get("sdpMid")
    c.sdpMLineIndex = cand.get("sdpMLineIndex")
    await pc.addIceCandidate(c)


async def _never_receive(parameters: Any) -> None:
    """Stands in for ``RTCRtpReceiver.receive`` of a forwarded video: aiortc never starts that
    receiver (no decoder thread, no jitter buffer, no RTP routed to it)."""


class InvalidOffer(Exception):
    """The browser's SDP offer is unusable (garbage, or no audio we can receive)."""


class SipAudioTrack(SipAudioSource, AudioStreamTrack):
    """The leg's :class:`~webgate.legs.webrtc_media.SipAudioSource` as the aiortc track the browser
    hears: ``recv`` waits until the next frame is due and returns it. While the leg sends the
    audio itself (``direct``), ``recv`` waits until the track is stopped."""

    kind = "audio"

    def __init__(self, rate: int, max_queue_ms: int = 200) -> None:
        AudioStreamTrack.__init__(self)
        SipAudioSource.__init__(self, rate, max_queue_ms)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if self.direct:
            await aio.wait_cancelled()  # cancelled when the sender stops
        wait = self.due_in(time.monotonic())
        if wait > 0:
            await aio.sleep(wait)
        if self.direct:
            await aio.wait_cancelled()
        return self.next_frame()


class WebRtcPeer:
    """One browser call's ``RTCPeerConnection`` (implements :class:`webgate.legs.webrtc.PeerLink`).

    :meth:`bind` gives it the leg that hears what it receives."""

    def __init__(self, settings: WebRtcSettings) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers_for_aiortc(settings.ice_servers)))
        self.leg: WebRtcCallLeg | None = None
        self.track: SipAudioTrack | None = None
        self.direct: DirectAudio | None = None
        self.video: CallerVideo | None = None
        self._video_tr: Any = None  # the video transceiver answered recvonly
        self._video_pts: dict[int, str] = {}
        self._answer: RTCSessionDescription | None = None
        self._tasks: list[Any] = []  # asyncio tasks (aio.spawn)
        self.data: DataChannels | None = None

    def bind(self, leg: WebRtcCallLeg) -> None:
        self.leg = leg
        self.data = DataChannels(self.pc, leg.data_from_browser, leg.data_channel_opened)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    def _leg(self) -> WebRtcCallLeg:
        assert self.leg is not None, "WebRtcPeer.bind() first"
        return self.leg

    # -- offer / answer -------------------------------------------------------------------
    async def negotiate(self, offer_sdp: str, codec_order: tuple[str, ...] | list[str], track: SipAudioTrack) -> AnswerInfo:
        """Apply the browser's offer (``track`` sends on its audio) and build (not yet apply)
        the answer, preferring the codecs of ``codec_order``. Raises :class:`InvalidOffer`."""
        caps = RTCRtpSender.getCapabilities("audio").codecs
        order = [_AIORTC_NAMES[c.lower()] for c in codec_order if c.lower() in _AIORTC_NAMES]
        order += [n for n in ("opus", "g722", "pcmu", "pcma") if n not in order]
        prefs = [c for n in order for c in caps if c.mimeType.lower() == "audio/" + n]
        # aiortc negotiates codecs inside setRemoteDescription, so the transceiver that will
        # carry the call (with its preferences and our track) must exist before it; the
        # offer's first audio section binds to it.
        self.track = track
        main = self.pc.addTransceiver(track, direction="sendrecv")
        main.setCodecPreferences(prefs)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as e:  # noqa: BLE001 - aiortc raises ValueError, KeyError, IndexError... on garbage
            raise InvalidOffer(f"unusable SDP offer: {type(e).__name__}: {e}") from None
        if main.mid is None:
            raise InvalidOffer("the offer has no audio section")
        audio_pt: int | None = None
        event: tuple[int, int] | None = None
        if main._codecs:  # aiortc has no public API for the negotiated codecs
            audio_pt = main._codecs[0].payloadType
            event = self._add_telephone_event(main, offer_sdp)
        video = self._accept_video()
        try:
            self._answer = await self.pc.createAnswer()
        except Exception as e:  # noqa: BLE001 - any aiortc failure on a remote offer is the offer's fault
            raise InvalidOffer(f"cannot answer the offer: {type(e).__name__}: {e}") from None
        codec = self._answer_codec(self._answer.sdp)
        if codec is None:
            raise InvalidOffer("no common audio codec (offer Opus, G722, PCMU or PCMA)")
        media = {"video_pts": tuple(self._video_pts.items()), "video": video, "data": self.pc.sctp is not None}
        if event is None:
            return AnswerInfo(codec, audio_pt, **media)  # type: ignore[arg-type]
        return AnswerInfo(codec, audio_pt, event_pt=event[0], event_rate=event[1], **media)  # type: ignore[arg-type]

    def _accept_video(self) -> VideoFormat | None:
        """Answer the first video section ``recvonly`` with only the codecs a watcher can take as
        they are (VP8, H.264 packetization-mode 1), in the offer's order, without RTX and with
        no header extension but ``mid`` (before ``createAnswer``); every other video section,
        or one without such a codec, ``inactive``. aiortc's receiver of the accepted one is never
        started: the video is read off the socket (:meth:`start_video`). Returns the codec the
        browser will send (the answer's first), or None."""
        chosen: VideoFormat | None = None
        for tr in self.pc.getTransceivers():
            if tr.kind != "video":
                continue
            codecs = [] if chosen is not None or self._video_tr is not None else [
                c for c in (tr._codecs or []) if c.payloadType is not None and forwardable(c.name, c.parameters) is not None
            ]
            if not codecs or tr._offerDirection not in ("recvonly", "sendrecv"):
                tr.direction = "inactive"
                continue
            tr._codecs = codecs
            tr._headerExtensions = [x for x in (tr._headerExtensions or []) if x.uri == "urn:ietf:params:rtp-hdrext:sdes:mid"]
            tr.direction = "recvonly"
            setattr(tr.receiver, "receive", _never_receive)  # aiortc looks it up on the instance
            self._video_tr = tr
            self._video_pts = {int(c.payloadType or 0): str(forwardable(c.name, c.parameters)) for c in codecs}
            first = codecs[0]
            chosen = VideoFormat(self._video_pts[int(first.payloadType or 0)],
                                 tuple((str(k), str(v)) for k, v in (first.parameters or {}).items()))
        return chosen

    @staticmethod
    def _add_telephone_event(main: Any, offer_sdp: str) -> tuple[int, int] | None:
        """Answer the offer's telephone-event (RFC 4733) too, at the audio codec's clock rate
        when offered, so the browser's RTCDTMFSender can send digits. aiortc does not know the
        codec: the leg takes these packets off the receiver before aiortc would decode them.
        Returns (payload type, clock rate), or None when the offer has none."""
        try:
            media = AiortcSdp.parse(offer_sdp).media[main._get_mline_index()]
        except Exception:  # noqa: BLE001 - already parsed once by setRemoteDescription; be safe
            return None
        events = [c for c in media.rtp.codecs if c.mimeType.lower() == "audio/telephone-event"]
        if not events:
            return None
        rate = main._codecs[0].clockRate
        te = next((c for c in events if c.clockRate == rate), None) or next((c for c in events if c.clockRate == 8000), events[0])
        main._codecs.append(copy.deepcopy(te))
        return int(te.payloadType), int(te.clockRate)

    @staticmethod
    def _answer_codec(sdp_text: str) -> str | None:
        """The first codec of the first audio section of an SDP (what both sides send)."""
        in_audio = False
        first_pt: str | None = None
        for line in sdp_text.splitlines():
            if line.startswith("m="):
                if in_audio:
                    break
                in_audio = line.startswith("m=audio")
                if in_audio:
                    parts = line.split()
                    if len(parts) < 4 or parts[1] == "0":
                        return None
                    first_pt = parts[3]
            elif in_audio and first_pt is not None and line.startswith(f"a=rtpmap:{first_pt} "):
                name = line.split(" ", 1)[1].split("/")[0]
                return {"pcmu": "PCMU", "pcma": "PCMA", "g722": "G722", "opus": "opus"}.get(name.lower(), name)
        return None

    async def apply_answer(self) -> str:
        """Apply the answer (aiortc gathers its ICE candidates here); return its SDP."""
        assert self._answer is not None
        await self.pc.setLocalDescription(self._answer)
        self._hook_audio_receiver()
        return str(self.pc.localDescription.sdp)

    def _main_transceiver(self) -> Any:
        """The transceiver that carries the call's audio (None before the offer)."""
        return next((t for t in self.pc.getTransceivers() if t.sender.track is self.track), None)

    def _hook_audio_receiver(self) -> None:
        """Take G.711/Opus payloads (packet path) and telephone-events off the audio receiver before
        aiortc's jitter buffer and decoder; everything else goes on to aiortc unchanged."""
        tr = self._main_transceiver()
        if tr is None:
            return
        receiver = tr.receiver
        original = receiver._handle_rtp_packet  # the one hook point aiortc offers
        take = self._leg().rtp_from_browser

        async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
            if not take(packet.payload_type, packet.ssrc, packet.timestamp, packet.payload):
                await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle_rtp_packet

    async def add_candidate(self, cand: dict[str, Any] | None) -> None:
        """A browser candidate (``None`` or an empty candidate: end of candidates)."""
        await add_remote_candidate(self.pc, cand)

    # -- PeerLink ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    def packets_received(self) -> int:
        transports: dict[int, Any] = {}
        for tr in self.pc.getTransceivers():
            for t in (tr.receiver.transport, tr.sender.transport):
                if t is not None:
                    transports[id(t)] = t
        sctp = getattr(self.pc, "sctp", None)
        if sctp is not None and sctp.transport is not None:
            transports[id(sctp.transport)] = sctp.transport
        # aiortc keeps the count for getStats() (RTCTransportStats.packetsReceived) in a private field
        return sum(int(getattr(t, "_RTCDtlsTransport__rx_packets", 0)) for t in transports.values())

    def start_direct(self, payload_types: set[int], on_rtp: Callable[[int, int, int, bool, bytes], None]) -> DirectAudio | None:
        tr = self._main_transceiver()
        if tr is None:
            return None
        direct = DirectAudio(tr.sender, payload_types, on_rtp)
        if not direct.start():
            return None
        self.direct = direct
        return direct

    def start_video(self, on_rtp: Callable[[str, int, int, bool, bytes], None]) -> CallerVideo | None:
        tr = self._video_tr
        if tr is None or not self._video_pts:
            return None
        video = CallerVideo(tr.sender, self._video_pts, on_rtp)
        if not video.start():
            return None
        self.video = video
        return video

    def send_data(self, label: str, data: str | bytes, protocol: str) -> bool:
        return self.data is not None and self.data.send(label, data, protocol)

    def close(self) -> None:
        for t in self._tasks:
            aio.cancel(t)
        self._tasks.clear()
        if self.direct is not None:
            self.direct.stop()
        if self.video is not None:
            self.video.stop()
        if self.data is not None:
            self.data.close()
        if self.track is not None:
            self.track.stop()
        aio.spawn(self.pc.close(), "RTCPeerConnection.close", session_id=self._leg().session_id)

    # -- aiortc events ----------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        leg = self._leg()
        if track.kind == "audio":
            self._tasks.append(aio.spawn(self._consume_audio(track), "webrtc audio consumer", session_id=leg.session_id))
        else:
            leg.video_track_added()
            self._tasks.append(aio.spawn(self._count_video(track), "webrtc video check", session_id=leg.session_id))

    def _on_datachannel(self, channel: Any) -> None:
        """A channel the browser opened: kept open with the session, relayed by its label."""
        if self.data is not None:
            self.data.adopt(channel)

    def _on_connection_state(self) -> None:
        self._leg().peer_state_changed(self.pc.connectionState)

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        leg = self._leg()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            audio = audio_frame_pcm(frame)  # (an audio track's decoder yields AudioFrames; anything else is dropped)
            if audio is not None:
                leg.audio_from_browser(*audio)

    async def _count_video(self, track: MediaStreamTrack) -> None:
        """aiortc's video receiver is never started (:meth:`_accept_video`), so this track never
        yields a frame; should aiortc decode one anyway the leg counts it (nothing queues)."""
        leg = self._leg()
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            leg.video_frame_decoded()


class WebRtcLeg(WebRtcCallLeg):
    """The WebRTC leg of one browser call as the web side sees it: the call leg
    (:class:`~webgate.legs.webrtc.WebRtcCallLeg`) on its own :class:`WebRtcPeer`.

    ``signal(msg)`` sends a JSON-able dict to the browser.
    """

    def __init__(
        self,
        client: str,
        settings: WebRtcSettings,
        signal: Callable[[dict[str, Any]], None],
        reactor: Any,
        video: Any = None,
    ) -> None:
        peer = WebRtcPeer(settings)
        super().__init__(client, settings, signal, reactor, peer, video=video)
        self._peer = peer
        peer.bind(self)
        #: the call's remote ICE candidates: capped for the call's life, no loopback/link-local/...
        self.candidates = CandidateGate(settings.max_remote_candidates, settings.allow_private_candidates)

    @property
    def pc(self) -> RTCPeerConnection:
        """The aiortc peer connection."""
        return self._peer.pc

    async def prepare_answer(self, offer_sdp: str, codec_order: tuple[str, ...] | list[str]) -> str:
        """Apply the browser's offer and build (not yet apply) the answer.

        ``codec_order``: the SIP side's codec preference (trunk config), used to pick the
        codec toward the browser so no transcoding happens where it can be avoided.
        Returns the audio codec the answer chose ("PCMU", "opus", ...).
        Raises :class:`InvalidOffer`.
        """
        track = SipAudioTrack(48000, self.settings.max_playout_ms)
        self.out_track = track
        offer_sdp, refused = self.candidates.filter_sdp(offer_sdp)
        for r in refused:
            log.info("WebRTC {client}: offer candidate dropped: {reason}", client=self.client, reason=safe(r.message))
        answer = await self._peer.negotiate(offer_sdp, codec_order, track)
        return self.answered(answer)

    async def complete_answer(self) -> str:
        """Apply the answer (aiortc gathers its ICE candidates here); return its SDP."""
        sdp = await self._peer.apply_answer()
        self.answer_applied()
        return sdp

    def admit_candidate(self, candidate: str) -> None:
        """Count one trickled candidate (its attribute value) against the call's cap and address
        rules, when it arrives (before or after the answer); raises
        :class:`~webgate.security.candidates.CandidateRefused`. Only admitted candidates go on
        to :meth:`add_candidate`."""
        self.candidates.check(candidate)

    async def add_candidate(self, cand: dict[str, Any] | None) -> None:
        """A trickled browser candidate, admitted by :meth:`admit_candidate` (``None`` or an
        empty candidate: end of candidates)."""
        await self._peer.add_candidate(cand)

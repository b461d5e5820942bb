"""The WebRTC ingress leg: one aiortc ``RTCPeerConnection`` per call.

Media paths (see docs/decisions.md). The answer toward the browser prefers the trunk's own
codec order (PCMU first by default), so with a G.711 trunk (or an Opus one) browser and phone
speak the same codec and the call takes the **packet path**: the leg declares
``packet_codecs`` (the browser's G.711 or Opus codec), the call manager then hands SIP
payloads to :meth:`payload_from_sip` undecoded, :class:`SipAudioTrack` gives them to
aiortc's sender as pre-encoded packets (aiortc only packetizes them), and the browser's RTP
payloads are taken off the audio receiver before aiortc's jitter buffer/decoder and relayed
with :meth:`Call.send_payload`. Nothing is decoded or encoded; each payload's duration comes
from the payload (G.711: its length; Opus: its TOC byte), so ptimes may differ per leg.
Otherwise (G.722 toward the browser, or the phone answered another codec) the call takes the **frame path**: aiortc decodes the browser's
audio (``av.AudioFrame`` -> :meth:`Call.send_audio`) and encodes the PCM that
:meth:`audio_from_sip` queues. The path is ``call.media_path`` and the manager's
``packet_path``/``frame_path`` counters, and it is logged at answer.

DTMF from the browser: aiortc does not negotiate ``telephone-event`` by itself, so the leg
adds the offer's telephone-event (at the chosen codec's clock rate) to the answer; the
browser's ``RTCDTMFSender`` then works, and its RFC 4733 packets are taken off the receiver
(aiortc would otherwise try to decode them) and sent to SIP by the trunk's DTMF method. The
``dtmf`` signalling message (webgate/web/ws.py) does the same. Digits from SIP go to the
browser as ``dtmf`` signalling events (browsers do not surface received RFC 4733).

Video: until the session hub forwards video somewhere, the gateway receives none. The answer
makes every video section ``inactive`` (:meth:`WebRtcLeg._refuse_video`), so aiortc never starts
the video receiver: no decoder thread, no jitter buffer, and video RTP that arrives anyway (a
peer ignoring the answer) is discarded by aiortc's RTP router, which has no receiver for it.
``stats.video_frames_decoded`` counts any frame that still came out of aiortc's video decoder
(it stays 0; ``webgate_webrtc_video_frames_decoded_total`` in /metrics). Data channels are
accepted and kept alive; their messages are counted and dropped (never sent to SIP).

Remote ICE candidates (the offer's and trickled ones) pass the call's
:class:`~webgate.security.candidates.CandidateGate` first: a cap for the call's life and no
address of the gateway's own host or link (``[webrtc] max_remote_candidates`` /
``allow_private_candidates``).

All asyncio work is started through :mod:`webgate.adapters.aio`.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaStreamError
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack
from aiortc.sdp import SessionDescription as AiortcSdp
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame
from twisted.logger import Logger

from webgate.adapters import aio
from webgate.adapters.webrtc_direct import DirectAudio
from webgate.calls.call import Call, CallState
from webgate.config import WebRtcConfig
from webgate.logsafe import safe
from webgate.media.audio import PCM, Framer, Resampler
from webgate.media.codecs import (
    OPUS_SILENCE,
    Decoder,
    Encoder,
    create_decoder,
    create_encoder,
    get_codec,
    frame_to_mono,
    mono_frame,
    opus_packet_samples,
)
from webgate.proto.errors import RemoteProtocolError
from webgate.proto import rtp
from webgate.proto.rtp import DtmfReceiver
from webgate.security.candidates import CandidateGate

log = Logger()

__all__ = ["InvalidOffer", "SipAudioTrack", "WebRtcLeg", "WebRtcSettings", "ice_servers_for_aiortc", "packet_samples"]

# aiortc codec names (mimeType subtype, lower case) by the names the trunk config uses
_AIORTC_NAMES = {"pcmu": "pcmu", "pcma": "pcma", "g722": "g722", "opus": "opus"}
# codecs whose payloads go between browser and SIP untouched when both sides use them
PACKET_CODECS = ("PCMU", "PCMA", "OPUS")
_OPUS_INPUT_RATES = (8000, 12000, 16000, 24000)  # what libopus encodes without resampling (besides 48 kHz)


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


def ice_servers_for_aiortc(servers: tuple[dict[str, Any], ...]) -> list[RTCIceServer]:
    """An explicit list (possibly empty): aiortc then never asks its default public STUN server."""
    return [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in servers]


class InvalidOffer(Exception):
    """The browser's SDP offer is unusable (garbage, or no audio we can receive)."""


class SipAudioTrack(AudioStreamTrack):
    """The audio the browser hears: PCM from the SIP leg, paced in 20 ms frames with pts.

    Frames are produced at one fixed rate per track (``rate``, chosen to match the codec
    negotiated with the browser: 8 kHz for G.711, 16 kHz for G.722, 48 kHz for Opus), so
    aiortc's encoder never resamples; SIP audio at another rate is resampled once here.
    Silence is sent while nothing is queued (before answer, packet loss).

    Packet path: :meth:`push_payload` queues G.711/Opus payloads from SIP as they are; ``recv``
    then returns :class:`EncodedAudio` (paced by each payload's own length) and aiortc only
    packetizes. ``packet_codec`` names the codec (the silence used while nothing is queued).
    """

    kind = "audio"

    def __init__(self, rate: int, max_queue_ms: int = 200) -> None:
        super().__init__()
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

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if self.direct:
            await asyncio.get_running_loop().create_future()  # cancelled when the sender stops
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            self._ts += self._last_samples
            wait = self._t0 + self._ts / self.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.direct:
                await asyncio.get_running_loop().create_future()
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
    video_frames_decoded: int = 0  # frames aiortc's video decoder produced: stays 0 (video is not received)
    data_messages_dropped: int = 0
    data_channels: int = 0
    video_tracks: int = 0
    packets_relayed: int = 0
    bad_packets: int = 0  # packet path: payloads dropped because their framing was invalid
    dtmf_from_browser: int = 0
    browser_codec: str | None = None
    transcoded: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class WebRtcLeg:
    """The ingress leg of one browser call (implements ``webgate.calls.call.IngressLeg``).

    ``signal(msg)`` sends a JSON-able dict to the browser; ``on_done()`` is called once
    the leg has ended (the WebSocket side may then close).
    """

    kind = "webrtc"

    def __init__(
        self,
        client: str,
        settings: WebRtcSettings,
        signal: Callable[[dict[str, Any]], None],
        reactor: Any,
    ) -> None:
        self.client = client
        self.settings = settings
        self.signal = signal
        self.reactor = reactor
        self.call: Call | None = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers_for_aiortc(settings.ice_servers)))
        self.out_track: SipAudioTrack | None = None
        self.stats = LegStats()
        #: the call's remote ICE candidates: capped for the call's life, no loopback/link-local/...
        self.candidates = CandidateGate(settings.max_remote_candidates, settings.allow_private_candidates)
        self.closed = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._channels: list[Any] = []
        self._ice_timer: Any = None
        self._watchdog: Any = None  # the inbound-media watchdog (runs while connected)
        self._rx_seen: tuple[int, int] = (-1, -1)  # (DTLS packets, audio RTP packets) at the last check
        self._rx_at = 0.0  # reactor time the browser was last heard from
        self._rx_rtp = 0  # audio RTP packets seen by the receiver hook
        self._answer: RTCSessionDescription | None = None
        self._audio_pt: int | None = None  # the browser codec's payload type (packet path)
        self._codec = ""  # the browser codec, upper case (set once at answer)
        self._event_pt: int | None = None  # the negotiated telephone-event payload type
        self._dtmf_rx: DtmfReceiver | None = None
        # direct audio (webrtc_direct), from DTLS connected on: the codec work done here
        self._direct: DirectAudio | None = None
        self._rx_decoder: Decoder | None = None
        self._tx_encoder: Encoder | None = None
        self._tx_resamplers: dict[int, Resampler] = {}
        self._tx_step = 0  # RTP clock ticks per encoded frame toward the browser
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    @property
    def session_id(self) -> str | None:
        return self.call.session_id if self.call is not None else None

    # -- offer / answer -------------------------------------------------------------------
    async def prepare_answer(self, offer_sdp: str, codec_order: tuple[str, ...] | list[str]) -> str:
        """Apply the browser's offer and build (not yet apply) the answer.

        ``codec_order``: the SIP side's codec preference (trunk config), used to pick the
        codec toward the browser so no transcoding happens where it can be avoided.
        Returns the audio codec the answer chose ("PCMU", "opus", ...).
        Raises :class:`InvalidOffer`.
        """
        caps = RTCRtpSender.getCapabilities("audio").codecs
        order = [_AIORTC_NAMES[c.lower()] for c in codec_order if c.lower() in _AIORTC_NAMES]
        order += [n for n in ("opus", "g722", "pcmu", "pcma") if n not in order]
        prefs = [c for n in order for c in caps if c.mimeType.lower() == "audio/" + n]
        # aiortc negotiates codecs inside setRemoteDescription, so the transceiver that will
        # carry the call (with its preferences and our track) must exist before it; the
        # offer's first audio section binds to it.
        self.out_track = SipAudioTrack(48000, self.settings.max_playout_ms)
        main = self.pc.addTransceiver(self.out_track, direction="sendrecv")
        main.setCodecPreferences(prefs)
        offer_sdp, refused = self.candidates.filter_sdp(offer_sdp)
        for r in refused:
            log.info("WebRTC {client}: offer candidate dropped: {reason}", client=self.client, reason=safe(r.message))
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as e:  # noqa: BLE001 - aiortc raises ValueError, KeyError, IndexError... on garbage
            raise InvalidOffer(f"unusable SDP offer: {type(e).__name__}: {e}") from None
        if main.mid is None:
            raise InvalidOffer("the offer has no audio section")
        if main._codecs:  # aiortc has no public API for the negotiated codecs
            self._audio_pt = main._codecs[0].payloadType
            self._add_telephone_event(main, offer_sdp)
        self._refuse_video()
        try:
            self._answer = await self.pc.createAnswer()
        except Exception as e:  # noqa: BLE001 - any aiortc failure on a remote offer is the offer's fault
            raise InvalidOffer(f"cannot answer the offer: {type(e).__name__}: {e}") from None
        codec = self._answer_codec(self._answer.sdp)
        if codec is None:
            raise InvalidOffer("no common audio codec (offer Opus, G722, PCMU or PCMA)")
        self.stats.browser_codec = codec
        self._codec = codec.upper()
        # play out at the browser codec's own rate so aiortc's encoder never resamples
        self.out_track.set_rate({"PCMU": 8000, "PCMA": 8000, "G722": 16000}.get(codec.upper(), 48000))
        return codec

    def _refuse_video(self) -> None:
        """Answer every video section ``inactive`` (before ``createAnswer``): the browser then
        sends no video, and aiortc, which starts a receiver (and its decoder thread) only for a
        direction that receives, never decodes any. The section stays in the answer (same
        transport, bundle intact), so the offer needs no change when video is forwarded later."""
        for tr in self.pc.getTransceivers():
            if tr.kind == "video":
                tr.direction = "inactive"

    def _add_telephone_event(self, main: Any, offer_sdp: str) -> None:
        """Answer the offer's telephone-event (RFC 4733) too, at the audio codec's clock rate
        when offered, so the browser's RTCDTMFSender can send digits. aiortc does not know the
        codec: the leg takes these packets off the receiver before aiortc would decode them."""
        try:
            media = AiortcSdp.parse(offer_sdp).media[main._get_mline_index()]
        except Exception:  # noqa: BLE001 - already parsed once by setRemoteDescription; be safe
            return
        events = [c for c in media.rtp.codecs if c.mimeType.lower() == "audio/telephone-event"]
        if not events:
            return
        rate = main._codecs[0].clockRate
        te = next((c for c in events if c.clockRate == rate), None) or next((c for c in events if c.clockRate == 8000), events[0])
        main._codecs.append(copy.deepcopy(te))
        self._event_pt = te.payloadType
        self._dtmf_rx = DtmfReceiver(te.clockRate)

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

    async def complete_answer(self) -> str:
        """Apply the answer (aiortc gathers its ICE candidates here); return its SDP."""
        assert self._answer is not None
        await self.pc.setLocalDescription(self._answer)
        self._hook_audio_receiver()
        self._ice_timer = self.reactor.callLater(self.settings.ice_timeout_s, self._ice_timeout)
        return str(self.pc.localDescription.sdp)

    def _hook_audio_receiver(self) -> None:
        """Take G.711/Opus payloads (packet path) and telephone-events off the audio receiver before
        aiortc's jitter buffer and decoder; everything else goes on to aiortc unchanged."""
        tr = next((t for t in self.pc.getTransceivers() if t.sender.track is self.out_track), None)
        if tr is None:
            return
        receiver = tr.receiver
        original = receiver._handle_rtp_packet  # the one hook point aiortc offers

        async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
            self._rx_rtp += 1
            if not self._take_rtp(packet):
                await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]

    def _take_rtp(self, packet: Any) -> bool:
        """True when the packet was handled here (relayed to SIP, a DTMF event, or dropped)."""
        pt = packet.payload_type
        if pt == self._event_pt and self._event_pt is not None:
            self._browser_event(packet)
            return True
        call = self.call
        if pt == self._audio_pt and call is not None and call.media_path == "packet":
            if not call.ended and packet.payload:
                self._relay_to_sip(call, packet.payload)
            return True
        return False  # frame path (or not answered yet): aiortc decodes

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

    def _browser_event(self, packet: Any) -> None:
        assert self._dtmf_rx is not None
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

    def admit_candidate(self, candidate: str) -> None:
        """Count one trickled candidate (its attribute value) against the call's cap and address
        rules, when it arrives (before or after the answer); raises
        :class:`~webgate.security.candidates.CandidateRefused`. Only admitted candidates go on
        to :meth:`add_candidate`."""
        self.candidates.check(candidate)

    async def add_candidate(self, cand: dict[str, Any] | None) -> None:
        """A trickled browser candidate, admitted by :meth:`admit_candidate` (``None`` or an
        empty candidate: end of candidates)."""
        if not cand or not cand.get("candidate"):
            await self.pc.addIceCandidate(None)  # type: ignore[arg-type]
            return
        text = str(cand["candidate"])
        text = text.removeprefix("candidate:")
        c = candidate_from_sdp(text)
        c.sdpMid = cand.get("sdpMid")
        c.sdpMLineIndex = cand.get("sdpMLineIndex")
        await self.pc.addIceCandidate(c)

    def attach(self, call: Call) -> None:
        self.call = call
        self.stats.transcoded = None

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
        encoding PCM (browser -> SIP follows ``call.media_path`` in :meth:`_take_rtp`)."""
        track = self.out_track
        if track is not None:
            track.packet_codec = None  # set again by the first payload on the packet path
            track._payloads.clear()
            track._queue.clear()
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

    # -- aiortc events ----------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(aio.spawn(self._consume_audio(track), "webrtc audio consumer", session_id=self.session_id))
        else:
            self.stats.video_tracks += 1
            self._tasks.append(aio.spawn(self._count_video(track), "webrtc video check", session_id=self.session_id))

    def _on_datachannel(self, channel: Any) -> None:
        """Data channels stay open with the session; their messages are counted and dropped."""
        self._channels.append(channel)
        self.stats.data_channels += 1
        log.debug("call {session_id}: data channel {label} accepted", session_id=self.session_id, label=safe(channel.label, 64))

        @channel.on("message")
        def _dropped(message: Any) -> None:
            self.stats.data_messages_dropped += 1
            log.debug(
                "call {session_id}: data channel message dropped ({n} bytes)",
                session_id=self.session_id,
                n=len(message),
            )

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("call {session_id}: WebRTC {state}", session_id=self.session_id, state=state)
        if state == "connected":
            if self._ice_timer is not None and self._ice_timer.active():
                self._ice_timer.cancel()
            self._ice_timer = None
            self._start_direct()
            self._start_watchdog()
        elif state == "failed":
            self._end_from_browser("ice_failed")
        elif state == "closed" and not self.closed:
            # the browser closed its peer connection (DTLS close_notify): aiortc closes ours
            self._end_from_browser("ice_failed")

    def _ice_timeout(self) -> None:
        self._ice_timer = None
        if self.pc.connectionState != "connected":
            self._end_from_browser("ice_timeout")

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
        transports: dict[int, Any] = {}
        for tr in self.pc.getTransceivers():
            for t in (tr.receiver.transport, tr.sender.transport):
                if t is not None:
                    transports[id(t)] = t
        sctp = getattr(self.pc, "sctp", None)
        if sctp is not None and sctp.transport is not None:
            transports[id(sctp.transport)] = sctp.transport
        # aiortc keeps the count for getStats() (RTCTransportStats.packetsReceived) in a private field
        dtls = sum(int(getattr(t, "_RTCDtlsTransport__rx_packets", 0)) for t in transports.values())
        return dtls, self._rx_rtp

    def _watchdog_tick(self) -> None:
        self._watchdog = None
        if self.closed or self.pc.connectionState != "connected":
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

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            call = self.call
            if call is None or call.ended or not isinstance(frame, AudioFrame):
                continue  # (an audio track's decoder yields AudioFrames; anything else is dropped)
            self.stats.frames_from_browser += 1
            call.send_audio(frame_to_mono(frame), int(frame.sample_rate))

    async def _count_video(self, track: MediaStreamTrack) -> None:
        """Video is answered ``inactive`` (:meth:`_refuse_video`), so this track never yields a
        frame; should aiortc decode one anyway it is counted (and dropped, so nothing queues)."""
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.stats.video_frames_decoded += 1
            if self.stats.video_frames_decoded == 1:
                log.warn("call {session_id}: aiortc decoded browser video (it should not receive any)", session_id=self.session_id)

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
        self.close()

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
        tr = next((t for t in self.pc.getTransceivers() if t.sender.track is self.out_track), None)
        if tr is None:
            return
        pts = {self._audio_pt} | ({self._event_pt} if self._event_pt is not None else set())
        direct = DirectAudio(tr.sender, pts, self._direct_rtp)
        if direct.start():
            self._direct = direct
            self.out_track.direct = True

    def _direct_rtp(self, pt: int, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        """One audio RTP packet from the browser (already SRTP-unprotected)."""
        self._rx_rtp += 1
        if pt == self._event_pt:
            if self._dtmf_rx is not None:
                self._browser_event(rtp.RtpPacket(payload_type=pt, sequence=seq, timestamp=ts, ssrc=0,
                                                  payload=payload, marker=marker))
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
        for t in self._tasks:
            aio.cancel(t)
        self._tasks.clear()
        if self._direct is not None:
            self._direct.stop()
        if self.out_track is not None:
            self.out_track.stop()
        aio.spawn(self.pc.close(), "RTCPeerConnection.close", session_id=self.session_id)

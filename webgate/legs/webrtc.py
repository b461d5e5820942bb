"""The WebRTC ingress leg: what a call does with a browser's audio.

The browser's peer connection (aiortc: ICE, DTLS-SRTP, RTCP, offer/answer, data channels) is
protocol I/O and lives in :mod:`webgate.adapters.webrtc`; it is handed to the leg as a
:class:`PeerLink` and reports what it receives to the leg's ``*_from_browser`` / ``peer_*``
methods. This module has no asyncio and no PyAV: it holds the audio paths, DTMF, and the
watchdogs that end a call whose browser is gone (the pacing of the audio toward the browser,
the leg's counters and its video and data are :mod:`webgate.legs.webrtc_media`).

Media paths (see docs/decisions.md). The answer toward the browser prefers the trunk's own
codec order (PCMU first by default), so with a G.711 trunk (or an Opus one) browser and phone
speak the same codec and the call takes the **packet path**: the leg declares
``packet_codecs`` (the browser's G.711 or Opus codec), the call manager then hands SIP
payloads to :meth:`WebRtcCallLeg.payload_from_sip` undecoded, ``SipAudioSource`` gives
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

Video and data (issue 14) never reach SIP: the leg is the call's media hub's caller through
:class:`~webgate.legs.webrtc_media.HubCallerSide`; :mod:`webgate.legs.webrtc_media` also holds
the audio paced toward the browser (:class:`~webgate.legs.webrtc_media.SipAudioSource`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls.call import Call, CallState
from webgate.config import WebRtcConfig
from webgate.legs.hub import MediaHub, attach_hub
from webgate.legs.webrtc_media import (
    HubCallerSide,
    LegStats,
    SipAudioSource,
    VideoFormat,
    VideoPeer,
    VideoPort,
    packet_samples,
)
from webgate.media.audio import PCM, Resampler
from webgate.media.codecs import (
    Decoder,
    Encoder,
    create_decoder,
    create_encoder,
    get_codec,
)
from webgate.proto import rtp
from webgate.proto.errors import RemoteProtocolError
from webgate.proto.rtp import DtmfReceiver

log = Logger()

__all__ = [
    "PACKET_CODECS",
    "AnswerInfo",
    "DirectAudioPort",
    "PeerLink",
    "WebRtcCallLeg",
    "WebRtcSettings",
]

# codecs whose payloads go between browser and SIP untouched when both sides use them
PACKET_CODECS = ("PCMU", "PCMA", "OPUS")
_OPUS_INPUT_RATES = (8000, 12000, 16000, 24000)  # what libopus encodes without resampling (besides 48 kHz)
# the rate the browser's audio is played out at, by the answer's codec: aiortc's encoder never resamples
_PLAYOUT_RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 16000}


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


class DirectAudioPort(Protocol):
    """The call's audio RTP sent by webgate itself (``webgate.adapters.webrtc_direct.DirectAudio``)."""

    def send(self, payload_type: int, payload: bytes, samples: int, marker: bool = False) -> None: ...

    def stop(self) -> None: ...


class PeerLink(VideoPeer, Protocol):
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


class WebRtcCallLeg(HubCallerSide):
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
        self.peer: PeerLink = peer
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
            bind = getattr(direct, "bind_leg", None)
            if bind is not None:
                bind(self)  # [rtp] media_io = "native": the relayed audio may be carried in C

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

"""A call: one ingress leg (WebRTC, RTMP, local) joined to one SIP leg, and the audio bridge.

Like a B2BUA call controller, the call relays events between its two legs; the legs own
their protocols. Video and data never reach the SIP leg: they stay with the ingress leg
and the session (found by session ID).
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from webgate.media.audio import PCM

if TYPE_CHECKING:
    from webgate.calls.dialplan import RouteDecision
    from webgate.calls.interfaces import MediaPort, PortAllocator
    from webgate.media.stream import RtpAudioStream
    from webgate.proto.sip.useragent import InviteSession


class CallState(enum.Enum):
    CALLING = "calling"  # INVITE sent
    RINGING = "ringing"  # 180
    EARLY_MEDIA = "early_media"  # 183 with SDP: audio flows before answer
    ANSWERED = "answered"
    ENDED = "ended"
    #: never a call's state: told to the leg (``call_progress``) when the SIP far end transferred
    #: the call and the new far end answered (REFER, webgate/calls/transfer.py)
    TRANSFERRED = "transferred"


class IngressLeg(Protocol):
    """What the call needs from the web side of a call (WebRTC, RTMP, or a local test leg)."""

    kind: str  # "webrtc" | "rtmp" | "local"
    client: str  # the client's address, for limits and logs

    def call_progress(self, call: "Call", state: CallState) -> None: ...

    def call_ended(self, call: "Call", cause: str, status: int | None) -> None: ...

    def dtmf_received(self, call: "Call", digit: str, method: str) -> None: ...

    def audio_from_sip(self, call: "Call", pcm: PCM, rate: int) -> None: ...


class CallControl(Protocol):
    """What a call (and a leg, through ``call.manager``) uses of the call manager
    (:class:`webgate.calls.manager.CallManager`), which call.py does not import."""

    @property
    def rtp_pool(self) -> PortAllocator:
        """The RTP ports; its ``clock`` ticks a leg's own 20 ms senders."""
        ...

    def hangup(self, call: Call, cause: str = "client_hangup") -> None: ...

    def send_dtmf(self, call: Call, digits: str, duration_ms: int = 160) -> None: ...

    def hold(self, call: Call, on: bool, done: Callable[[bool, int | None], None] | None = None) -> None: ...


@dataclass
class CallTimes:
    created: float = field(default_factory=time.time)
    answered: float | None = None
    ended: float | None = None
    invite_sent_mono: float | None = None
    first_media_mono: float | None = None


class Call:
    def __init__(self, manager: CallControl, leg: IngressLeg, session_id: str, route: "RouteDecision", identity: str | None = None) -> None:
        self.manager = manager
        self.leg = leg
        self.session_id = session_id
        self.route = route
        self.identity = identity
        self.grant: Any = None  # the call token's webgate.security.tokens.Grant (None: no token)
        self.source_ip: str | None = None  # the client's IP address (limits)
        self.state = CallState.CALLING
        self.sip: "InviteSession | None" = None
        self.rtp: "MediaPort | None" = None
        self.stream: "RtpAudioStream | None" = None
        self.times = CallTimes()
        self.end_cause: str | None = None
        self.end_status: int | None = None
        self.media_path: str | None = None  # "packet" or "frame"
        self.codec: str | None = None
        self.dtmf_sent: list[str] = []
        self.dtmf_received: list[str] = []
        self.offer_sdp: Any = None  # our SDP offer (proto.sdp.SessionDescription)
        self.sdp_session_id = secrets.randbelow(2**31)  # o= session ID, kept for re-offers
        self.sdp_version = 1
        self.duration_timer: Any = None
        #: "outbound": placed by the web client toward SIP; "inbound": from SIP toward a registered web user
        self.direction = "outbound"
        self.caller: str | None = None  # inbound: the caller's From user (or host)
        self.caller_display: str | None = None  # inbound: the caller's From display name
        self.remote_offer: bytes | None = None  # inbound: the INVITE's SDP offer
        self.answer_sdp: Any = None  # inbound: our SDP answer once the client accepted
        self.held = False  # we put the far end on hold (CallManager.hold: re-INVITE a=sendonly)
        self.hold_request: Any = None  # (on, offer, done) while our hold/resume re-INVITE is pending
        #: the call's video and data, reachable by session ID (webgate.legs.hub.MediaHub, made by
        #: the leg; None for legs without video or data, e.g. LocalLeg)
        self.hub: Any = None
        #: supervisor audio (webgate.legs.monitor.CallMonitor): set only while the hub has audio
        #: watchers; it is handed both directions' audio as it passes (web_payload/web_pcm here,
        #: sip_payload/sip_pcm in media_path) and does its work on the media clock
        self.monitor: Any = None
        #: blind transfers by the SIP far end (REFER): {"to", "referred_by", "at", "sip_call_id"}
        self.transfers: list[dict[str, Any]] = []
        #: the sidecar of the call's recording (webgate/calls/recording.py), None if not recorded
        self.recording: str | None = None
        self.recording_refused = False  # an automatic recording could not start (not tried again)

    @property
    def ingress_kind(self) -> str:
        return self.leg.kind

    @property
    def client(self) -> str:
        return self.leg.client

    @property
    def destination(self) -> str:
        return self.route.destination

    @property
    def sip_call_id(self) -> str | None:
        return self.sip.call_id if self.sip is not None else None

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    # --- from the ingress leg -------------------------------------------------------------
    def send_audio(self, pcm: PCM, rate: int) -> None:
        """Frame path: PCM from the web side toward SIP (resampled and encoded there)."""
        if self.stream is not None and self.state is not CallState.ENDED:
            self.stream.send_pcm(pcm, rate)
            if self.monitor is not None:
                self.monitor.web_pcm(pcm, rate)

    def send_payload(self, payload: bytes, samples: int | None = None) -> None:
        """Packet path: a payload already in the SIP leg's codec, relayed untouched."""
        if self.stream is not None and self.state is not CallState.ENDED:
            self.stream.send_payload(payload, samples)
            if self.monitor is not None:
                self.monitor.web_payload(payload)

    def send_dtmf(self, digits: str, duration_ms: int = 160) -> None:
        self.manager.send_dtmf(self, digits, duration_ms)

    def hangup(self, cause: str = "client_hangup") -> None:
        self.manager.hangup(self, cause)

    def ingress_codec(self) -> str | None:
        """The audio codec on the web side, if the leg knows it (browser or FLV codec)."""
        leg = self.leg
        codec = getattr(leg, "ingress_codec", None)
        if codec is None:
            codec = getattr(getattr(leg, "stats", None), "browser_codec", None)
        if codec is None:
            codec = getattr(getattr(leg, "audio_in", None), "codec", None)
        return codec if isinstance(codec, str) else None

    def transcoded(self) -> bool:
        """True when audio is decoded and re-encoded between the legs (not relayed as is)."""
        flag = getattr(getattr(self.leg, "stats", None), "transcoded", None)
        if isinstance(flag, bool):
            return flag
        audio_in = getattr(self.leg, "audio_in", None)
        if audio_in is not None and getattr(audio_in, "sent_frames", 0) > getattr(audio_in, "passthrough_frames", 0):
            return True
        return self.media_path == "frame"

    def info(self) -> dict[str, Any]:
        """The call as the REST API, CDRs and metrics see it (no secrets: no token, no SIP credentials).

        ``to_sip``: RTP the gateway sent toward SIP (``lost``/``fraction_lost`` as the far end
        reported them in RTCP, ``None`` until a report came); ``from_sip``: RTP received from
        SIP (``lost`` and ``jitter_ms`` measured here; ``dropped``/``rtcp_dropped``: RTP/RTCP
        from another address than the far end's learnt source, dropped by [rtp] strict_source)."""
        stream = self.stream
        st = stream.stats if stream is not None else None
        now = time.time()
        remote = getattr(stream, "remote_report", None) if stream is not None else None
        answered = self.times.answered
        return {
            "session_id": self.session_id,
            "direction": self.direction,
            "ingress": self.ingress_kind,
            "client": self.client,
            "identity": self.identity,
            "destination": self.destination,
            "state": self.state.value,
            "held": bool(self.held),
            "sip_call_id": self.sip_call_id,
            "codec": self.codec,
            "codecs": {"sip": self.codec, "ingress": self.ingress_codec()},
            "media_path": self.media_path,
            "transcoded": self.transcoded(),
            "created_at": _iso(self.times.created),
            "answered_at": _iso(answered),
            "ended_at": _iso(self.times.ended),
            "duration_s": round((self.times.ended or now) - answered, 3) if answered else 0.0,
            "end_cause": self.end_cause,
            "end_status": self.end_status,
            "packets_sent": st.packets_sent if st else 0,
            "packets_received": st.packets_received if st else 0,
            "packets_lost": stream.packets_lost if stream is not None else 0,
            "to_sip": {
                "packets": st.packets_sent if st else 0,
                "bytes": st.bytes_sent if st else 0,
                "lost": max(0, remote.cumulative_lost) if remote is not None else None,
                "fraction_lost": round(remote.fraction_lost / 256.0, 4) if remote is not None else None,
            },
            "from_sip": {
                "packets": st.packets_received if st else 0,
                "bytes": st.bytes_received if st else 0,
                "lost": max(0, stream.packets_lost) if stream is not None else 0,
                "jitter_ms": round(stream.jitter_ms, 3) if stream is not None else 0.0,
                "dropped": stream.source_guard.dropped_foreign if stream is not None else 0,
                "rtcp_dropped": stream.source_guard.rtcp_dropped if stream is not None else 0,
            },
            "dtmf_sent": len(self.dtmf_sent),
            "dtmf_received": len(self.dtmf_received),
            "transfers": [dict(t) for t in self.transfers],
        }


def _iso(t: float | None) -> str | None:
    """A wall-clock time as ISO 8601 UTC with milliseconds, or None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")

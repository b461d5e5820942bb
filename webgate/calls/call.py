"""A call: one ingress leg (WebRTC, RTMP, local) joined to one SIP leg, and the audio bridge.

Like a B2BUA call controller, the call relays events between its two legs; the legs own
their protocols. Video and data never reach the SIP leg: they stay with the ingress leg
and the session (found by session ID).
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from webgate.media.audio import PCM

if TYPE_CHECKING:
    from webgate.adapters.rtp import RtpEndpoint
    from webgate.calls.dialplan import RouteDecision
    from webgate.calls.manager import CallManager
    from webgate.media.stream import RtpAudioStream
    from webgate.proto.sip.useragent import InviteSession


class CallState(enum.Enum):
    CALLING = "calling"  # INVITE sent
    RINGING = "ringing"  # 180
    EARLY_MEDIA = "early_media"  # 183 with SDP: audio flows before answer
    ANSWERED = "answered"
    ENDED = "ended"


class IngressLeg(Protocol):
    """What the call needs from the web side of a call (WebRTC, RTMP, or a local test leg)."""

    kind: str  # "webrtc" | "rtmp" | "local"
    client: str  # the client's address, for limits and logs

    def call_progress(self, call: "Call", state: CallState) -> None: ...

    def call_ended(self, call: "Call", cause: str, status: int | None) -> None: ...

    def dtmf_received(self, call: "Call", digit: str, method: str) -> None: ...

    def audio_from_sip(self, call: "Call", pcm: PCM, rate: int) -> None: ...


@dataclass
class CallTimes:
    created: float = field(default_factory=time.time)
    answered: float | None = None
    ended: float | None = None
    invite_sent_mono: float | None = None
    first_media_mono: float | None = None


class Call:
    def __init__(self, manager: "CallManager", leg: IngressLeg, session_id: str, route: "RouteDecision", identity: str | None = None) -> None:
        self.manager = manager
        self.leg = leg
        self.session_id = session_id
        self.route = route
        self.identity = identity
        self.state = CallState.CALLING
        self.sip: "InviteSession | None" = None
        self.rtp: "RtpEndpoint | None" = None
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

    def send_payload(self, payload: bytes, samples: int | None = None) -> None:
        """Packet path: a payload already in the SIP leg's codec, relayed untouched."""
        if self.stream is not None and self.state is not CallState.ENDED:
            self.stream.send_payload(payload, samples)

    def send_dtmf(self, digits: str, duration_ms: int = 160) -> None:
        self.manager.send_dtmf(self, digits, duration_ms)

    def hangup(self, cause: str = "client_hangup") -> None:
        self.manager.hangup(self, cause)

    def info(self) -> dict[str, Any]:
        st = self.stream.stats if self.stream is not None else None
        now = time.time()
        return {
            "session_id": self.session_id,
            "ingress": self.ingress_kind,
            "destination": self.destination,
            "state": self.state.value,
            "sip_call_id": self.sip_call_id,
            "codec": self.codec,
            "media_path": self.media_path,
            "transcoded": self.media_path == "frame",
            "duration_s": round((self.times.ended or now) - (self.times.answered or now), 3) if self.times.answered else 0.0,
            "packets_sent": st.packets_sent if st else 0,
            "packets_received": st.packets_received if st else 0,
            "packets_lost": self.stream.packets_lost if self.stream is not None else 0,
        }

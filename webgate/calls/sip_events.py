"""The SIP events of one call manager's calls: what the user agent reports about a dialog
(progress, answer, end, DTMF, the far end's offers and answers, a REFER) becomes the call's
state, its leg's news and its media; registrations are logged; an incoming INVITE goes to the
built-ins or to the web users, and the events of a built-in call or of a transfer in progress
to their own part."""

from __future__ import annotations

import time
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls.builtin import BUILTIN_KINDS, BuiltinCall, BuiltinCalls
from webgate.calls.call import Call, CallState
from webgate.calls.inbound import InboundCalls
from webgate.calls.media_path import MediaPaths
from webgate.calls.transfer import Transfer, Transfers
from webgate.logsafe import safe
from webgate.proto.sip.useragent import (
    AckAnswer,
    Answered,
    Confirmed,
    DtmfInfo,
    EndCause,
    Ended,
    Event,
    IncomingCall,
    OfferReceived,
    Progress,
    Registered,
    RegistrationFailed,
    ReferReceived,
    ReofferAnswered,
    ReofferFailed,
)

__all__ = ["CAUSES", "SipEvents", "SipEventsHost"]

#: these lines were the call manager's before they moved here: same namespace
log = Logger(namespace="webgate.calls.manager")

# the end causes a client sees (documented in docs/protocol.md)
CAUSES = {
    EndCause.LOCAL_HANGUP: "local_hangup",
    EndCause.REMOTE_HANGUP: "remote_hangup",
    EndCause.CANCELLED: "cancelled",
    EndCause.REMOTE_CANCELLED: "cancelled",
    EndCause.REJECTED: "rejected",
    EndCause.DECLINED: "rejected",
    EndCause.TIMEOUT: "timeout",
    EndCause.AUTH_FAILED: "auth_failed",
    EndCause.NO_ACK: "no_ack",
    EndCause.TRANSPORT_ERROR: "network_error",
    EndCause.PROTOCOL_ERROR: "protocol_error",
    EndCause.SESSION_TIMER: "session_timer",
}



class SipEventsHost(Protocol):
    """What the SIP events use of the call manager."""

    builtin_enabled: bool
    builtins: BuiltinCalls
    inbound: InboundCalls
    transfers: Transfers
    media: MediaPaths

    def notify(self, call: Call, state: CallState) -> None: ...

    def emit(self, event: str, *args: Any) -> None: ...

    def finish(self, call: Call, cause: str, status: int | None, notify_leg: bool) -> None: ...


class SipEvents:
    """The dispatcher of the user agent's events for one manager."""

    def __init__(self, host: SipEventsHost) -> None:
        self.host = host

    def handle(self, ev: Event) -> None:
        """Registrations are logged; an INVITE goes to the built-ins or the web users; the
        events of a built-in call or a transfer in progress to their part; a call's own
        events update it here."""
        h = self.host
        if isinstance(ev, (Registered, RegistrationFailed)):
            if isinstance(ev, Registered):
                log.info("registered {aor} for {expires} s", aor=str(ev.registration.aor), expires=ev.expires)
            else:
                log.warn("registration of {aor} failed: {status} {reason}", aor=str(ev.registration.aor), status=ev.status, reason=safe(ev.reason))
            return
        session = ev.session
        owner = session.user_data
        if isinstance(ev, IncomingCall):
            user = ev.request.uri.user or ""
            if h.builtin_enabled and user in BUILTIN_KINDS:
                h.builtins.handle(ev)
            else:
                h.inbound.incoming(ev, user)
            return
        if isinstance(owner, BuiltinCall | Transfer) or isinstance(ev, ReferReceived):
            (h.builtins if isinstance(owner, BuiltinCall) else h.transfers).handle(ev)
            return
        if not isinstance(owner, Call):
            return
        call = owner
        if isinstance(ev, Confirmed):
            h.inbound.confirmed(call, ev.sdp)
        elif isinstance(ev, Progress):
            has_media = h.media.apply_remote_sdp(call, ev.sdp) if ev.sdp else False
            state = CallState.EARLY_MEDIA if has_media else CallState.RINGING
            if call.state in (CallState.CALLING, CallState.RINGING) or (state is CallState.EARLY_MEDIA and call.state is not CallState.EARLY_MEDIA):
                call.state = state
                log.info("call {session_id}: {status} {state}", session_id=call.session_id, status=ev.status, state=state.value)
                h.notify(call, state)
                h.emit("call_progress", call, state)
        elif isinstance(ev, Answered):
            h.media.apply_remote_sdp(call, ev.sdp)
            call.state = CallState.ANSWERED
            call.times.answered = time.time()
            log.info("call {session_id}: answered, codec {codec}, {path} path", session_id=call.session_id, codec=call.codec, path=call.media_path)
            h.notify(call, CallState.ANSWERED)
            h.emit("call_answered", call)
        elif isinstance(ev, Ended):
            cause = CAUSES.get(ev.end.cause, "ended")
            h.finish(call, cause, ev.end.status, notify_leg=True)
        elif isinstance(ev, DtmfInfo):
            h.media.dtmf_to_leg(call, ev.digit, "info")
        elif isinstance(ev, OfferReceived):
            h.media.answer_reoffer(session, ev.offer, call.rtp, call)
        elif isinstance(ev, AckAnswer):
            h.media.reoffer_acked(call, ev.sdp)
        elif isinstance(ev, ReofferAnswered):
            h.media.hold_answered(call, ev.sdp)
        elif isinstance(ev, ReofferFailed):
            h.media.hold_failed(call, ev.status, ev.reason)

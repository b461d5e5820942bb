"""The built-in destinations ``echo`` and ``tone``: the gateway itself answers them as a real SIP
UAS (loopback), for its own calls (a web client dialled ``echo``) and for SIP callers, who pass
the built-in admission first (:meth:`BuiltinCalls.refusal`, docs/security.md)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls.call import Call
from webgate.calls.errors import CallRefused, NoPortsAvailable
from webgate.calls.interfaces import MediaPort, PortAllocator, SipSender
from webgate.calls.media_path import MediaPaths
from webgate.calls.offers import BUILTIN_CODECS, can_encode, in_offer_order
from webgate.calls.policy import CallPolicy, client_ip
from webgate.calls.registry import CallRegistry
from webgate.calls.users import InboundAllowList
from webgate.logsafe import safe
from webgate.media.tones import ToneGenerator
from webgate.proto import sdp
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.useragent import (
    Confirmed,
    DtmfInfo,
    Ended,
    Event,
    IncomingCall,
    InviteSession,
    OfferReceived,
    Registered,
    RegistrationFailed,
)

__all__ = ["BUILTIN_KINDS", "BuiltinCall", "BuiltinCalls", "BuiltinHost"]

#: these lines were the call manager's before they moved here: same namespace
log = Logger(namespace="webgate.calls.manager")

BUILTIN_KINDS = ("echo", "tone")


class BuiltinCall:
    """A call answered by the gateway itself (echo or tone). ``source`` is the caller's IP
    address for a SIP caller, None for the gateway's own call (a web client's ``echo``): only
    SIP callers pass the built-in admission and count as calls of their own."""

    def __init__(self, kind: str, session: InviteSession, endpoint: MediaPort, sdp_session_id: int,
                 source: str | None = None) -> None:
        self.kind = kind
        self.session = session
        self.endpoint = endpoint
        self.sdp_session_id = sdp_session_id
        self.sdp_version = 1
        self.source = source
        self.ticker: Callable[[float], None] | None = None
        self.duration_timer: Any = None


class BuiltinHost(Protocol):
    """What the built-in answerer uses of the call manager (its settings are read live:
    ``accepting`` turns False at shutdown)."""

    accepting: bool
    builtin_enabled: bool
    builtin_sip_from: InboundAllowList
    policy: CallPolicy
    registry: CallRegistry
    rtp_pool: PortAllocator
    transport: SipSender
    media: MediaPaths
    reactor: Any
    counters: dict[str, int]
    rtp_advertise: str
    jitter: tuple[int, int]
    tone_hz: int
    max_calls: int
    max_call_duration_s: int

    def live_calls(self) -> int: ...

    def sync_ua_clock(self) -> None: ...


class BuiltinCalls:
    """The live built-in calls (by SIP Call-ID) and the SIP events of their sessions."""

    def __init__(self, host: BuiltinHost) -> None:
        self.host = host
        self.calls: dict[str, BuiltinCall] = {}

    def from_sip_callers(self) -> int:
        """Built-in calls of SIP callers: they count toward ``[limits] max_calls`` (a web
        client's echo call is in the registry already)."""
        return sum(1 for bc in self.calls.values() if bc.source is not None)

    def handle(self, ev: Event) -> None:
        """An INVITE for ``echo``/``tone``, or an event of a built-in call's session."""
        h = self.host
        if isinstance(ev, IncomingCall):
            user = ev.request.uri.user or ""
            kind = user if h.builtin_enabled and user in BUILTIN_KINDS else None
            if kind is None:
                ev.session.reject(404, "Not Found")
                h.transport.flush()
                return
            source: str | None = None
            if self.own_call(ev.session) is None:
                source = client_ip(ev.source[1])  # the transport's peer, never the request's own Via
                refusal = self.refusal(source)
                if refusal is not None:
                    status, why = refusal
                    h.counters["builtin_refused"] += 1
                    log.info("built-in {kind} call from {source} refused: {status} ({why})", kind=kind, source=source,
                             status=status, why=why)
                    ev.session.reject(status)
                    h.transport.flush()
                    return
            self.answer(kind, ev.session, ev.offer, source)
            return
        if isinstance(ev, (Registered, RegistrationFailed)):
            return  # registration events have no session (handle_sip_event never sends them here)
        bc = ev.session.user_data
        if not isinstance(bc, BuiltinCall):
            return
        if isinstance(ev, Ended):
            self.end(bc)
        elif isinstance(ev, DtmfInfo):
            if bc.kind == "echo":
                try:
                    bc.session.send_info_dtmf(ev.digit, ev.duration_ms)
                except LocalProtocolError:
                    pass
                h.transport.flush()
        elif isinstance(ev, OfferReceived):
            h.media.answer_reoffer(bc.session, ev.offer, bc.endpoint, bc)
        elif isinstance(ev, Confirmed):
            pass

    def own_call(self, session: InviteSession) -> Call | None:
        """The gateway's own outbound call that this INVITE belongs to, if any: a web client's
        ``echo``/``tone``, or a call through a trunk that leads back to the gateway. Its Call-ID
        is the one our UAC chose (80 random bits). Such a call was admitted (and is counted)
        on the client's side already."""
        call = self.host.registry.by_sip_call_id(session.call_id)
        if call is None or call.direction != "outbound" or call.sip is None or call.sip.role != "uac":
            return None
        return call

    def refusal(self, source: str) -> tuple[int, str] | None:
        """The built-in admission of a SIP caller (docs/security.md), checked before anything is
        allocated: (SIP status, why) to refuse, or None. Order: shutting down 503, source not in
        ``[builtin] sip_from`` 403, the per-source attempt rate and concurrent calls
        (``[limits]``) 403, the gateway's call limit 503."""
        h = self.host
        if not h.accepting:
            return 503, "shutting down"
        if not h.builtin_sip_from.allows(source):
            return 403, "source not in builtin.sip_from"
        try:
            h.policy.attempt(source)
            h.policy.check(source, None)
        except CallRefused as e:
            return 403, e.code
        if h.live_calls() >= h.max_calls:
            return 503, "at the call limit"
        return None

    def answer(self, kind: str, session: InviteSession, offer: bytes | None, source: str | None = None) -> None:
        h = self.host
        if not offer:
            session.reject(488, "Not Acceptable Here")
            h.transport.flush()
            return
        try:
            endpoint = h.rtp_pool.allocate()
        except NoPortsAvailable:
            session.reject(503, "Service Unavailable")
            h.transport.flush()
            return
        bc_sdp_id = secrets.randbelow(2**31)
        try:
            parsed = sdp.parse_sdp(offer)
            # echo and tone take the caller's first choice (an echo that answered PCMU to an
            # Opus-first offer would force the caller to transcode for nothing)
            supported = in_offer_order(parsed, [c for c in BUILTIN_CODECS if can_encode(c)])
            supported += [sdp.TELEPHONE_EVENT, sdp.TELEPHONE_EVENT_48K]
            answer, nm = sdp.negotiate_answer(parsed, supported, h.rtp_advertise, endpoint.rtp_port, session_id=bc_sdp_id)
        except RemoteProtocolError as e:
            endpoint.release()
            session.reject(e.status_hint or 488)
            h.transport.flush()
            return
        stream = endpoint.make_stream(jitter_min_ms=h.jitter[0], jitter_max_ms=h.jitter[1], label=f"builtin-{kind}")
        stream.configure(nm)
        bc = BuiltinCall(kind, session, endpoint, bc_sdp_id, source)
        session.user_data = bc
        self.calls[session.call_id] = bc
        if source is not None:
            # a SIP caller's call: its own slot in the per-IP limit and its own duration limit
            h.policy.acquire(bc, source, None)
            if h.max_call_duration_s:
                bc.duration_timer = h.reactor.callLater(h.max_call_duration_s, self.hangup, bc)
        if kind == "echo":
            # the caller's audio goes straight back (packet path) and so do its digits
            stream.on_payload = lambda payload, samples, pkt: stream.send_payload(payload, samples)

            def echo_dtmf(digit: str, duration_ms: int) -> None:
                stream.send_dtmf(digit, duration_ms)  # False (no telephone-event): nothing to echo

            stream.on_dtmf = echo_dtmf
        else:
            info = stream.codec
            assert info is not None
            gen = ToneGenerator(float(h.tone_hz), info.sample_rate, 0.4)

            def tick(now: float) -> None:
                stream.send_pcm(gen.frame(20), info.sample_rate)

            bc.ticker = tick
            h.rtp_pool.clock.add_ticker(tick)
        session.answer(answer.serialize())
        h.transport.flush()
        ours = h.registry.by_sip_call_id(session.call_id)  # a call of ours to ourselves: same Call-ID
        log.info("built-in {kind} answered {call_id} ({codec}) for {caller}", kind=kind, call_id=safe(session.call_id), codec=nm.codec.name,
                 caller=source or "the gateway", session_id=ours.session_id if ours is not None else None)

    def hangup(self, bc: BuiltinCall) -> None:
        """``[limits] max_call_duration_s`` reached: BYE."""
        bc.duration_timer = None
        log.info("built-in {kind} call {call_id}: max_duration, hanging up", kind=bc.kind, call_id=safe(bc.session.call_id))
        self.host.sync_ua_clock()
        bc.session.hangup()
        self.end(bc)
        self.host.transport.flush()

    def end(self, bc: BuiltinCall) -> None:
        """Free what ``bc`` holds: its timer, its limit slot, its tone ticker, its ports."""
        if bc.duration_timer is not None and bc.duration_timer.active():
            bc.duration_timer.cancel()
        bc.duration_timer = None
        self.host.policy.release(bc)
        if bc.ticker is not None:
            self.host.rtp_pool.clock.remove_ticker(bc.ticker)
            bc.ticker = None
        bc.endpoint.release()
        self.calls.pop(bc.session.call_id, None)

    def hangup_all(self) -> None:
        """Shutdown: BYE on every built-in call (the caller syncs the UA clock and flushes)."""
        for bc in list(self.calls.values()):
            bc.session.hangup()
            self.end(bc)

"""The call manager: places calls for ingress legs and relays the SIP events of every call.

It is the dispatcher over the call layer's parts, each taking the manager through a Protocol
of exactly what it uses: :mod:`~webgate.calls.admission` (authorisation and limits, before
anything is allocated), :mod:`~webgate.calls.outbound` (the INVITE of an admitted call),
:mod:`~webgate.calls.media_path` (RTP stream, packet/frame path, re-offers, hold/resume),
:mod:`~webgate.calls.inbound` (calls from SIP toward registered web users) and
:mod:`~webgate.calls.builtin` (the ``echo``/``tone`` destinations, answered as a real SIP UAS
on loopback), :mod:`~webgate.calls.watch` (who may watch a call's video and data),
:mod:`~webgate.calls.transfer` (REFER from the SIP far end) and :mod:`~webgate.calls.sip_events`
(the user agent's events of every call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.logger import Logger

from webgate.calls.admission import Admission, Admissions
from webgate.calls.builtin import BuiltinCall, BuiltinCalls
from webgate.calls.call import Call, CallState, IngressLeg
from webgate.calls.dialplan import DialPlan, RouteDecision
from webgate.calls.errors import CallRefused
from webgate.calls.inbound import InboundCalls, offered_audio_codecs
from webgate.calls.interfaces import ClusterAdmission, PortAllocator, SipSender
from webgate.calls.media_path import HoldDone, MediaPaths
from webgate.calls.outbound import OutboundCalls
from webgate.calls.policy import CallPolicy
from webgate.calls.registry import CallRegistry
from webgate.calls.session_id import SessionIdAllocator
from webgate.calls.sip_events import SipEvents
from webgate.calls.transfer import Transfers
from webgate.calls.users import InboundAllowList, WebUsers
from webgate.calls.watch import Watches
from webgate.logsafe import safe
from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.useragent import Event, UserAgent

__all__ = ["CallManager"]

log = Logger()

class CallManager:
    def __init__(
        self,
        reactor: Any,
        ua: UserAgent,
        transport: SipSender,
        rtp_pool: PortAllocator,
        dialplan: DialPlan,
        registry: CallRegistry,
        session_ids: SessionIdAllocator,
        *,
        rtp_advertise: str,
        session_header: str = "X-Session-ID",
        session_mode: str = "header",
        from_domain: str = "",
        max_calls: int = 100,
        max_call_duration_s: int = 3600,
        builtin_enabled: bool = True,
        tone_hz: int = 1000,
        jitter_min_ms: int = 20,
        jitter_max_ms: int = 200,
        policy: CallPolicy | None = None,
        tokens: Any = None,
        wall_clock: Callable[[], float] = time.time,
        web_users: WebUsers | None = None,
        inbound_from: InboundAllowList | None = None,
        builtin_sip_from: InboundAllowList | None = None,
    ) -> None:
        self.reactor = reactor
        self.ua = ua
        self.transport = transport
        self.rtp_pool = rtp_pool
        self.dialplan = dialplan
        self.registry = registry
        self.session_ids = session_ids
        self.rtp_advertise = rtp_advertise
        self.session_header = session_header
        self.session_mode = session_mode
        self.from_domain = from_domain
        self.max_calls = max_calls
        self.max_call_duration_s = max_call_duration_s
        #: per-IP / per-identity limits and attempts per minute (webgate/calls/policy.py)
        self.policy = policy or CallPolicy()
        #: [tokens] configuration (key, issuer, audience, leeway_s); None = no token is valid
        self.tokens = tokens
        self.wall_clock = wall_clock  # token exp/nbf are wall-clock times
        self.builtin_enabled = builtin_enabled  # answer INVITEs whose user is one of BUILTIN_KINDS
        self.tone_hz = tone_hz
        self.jitter = (jitter_min_ms, jitter_max_ms)
        self.accepting = True
        self.counters: dict[str, int] = {"calls_placed": 0, "calls_refused": 0, "packet_path": 0, "frame_path": 0, "path_switches": 0}
        #: call observers (metrics, CDRs, ...): objects with any of the methods
        #: call_placed(call), call_progress(call, state), call_answered(call), call_ended(call),
        #: call_refused(code, ingress, client). A failing observer is logged, never fatal.
        self.observers: list[Any] = []
        #: registered web users (calls from SIP toward web clients, docs/protocol.md)
        self.web_users = web_users if web_users is not None else WebUsers(reactor, wall_clock)  # (expiry timers)
        #: SIP sources that may call web users ([sip] inbound_from; default here: loopback only)
        self.inbound_from = inbound_from if inbound_from is not None else InboundAllowList(("loopback",))
        #: SIP sources that may call echo/tone directly ([builtin] sip_from; default loopback only)
        self.builtin_sip_from = builtin_sip_from if builtin_sip_from is not None else InboundAllowList(("loopback",))
        self.counters.update({"inbound_offered": 0, "inbound_refused": 0, "builtin_refused": 0})
        #: a cluster node's shared limits and session IDs (webgate/cluster); None in one process
        self.cluster: ClusterAdmission | None = None
        # the parts this manager dispatches to
        self.media = MediaPaths(transport, self.counters, self.sync_ua_clock, rtp_advertise=rtp_advertise, jitter=self.jitter)
        self.admissions = Admissions(self)
        self.outbound = OutboundCalls(self)
        self.inbound = InboundCalls(self)
        self.builtins = BuiltinCalls(self)
        self.watches = Watches(self)
        self.transfers = Transfers(self)  # REFER from the SIP far end
        self.sip_events = SipEvents(self)

    @property
    def builtin_calls(self) -> dict[str, BuiltinCall]:
        """The live built-in calls (echo/tone answered here), by SIP Call-ID."""
        return self.builtins.calls

    def emit(self, event: str, *args: Any) -> None:
        """Tell every observer that has a method ``event``."""
        for obs in list(self.observers):
            fn = getattr(obs, event, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:
                log.failure("call observer {observer}.{event} failed", observer=type(obs).__name__, event=event)

    # ------------------------------------------------------------------------------------
    # placing calls

    def place_call(
        self,
        leg: IngressLeg,
        destination: object,
        *,
        session_id: str | None = None,
        display_name: str | None = None,
        caller_id: str | None = None,
        prefer_codecs: list[str] | None = None,
        identity: str | None = None,
        route: RouteDecision | None = None,
        max_duration_s: int | None = None,
        token: str | None = None,
        source_ip: str | None = None,
        admission: Admission | None = None,
    ) -> Call:
        """Start a call toward ``destination``. Raises :class:`CallRefused` with a stable code.

        ``token`` is the client's call token (if any); ``source_ip`` the client's IP address
        (for per-IP limits; default: derived from ``leg.client``). Authorisation and limits run
        first (:meth:`admit`), before anything is allocated; an ingress that already called
        :meth:`admit` passes its result as ``admission`` (the other arguments are then ignored,
        only the concurrent-call limits are checked again)."""
        if admission is None:
            admission = self.admit(
                leg, destination, session_id=session_id, display_name=display_name, caller_id=caller_id,
                identity=identity, route=route, max_duration_s=max_duration_s, token=token, source_ip=source_ip,
            )
        try:
            with self.admissions.reporting_refusal(leg, destination):
                call = self.outbound.place(leg, admission, prefer_codecs)
        except BaseException:
            self.release_reservation(admission)
            raise
        self.emit("call_placed", call)
        return call

    async def reserve(self, leg: IngressLeg, admission: Admission) -> Admission:
        """On a cluster node, the one asynchronous step between :meth:`admit` and
        :meth:`place_call`: the per-IP attempt rate and the per-IP and per-identity limits
        across the cluster, and the call's session ID claimed there (the client's, or a new
        one), each an atomic round trip to Redis. Returns the admission to place the call with
        (``reserved``); in one process (no cluster) the admission as it is, at once. Raises
        :class:`CallRefused` (reported like :meth:`admit`'s refusals). Await it from an asyncio
        coroutine (``adapters/aio.py``). A reserved admission that does not become a call is
        given back by :meth:`place_call`'s refusal, or else by :meth:`release_reservation`."""
        if self.cluster is None or admission.reserved:
            return admission
        with self.admissions.reporting_refusal(leg, admission.route.destination):
            await self.cluster.attempt(admission.source_ip)
            sid = await self.cluster.reserve(admission.source_ip, admission.limit_identity, admission.session_id)
        return replace(admission, session_id=sid, reserved=True)

    def release_reservation(self, admission: Admission) -> None:
        """Give back what :meth:`reserve` claimed, unless a live call holds it (idempotent)."""
        sid = admission.session_id
        if self.cluster is not None and admission.reserved and sid is not None and self.registry.by_session_id(sid) is None:
            self.cluster.release(sid)

    def admit(
        self,
        leg: IngressLeg,
        destination: object,
        *,
        session_id: str | None = None,
        display_name: str | None = None,
        caller_id: str | None = None,
        identity: str | None = None,
        route: RouteDecision | None = None,
        max_duration_s: int | None = None,
        token: str | None = None,
        source_ip: str | None = None,
    ) -> Admission:
        """Authorise a call attempt without placing it (counts as an attempt for the per-IP
        rate limit). Raises :class:`CallRefused`; the refusal reaches the observers.
        See :meth:`webgate.calls.admission.Admissions.admit`."""
        return self.admissions.admit(
            leg, destination, session_id=session_id, display_name=display_name, caller_id=caller_id,
            identity=identity, route=route, max_duration_s=max_duration_s, token=token, source_ip=source_ip,
        )

    def authorize_watch(self, session_id: object, token: object, source_ip: str) -> Call:
        """The live call whose video and data the holder of ``token`` may watch (counts as an
        attempt for the per-IP rate limit). Raises :class:`CallRefused`: ``not_found`` for
        every case of "no such call, or not yours", else the attempt rate's code.
        See :meth:`webgate.calls.watch.Watches.authorize`."""
        return self.watches.authorize(session_id, token, source_ip)

    def live_calls(self) -> int:
        """Calls that count toward ``[limits] max_calls``: the registry's, and built-in calls
        from SIP callers (a web client's echo call is in the registry already)."""
        return len(self.registry) + self.builtins.from_sip_callers()

    def sync_ua_clock(self) -> None:
        """Requests the application starts (BYE, CANCEL, INFO) are stamped with the UA's idea of
        "now", which is otherwise only refreshed by incoming messages: a stale one made their
        transactions retransmit at once (and could fire Timer F early)."""
        self.ua.set_time(self.reactor.seconds())

    # ------------------------------------------------------------------------------------
    # from the ingress side

    def hangup(self, call: Call, cause: str = "client_hangup") -> None:
        if call.state is CallState.ENDED:
            return
        if call.sip is not None:
            self.sync_ua_clock()
            call.sip.hangup()
            self.transport.flush()
        self.finish(call, cause, None, notify_leg=cause not in ("client_hangup",))

    def hold(self, call: Call, on: bool, done: HoldDone | None = None, method: str = "INVITE") -> None:
        """Put the SIP far end on hold (``on``) or resume it with a re-INVITE (``method``
        "UPDATE": an UPDATE); ``done(ok, sip_status)`` follows the answer. See
        :meth:`webgate.calls.media_path.MediaPaths.hold` (raises :class:`CallRefused`:
        ``no_call``, ``hold_pending``)."""
        self.media.hold(call, on, done, method)

    def send_dtmf(self, call: Call, digits: str, duration_ms: int = 160) -> None:
        """DTMF toward SIP: RFC 4733 when negotiated and configured, else SIP INFO."""
        if call.state is CallState.ENDED or call.sip is None:
            return
        for d in digits:
            if d.upper() not in "0123456789*#ABCD":
                raise CallRefused("invalid_dtmf", f"invalid DTMF digit {d!r}")
        self.sync_ua_clock()
        for d in digits:
            call.dtmf_sent.append(d)
            use_info = call.route.dtmf_mode == "info"
            if not use_info and call.stream is not None and call.stream.send_dtmf(d, duration_ms):
                continue
            if call.state is CallState.ANSWERED:
                try:
                    call.sip.send_info_dtmf(d, duration_ms)
                except LocalProtocolError as e:
                    log.warn("call {session_id}: INFO DTMF failed: {e}", session_id=call.session_id, e=safe(e.message))
        self.transport.flush()

    # calls toward registered web users (webgate/calls/inbound.py)

    @staticmethod
    def offered_audio_codecs(call: Call) -> list[str]:
        """The audio codec names of an incoming ``call``'s SIP offer, in the caller's order
        (telephone-event left out); empty when the offer has no usable audio. The web side
        asks this to order its own answer, and never parses SIP SDP itself."""
        return offered_audio_codecs(call)

    def accept_inbound(self, call: Call, leg: IngressLeg | None = None, prefer_codecs: list[str] | None = None) -> str:
        """The web client accepts an incoming ``call`` (200 OK with our SDP); returns the SIP
        codec. See :meth:`webgate.calls.inbound.InboundCalls.accept`."""
        return self.inbound.accept(call, leg, prefer_codecs)

    def reject_inbound(self, call: Call, status: int = 486, reason: str | None = None) -> None:
        """The web client rejects an incoming ``call`` (486 Busy Here, 603 Decline, ...)."""
        self.inbound.reject(call, status, reason)

    # ------------------------------------------------------------------------------------
    # SIP events

    def handle_sip_event(self, ev: Event) -> None:
        """An event of the user agent (see :class:`webgate.calls.sip_events.SipEvents`)."""
        self.sip_events.handle(ev)

    def notify(self, call: Call, state: CallState) -> None:
        """Tell the call's leg of its progress (a failing leg is logged)."""
        try:
            call.leg.call_progress(call, state)
        except Exception:
            log.failure("call {session_id}: ingress leg progress failed", session_id=call.session_id)

    def finish(self, call: Call, cause: str, status: int | None, notify_leg: bool) -> None:
        """The call ended: free everything it holds, tell the leg (``notify_leg``) and the observers."""
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        self.media.hold_failed(call, None)  # a pending hold/resume never completes
        call.end_cause = cause
        call.end_status = status
        call.times.ended = time.time()
        if call.duration_timer is not None and call.duration_timer.active():
            call.duration_timer.cancel()
        call.duration_timer = None
        if call.rtp is not None:
            call.rtp.release()
        self.registry.remove(call)
        self.policy.release(call)
        self.session_ids.release(call.session_id)
        log.info("call {session_id}: ended ({cause}, {status})", session_id=call.session_id, cause=cause, status=status)
        if notify_leg:
            try:
                call.leg.call_ended(call, cause, status)
            except Exception:
                log.failure("call {session_id}: ingress leg end failed", session_id=call.session_id)
        self.emit("call_ended", call)

    def _end_builtin(self, bc: BuiltinCall) -> None:
        """Free a built-in call (webgate/calls/builtin.py ``BuiltinCalls.end``)."""
        self.builtins.end(bc)

    # ------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop taking calls and end every live one with BYE/CANCEL."""
        self.accepting = False
        for call in list(self.registry):
            self.hangup(call, "shutdown")
        self.sync_ua_clock()
        self.builtins.hangup_all()
        self.transport.flush()

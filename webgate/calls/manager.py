"""The call manager: places calls for ingress legs, relays SIP events, and answers the
built-in destinations (``echo``, ``tone``) as a real SIP UAS on loopback."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable

from twisted.logger import Logger

from webgate.adapters.rtp import NoPortsAvailable, RtpEndpoint, RtpPortPool
from webgate.adapters.sip import SipTransport
from webgate.calls import errors
from webgate.calls.call import Call, CallState, IngressLeg
from webgate.calls.dialplan import BUILTIN_ROUTE_CODECS, DialPlan, RouteDecision
from webgate.calls.errors import CallRefused
from webgate.calls.policy import CallPolicy, client_ip
from webgate.calls.registry import CallRegistry
from webgate.calls.session_id import (
    SessionIdAllocator,
    SessionIdError,
    is_valid_session_id,
)
from webgate.calls.users import InboundAllowList, WebUsers
from webgate.logsafe import safe
from webgate.media.codecs import get_codec
from webgate.media.tones import ToneGenerator
from webgate.proto import sdp
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import check_display_name, check_user, format_host
from webgate.proto.sip.useragent import (
    Answered,
    Confirmed,
    DtmfInfo,
    EndCause,
    Ended,
    Event,
    IncomingCall,
    InviteSession,
    OfferReceived,
    ReofferAnswered,
    ReofferFailed,
    Progress,
    Registered,
    RegistrationFailed,
    UserAgent,
)
from webgate.security.tokens import Grant, verify_token

log = Logger()

CODECS_BY_NAME = {
    "pcmu": sdp.PCMU,
    "pcma": sdp.PCMA,
    "g722": sdp.G722,
    "opus": sdp.OPUS,
    "gsm": sdp.GSM,
    "speex": sdp.SPEEX_8K,
    "speex/16000": sdp.SPEEX_16K,
}

#: what the built-in echo/tone (and re-offer answers) accept; the offerer's order decides
BUILTIN_CODECS = tuple(CODECS_BY_NAME[name.lower()] for name in BUILTIN_ROUTE_CODECS)


def _in_offer_order(offer: sdp.SessionDescription, codecs: list[sdp.Codec]) -> list[sdp.Codec]:
    """``codecs`` sorted by where the offer's first audio section lists them (unlisted last):
    an answerer that takes the offerer's first choice never forces a transcoding on it."""
    index = offer.audio_index()
    if index is None:
        return codecs
    offered = [c for c in offer.media[index].codecs() if not c.is_telephone_event]

    def rank(codec: sdp.Codec) -> int:
        return next((i for i, o in enumerate(offered) if codec.matches(o)), len(offered))

    return sorted(codecs, key=rank)


def _can_encode(codec: sdp.Codec) -> bool:
    """This build can encode and decode ``codec`` (GSM/Speex encoding needs libgsm/libspeex)."""
    try:
        info = get_codec(codec.name, codec.clock_rate, codec.channels)
    except LocalProtocolError:  # a codec this build does not know
        return False
    return info.can_encode and info.can_decode

# the end causes a client sees (documented in docs/protocol.md)
_CAUSES = {
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
}


def sdp_codecs(names: tuple[str, ...] | list[str], prefer: list[str] | None = None) -> list[sdp.Codec]:
    """The codecs to offer: the route's (trunk's) ``names``, with the ingress leg's preferred
    ones first. A preferred codec the trunk does not allow is not offered."""
    allowed = {n.lower() for n in names}
    preferred = [p for p in (prefer or []) if p.lower() in allowed]
    order = preferred + [n for n in names if n.lower() not in {p.lower() for p in preferred}]
    out: list[sdp.Codec] = []
    for n in order:
        c = CODECS_BY_NAME.get(n.lower())
        if c is not None and c not in out:
            out.append(c)
    return out


BUILTIN_KINDS = ("echo", "tone")

#: what the gateway answers toward SIP for a call to a web user, in preference order
_INBOUND_CODECS = (sdp.PCMU, sdp.PCMA, sdp.G722, sdp.OPUS)


def _caller_ip(ev: IncomingCall) -> str:
    """The IP address an INVITE came from: the transport's peer address, never the request's
    own Via (whose ``received``/``sent-by`` the sender writes)."""
    return client_ip(ev.source[1])


class _PendingLeg:
    """The leg of an incoming call before the client is told (only the end matters)."""

    def __init__(self, endpoint: Any) -> None:
        self.kind = endpoint.kind
        self.client = endpoint.client

    def call_progress(self, call: Call, state: CallState) -> None:
        pass

    def call_ended(self, call: Call, cause: str, status: int | None) -> None:
        pass

    def dtmf_received(self, call: Call, digit: str, method: str) -> None:
        pass

    def audio_from_sip(self, call: Call, pcm: Any, rate: int) -> None:
        pass


@dataclass(frozen=True)
class Admission:
    """A call attempt that passed authorisation and limits (:meth:`CallManager.admit`): what
    the call will use. Hand it to :meth:`CallManager.place_call` (``admission=``) to place it."""

    route: RouteDecision
    grant: Grant | None  # the valid token's grant, None without a token
    source_ip: str
    identity: str | None  # the call's identity: the token's ``sub``, else the client's
    limit_identity: str | None  # the identity per-identity limits count (the token's ``sub`` only)
    session_id: str | None
    display_name: str | None
    caller_id: str | None
    max_duration_s: int  # 0 = none


class BuiltinCall:
    """A call answered by the gateway itself (echo or tone). ``source`` is the caller's IP
    address for a SIP caller, None for the gateway's own call (a web client's ``echo``): only
    SIP callers pass the built-in admission and count as calls of their own."""

    def __init__(self, kind: str, session: InviteSession, endpoint: RtpEndpoint, sdp_session_id: int,
                 source: str | None = None) -> None:
        self.kind = kind
        self.session = session
        self.endpoint = endpoint
        self.sdp_session_id = sdp_session_id
        self.sdp_version = 1
        self.source = source
        self.ticker: Callable[[float], None] | None = None
        self.duration_timer: Any = None


class CallManager:
    def __init__(
        self,
        reactor: Any,
        ua: UserAgent,
        transport: SipTransport,
        rtp_pool: RtpPortPool,
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
        self.builtin_calls: dict[str, BuiltinCall] = {}
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

    def _emit(self, event: str, *args: Any) -> None:
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
        with self._reporting_refusal(leg, destination):
            call = self._place_call(leg, admission, prefer_codecs)
        self._emit("call_placed", call)
        return call

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
        rate limit). Raises :class:`CallRefused`; the refusal reaches the observers."""
        # The order matters: nothing costly before the rate limit, no token check before the
        # destination is known to exist, limits last (see docs/protocol.md "Call tokens").
        with self._reporting_refusal(leg, destination):
            if not self.accepting:
                raise CallRefused(errors.SHUTTING_DOWN, "the gateway is shutting down", 503)
            ip = client_ip(source_ip or getattr(leg, "client", None))
            self.policy.attempt(ip)
            if route is None:
                route = self.dialplan.resolve(destination)
            grant: Grant | None = None
            if token is not None and token != "":
                grant = verify_token(token, self.tokens, now=self.wall_clock())
            if not route.public:
                if grant is None:
                    raise CallRefused(errors.TOKEN_REQUIRED, f"destination {route.destination!r} needs a call token", 403)
                if not grant.allows(route.destination):
                    raise CallRefused(errors.DESTINATION_NOT_ALLOWED, f"the token does not allow destination {route.destination!r}", 403)
            limit_identity: str | None = None
            if grant is not None:
                if grant.display_name is not None:
                    if display_name is not None and display_name != grant.display_name:
                        raise CallRefused(errors.DISPLAY_NAME_NOT_ALLOWED, "the display name differs from the token's", 403)
                    display_name = grant.display_name
                if grant.caller_id is not None:
                    if caller_id is not None and caller_id != grant.caller_id:
                        raise CallRefused(errors.CALLER_ID_NOT_ALLOWED, "the caller ID differs from the token's", 403)
                    caller_id = grant.caller_id
                if grant.session_id is not None:
                    if session_id is not None and session_id != grant.session_id:
                        raise CallRefused(errors.SESSION_ID_NOT_ALLOWED, "the session ID differs from the token's", 403)
                    session_id = grant.session_id
                if grant.sub is not None:
                    identity = limit_identity = grant.sub
            if session_id is not None and not is_valid_session_id(session_id):
                raise CallRefused(errors.INVALID_SESSION_ID, "session ID must be 8 to 10 digits")
            if display_name is not None:
                try:
                    if not isinstance(display_name, str):
                        raise LocalProtocolError("invalid display name: not a string")
                    check_display_name(display_name)
                except LocalProtocolError as e:
                    raise CallRefused(errors.INVALID_DISPLAY_NAME, e.message) from None
            if caller_id is not None:
                try:
                    if not isinstance(caller_id, str):
                        raise LocalProtocolError("invalid caller ID: not a string")
                    check_user(caller_id, "caller ID")
                except LocalProtocolError as e:
                    raise CallRefused(errors.INVALID_DESTINATION, e.message) from None
            limit = max_duration_s or route.max_duration_s or self.max_call_duration_s
            if grant is not None and grant.max_duration_s:
                limit = min(limit, grant.max_duration_s) if limit else grant.max_duration_s
            self._check_limits(ip, limit_identity)
            return Admission(route, grant, ip, identity, limit_identity, session_id, display_name, caller_id, int(limit or 0))

    @contextmanager
    def _reporting_refusal(self, leg: IngressLeg, destination: object) -> Iterator[None]:
        """A :class:`CallRefused` raised inside is counted, logged and told to the observers."""
        try:
            yield
        except CallRefused as e:
            self._refused(e, leg, destination)
            raise

    def _refused(self, e: CallRefused, leg: IngressLeg, destination: object) -> None:
        self.counters["calls_refused"] += 1
        log.info(
            "call refused: {ingress} {client} -> {destination}: {code}",
            ingress=getattr(leg, "kind", "?"),
            client=safe(getattr(leg, "client", "?")),
            destination=safe(destination, 80),
            code=e.code,
        )
        self._emit("call_refused", e.code, getattr(leg, "kind", "?"), getattr(leg, "client", "?"))

    def live_calls(self) -> int:
        """Calls that count toward ``[limits] max_calls``: the registry's, and built-in calls
        from SIP callers (a web client's echo call is in the registry already)."""
        return len(self.registry) + sum(1 for bc in self.builtin_calls.values() if bc.source is not None)

    def _check_limits(self, ip: str, identity: str | None) -> None:
        if self.live_calls() >= self.max_calls:
            raise CallRefused(errors.TOO_MANY_CALLS, "the gateway is at its call limit", 503)
        self.policy.check(ip, identity)

    def _place_call(self, leg: IngressLeg, admission: Admission, prefer_codecs: list[str] | None) -> Call:
        if not self.accepting:
            raise CallRefused(errors.SHUTTING_DOWN, "the gateway is shutting down", 503)
        route = admission.route
        session_id, display_name, caller_id = admission.session_id, admission.display_name, admission.caller_id
        self._check_limits(admission.source_ip, admission.limit_identity)
        try:
            sid = self.session_ids.allocate(session_id)
        except SessionIdError as e:
            raise CallRefused(e.code, e.message) from None
        try:
            endpoint = self.rtp_pool.allocate()
        except NoPortsAvailable:
            self.session_ids.release(sid)
            raise CallRefused(errors.NO_MEDIA_PORTS, "no free media ports", 503) from None

        call = Call(self, leg, sid, route, admission.identity)
        call.grant = admission.grant
        call.source_ip = admission.source_ip
        self._attach_media(call, endpoint)

        codecs = sdp_codecs(route.codecs, prefer_codecs) + [sdp.TELEPHONE_EVENT]
        offer = sdp.build_offer(codecs, self.rtp_advertise, endpoint.rtp_port, call.sdp_session_id)
        call.offer_sdp = offer

        headers = list(route.headers)
        from_user = route.from_user or "webgate"
        pai = None
        domain = self.from_domain or None
        if self.session_mode in ("header", "both"):
            headers.append((self.session_header, sid))
        if self.session_mode in ("caller_id", "both"):
            from_user = sid
            pai = f"<sip:{sid}@{domain or format_host(self._sip_host(route))}>"
        if caller_id and self.session_mode == "header":
            from_user = caller_id  # with "caller_id"/"both" the session ID is the caller ID
        now = self.reactor.seconds()
        try:
            session = self.ua.invite(
                route.target,
                offer.serialize(),
                now,
                from_user=from_user,
                from_display=display_name or route.from_display or None,
                from_domain=domain,
                headers=headers,
                asserted_identity=pai,
                credentials=route.credentials,
                transport=route.transport if route.builtin is None else None,
            )
        except LocalProtocolError as e:
            endpoint.release()
            self.session_ids.release(sid)
            raise CallRefused(errors.INVALID_DESTINATION, e.message) from None
        call.sip = session
        session.user_data = call
        call.times.invite_sent_mono = time.monotonic()
        self.registry.add(call)
        self.registry.bind_sip_call_id(call, session.call_id)
        self.policy.acquire(call, admission.source_ip, admission.limit_identity)
        self.counters["calls_placed"] += 1
        limit = admission.max_duration_s
        if limit:
            call.duration_timer = self.reactor.callLater(limit, self.hangup, call, "max_duration")
        log.info(
            "call {session_id}: {ingress} {client} -> {destination} ({target}){identity_text}",
            session_id=sid,
            ingress=leg.kind,
            client=safe(leg.client),
            destination=safe(route.destination),
            target=safe(route.target),
            identity=admission.identity,
            identity_text=f", identity {safe(admission.identity)}" if admission.identity else "",
            token=admission.grant is not None,
        )
        self.transport.flush()
        return call

    def _sip_host(self, route: RouteDecision) -> str:
        ep = self.ua.config.endpoints.get(route.transport) or next(iter(self.ua.config.endpoints.values()))
        return ep.host

    def _sync_ua_clock(self) -> None:
        """Requests the application starts (BYE, CANCEL, INFO) are stamped with the UA's idea of
        "now", which is otherwise only refreshed by incoming messages: a stale one made their
        transactions retransmit at once (and could fire Timer F early)."""
        self.ua.set_time(self.reactor.seconds())

    def hangup(self, call: Call, cause: str = "client_hangup") -> None:
        if call.state is CallState.ENDED:
            return
        if call.sip is not None:
            self._sync_ua_clock()
            call.sip.hangup()
            self.transport.flush()
        self._finish(call, cause, None, notify_leg=cause not in ("client_hangup",))

    def hold(self, call: Call, on: bool, done: Callable[[bool, int | None], None] | None = None) -> None:
        """Put the SIP far end on hold (``on``) or resume it with a re-INVITE (RFC 3264 §8.4,
        RFC 6337): our offer again, same codecs and o= session ID, version + 1, audio
        ``a=sendonly`` (``a=inactive`` when the far end already holds us) or ``a=sendrecv``.
        While held nothing is sent toward SIP. ``done(ok, sip_status)`` follows the far end's
        answer (or the call's end: ``done(False, None)``); the call stays up on a refusal.
        Raises :class:`CallRefused`: ``no_call`` (not answered), ``hold_pending`` (an
        offer/answer exchange is in progress)."""
        session, stream = call.sip, call.stream
        if call.state is not CallState.ANSWERED or session is None or stream is None or stream.media is None:
            raise CallRefused("no_call", "no answered call to hold")
        if call.hold_request is not None or session.reinvite_pending or session.pending_offer_txn is not None:
            raise CallRefused(errors.HOLD_PENDING, "a hold/resume or media change is already in progress")
        base = call.offer_sdp if call.offer_sdp is not None else call.answer_sdp
        if base is None:
            raise CallRefused("no_call", "no negotiated media to re-offer")
        offer = sdp.parse_sdp(base.serialize())  # a copy: same codecs and payload types
        offer.direction = None
        index = offer.audio_index()
        assert offer.origin is not None and index is not None
        offer.origin.sess_id = str(call.sdp_session_id)
        offer.origin.sess_version = call.sdp_version + 1
        remote_holds_us = stream.media.on_hold
        direction = ("inactive" if remote_holds_us else "sendonly") if on else "sendrecv"
        offer.media[index].direction = direction
        self._sync_ua_clock()
        try:
            session.reinvite(offer.serialize())
        except LocalProtocolError as e:
            raise CallRefused(errors.HOLD_PENDING, e.message) from None
        call.hold_request = (on, offer, done)
        log.info("call {session_id}: {what} (re-INVITE, a={direction})", session_id=call.session_id,
                 what="hold" if on else "resume", direction=direction)
        self.transport.flush()

    def _hold_answered(self, call: Call, answer: bytes | None) -> None:
        req, call.hold_request = call.hold_request, None
        if req is None:
            return
        on, offer, done = req
        nm = None
        try:
            nm = sdp.apply_answer(offer, sdp.parse_sdp(answer or b""))
        except (RemoteProtocolError, LocalProtocolError) as e:
            log.warn("call {session_id}: unusable answer to our re-INVITE: {e}", session_id=call.session_id, e=safe(e.message))
        if nm is None:
            self._hold_done(done, False, None)
            return
        call.sdp_version = int(offer.origin.sess_version)
        if call.offer_sdp is not None:
            call.offer_sdp = offer
        call.held = on
        if call.stream is not None:
            call.stream.configure(self._held_media(call, nm))
            call.codec = nm.codec.name
            self._choose_path(call)
        log.info("call {session_id}: {what} ({direction})", session_id=call.session_id,
                 what="held" if on else "resumed", direction=nm.direction)
        hook = getattr(call.leg, "hold_changed", None)
        if hook is not None:
            try:
                hook(call, on)
            except Exception:
                log.failure("call {session_id}: ingress leg hold_changed failed", session_id=call.session_id)
        self._hold_done(done, True, None)

    def _hold_failed(self, call: Call, status: int | None, reason: str = "") -> None:
        req, call.hold_request = call.hold_request, None
        if req is None:
            return
        if status is not None:
            log.info("call {session_id}: re-INVITE refused: {status} {reason}", session_id=call.session_id,
                     status=status, reason=safe(reason))
        self._hold_done(req[2], False, status)

    @staticmethod
    def _hold_done(done: Callable[[bool, int | None], None] | None, ok: bool, status: int | None) -> None:
        if done is None:
            return
        try:
            done(ok, status)
        except Exception:
            log.failure("hold result callback failed")

    @staticmethod
    def _held_media(call: Call, nm: sdp.NegotiatedMedia) -> sdp.NegotiatedMedia:
        """While we hold the far end, nothing goes toward SIP (whatever the SDP allows)."""
        if not call.held or not nm.sends:
            return nm
        return replace(nm, direction="recvonly" if nm.receives else "inactive")

    def send_dtmf(self, call: Call, digits: str, duration_ms: int = 160) -> None:
        """DTMF toward SIP: RFC 4733 when negotiated and configured, else SIP INFO."""
        if call.state is CallState.ENDED or call.sip is None:
            return
        for d in digits:
            if d.upper() not in "0123456789*#ABCD":
                raise CallRefused("invalid_dtmf", f"invalid DTMF digit {d!r}")
        self._sync_ua_clock()
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

    # ------------------------------------------------------------------------------------
    # media glue

    def _attach_media(self, call: Call, endpoint: RtpEndpoint) -> None:
        """Give ``call`` its RTP endpoint and stream; the stream's audio and RFC 4733 digits go to the leg."""
        call.rtp = endpoint
        stream = endpoint.make_stream(jitter_min_ms=self.jitter[0], jitter_max_ms=self.jitter[1], label=call.session_id)
        call.stream = stream
        stream.on_audio = lambda pcm, rate: self._audio_to_leg(call, pcm, rate)
        stream.on_dtmf = lambda digit, dur: self._dtmf_to_leg(call, digit, "rfc4733")

    def _audio_to_leg(self, call: Call, pcm: Any, rate: int) -> None:
        if call.times.first_media_mono is None:
            call.times.first_media_mono = time.monotonic()
        try:
            call.leg.audio_from_sip(call, pcm, rate)
        except Exception:
            log.failure("call {session_id}: ingress leg audio failed", session_id=call.session_id)

    def _dtmf_to_leg(self, call: Call, digit: str, method: str) -> None:
        call.dtmf_received.append(digit)
        log.info("call {session_id}: DTMF {digit} from SIP ({method})", session_id=call.session_id, digit=safe(digit), method=method)
        try:
            call.leg.dtmf_received(call, digit, method)
        except Exception:
            log.failure("call {session_id}: ingress leg DTMF failed", session_id=call.session_id)

    def _apply_remote_sdp(self, call: Call, body: bytes | None) -> bool:
        if not body or call.stream is None:
            return False
        try:
            nm = sdp.apply_answer(call.offer_sdp, sdp.parse_sdp(body))
        except (RemoteProtocolError, LocalProtocolError) as e:
            log.warn("call {session_id}: unusable SDP answer: {e}", session_id=call.session_id, e=safe(e.message))
            return False
        call.stream.configure(nm)
        call.codec = nm.codec.name
        self._choose_path(call)
        return True

    def _choose_path(self, call: Call) -> None:
        """Packet path when the leg relays the negotiated SIP codec undecoded: its
        ``packet_codecs`` name codecs ("PCMU") or codecs at one clock rate ("speex/16000").

        Run again whenever the SIP codec may have changed (183/200 SDP, a re-INVITE/UPDATE
        offer), and it goes both ways: a packet-path call whose far end moves to a codec the
        leg cannot relay switches to the frame path (decoded and re-encoded), and back.
        Counting: ``packet_path``/``frame_path`` count calls that *used* that path (a switched
        call counts once in each path it took), ``path_switches`` counts the switches; the leg
        hears of a switch through its optional ``media_path_changed(call, old, new)``."""
        leg = call.leg
        packet_codecs = {c.upper() for c in getattr(leg, "packet_codecs", ())}
        sink = getattr(leg, "payload_from_sip", None)
        stream = call.stream
        media = stream.media if stream is not None else None
        names = {call.codec.upper()} if call.codec else set()
        if call.codec and media is not None:
            names.add(f"{call.codec}/{media.codec.clock_rate}".upper())
        old = call.media_path
        if names & packet_codecs and sink is not None and stream is not None:
            new = "packet"
            stream.on_payload = lambda payload, samples, pkt: sink(call, payload, samples)
        else:
            new = "frame"
            if stream is not None:
                stream.on_payload = None  # the stream decodes again (jitter buffer -> on_audio)
        if new == old:
            return
        call.media_path = new
        self.counters[f"{new}_path"] += 1
        if old is None:
            return
        self.counters["path_switches"] += 1
        log.info("call {session_id}: SIP codec now {codec}: {old} path -> {new} path", session_id=call.session_id, codec=call.codec, old=old, new=new)
        hook = getattr(leg, "media_path_changed", None)
        if hook is not None:
            try:
                hook(call, old, new)
            except Exception:
                log.failure("call {session_id}: ingress leg path change failed", session_id=call.session_id)

    # ------------------------------------------------------------------------------------
    # SIP events

    def handle_sip_event(self, ev: Event) -> None:
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
            if self.builtin_enabled and user in BUILTIN_KINDS:
                self._builtin_event(ev)
            else:
                self._incoming_web(ev, user)
            return
        if isinstance(owner, BuiltinCall):
            self._builtin_event(ev)
            return
        if not isinstance(owner, Call):
            return
        call = owner
        if isinstance(ev, Confirmed):
            self._inbound_confirmed(call)
        elif isinstance(ev, Progress):
            has_media = self._apply_remote_sdp(call, ev.sdp) if ev.sdp else False
            state = CallState.EARLY_MEDIA if has_media else CallState.RINGING
            if call.state in (CallState.CALLING, CallState.RINGING) or (state is CallState.EARLY_MEDIA and call.state is not CallState.EARLY_MEDIA):
                call.state = state
                log.info("call {session_id}: {status} {state}", session_id=call.session_id, status=ev.status, state=state.value)
                self._notify(call, state)
                self._emit("call_progress", call, state)
        elif isinstance(ev, Answered):
            self._apply_remote_sdp(call, ev.sdp)
            call.state = CallState.ANSWERED
            call.times.answered = time.time()
            log.info("call {session_id}: answered, codec {codec}, {path} path", session_id=call.session_id, codec=call.codec, path=call.media_path)
            self._notify(call, CallState.ANSWERED)
            self._emit("call_answered", call)
        elif isinstance(ev, Ended):
            cause = _CAUSES.get(ev.end.cause, "ended")
            self._finish(call, cause, ev.end.status, notify_leg=True)
        elif isinstance(ev, DtmfInfo):
            self._dtmf_to_leg(call, ev.digit, "info")
        elif isinstance(ev, OfferReceived):
            self._answer_reoffer(session, ev.offer, call.rtp, call)
        elif isinstance(ev, ReofferAnswered):
            self._hold_answered(call, ev.sdp)
        elif isinstance(ev, ReofferFailed):
            self._hold_failed(call, ev.status, ev.reason)

    def _answer_reoffer(self, session: InviteSession, offer: bytes | None, endpoint: RtpEndpoint | None, owner: "Call | BuiltinCall") -> None:
        """Answer a re-INVITE/UPDATE offer (hold, unhold, a new media address), keeping our SDP
        session ID and raising its version (RFC 3264 §8)."""
        stream = endpoint.stream if endpoint is not None else None
        if not offer or endpoint is None or stream is None or stream.media is None:
            session.answer_offer(session.local_sdp)
            self.transport.flush()
            return
        current = stream.media.codec
        supported = [sdp.Codec(current.name, current.clock_rate, current.channels, current.fmtp)]
        supported += [c for c in BUILTIN_CODECS if not c.matches(current)]
        supported.append(sdp.TELEPHONE_EVENT)
        try:
            answer, nm = sdp.negotiate_answer(sdp.parse_sdp(offer), supported, self.rtp_advertise, endpoint.rtp_port,
                                              session_id=owner.sdp_session_id, session_version=owner.sdp_version + 1,
                                              direction="sendonly" if getattr(owner, "held", False) else "sendrecv")
        except RemoteProtocolError as e:
            session.answer_offer(None, status=e.status_hint or 488)
            self.transport.flush()
            return
        owner.sdp_version += 1
        stream.configure(self._held_media(owner, nm) if isinstance(owner, Call) else nm)
        if isinstance(owner, Call):
            owner.codec = nm.codec.name
            log.info("call {session_id}: re-offer answered ({direction}, hold={hold})", session_id=owner.session_id, direction=nm.direction, hold=nm.on_hold)
            self._choose_path(owner)  # the far end may have moved to another codec
        session.answer_offer(answer.serialize())
        self.transport.flush()

    def _notify(self, call: Call, state: CallState) -> None:
        try:
            call.leg.call_progress(call, state)
        except Exception:
            log.failure("call {session_id}: ingress leg progress failed", session_id=call.session_id)

    def _finish(self, call: Call, cause: str, status: int | None, notify_leg: bool) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        self._hold_failed(call, None)  # a pending hold/resume never completes
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
        self._emit("call_ended", call)

    # ------------------------------------------------------------------------------------
    # calls toward registered web users (the gateway as UAS for a web client)

    def _reject_incoming(self, session: InviteSession, status: int, reason: str | None, why: str, source: str, user: str) -> None:
        self.counters["inbound_refused"] += 1
        log.info("incoming call from {source} to {user} refused: {status} ({why})", source=source, user=safe(user, 64), status=status, why=safe(why))
        try:
            session.reject(status, reason)
        except LocalProtocolError:
            pass
        self.transport.flush()

    def _incoming_web(self, ev: IncomingCall, user: str) -> None:
        """An INVITE for a user that is not a built-in: ring the registered web client, if any.

        Order (docs/protocol.md "Calls toward web users"): shutting down 503, source not in
        ``[sip] inbound_from`` 403, no such registered user 404, client busy 486, no usable
        offer 488, gateway at its call limit 503."""
        session = ev.session
        req = ev.request
        source = _caller_ip(ev)
        if not self.accepting:
            self._reject_incoming(session, 503, None, "shutting down", source, user)
            return
        if not self.inbound_from.allows(source):
            self._reject_incoming(session, 403, None, "source not in sip.inbound_from", source, user)
            return
        endpoint = self.web_users.lookup(user) if user else None
        if endpoint is None:
            self._reject_incoming(session, 404, "Not Found", "no such web user", source, user)
            return
        if endpoint.busy():
            self._reject_incoming(session, 486, "Busy Here", "web user busy", source, user)
            return
        if not ev.offer:
            # a delayed offer (INVITE without SDP) would need an offer from us: not supported
            self._reject_incoming(session, 488, None, "no SDP offer", source, user)
            return
        try:
            offer = sdp.parse_sdp(ev.offer)
            sdp.negotiate_answer(offer, _INBOUND_CODECS, self.rtp_advertise, 9)  # is there a common codec?
        except (RemoteProtocolError, LocalProtocolError) as e:
            status = getattr(e, "status_hint", None) or 488
            self._reject_incoming(session, status, None, f"unusable offer: {e.message}", source, user)
            return
        if self.live_calls() >= self.max_calls:
            self._reject_incoming(session, 503, None, "at the call limit", source, user)
            return
        requested = req.headers.get(self.session_header) if self.session_header else None
        requested = requested.strip() if requested else None
        if requested is not None and not (is_valid_session_id(requested) and self.session_ids.is_available(requested)):
            requested = None  # not usable (malformed or in use): generate one
        try:
            sid = self.session_ids.allocate(requested)
        except SessionIdError:
            self._reject_incoming(session, 503, None, "no session ID", source, user)
            return
        try:
            endpoint_rtp = self.rtp_pool.allocate()
        except NoPortsAvailable:
            self.session_ids.release(sid)
            self._reject_incoming(session, 503, None, "no free media ports", source, user)
            return
        caller_uri = req.from_.uri
        caller = caller_uri.user or caller_uri.host
        caller_display = req.from_.display_name or None
        route = RouteDecision(destination=user, target=caller_uri, public=False, codecs=tuple(c.name for c in _INBOUND_CODECS))
        call = Call(self, _PendingLeg(endpoint), sid, route, user)
        call.direction = "inbound"
        # the registration's token grant: listening to the call by session ID then needs a token
        # of the same user (security/tokens.call_access_allowed), as for a call placed with a token
        call.grant = getattr(endpoint, "grant", None)
        call.caller = caller
        call.caller_display = caller_display
        call.remote_offer = ev.offer
        call.source_ip = source
        self._attach_media(call, endpoint_rtp)
        call.sip = session
        session.user_data = call
        call.times.invite_sent_mono = time.monotonic()  # setup latency: INVITE received -> answer
        self.registry.add(call)
        self.registry.bind_sip_call_id(call, session.call_id)
        self.counters["inbound_offered"] += 1
        if self.max_call_duration_s:
            call.duration_timer = self.reactor.callLater(self.max_call_duration_s, self.hangup, call, "max_duration")
        log.info("call {session_id}: incoming from {source} ({caller}) to web user {user} ({kind} {client})",
                 session_id=sid, source=source, caller=safe(caller), user=safe(user), kind=endpoint.kind, client=safe(endpoint.client))
        self._emit("call_placed", call)
        try:
            leg = endpoint.invited(call, caller, caller_display)
        except Exception:  # noqa: BLE001 - a failing client refuses the call, nothing else
            log.failure("call {session_id}: offering the call to the web client failed", session_id=sid)
            session.reject(500, "Server Internal Error")
            self.transport.flush()
            self._finish(call, "internal_error", 500, notify_leg=False)
            return
        if call.state is CallState.ENDED:
            return  # the client refused at once
        call.leg = leg
        session.ring()
        self.transport.flush()
        call.state = CallState.RINGING
        self._emit("call_progress", call, CallState.RINGING)

    def accept_inbound(self, call: Call, leg: IngressLeg | None = None, prefer_codecs: list[str] | None = None) -> str:
        """The web client accepts an incoming ``call``: answer the SIP offer (200 OK with our SDP)
        and start media. ``leg`` replaces the call's leg (the WebRTC leg made for the answer);
        ``prefer_codecs``: codec names to pick first when the offer has them. Returns the SIP
        codec. Raises :class:`CallRefused` (``no_call``) when the call is not waiting for an answer."""
        if call.direction != "inbound" or call.state is CallState.ENDED or call.sip is None or call.answer_sdp is not None:
            raise CallRefused("no_call", "no incoming call to accept")
        if leg is not None:
            call.leg = leg
        prefer = [c for c in (prefer_codecs or []) if c]
        codecs = [c for name in prefer for c in _INBOUND_CODECS if c.name.lower() == name.lower()]
        codecs += [c for c in _INBOUND_CODECS if c not in codecs]
        codecs += [sdp.TELEPHONE_EVENT, sdp.TELEPHONE_EVENT_48K]
        assert call.rtp is not None and call.stream is not None
        try:
            answer, nm = sdp.negotiate_answer(sdp.parse_sdp(call.remote_offer or b""), codecs, self.rtp_advertise,
                                              call.rtp.rtp_port, session_id=call.sdp_session_id)
        except (RemoteProtocolError, LocalProtocolError) as e:
            self._sync_ua_clock()
            call.sip.reject(488)
            self.transport.flush()
            self._finish(call, "rejected", 488, notify_leg=True)
            raise CallRefused("invalid_sdp", f"the caller's offer cannot be answered: {e.message}") from None
        call.answer_sdp = answer
        call.stream.configure(nm)
        call.codec = nm.codec.name
        self._choose_path(call)
        self._sync_ua_clock()
        call.sip.answer(answer.serialize())
        self.transport.flush()
        log.info("call {session_id}: web user {user} accepted, codec {codec}, {path} path",
                 session_id=call.session_id, user=safe(call.destination), codec=call.codec, path=call.media_path)
        return call.codec

    def reject_inbound(self, call: Call, status: int = 486, reason: str | None = None) -> None:
        """The web client rejects an incoming ``call`` (486 Busy Here, 603 Decline, ...)."""
        if call.direction != "inbound" or call.state is CallState.ENDED or call.sip is None:
            raise CallRefused("no_call", "no incoming call to reject")
        if call.answer_sdp is not None:
            self.hangup(call, "client_hangup")  # already accepted: BYE
            return
        self._sync_ua_clock()
        try:
            call.sip.reject(status, reason)
        except LocalProtocolError:
            call.sip.reject(486)
        self.transport.flush()
        self._finish(call, "rejected", status, notify_leg=False)

    def _inbound_confirmed(self, call: Call) -> None:
        """The ACK for our 200 OK arrived: the incoming call is answered."""
        if call.direction != "inbound" or call.state is CallState.ENDED or call.state is CallState.ANSWERED:
            return
        call.state = CallState.ANSWERED
        call.times.answered = time.time()
        log.info("call {session_id}: answered (ACK), codec {codec}, {path} path", session_id=call.session_id, codec=call.codec, path=call.media_path)
        self._notify(call, CallState.ANSWERED)
        self._emit("call_answered", call)

    # ------------------------------------------------------------------------------------
    # built-in destinations (the gateway as UAS)

    def _builtin_event(self, ev: Event) -> None:
        if isinstance(ev, IncomingCall):
            user = ev.request.uri.user or ""
            kind = user if self.builtin_enabled and user in BUILTIN_KINDS else None
            if kind is None:
                ev.session.reject(404, "Not Found")
                self.transport.flush()
                return
            source: str | None = None
            if self._own_call(ev.session) is None:
                source = _caller_ip(ev)
                refusal = self._builtin_refusal(source)
                if refusal is not None:
                    status, why = refusal
                    self.counters["builtin_refused"] += 1
                    log.info("built-in {kind} call from {source} refused: {status} ({why})", kind=kind, source=source,
                             status=status, why=why)
                    ev.session.reject(status)
                    self.transport.flush()
                    return
            self._answer_builtin(kind, ev.session, ev.offer, source)
            return
        if isinstance(ev, (Registered, RegistrationFailed)):
            return  # registration events have no session (handle_sip_event never sends them here)
        bc = ev.session.user_data
        if not isinstance(bc, BuiltinCall):
            return
        if isinstance(ev, Ended):
            self._end_builtin(bc)
        elif isinstance(ev, DtmfInfo):
            if bc.kind == "echo":
                try:
                    bc.session.send_info_dtmf(ev.digit, ev.duration_ms)
                except LocalProtocolError:
                    pass
                self.transport.flush()
        elif isinstance(ev, OfferReceived):
            self._answer_reoffer(bc.session, ev.offer, bc.endpoint, bc)
        elif isinstance(ev, Confirmed):
            pass

    def _own_call(self, session: InviteSession) -> Call | None:
        """The gateway's own outbound call that this INVITE belongs to, if any: a web client's
        ``echo``/``tone``, or a call through a trunk that leads back to the gateway. Its Call-ID
        is the one our UAC chose (80 random bits). Such a call was admitted (and is counted)
        on the client's side already."""
        call = self.registry.by_sip_call_id(session.call_id)
        if call is None or call.direction != "outbound" or call.sip is None or call.sip.role != "uac":
            return None
        return call

    def _builtin_refusal(self, source: str) -> tuple[int, str] | None:
        """The built-in admission of a SIP caller (docs/security.md), checked before anything is
        allocated: (SIP status, why) to refuse, or None. Order: shutting down 503, source not in
        ``[builtin] sip_from`` 403, the per-source attempt rate and concurrent calls
        (``[limits]``) 403, the gateway's call limit 503."""
        if not self.accepting:
            return 503, "shutting down"
        if not self.builtin_sip_from.allows(source):
            return 403, "source not in builtin.sip_from"
        try:
            self.policy.attempt(source)
            self.policy.check(source, None)
        except CallRefused as e:
            return 403, e.code
        if self.live_calls() >= self.max_calls:
            return 503, "at the call limit"
        return None

    def _answer_builtin(self, kind: str, session: InviteSession, offer: bytes | None, source: str | None = None) -> None:
        if not offer:
            session.reject(488, "Not Acceptable Here")
            self.transport.flush()
            return
        try:
            endpoint = self.rtp_pool.allocate()
        except NoPortsAvailable:
            session.reject(503, "Service Unavailable")
            self.transport.flush()
            return
        bc_sdp_id = secrets.randbelow(2**31)
        try:
            parsed = sdp.parse_sdp(offer)
            # echo and tone take the caller's first choice (an echo that answered PCMU to an
            # Opus-first offer would force the caller to transcode for nothing)
            supported = _in_offer_order(parsed, [c for c in BUILTIN_CODECS if _can_encode(c)])
            supported += [sdp.TELEPHONE_EVENT, sdp.TELEPHONE_EVENT_48K]
            answer, nm = sdp.negotiate_answer(parsed, supported, self.rtp_advertise, endpoint.rtp_port, session_id=bc_sdp_id)
        except RemoteProtocolError as e:
            endpoint.release()
            session.reject(e.status_hint or 488)
            self.transport.flush()
            return
        stream = endpoint.make_stream(jitter_min_ms=self.jitter[0], jitter_max_ms=self.jitter[1], label=f"builtin-{kind}")
        stream.configure(nm)
        bc = BuiltinCall(kind, session, endpoint, bc_sdp_id, source)
        session.user_data = bc
        self.builtin_calls[session.call_id] = bc
        if source is not None:
            # a SIP caller's call: its own slot in the per-IP limit and its own duration limit
            self.policy.acquire(bc, source, None)
            if self.max_call_duration_s:
                bc.duration_timer = self.reactor.callLater(self.max_call_duration_s, self._hangup_builtin, bc)
        if kind == "echo":
            # the caller's audio goes straight back (packet path) and so do its digits
            stream.on_payload = lambda payload, samples, pkt: stream.send_payload(payload, samples)

            def echo_dtmf(digit: str, duration_ms: int) -> None:
                stream.send_dtmf(digit, duration_ms)  # False (no telephone-event): nothing to echo

            stream.on_dtmf = echo_dtmf
        else:
            info = stream.codec
            assert info is not None
            gen = ToneGenerator(float(self.tone_hz), info.sample_rate, 0.4)

            def tick(now: float) -> None:
                stream.send_pcm(gen.frame(20), info.sample_rate)

            bc.ticker = tick
            self.rtp_pool.clock.add_ticker(tick)
        session.answer(answer.serialize())
        self.transport.flush()
        ours = self.registry.by_sip_call_id(session.call_id)  # a call of ours to ourselves: same Call-ID
        log.info("built-in {kind} answered {call_id} ({codec}) for {caller}", kind=kind, call_id=safe(session.call_id), codec=nm.codec.name,
                 caller=source or "the gateway", session_id=ours.session_id if ours is not None else None)

    def _hangup_builtin(self, bc: BuiltinCall) -> None:
        """``[limits] max_call_duration_s`` reached: BYE."""
        bc.duration_timer = None
        log.info("built-in {kind} call {call_id}: max_duration, hanging up", kind=bc.kind, call_id=safe(bc.session.call_id))
        self._sync_ua_clock()
        bc.session.hangup()
        self._end_builtin(bc)
        self.transport.flush()

    def _end_builtin(self, bc: BuiltinCall) -> None:
        if bc.duration_timer is not None and bc.duration_timer.active():
            bc.duration_timer.cancel()
        bc.duration_timer = None
        self.policy.release(bc)
        if bc.ticker is not None:
            self.rtp_pool.clock.remove_ticker(bc.ticker)
            bc.ticker = None
        bc.endpoint.release()
        self.builtin_calls.pop(bc.session.call_id, None)

    # ------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop taking calls and end every live one with BYE/CANCEL."""
        self.accepting = False
        for call in list(self.registry):
            self.hangup(call, "shutdown")
        self._sync_ua_clock()
        for bc in list(self.builtin_calls.values()):
            bc.session.hangup()
            self._end_builtin(bc)
        self.transport.flush()

"""Calls toward registered web users: the gateway as UAS for a web client. An INVITE for a user
that is not a built-in rings the user's connection (:meth:`InboundCalls.incoming`); the client
accepts (:meth:`InboundCalls.accept`: 200 OK with our SDP) or rejects it. An INVITE without SDP
(delayed offer) gets our offer in the 200 and its answer from the ACK (:meth:`InboundCalls.confirmed`).
Everything after the answer (media paths, DTMF, hangup, limits, observers) is the outgoing
call's code in the manager. See docs/protocol.md "Calls toward web users"."""

from __future__ import annotations

import time
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls.call import Call, CallControl, CallState, IngressLeg
from webgate.calls.dialplan import RouteDecision
from webgate.calls.errors import CallRefused, NoPortsAvailable
from webgate.calls.interfaces import SipSender
from webgate.calls.media_path import MediaPaths
from webgate.calls.offers import inbound_codecs
from webgate.calls.policy import client_ip
from webgate.calls.registry import CallRegistry
from webgate.calls.session_id import SessionIdAllocator, SessionIdError
from webgate.calls.users import InboundAllowList, WebUserEndpoint, WebUsers
from webgate.logsafe import safe
from webgate.media.audio import PCM
from webgate.proto import sdp
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.useragent import IncomingCall, InviteSession
from webgate.syntax import is_valid_session_id

__all__ = ["InboundCalls", "InboundHost", "offered_audio_codecs"]

#: these lines were the call manager's before they moved here: same namespace
log = Logger(namespace="webgate.calls.manager")


def _caller_ip(ev: IncomingCall) -> str:
    """The IP address an INVITE came from: the transport's peer address, never the request's
    own Via (whose ``received``/``sent-by`` the sender writes)."""
    return client_ip(ev.source[1])


class _PendingLeg:
    """The leg of an incoming call before the client is told (only the end matters)."""

    def __init__(self, endpoint: WebUserEndpoint) -> None:
        self.kind = endpoint.kind
        self.client = endpoint.client

    def call_progress(self, call: Call, state: CallState) -> None:
        pass

    def call_ended(self, call: Call, cause: str, status: int | None) -> None:
        pass

    def dtmf_received(self, call: Call, digit: str, method: str) -> None:
        pass

    def audio_from_sip(self, call: Call, pcm: PCM, rate: int) -> None:
        pass


class InboundHost(CallControl, Protocol):
    """What calls toward web users use of the call manager (its settings are read live:
    ``accepting`` turns False at shutdown)."""

    accepting: bool
    inbound_from: InboundAllowList
    web_users: WebUsers
    registry: CallRegistry
    session_ids: SessionIdAllocator
    transport: SipSender
    media: MediaPaths
    reactor: Any
    counters: dict[str, int]
    rtp_advertise: str
    session_header: str
    max_calls: int
    max_call_duration_s: int

    def live_calls(self) -> int: ...

    def sync_ua_clock(self) -> None: ...

    def notify(self, call: Call, state: CallState) -> None: ...

    def emit(self, event: str, *args: Any) -> None: ...

    def finish(self, call: Call, cause: str, status: int | None, notify_leg: bool) -> None: ...


def offered_audio_codecs(call: Call) -> list[str]:
    """The audio codec names of an incoming ``call``'s SIP offer, in the caller's order
    (telephone-event left out); empty when the offer has no usable audio. The web side
    asks this to order its own answer, and never parses SIP SDP itself."""
    try:
        media = next(m for m in sdp.parse_sdp(call.remote_offer or b"").media if m.kind == "audio")
    except (StopIteration, RemoteProtocolError, LocalProtocolError):
        return []
    return [c.name for c in media.codecs() if not c.is_telephone_event]


class InboundCalls:
    """Offers, accepts and rejects the calls from SIP toward registered web users."""

    def __init__(self, host: InboundHost) -> None:
        self.host = host

    def _reject_incoming(self, session: InviteSession, status: int, reason: str | None, why: str, source: str, user: str) -> None:
        self.host.counters["inbound_refused"] += 1
        log.info("incoming call from {source} to {user} refused: {status} ({why})", source=source, user=safe(user, 64), status=status, why=safe(why))
        try:
            session.reject(status, reason)
        except LocalProtocolError:
            pass
        self.host.transport.flush()

    def incoming(self, ev: IncomingCall, user: str) -> None:
        """An INVITE for a user that is not a built-in: ring the registered web client, if any.

        Order (docs/protocol.md "Calls toward web users"): shutting down 503, source not in
        ``[sip] inbound_from`` 403, no such registered user 404, client busy 486, no usable
        offer 488 (no offer at all is a delayed offer: ours goes in the 200), gateway at its
        call limit 503."""
        h = self.host
        session = ev.session
        req = ev.request
        source = _caller_ip(ev)
        if not h.accepting:
            self._reject_incoming(session, 503, None, "shutting down", source, user)
            return
        if not h.inbound_from.allows(source):
            self._reject_incoming(session, 403, None, "source not in sip.inbound_from", source, user)
            return
        endpoint = h.web_users.lookup(user) if user else None
        if endpoint is None:
            self._reject_incoming(session, 404, "Not Found", "no such web user", source, user)
            return
        if endpoint.busy():
            self._reject_incoming(session, 486, "Busy Here", "web user busy", source, user)
            return
        try:
            if ev.offer:  # without one (delayed offer), ours goes in the 200
                sdp.negotiate_answer(sdp.parse_sdp(ev.offer), inbound_codecs(), h.rtp_advertise, 9)  # a common codec?
        except (RemoteProtocolError, LocalProtocolError) as e:
            status = getattr(e, "status_hint", None) or 488
            self._reject_incoming(session, status, None, f"unusable offer: {e.message}", source, user)
            return
        if h.live_calls() >= h.max_calls:
            self._reject_incoming(session, 503, None, "at the call limit", source, user)
            return
        requested = req.headers.get(h.session_header) if h.session_header else None
        requested = requested.strip() if requested else None
        if requested is not None and not (is_valid_session_id(requested) and h.session_ids.is_available(requested)):
            requested = None  # not usable (malformed or in use): generate one
        try:
            sid = h.session_ids.allocate(requested)
        except SessionIdError:
            self._reject_incoming(session, 503, None, "no session ID", source, user)
            return
        try:
            endpoint_rtp = h.rtp_pool.allocate()
        except NoPortsAvailable:
            h.session_ids.release(sid)
            self._reject_incoming(session, 503, None, "no free media ports", source, user)
            return
        caller_uri = req.from_.uri
        caller = caller_uri.user or caller_uri.host
        caller_display = req.from_.display_name or None
        route = RouteDecision(destination=user, target=caller_uri, public=False, codecs=tuple(c.name for c in inbound_codecs()))
        call = Call(h, _PendingLeg(endpoint), sid, route, user)
        call.direction = "inbound"
        # the registration's token grant: listening to the call by session ID then needs a token
        # of the same user (security/tokens.call_access_allowed), as for a call placed with a token
        call.grant = getattr(endpoint, "grant", None)
        call.caller = caller
        call.caller_display = caller_display
        call.remote_offer = ev.offer
        call.source_ip = source
        h.media.attach(call, endpoint_rtp)
        call.sip = session
        session.user_data = call
        call.times.invite_sent_mono = time.monotonic()  # setup latency: INVITE received -> answer
        h.registry.add(call)
        h.registry.bind_sip_call_id(call, session.call_id)
        h.counters["inbound_offered"] += 1
        if h.max_call_duration_s:
            call.duration_timer = h.reactor.callLater(h.max_call_duration_s, h.hangup, call, "max_duration")
        log.info("call {session_id}: incoming from {source} ({caller}) to web user {user} ({kind} {client})",
                 session_id=sid, source=source, caller=safe(caller), user=safe(user), kind=endpoint.kind, client=safe(endpoint.client))
        h.emit("call_placed", call)
        try:
            leg = endpoint.invited(call, caller, caller_display)
        except Exception:  # noqa: BLE001 - a failing client refuses the call, nothing else
            log.failure("call {session_id}: offering the call to the web client failed", session_id=sid)
            session.reject(500, "Server Internal Error")
            h.transport.flush()
            h.finish(call, "internal_error", 500, notify_leg=False)
            return
        if call.state is CallState.ENDED:
            return  # the client refused at once
        call.leg = leg
        session.ring()
        h.transport.flush()
        call.state = CallState.RINGING
        h.emit("call_progress", call, CallState.RINGING)

    def accept(self, call: Call, leg: IngressLeg | None = None, prefer_codecs: list[str] | None = None) -> str:
        """The web client accepts an incoming ``call``: answer the SIP offer (200 OK with our SDP)
        and start media. ``leg`` replaces the call's leg (the WebRTC leg made for the answer);
        ``prefer_codecs``: codec names to pick first when the offer has them. Returns the SIP
        codec. Raises :class:`CallRefused` (``no_call``) when the call is not waiting for an answer."""
        h = self.host
        if call.direction != "inbound" or call.state is CallState.ENDED or call.sip is None or call.answer_sdp is not None:
            raise CallRefused("no_call", "no incoming call to accept")
        if leg is not None:
            call.leg = leg
        prefer = [c for c in (prefer_codecs or []) if c]
        answerable = inbound_codecs()  # the web codecs, then the library codecs this build can encode
        codecs = [c for name in prefer for c in answerable if c.name.lower() == name.lower()]
        codecs += [c for c in answerable if c not in codecs]
        assert call.rtp is not None and call.stream is not None
        if call.remote_offer is None:
            return self._offer_in_200(call, codecs)
        codecs += [sdp.TELEPHONE_EVENT, sdp.TELEPHONE_EVENT_48K]
        try:
            answer, nm = sdp.negotiate_answer(sdp.parse_sdp(call.remote_offer or b""), codecs, h.rtp_advertise,
                                              call.rtp.rtp_port, session_id=call.sdp_session_id)
        except (RemoteProtocolError, LocalProtocolError) as e:
            h.sync_ua_clock()
            call.sip.reject(488)
            h.transport.flush()
            h.finish(call, "rejected", 488, notify_leg=True)
            raise CallRefused("invalid_sdp", f"the caller's offer cannot be answered: {e.message}") from None
        call.answer_sdp = answer
        call.stream.configure(nm)
        call.codec = nm.codec.name
        h.media.choose_path(call)
        h.sync_ua_clock()
        call.sip.answer(answer.serialize())
        h.transport.flush()
        log.info("call {session_id}: web user {user} accepted, codec {codec}, {path} path",
                 session_id=call.session_id, user=safe(call.destination), codec=call.codec, path=call.media_path)
        return call.codec

    def _offer_in_200(self, call: Call, codecs: list[sdp.Codec]) -> str:
        """Delayed offer: the INVITE had no SDP, so the 200 carries our offer (the web client's
        codec first) and the caller's ACK the answer (:meth:`confirmed`). Returns the codec we
        prefer; the answer decides (the path is chosen again then)."""
        h = self.host
        assert call.rtp is not None and call.sip is not None
        offer = sdp.build_offer([*codecs, sdp.TELEPHONE_EVENT], h.rtp_advertise, call.rtp.rtp_port, call.sdp_session_id)
        call.offer_sdp = offer
        call.answer_sdp = offer  # what our 200 carried: the call is accepted
        h.sync_ua_clock()
        call.sip.answer(offer.serialize())
        h.transport.flush()
        log.info("call {session_id}: web user {user} accepted, offered {codecs} in the 200 (delayed offer)",
                 session_id=call.session_id, user=safe(call.destination), codecs=",".join(c.name for c in codecs))
        return codecs[0].name

    def reject(self, call: Call, status: int = 486, reason: str | None = None) -> None:
        """The web client rejects an incoming ``call`` (486 Busy Here, 603 Decline, ...)."""
        h = self.host
        if call.direction != "inbound" or call.state is CallState.ENDED or call.sip is None:
            raise CallRefused("no_call", "no incoming call to reject")
        if call.answer_sdp is not None:
            h.hangup(call, "client_hangup")  # already accepted: BYE
            return
        h.sync_ua_clock()
        try:
            call.sip.reject(status, reason)
        except LocalProtocolError:
            call.sip.reject(486)
        h.transport.flush()
        h.finish(call, "rejected", status, notify_leg=False)

    def confirmed(self, call: Call, answer: bytes | None = None) -> None:
        """The ACK for our 200 OK arrived: the incoming call is answered. After a delayed offer
        it carries the caller's answer; an ACK without a usable one ends the call (BYE)."""
        if call.direction != "inbound" or call.state is CallState.ENDED or call.state is CallState.ANSWERED:
            return
        if call.remote_offer is None and call.offer_sdp is not None:
            if not self.host.media.apply_remote_sdp(call, answer):
                log.warn("call {session_id}: the ACK has no usable answer to our offer", session_id=call.session_id)
                self.host.hangup(call, "protocol_error")
                return
        call.state = CallState.ANSWERED
        call.times.answered = time.time()
        log.info("call {session_id}: answered (ACK), codec {codec}, {path} path", session_id=call.session_id, codec=call.codec, path=call.media_path)
        self.host.notify(call, CallState.ANSWERED)
        self.host.emit("call_answered", call)

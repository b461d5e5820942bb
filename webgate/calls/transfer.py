"""Blind transfer by the SIP far end (RFC 3515 REFER, RFC 3892 Referred-By): the PBX or phone at
the other end of a call moves the web side to another destination.

Allowed only when the route the call came through has ``transfer = true`` (otherwise the user
agent answers 403 itself and never offers REFER in Allow) and the Refer-To user resolves through
the dial plan like a dialled destination; a refused REFER gets 403. An accepted one gets 202 and
NOTIFY ``100 Trying``; the gateway INVITEs the target (with Referred-By and the call's session ID)
from the call's own RTP port, so the web leg, its session ID and its connection stay as they are.
When the target answers, the stream moves to it, the referrer gets NOTIFY ``200 OK`` and a BYE,
and the leg hears ``transferred``. When it fails, the referrer gets the failure's sipfrag and the
call goes on with it, unless it has hung up already (blind transfer), which ends the call
(``transfer_failed``). See docs/protocol.md "SIP extensions"."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls.call import Call, CallControl, CallState
from webgate.calls.dialplan import DialPlan, RouteDecision
from webgate.calls.errors import CallRefused
from webgate.calls.interfaces import SipSender
from webgate.calls.media_path import MediaPaths
from webgate.calls.offers import sdp_codecs
from webgate.calls.registry import CallRegistry
from webgate.logsafe import safe
from webgate.proto import sdp
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import check_user, format_host
from webgate.proto.sip.useragent import (
    Answered,
    Ended,
    Event,
    InviteSession,
    OfferReceived,
    ReferReceived,
    UserAgent,
)

__all__ = ["Transfer", "TransferHost", "Transfers"]

#: these lines are the call manager's, like its other parts': same namespace
log = Logger(namespace="webgate.calls.manager")


class TransferHost(CallControl, Protocol):
    """What transfers use of the call manager."""

    ua: UserAgent
    reactor: Any
    dialplan: DialPlan
    registry: CallRegistry
    transport: SipSender
    media: MediaPaths
    observers: list[Any]
    rtp_advertise: str
    session_header: str
    session_mode: str
    from_domain: str

    def sync_ua_clock(self) -> None: ...

    def notify(self, call: Call, state: CallState) -> None: ...

    def emit(self, event: str, *args: Any) -> None: ...

    def finish(self, call: Call, cause: str, status: int | None, notify_leg: bool) -> None: ...


@dataclass
class Transfer:
    """A transfer in progress: the referrer's dialog (``old``) and the new one toward the target.
    Both sessions' ``user_data`` point here until it ends."""

    call: Call
    old: InviteSession
    new: InviteSession
    route: RouteDecision
    offer: sdp.SessionDescription
    destination: str
    referred_by: str | None
    old_gone: bool = False  # the referrer hung up (usual in a blind transfer)


class Transfers:
    """The transfers of one manager's calls, by session ID. It watches calls end (an observer)
    to hang up a transfer target still ringing."""

    def __init__(self, host: TransferHost) -> None:
        self.host = host
        self.pending: dict[str, Transfer] = {}
        host.observers.append(self)

    def handle(self, ev: Event) -> None:
        """A REFER in a call's dialog, or an event of a session of a transfer in progress."""
        if isinstance(ev, ReferReceived):
            self._refer(ev)
            return
        session = getattr(ev, "session", None)
        t = getattr(session, "user_data", None)
        if not isinstance(t, Transfer):
            return
        if session is t.old:
            self._old_event(t, ev)
        elif session is t.new:
            self._new_event(t, ev)

    # -- the REFER ---------------------------------------------------------------------------
    def _refuse(self, session: InviteSession, why: str, call: Call | None, status: int = 403) -> None:
        log.info("call {session_id}: REFER refused: {status} ({why})", session_id=call.session_id if call else None,
                 status=status, why=safe(why))
        session.reject_refer(status)
        self.host.transport.flush()

    def _refer(self, ev: ReferReceived) -> None:
        h = self.host
        session = ev.session
        call = session.user_data
        h.sync_ua_clock()
        if not isinstance(call, Call) or call.ended or call.sip is not session or call.rtp is None or call.stream is None:
            self._refuse(session, "no call to transfer", None)
            return
        if call.session_id in self.pending:
            self._refuse(session, "a transfer is in progress", call, 491)
            return
        target = ev.refer_to
        if "replaces=" in target.headers.lower():
            self._refuse(session, "attended transfer (Replaces) is not supported", call)
            return
        destination = target.user or ""
        try:
            route = h.dialplan.resolve(destination)
        except CallRefused as e:
            self._refuse(session, f"Refer-To {destination!r}: {e.code}", call)
            return
        codecs = sdp_codecs(route.codecs, [call.codec] if call.codec else None) + [sdp.TELEPHONE_EVENT]
        offer = sdp.build_offer(codecs, h.rtp_advertise, call.rtp.rtp_port, call.sdp_session_id, call.sdp_version + 1)
        from_user, from_display, headers, pai = self._identity(call, route)
        if ev.referred_by:
            headers.append(("Referred-By", ev.referred_by))
        try:
            new = h.ua.invite(
                route.target, offer.serialize(), h.reactor.seconds(), from_user=from_user, from_display=from_display,
                from_domain=h.from_domain or None, headers=headers, asserted_identity=pai, credentials=route.credentials,
                transport=route.transport if route.builtin is None else None, session_expires=route.session_expires_s,
                allow_refer=route.transfer,
                destinations=list(route.destinations) or None, outbound_proxy=route.outbound_proxy,
            )
        except LocalProtocolError as e:
            self._refuse(session, e.message, call)
            return
        session.accept_refer()
        t = Transfer(call, session, new, route, offer, destination, ev.referred_by)
        session.user_data = t
        new.user_data = t
        self.pending[call.session_id] = t
        h.registry.bind_sip_call_id(call, new.call_id)  # before the INVITE leaves: a built-in target knows it is ours
        log.info("call {session_id}: transfer to {destination} ({target}) referred by {by}", session_id=call.session_id,
                 destination=safe(destination), target=safe(route.target), by=safe(ev.referred_by or "-"))
        h.transport.flush()

    def _identity(self, call: Call, route: RouteDecision) -> tuple[str, str | None, list[tuple[str, str]], str | None]:
        """From user, display name, extra headers and P-Asserted-Identity of the INVITE toward
        the target: the route's, with the call's session ID as the configured mode puts it."""
        h = self.host
        old = call.sip.invite if call.sip is not None else None
        from_user = route.from_user or "webgate"
        display = route.from_display or None
        if old is not None and call.sip is not None and call.sip.role == "uac" and not route.from_user:
            from_user = old.from_.uri.user or from_user  # the caller ID the web caller had
            display = old.from_.display_name or display
        try:
            check_user(from_user)
        except LocalProtocolError:
            from_user = "webgate"
        headers = list(route.headers)
        pai = None
        if h.session_mode in ("header", "both") and h.session_header:
            headers.append((h.session_header, call.session_id))
        if h.session_mode in ("caller_id", "both"):
            from_user = call.session_id
            endpoints = h.ua.config.endpoints
            ep = endpoints.get(route.transport) or next(iter(endpoints.values()))
            pai = f"<sip:{call.session_id}@{h.from_domain or format_host(ep.host)}>"
        return from_user, display, headers, pai

    # -- the referrer's dialog while the transfer runs -------------------------------------------
    def _old_event(self, t: Transfer, ev: Event) -> None:
        if isinstance(ev, Ended):
            if self.pending.get(t.call.session_id) is t:
                t.old_gone = True  # a blind transfer: the referrer leaves at once; the call waits for the target
                log.info("call {session_id}: the referrer hung up, the transfer goes on", session_id=t.call.session_id)
        elif isinstance(ev, OfferReceived):
            self.host.media.answer_reoffer(ev.session, ev.offer, t.call.rtp, t.call)

    # -- the target's dialog ---------------------------------------------------------------------
    def _new_event(self, t: Transfer, ev: Event) -> None:
        if self.pending.get(t.call.session_id) is not t:
            return
        if isinstance(ev, Answered):
            self._answered(t, ev.sdp)
        elif isinstance(ev, Ended):
            status = ev.end.status or 500
            self._failed(t, status, ev.end.reason or ev.end.cause.value)

    def _notify(self, t: Transfer, status: int, reason: str, final: bool) -> None:
        if t.old_gone:
            return
        self.host.sync_ua_clock()
        try:
            t.old.notify_refer(status, safe(reason or "-", 64), final)
        except LocalProtocolError:
            t.old.notify_refer(status, "-", final)
        self.host.transport.flush()

    def _answered(self, t: Transfer, answer: bytes | None) -> None:
        h, call = self.host, t.call
        try:
            nm = sdp.apply_answer(t.offer, sdp.parse_sdp(answer or b""))
        except (RemoteProtocolError, LocalProtocolError) as e:
            log.warn("call {session_id}: the transfer target's answer is unusable: {e}", session_id=call.session_id, e=safe(e.message))
            h.sync_ua_clock()
            t.new.hangup()
            self._failed(t, 488, "Not Acceptable Here")
            return
        del self.pending[call.session_id]
        old = call.sip
        call.sip = t.new
        t.new.user_data = call
        call.route = replace(t.route, destination=call.route.destination)  # the new trunk's DTMF, codecs, transfer
        call.offer_sdp = t.offer
        call.sdp_version = int(t.offer.origin.sess_version) if t.offer.origin is not None else call.sdp_version + 1
        call.held = False
        assert call.stream is not None
        call.stream.configure(nm)
        call.codec = nm.codec.name
        h.media.choose_path(call)
        call.transfers.append({
            "to": t.destination,
            "referred_by": t.referred_by,
            "at": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
            "sip_call_id": t.new.call_id,
        })
        log.info("call {session_id}: transferred to {destination}, codec {codec}, {path} path", session_id=call.session_id,
                 destination=safe(t.destination), codec=call.codec, path=call.media_path)
        self._notify(t, 200, "OK", final=True)
        if old is not None and not old.ended:
            h.sync_ua_clock()
            old.hangup()  # the referrer's dialog ends; its Ended still comes here (old.user_data is t)
            h.transport.flush()
        h.notify(call, CallState.TRANSFERRED)
        h.emit("call_progress", call, CallState.TRANSFERRED)

    def _failed(self, t: Transfer, status: int, reason: str) -> None:
        call = t.call
        self.pending.pop(call.session_id, None)
        log.info("call {session_id}: transfer to {destination} failed: {status} {reason}", session_id=call.session_id,
                 destination=safe(t.destination), status=status, reason=safe(reason))
        self._notify(t, status, reason, final=True)
        if t.old_gone or t.old.ended:
            self.host.finish(call, "transfer_failed", status, notify_leg=True)
            return
        t.old.user_data = call  # the call goes on with the referrer

    # -- observer ------------------------------------------------------------------------------
    def call_ended(self, call: Call) -> None:
        """The call ended while its transfer ran: hang up the target (CANCEL or BYE)."""
        t = self.pending.pop(call.session_id, None)
        if t is None:
            return
        self.host.sync_ua_clock()
        t.new.hangup()
        if not t.old.ended:
            t.old.hangup()
        self.host.transport.flush()

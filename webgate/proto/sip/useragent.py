"""The SIP user agent core: INVITE sessions (UAC and UAS), registration, OPTIONS. Sans-IO.

Beyond RFC 3261 the sessions speak 100rel/PRACK (RFC 3262), session timers (RFC 4028, both
refresher roles, refresh by UPDATE or re-INVITE), UPDATE (RFC 3311), delayed offer (an offer in
our 2xx, the answer in the ACK), REFER as the transferee (RFC 3515) and failover between located
servers (RFC 3263 §4.3); header parsing and the timer arithmetic are in :mod:`extensions`, the
server selection in :mod:`locate`. Dialog-level timers (reliable provisional retransmission,
session refresh/expiry) run in the user agent's own heap beside the transactions'.

Layering as in pjproject: transport (adapter) -> transactions (:mod:`transaction`) ->
dialogs (:mod:`dialog`) -> invite sessions (this module and its parts) -> application (the call layer).

The application drives it with :meth:`UserAgent.receive` (a parsed message and where it
came from), :meth:`UserAgent.handle_timers` and calls on :class:`InviteSession`; it
drains :meth:`UserAgent.outgoing` to the wire and handles the returned events.
SDP bodies are opaque bytes here: offer/answer is the application's (see ``proto/sdp.py``).

The user agent is split by responsibility; :class:`UserAgent` composes the parts (mixins over
:class:`ua_core.UACore`) and dispatches transaction events, requests and timers to them:
:mod:`ua_types` (configuration, causes, states), :mod:`ua_session` (sessions, registrations,
events), :mod:`ua_core` (state and shared helpers), :mod:`ua_uac` (our INVITEs),
:mod:`ua_uas` (incoming INVITEs), :mod:`ua_timers` (RFC 4028), :mod:`ua_midcall` (re-offers,
REFER, INFO DTMF) and :mod:`ua_register` (REGISTER). Every public name is importable from here.
"""

from __future__ import annotations

import heapq

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.dialog import new_tag
from webgate.proto.sip.extensions import unsupported_required
from webgate.proto.sip.message import SipMessage, SipRequest, SipResponse, make_response
from webgate.proto.sip.transaction import (
    AckTimeout,
    Addr,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionTimeout,
    TransportError,
)
from webgate.proto.sip.ua_midcall import MidCallRequests
from webgate.proto.sip.ua_register import Registrar
from webgate.proto.sip.ua_session import (
    AckAnswer,
    Answered,
    Confirmed,
    DtmfInfo,
    Ended,
    Event,
    IncomingCall,
    InviteSession,
    OfferReceived,
    Progress,
    ReferReceived,
    Registered,
    Registration,
    RegistrationFailed,
    ReofferAnswered,
    ReofferFailed,
)
from webgate.proto.sip.ua_types import (
    ALLOW,
    DEFAULT_PORTS,
    CallEnd,
    Credentials,
    EndCause,
    LocalEndpoint,
    SessionState,
    UAConfig,
    challenge_of,
    parse_dtmf_info,
)
from webgate.proto.sip.ua_uac import InviteClient
from webgate.proto.sip.ua_uas import InviteServer

__all__ = [
    "ALLOW", "DEFAULT_PORTS", "AckAnswer", "Answered", "CallEnd", "Confirmed", "Credentials", "DtmfInfo", "EndCause",
    "Ended", "Event", "IncomingCall", "InviteSession", "LocalEndpoint", "OfferReceived", "Progress", "ReferReceived",
    "Registered", "Registration", "RegistrationFailed", "ReofferAnswered", "ReofferFailed", "SessionState",
    "UAConfig", "UserAgent", "challenge_of", "parse_dtmf_info",
]


class UserAgent(InviteClient, InviteServer, MidCallRequests, Registrar):
    """The SIP user agent core (see the module doc): its inputs (:meth:`receive`,
    :meth:`handle_timers`, :meth:`transport_failed`) and their dispatch to its parts."""

    # --- inputs ------------------------------------------------------------------------
    def handle_timers(self, now: float) -> list[Event]:
        for ev in self.tm.handle_timers(now):
            self._on_txn_event(ev, now)
        self._now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, seq, session, name = heapq.heappop(heap)
            if session.deadlines.get(name) != (deadline, seq):
                continue
            del session.deadlines[name]
            if session.state is not SessionState.TERMINATED:
                self._session_timer_fired(session, name, now)
        for reg in list(self.registrations):
            if reg.failover_at is not None and reg.failover_at <= now:
                reg.failover_at = None
                self._register_failover_timer(reg, now)
            if reg.refresh_at is not None and reg.refresh_at <= now:
                reg.refresh_at = None
                if reg.active:
                    self._send_register(reg, now)
        return self._drain()

    def receive(self, message: SipMessage, source: Addr, now: float) -> list[Event]:
        self._source = source
        for ev in self.tm.receive(message, source, now):
            self._on_txn_event(ev, now)
        return self._drain()

    def transport_failed(self, dest: Addr, now: float) -> list[Event]:
        """The adapter lost (or could not open) the connection to ``dest``: the transactions
        using it fail at once (RFC 3261 §17.1.4), ending their calls with a transport error."""
        self._now = now
        for ev in self.tm.transport_failed(dest, now):
            self._on_txn_event(ev, now)
        return self._drain()

    def _session_timer_fired(self, session: InviteSession, name: str, now: float) -> None:
        if name == "rel":
            self._retransmit_reliable(session, now)
            return
        if name == "failover":
            self._failover_timer(session, now)
            return
        if name != "session" or not session.timer.running:
            return
        if not session.timer.local_refresher:
            # the far end should have refreshed by now (§10): end the session
            self._bye(session, end_cause=EndCause.SESSION_TIMER)
            return
        self._send_refresh(session, now)

    # --- dispatch ----------------------------------------------------------------------
    def _on_txn_event(self, ev: object, now: float) -> None:
        self._now = now
        if isinstance(ev, RequestReceived):
            try:
                self._on_request(ev.txn, ev.request, now)
            except RemoteProtocolError as e:
                if ev.txn is not None and ev.request.method != "ACK":
                    try:
                        self._respond(ev.txn, ev.request, e.status_hint or 400, now)
                    except (RemoteProtocolError, LocalProtocolError):
                        pass
        elif isinstance(ev, ResponseReceived):
            try:
                self._on_response(ev.txn, ev.response, now)
            except RemoteProtocolError:
                pass
        elif isinstance(ev, TransactionTimeout | TransportError):
            owner = self._session_for_txn(ev.txn)
            if owner is None:
                return
            kind, obj = owner
            self._by_txn.pop(id(ev.txn), None)
            timeout = isinstance(ev, TransactionTimeout)
            # RFC 3261 §8.1.3.1: a transport error counts as a 503
            status, reason = (408, "Request Timeout") if timeout else (503, "Service Unavailable")
            if kind == "invite" and isinstance(obj, InviteSession):
                if obj.invite_txn is ev.txn and self._failover(obj, now):
                    return
                if obj.cancelled:
                    cause = EndCause.CANCELLED
                else:
                    cause = EndCause.TIMEOUT if timeout else EndCause.TRANSPORT_ERROR
                self._end(obj, CallEnd(cause, status, reason))
            elif kind == "reinvite" and isinstance(obj, InviteSession):
                if obj.reinvite_txn is ev.txn:
                    obj.reinvite_txn = None
                    if obj.state is not SessionState.TERMINATED:
                        self._reinvite_failed(obj, status, reason, ev.txn.request.method)
            elif kind == "refresh" and isinstance(obj, InviteSession):
                if obj.refresh_txn is ev.txn:
                    obj.refresh_txn = None
                    if obj.state is not SessionState.TERMINATED:
                        self._refresh_failed(obj, status, reason)
            elif kind == "late_bye" and isinstance(obj, InviteSession):
                self._late_bye_failed(obj, ev.txn, status)
            elif kind in ("bye", "info", "cancel", "prack", "notify"):
                pass
            elif kind == "register" and isinstance(obj, Registration):
                if obj.txn is ev.txn:
                    obj.failover_at = None
                    if self._register_failover(obj, now):
                        return
                self._events.append(RegistrationFailed(obj, status, reason))
                obj.refresh_at = now + 30.0
        elif isinstance(ev, AckTimeout):
            owner = self._session_for_txn(ev.txn)
            if owner and isinstance(owner[1], InviteSession):
                s = owner[1]
                if s.state is SessionState.ANSWERED:
                    # §13.3.1.4: no ACK for our 2xx: end the dialog with BYE
                    self._bye(s, end_cause=EndCause.NO_ACK)

    def _find_dialog_session(self, msg: SipMessage, local_tag: str | None, remote_tag: str | None) -> InviteSession | None:
        for role in ("uac", "uas"):
            s = self.sessions.get((msg.call_id, role))
            if s is None or s.dialog is None or local_tag != s.local_tag:
                continue
            if remote_tag is not None and s.dialog.remote_tag != remote_tag:
                continue
            return s
        return None

    def _on_response(self, txn: ClientTransaction | None, resp: SipResponse, now: float) -> None:
        if txn is None:
            # a retransmitted 2xx to an INVITE whose transaction is gone
            if resp.cseq.method == "INVITE" and 200 <= resp.status < 300:
                for role in ("uac", "uas"):
                    rs = self.sessions.get((resp.call_id, role))
                    for ack, dest in rs.reinvite_acks.values() if rs is not None else ():
                        if ack.cseq.number == resp.cseq.number:  # our re-INVITE's 2xx, after Timer M
                            self.tm.send_stateless(ack, dest)
                            return
                s = self.sessions.get((resp.call_id, "uac"))
                if s is not None:
                    self._ack_and_bye_late_2xx(s, resp, now)
            return
        owner = self._session_for_txn(txn)
        if owner is None:
            return
        kind, obj = owner
        if resp.status >= 300 or (resp.status >= 200 and not txn.is_invite):
            # an INVITE transaction keeps delivering retransmitted 2xx: keep its mapping
            self._by_txn.pop(id(txn), None)
        if kind == "invite" and isinstance(obj, InviteSession):
            self._on_invite_response(obj, txn, resp, now)
        elif kind == "reinvite" and isinstance(obj, InviteSession):
            self._on_reinvite_response(obj, txn, resp, now)
        elif kind == "refresh" and isinstance(obj, InviteSession):
            self._on_refresh_response(obj, txn, resp, now)
        elif kind in ("bye", "info", "prack", "notify") and isinstance(obj, InviteSession):
            if resp.status in (401, 407):
                self._retry_in_dialog_with_auth(obj, txn, resp, now, kind)
        elif kind == "late_bye" and isinstance(obj, InviteSession):
            self._on_late_bye_response(obj, txn, resp, now)
        elif kind == "register" and isinstance(obj, Registration):
            self._on_register_response(obj, resp, now)

    def _on_request(self, txn: ServerTransaction | None, req: SipRequest, now: float) -> None:
        method = req.method
        to_tag = req.to.tag
        from_tag = req.from_.tag
        if method == "ACK":
            s = self._find_dialog_session(req, to_tag, from_tag)
            if s is None:
                return
            body = req.body if req.body and req.content_type in ("application/sdp", "") else None
            answer_expected = s.offer_in_2xx is not None and s.offer_in_2xx == req.cseq.number
            if answer_expected:
                s.offer_in_2xx = None
                if body is not None:
                    s.remote_sdp = body
            if s.role == "uas" and s.state is SessionState.ANSWERED:
                if isinstance(s.invite_txn, ServerTransaction):
                    s.invite_txn.ack_received()
                s.state = SessionState.CONFIRMED
                self._events.append(Confirmed(s, body if answer_expected else None))
            elif answer_expected and s.state is SessionState.CONFIRMED:
                self._events.append(AckAnswer(s, body))
            # an ACK to a re-INVITE's 2xx: the transaction layer has stopped the retransmissions
            return
        assert txn is not None
        unsupported = unsupported_required(req) if method != "CANCEL" else []
        if unsupported:
            self._respond(txn, req, 420, now, to_tag=new_tag() if to_tag is None else None,
                          headers=[("Unsupported", ", ".join(unsupported))])
            return
        if method == "CANCEL":
            inv_txn = self.tm.find_server_invite(req)
            if inv_txn is None:
                self._respond(txn, req, 481, now)
                return
            self._respond(txn, req, 200, now)
            owner = self._session_for_txn(inv_txn)
            if owner and isinstance(owner[1], InviteSession):
                s = owner[1]
                if s.state in (SessionState.INCOMING, SessionState.EARLY):
                    assert s.invite is not None
                    resp = make_response(s.invite, 487, to_tag=s.local_tag)
                    self.tm.send_response(inv_txn, resp, now)
                    self._end(s, CallEnd(EndCause.REMOTE_CANCELLED, 487, "Request Terminated"))
            return
        if to_tag is None:
            if method == "INVITE":
                self._on_new_invite(txn, req, self._source, now)
            elif method == "OPTIONS":
                self.options_at = now
                if self.out_of_service:
                    self.options_refused += 1
                    self._respond(txn, req, 503, now, to_tag=new_tag(), headers=[("Retry-After", "60")])
                else:
                    self._respond(txn, req, 200, now, to_tag=new_tag(),
                                  headers=[("Allow", ALLOW), ("Accept", "application/sdp, application/dtmf-relay"),
                                           ("Supported", "replaces, 100rel, timer")])
            elif method in ("BYE", "INFO", "UPDATE", "PRACK", "NOTIFY"):
                self._respond(txn, req, 481, now, to_tag=new_tag())
            else:
                self._respond(txn, req, 405, now, to_tag=new_tag(), headers=[("Allow", ALLOW)])
            return
        s = self._find_dialog_session(req, to_tag, from_tag)
        if s is None or s.state is SessionState.TERMINATED and method != "BYE":
            self._respond(txn, req, 481, now)
            return
        assert s.dialog is not None
        if not s.dialog.check_remote_cseq(req):
            self._respond(txn, req, 500, now, headers=[("Retry-After", "1")])
            return
        if method == "BYE":
            self._respond(txn, req, 200, now)
            if s.state is not SessionState.TERMINATED:
                self._end(s, CallEnd(EndCause.REMOTE_HANGUP))
        elif method == "PRACK":
            self._on_prack(s, txn, req, now)
        elif method == "REFER":
            self._on_refer(s, txn, req, now)
        elif method in ("INVITE", "UPDATE"):
            ours = s.reinvite_txn is not None or (s.refresh_txn is not None and s.refresh_txn.is_invite)
            if s.pending_offer_txn is not None or (ours and (method == "INVITE" or req.body)):
                # an offer/answer exchange is in progress either way: glare (RFC 3261 §14.2)
                self._respond(txn, req, 491 if method == "INVITE" or ours else 500, now)
                return
            if req.body and req.content_type != "application/sdp":
                self._respond(txn, req, 415, now, headers=[("Accept", "application/sdp")])
                return
            if not self._check_session_expires(txn, req, now, None):
                return
            if method == "UPDATE" and s.state is not SessionState.CONFIRMED and (req.body and s.local_sdp is None):
                # an offer while the INVITE's own offer is unanswered (RFC 3311 §5.2)
                self._respond(txn, req, 500, now, headers=[("Retry-After", "1")])
                return
            s.dialog.update_target(req)
            if method == "UPDATE" and not req.body:
                # no offer: a session refresh or target refresh only, answered here (RFC 3311, RFC 4028)
                headers = [("Allow", self._allow(s))]
                if s.state is SessionState.CONFIRMED:
                    timer = self._timer_response_headers(s, req, now)
                    if timer:
                        headers += [("Supported", self._supported(s)), *timer]
                self._respond(txn, req, 200, now, contact=True, transport=s.transport, headers=headers)
                return
            s.pending_offer_txn = txn
            s.pending_offer_method = method
            self._events.append(OfferReceived(s, method, req.body or None))
        elif method == "INFO":
            parsed = parse_dtmf_info(req.content_type, req.body)
            self._respond(txn, req, 200, now)
            if parsed is not None:
                self._events.append(DtmfInfo(s, parsed[0], parsed[1]))
        elif method == "OPTIONS":
            self._respond(txn, req, 200, now, headers=[("Allow", self._allow(s))])
        else:
            self._respond(txn, req, 501, now, headers=[("Allow", self._allow(s))])

"""Mid-call requests of the user agent: re-offers (re-INVITE, UPDATE: RFC 3261 §14, RFC 3311),
transfer as the transferee (REFER, RFC 3515) and INFO DTMF. A mixin over
:class:`ua_core.UACore`. Part of :mod:`useragent`."""

from __future__ import annotations

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import (
    NameAddr,
    SipRequest,
    SipResponse,
    check_header_value,
)
from webgate.proto.sip.transaction import ClientTransaction, ServerTransaction
from webgate.proto.sip.ua_session import (
    InviteSession,
    ReferReceived,
    ReofferAnswered,
    ReofferFailed,
)
from webgate.proto.sip.ua_timers import SessionTimers
from webgate.proto.sip.ua_types import _DTMF_RE, CallEnd, EndCause, SessionState


class MidCallRequests(SessionTimers):
    """Requests within a confirmed dialog: our re-INVITE/UPDATE offers and their answers, REFER
    as the transferee (202, NOTIFY of the referred call's progress), INFO DTMF we send."""

    # --- INFO DTMF from us --------------------------------------------------------------
    def _send_info_dtmf(self, session: InviteSession, digit: str, duration_ms: int) -> None:
        if not _DTMF_RE.match(digit):
            raise LocalProtocolError(f"invalid DTMF digit {digit!r}")
        d = session.dialog
        if d is None or session.state is not SessionState.CONFIRMED and session.state is not SessionState.ANSWERED:
            raise LocalProtocolError("INFO DTMF needs a confirmed dialog")
        req = d.create_request("INFO", self._via(session.transport), self._contact(session.transport))
        req.headers.add("Content-Type", "application/dtmf-relay")
        req.body = f"Signal={digit.upper()}\r\nDuration={int(duration_ms)}\r\n".encode()
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), self._now)
        self._track(txn, "info", session)

    # --- re-INVITE / UPDATE from us (UAC within the dialog) ------------------------------
    def _reinvite(self, session: InviteSession, sdp: bytes, method: str = "INVITE") -> None:
        d = session.dialog
        if d is None or session.state is not SessionState.CONFIRMED:
            raise LocalProtocolError(f"{'re-INVITE' if method == 'INVITE' else method} needs a confirmed dialog")
        if session.reinvite_txn is not None or (session.refresh_txn is not None and session.refresh_txn.is_invite):
            raise LocalProtocolError("a re-INVITE or UPDATE is already in progress")
        if session.pending_offer_txn is not None:
            raise LocalProtocolError("the far end's offer is still being answered")
        req = d.create_request(method, self._via(session.transport), self._contact(session.transport))
        req.headers.add("Allow", self._allow(session))
        req.headers.add("Supported", self._supported(session))
        for name, value in self._timer_request_headers(session):
            req.headers.add(name, value)
        req.headers.add("User-Agent", self.config.user_agent)
        req.headers.add("Content-Type", "application/sdp")
        req.body = sdp
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), self._now)
        session.reinvite_txn = txn
        self._track(txn, "reinvite", session)

    def _on_reinvite_response(self, session: InviteSession, txn: ClientTransaction, resp: SipResponse, now: float) -> None:
        status = resp.status
        method = txn.request.method
        if status < 200:
            return
        if status < 300:
            sent = session.reinvite_acks.get(id(txn))
            if sent is not None:
                # a retransmitted 2xx: the ACK is end-to-end, re-send it (RFC 3261 §13.2.2.4)
                self.tm.send_stateless(*sent)
                return
            d = session.dialog
            if d is None:
                return
            req = txn.request
            if session.state is not SessionState.TERMINATED:
                d.update_target(resp)  # a 2xx to a re-INVITE or UPDATE is a target refresh
            if txn.is_invite:
                ack = self._make_ack(session, d, req)
                _, _, target = d.next_request_target()
                dest = self._in_dialog_dest(session, target)
                session.reinvite_acks[id(txn)] = (ack, dest)
                self.tm.send_stateless(ack, dest)
            if session.reinvite_txn is txn:
                session.reinvite_txn = None
                if session.state is not SessionState.TERMINATED:
                    if resp.body:
                        session.remote_sdp = resp.body
                        session.local_sdp = req.body
                    if session.timer.running:
                        self._timer_from_response(session, resp, now)  # a re-offer refreshes the session
                    self._events.append(ReofferAnswered(session, resp.body or None, method))
            return
        if session.reinvite_txn is not txn:
            return
        session.reinvite_txn = None
        if session.state is SessionState.TERMINATED:
            return
        if status in (401, 407):
            new = self._retry_in_dialog_with_auth(session, txn, resp, now, "reinvite")
            if new is not None:
                session.reinvite_txn = new
                return
        self._reinvite_failed(session, status, resp.reason, method)

    def _reinvite_failed(self, session: InviteSession, status: int, reason: str, method: str = "INVITE") -> None:
        self._events.append(ReofferFailed(session, status, reason, method))
        if status == 481:  # the dialog is gone at the far end (§12.2.1.2)
            self._end(session, CallEnd(EndCause.PROTOCOL_ERROR, status, reason))
        elif status == 408:
            self._bye(session, end_cause=EndCause.TIMEOUT)

    # --- REFER (RFC 3515), as the transferee ----------------------------------------------
    def _on_refer(self, session: InviteSession, txn: ServerTransaction, req: SipRequest, now: float) -> None:
        if not session.allow_refer or session.state is not SessionState.CONFIRMED:
            self._respond(txn, req, 403, now)
            return
        if session.refer_txn is not None or session.refer_active:
            self._respond(txn, req, 491, now)  # one transfer at a time
            return
        values = req.headers.get_all("Refer-To")
        if len(values) != 1:
            raise RemoteProtocolError("REFER needs exactly one Refer-To", 400)
        target = NameAddr.parse(values[0])
        if target.wildcard or target.uri.scheme not in ("sip", "sips"):
            self._respond(txn, req, 403, now)
            return
        session.refer_txn = txn
        self._events.append(ReferReceived(session, target.uri, req.headers.get("Referred-By"), req))

    def _accept_refer(self, session: InviteSession) -> None:
        txn = session.refer_txn
        if txn is None:
            return
        session.refer_txn = None
        self._respond(txn, txn.request, 202, self._now)
        session.refer_active = True
        self._notify_refer(session, 100, "Trying", False)

    def _reject_refer(self, session: InviteSession, status: int) -> None:
        txn = session.refer_txn
        if txn is None:
            return
        if not 300 <= status <= 699:
            raise LocalProtocolError(f"REFER refusal must be 3xx-6xx, not {status}")
        session.refer_txn = None
        self._respond(txn, txn.request, status, self._now)

    def _notify_refer(self, session: InviteSession, status: int, reason: str, final: bool) -> None:
        d = session.dialog
        if not session.refer_active or d is None or session.state is SessionState.TERMINATED:
            return
        check_header_value(reason, "sipfrag reason")
        if final:
            session.refer_active = False
        req = d.create_request("NOTIFY", self._via(session.transport), self._contact(session.transport))
        req.headers.add("Event", "refer")
        req.headers.add("Subscription-State", "terminated;reason=noresource" if final else "active;expires=60")
        req.headers.add("User-Agent", self.config.user_agent)
        req.headers.add("Content-Type", "message/sipfrag;version=2.0")
        req.body = f"SIP/2.0 {status} {reason}\r\n".encode()
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), self._now)
        self._track(txn, "notify", session)

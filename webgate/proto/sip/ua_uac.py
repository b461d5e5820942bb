"""The UAC side of INVITE sessions (RFC 3261 §13.2, §9.1 CANCEL, RFC 3262 PRACK, RFC 3263 §4.3
failover): a mixin over :class:`ua_core.UACore`. Part of :mod:`useragent`."""

from __future__ import annotations

from typing import cast

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip import auth
from webgate.proto.sip.dialog import Dialog, new_call_id, new_tag
from webgate.proto.sip.extensions import (
    MAX_SESSION_EXPIRES,
    RAck,
    min_se_of,
    option_tags,
    parse_rseq,
)
from webgate.proto.sip.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    SipURI,
    check_display_name,
    check_header_value,
    check_host,
    check_token,
    check_user,
    format_host,
)
from webgate.proto.sip.transaction import Addr, ClientTransaction, TransactionState
from webgate.proto.sip.ua_session import (
    MAX_LATE_DIALOGS,
    Answered,
    InviteSession,
    LateDialog,
    Progress,
    SessionOwner,
)
from webgate.proto.sip.ua_timers import SessionTimers
from webgate.proto.sip.ua_types import (
    CallEnd,
    Credentials,
    EndCause,
    SessionState,
    _allows,
    challenge_of,
)


class InviteClient(SessionTimers):
    """The caller's side of an INVITE: sending it (with failover between located servers,
    digest credentials, a larger Session-Expires after 422), its responses, PRACK of reliable
    provisionals, ACK, CANCEL, and a late 2xx of a call already ended."""

    # --- UAC: outgoing INVITE --------------------------------------------------------
    def invite(
        self,
        target: SipURI,
        sdp_offer: bytes,
        now: float,
        *,
        from_user: str = "webgate",
        from_display: str | None = None,
        from_domain: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        asserted_identity: str | None = None,
        credentials: Credentials | None = None,
        transport: str | None = None,
        session_expires: int = 0,
        allow_refer: bool = False,
        destinations: list[Addr] | None = None,
        outbound_proxy: SipURI | None = None,
    ) -> InviteSession:
        """Send an INVITE. Every value going into the message is validated first
        (:class:`LocalProtocolError` on CR/LF, control characters or illegal characters).

        ``session_expires`` > 0 asks for a session timer of that many seconds (RFC 4028:
        ``Supported: timer``, ``Session-Expires``, ``Min-SE``; raised to the far end's Min-SE on
        a 422); the far end's 2xx decides whether one runs and who refreshes it. ``allow_refer``:
        the far end may transfer this call (REFER in Allow, :class:`ReferReceived`).
        ``destinations``: where to send it, in order (RFC 3263 targets of the target or of the
        proxy); the next one is tried, with a new branch, after a 503 or no answer, as long as
        nothing but 100 came back. ``outbound_proxy`` replaces ``UAConfig.outbound_proxy`` for
        this call (a Route header; in-dialog requests without a route set go there too)."""
        check_user(from_user, "From user")
        if from_display:
            check_display_name(from_display, "From display name")
        if target.user is not None:
            check_user(target.user, "destination")
        check_host(format_host(target.host), "destination host")
        if from_domain:
            check_host(from_domain, "From domain")
        extra: list[tuple[str, str]] = []
        for name, value in headers or []:
            check_token(name, "header name")
            check_header_value(value, f"header {name}")
            extra.append((name, value))
        if asserted_identity is not None:
            check_header_value(asserted_identity, "P-Asserted-Identity")

        t = (transport or target.transport).lower()
        if destinations:
            t = destinations[0][0]  # the located server's transport (RFC 3263 may pick another)
        if t not in self.config.endpoints:
            raise LocalProtocolError(f"no SIP listener for transport {t}")
        ep = self._endpoint(t)
        call_id = new_call_id(ep.host)
        session = InviteSession(cast(SessionOwner, self), "uac", call_id, new_tag())
        session.transport = t
        session.credentials = credentials
        session.local_sdp = sdp_offer
        session.allow_refer = allow_refer
        if session_expires > 0:
            session.timer.requested = min(max(session_expires, session.timer.min_se), MAX_SESSION_EXPIRES)

        from_uri = SipURI(scheme="sip", user=from_user, host=from_domain or format_host(ep.host))
        frm = NameAddr(from_uri, from_display or None, {"tag": session.local_tag})
        h = Headers()
        h.add("Via", self._via(t))
        h.add("Max-Forwards", "70")
        proxy = outbound_proxy if outbound_proxy is not None else self.config.outbound_proxy
        session.outbound_proxy = proxy
        if proxy is not None:
            lr = proxy.copy()
            lr.params.setdefault("lr", None)
            h.add("Route", f"<{lr}>")
            dest = self._dest_for(proxy, transport)
        else:
            dest = self._dest_for(target, t)
        if destinations:
            dest = destinations[0]
            session.fallbacks = list(destinations[1:])
        h.add("From", str(frm))
        h.add("To", str(NameAddr(target)))
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self._contact(t))
        h.add("Allow", self._allow(session))
        h.add("Supported", self._supported(session))
        if session.timer.requested:
            h.add("Session-Expires", str(session.timer.requested))
            h.add("Min-SE", str(session.timer.min_se))
        h.add("User-Agent", self.config.user_agent)
        if asserted_identity:
            h.add("P-Asserted-Identity", asserted_identity)
        for name, value in extra:
            h.add(name, value)
        h.add("Content-Type", "application/sdp")
        req = SipRequest(headers=h, method="INVITE", uri=target.copy(), body=sdp_offer)
        session.invite = req
        session.dest = dest
        self.sessions[(call_id, "uac")] = session
        txn = self.tm.send_request(req, dest, now)
        session.invite_txn = txn
        self._track(txn, "invite", session)
        self._arm_failover(session, now)
        return session

    def _arm_failover(self, session: InviteSession, now: float) -> None:
        """While another located server is left, give the current one ``failover_timeout``
        seconds to answer at all (RFC 3263 §4.3 without waiting for Timer B)."""
        if session.fallbacks and self.config.failover_timeout > 0:
            self._arm(session, "failover", now + self.config.failover_timeout)
        else:
            self._disarm(session, "failover")

    def _failover_timer(self, session: InviteSession, now: float) -> None:
        """``failover_timeout`` passed: if the server has sent nothing (the INVITE transaction is
        still Calling: no 100 either), abandon that transaction (a CANCEL needs a provisional
        response first, RFC 3261 §9.1) and send the INVITE to the next server."""
        txn = session.invite_txn
        if not isinstance(txn, ClientTransaction) or txn.state is not TransactionState.CALLING:
            return
        if session.state is not SessionState.CALLING or session.cancelled or not session.fallbacks:
            return
        self.tm.abandon(txn)
        self._by_txn.pop(id(txn), None)
        self._failover(session, now)

    def _resend_invite(self, session: InviteSession, now: float, *, authorization: tuple[str, str] | None = None,
                       session_expires: int | None = None, failover: bool = False) -> None:
        """The INVITE again with CSeq + 1 and a new branch (§8.1.3.5): with credentials after a
        401/407, or a higher Session-Expires after a 422 (RFC 4028 §7.4); or, ``failover``, the
        same INVITE with a new branch toward the next server (RFC 3263 §4.3)."""
        old = session.invite
        assert old is not None and session.dest is not None
        h = old.headers.copy()
        h.remove("Via")
        h.prepend("Via", self._via(session.transport))
        if failover:
            h.set("Contact", self._contact(session.transport))
        else:
            h.set("CSeq", f"{old.cseq.number + 1} INVITE")
        if authorization is not None:
            h.remove("Authorization")
            h.remove("Proxy-Authorization")
            h.add(*authorization)
        if session_expires is not None:
            h.set("Session-Expires", str(session_expires))
            h.set("Min-SE", str(session.timer.min_se))
        req = SipRequest(headers=h, method="INVITE", uri=old.uri.copy(), body=old.body)
        session.invite = req
        txn = self.tm.send_request(req, session.dest, now)
        session.invite_txn = txn
        self._track(txn, "invite", session)

    def _failover(self, session: InviteSession, now: float) -> bool:
        """After a 503 or no answer, the INVITE goes to the next server, if any and if nothing
        but 100 came back (RFC 3263 §4.3). False when there is none."""
        if not session.fallbacks or session.cancelled or session.state is not SessionState.CALLING:
            return False
        dest = session.fallbacks.pop(0)
        if dest[0] not in self.config.endpoints:
            return self._failover(session, now)
        session.dest = dest
        session.transport = dest[0]
        self._resend_invite(session, now, failover=True)
        self._arm_failover(session, now)
        return True

    def _resend_invite_with_auth(self, session: InviteSession, response: SipResponse, now: float) -> bool:
        creds = session.credentials
        if creds is None or session.invite is None or session.dest is None:
            return False
        ch = challenge_of(response)
        if ch is None:
            return False
        stale = bool(getattr(ch, "stale", False))
        if session.auth_attempts >= 1 and not stale:
            return False
        if session.auth_attempts >= 3:
            return False
        if creds.realm and getattr(ch, "realm", creds.realm) != creds.realm:
            return False
        session.auth_attempts += 1
        old = session.invite
        value = auth.build_authorization(ch, "INVITE", str(old.uri), creds.username, creds.password, body=old.body)
        self._resend_invite(session, now, authorization=("Authorization" if response.status == 401 else "Proxy-Authorization", value))
        return True

    def _on_invite_response(self, session: InviteSession, txn: ClientTransaction | None, resp: SipResponse, now: float) -> None:
        status = resp.status
        if session.state in (SessionState.TERMINATED, SessionState.CONFIRMED):
            if 200 <= status < 300:
                # a late 2xx for an ended call, a retransmission of the 2xx already taken or
                # another fork's 2xx (RFC 3261 §13.2.2.4): ACK it; a dialog not kept gets a BYE
                self._ack_and_bye_late_2xx(session, resp, now)
            return
        if status < 200:
            if status == 100:
                if session.cancel_pending:
                    self._send_cancel(session, now)
                return
            if session.cancel_pending:
                self._send_cancel(session, now)
            try:
                to_tag = resp.to.tag
            except RemoteProtocolError:
                to_tag = None
            if to_tag and session.dialog is None and session.invite is not None:
                try:
                    session.dialog = Dialog.from_uac(session.invite, resp)
                except RemoteProtocolError:
                    session.dialog = None
            if to_tag and "100rel" in option_tags(resp, "Require") and resp.headers.get("RSeq") is not None:
                if not self._prack(session, resp, to_tag, now):
                    return  # a retransmitted (or out of order) reliable provisional: not processed again
            sdp = resp.body if resp.body and resp.content_type == "application/sdp" else None
            if sdp:
                session.early_sdp = sdp
            session.state = SessionState.EARLY
            self._events.append(Progress(session, status, resp.reason, sdp))
            return
        if status < 300:
            assert session.invite is not None
            try:
                dialog = Dialog.from_uac(session.invite, resp)
            except RemoteProtocolError:
                self._end(session, CallEnd(EndCause.PROTOCOL_ERROR, status, "bad 2xx"))
                return
            early = session.early_dialogs.get(dialog.remote_tag)
            if session.dialog is not None and session.dialog.remote_tag == dialog.remote_tag:
                early = session.dialog
            if early is not None:
                # PRACKs were sent in the early dialog: its CSeq goes on (RFC 3261 §12.2.1.1)
                dialog.local_cseq = max(dialog.local_cseq, early.local_cseq)
            session.dialog = dialog
            self._send_ack(session, now)
            if session.cancelled:
                # CANCEL lost the race against 200: the call is up; end it with BYE (§9.1)
                self._bye(session, end_cause=EndCause.CANCELLED)
                return
            sdp = resp.body if resp.body else None
            session.remote_sdp = sdp or session.early_sdp
            session.state = SessionState.CONFIRMED
            session.peer_allows_update = _allows(resp, "UPDATE")
            if session.timer.requested:
                self._timer_from_response(session, resp, now)
            self._events.append(Answered(session, session.remote_sdp))
            return
        if status == 422 and not session.cancelled and session.timer.requested and session.timer_retries < 2:
            try:
                min_se = min_se_of(resp)
            except RemoteProtocolError:
                min_se = None
            if min_se is not None and session.timer.requested < min_se <= MAX_SESSION_EXPIRES:
                # RFC 4028 §7.4: the far end wants a longer interval; ask again with its Min-SE
                session.timer_retries += 1
                session.timer.min_se = min_se
                session.timer.requested = min_se
                self._resend_invite(session, now, session_expires=min_se)
                return
        if status == 503 and self._failover(session, now):
            return
        if status in (401, 407) and not session.cancelled:
            if self._resend_invite_with_auth(session, resp, now):
                return
            self._end(session, CallEnd(EndCause.AUTH_FAILED, status, resp.reason))
            return
        if session.cancelled:
            self._end(session, CallEnd(EndCause.CANCELLED, status, resp.reason))
        else:
            self._end(session, CallEnd(EndCause.REJECTED, status, resp.reason))

    def _send_ack(self, session: InviteSession, now: float) -> None:
        d = session.dialog
        assert d is not None and session.invite is not None
        ack = self._make_ack(session, d, session.invite)
        _, _, target = d.next_request_target()
        dest = self._in_dialog_dest(session, target)
        session.ack = ack
        session.ack_dest = dest
        self.tm.send_stateless(ack, dest)

    def _ack_and_bye_late_2xx(self, session: InviteSession, resp: SipResponse, now: float) -> None:
        """A 2xx for a dialog the session does not keep (another fork's, RFC 3261 §13.2.2.4; a
        given-up server's; or any 2xx after the call ended): ACK it and end that dialog with one
        BYE. A retransmission of it gets the same ACK again and no other BYE. The session's own
        dialog, ACK and state are left alone (it keeps waiting for its answer, or its call)."""
        if session.invite is None:
            return
        try:
            d = Dialog.from_uac(session.invite, resp)
        except RemoteProtocolError:
            return
        late = session.late_dialogs.get(d.remote_tag)
        if late is not None:
            self.tm.send_stateless(late.ack, late.ack_dest)
            return
        if session.dialog is not None and session.dialog.remote_tag == d.remote_tag and session.ack is not None:
            # retransmitted 2xx of the session's own dialog, already ACKed: re-send that ACK
            assert session.ack_dest is not None
            self.tm.send_stateless(session.ack, session.ack_dest)
            return
        if len(session.late_dialogs) >= MAX_LATE_DIALOGS:
            # a forking proxy (or a stranger) sending 2xx after 2xx with new tags: beyond the cap
            # they are not ACKed (the far end gives up after 64*T1 and ends its dialog itself)
            self._notice(f"late 2xx for call {session.call_id} ignored: already {MAX_LATE_DIALOGS} late dialogs")
            return
        early = self._early_dialog(session, d.remote_tag)
        if early is not None:  # PRACKs were sent in its early dialog: its CSeq goes on (§12.2.1.1)
            d.local_cseq = max(d.local_cseq, early.local_cseq)
        ack = d.create_request("ACK", self._via(session.transport), self._contact(session.transport),
                               cseq=resp.cseq.number)
        if resp.cseq.number == session.invite.cseq.number:
            for name in ("Authorization", "Proxy-Authorization"):
                for v in session.invite.headers.get_all(name):
                    ack.headers.add(name, v)
        _, _, target = d.next_request_target()
        dest = self._in_dialog_dest(session, target, d)
        self.tm.send_stateless(ack, dest)
        late = LateDialog(d, ack, dest)
        session.late_dialogs[d.remote_tag] = late
        bye = d.create_request("BYE", self._via(session.transport), None)
        bye.headers.add("User-Agent", self.config.user_agent)
        late.bye_txn = self.tm.send_request(bye, dest, now)
        self._track(late.bye_txn, "late_bye", session)

    def _on_late_bye_response(self, session: InviteSession, txn: ClientTransaction, resp: SipResponse,
                              now: float) -> None:
        """The response to the BYE of a late dialog: it concerns that dialog only. A 401/407
        is answered once, with the session's credentials, by a BYE in that dialog."""
        try:
            tag = txn.request.to.tag
        except RemoteProtocolError:
            return
        late = session.late_dialogs.get(tag or "")
        if late is None or late.bye_txn is not txn or resp.status < 200:
            return
        late.bye_txn = None
        if resp.status in (401, 407) and not late.bye_auth_sent:
            late.bye_auth_sent = True
            retry = self._retry_in_dialog_with_auth(session, txn, resp, now, "late_bye", late.dialog)
            if retry is not None:
                late.bye_txn = retry
                return
        late.bye_status = resp.status

    def _late_bye_failed(self, session: InviteSession, txn: object, status: int) -> None:
        """No answer to (or a transport error on) a late dialog's BYE: that dialog is given up."""
        for late in session.late_dialogs.values():
            if late.bye_txn is txn:
                late.bye_txn = None
                late.bye_status = status

    def _cancel(self, session: InviteSession) -> None:
        if session.role != "uac" or session.state not in (SessionState.CALLING, SessionState.EARLY):
            return
        session.cancelled = True
        if session.state is SessionState.EARLY:
            self._send_cancel(session, None)
        else:
            # §9.1: no CANCEL before a provisional response has arrived
            session.cancel_pending = True

    def _send_cancel(self, session: InviteSession, now: float | None) -> None:
        session.cancel_pending = False
        inv = session.invite
        if inv is None or session.dest is None:
            return
        h = Headers()
        h.add("Via", inv.headers.get("Via") or "")
        h.add("Max-Forwards", "70")
        for r in inv.headers.get_all("Route"):
            h.add("Route", r)
        h.add("From", inv.headers.get("From") or "")
        h.add("To", inv.headers.get("To") or "")
        h.add("Call-ID", inv.call_id)
        h.add("CSeq", f"{inv.cseq.number} CANCEL")
        h.add("User-Agent", self.config.user_agent)
        req = SipRequest(headers=h, method="CANCEL", uri=inv.uri.copy())
        txn = self.tm.send_request(req, session.dest, self._now if now is None else now)
        self._track(txn, "cancel", session)

    # --- PRACK (RFC 3262), UAC side ------------------------------------------------------
    def _prack(self, session: InviteSession, resp: SipResponse, to_tag: str, now: float) -> bool:
        """A reliable provisional response: PRACK it. False when it must not be processed
        (a retransmission, or an RSeq out of order: §4)."""
        try:
            rseq = parse_rseq(resp.headers.get("RSeq") or "")
        except RemoteProtocolError:
            return True  # a broken RSeq: handled as an unreliable provisional
        last = session.early_rseq.get(to_tag)
        if last is not None and rseq != last + 1:
            return False
        session.early_rseq[to_tag] = rseq
        if session.cancelled or session.invite is None:
            return True
        d = self._early_dialog(session, to_tag)
        if d is None:
            try:
                d = Dialog.from_uac(session.invite, resp)  # another fork's early dialog
            except RemoteProtocolError:
                return True
            session.early_dialogs[to_tag] = d
        req = d.create_request("PRACK", self._via(session.transport), None)
        req.headers.add("RAck", str(RAck(rseq, resp.cseq.number, "INVITE")))
        req.headers.add("User-Agent", self.config.user_agent)
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), now)
        self._track(txn, "prack", session)
        return True

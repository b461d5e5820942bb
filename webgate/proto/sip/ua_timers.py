"""Session timers (RFC 4028) for the user agent: a mixin over :class:`ua_core.UACore`.
Part of :mod:`useragent`."""

from __future__ import annotations

import secrets

from webgate.proto.errors import RemoteProtocolError
from webgate.proto.sip.extensions import (
    MAX_SESSION_EXPIRES,
    MIN_SE_FLOOR,
    SessionExpires,
    min_se_of,
    option_tags,
    session_expires_of,
)
from webgate.proto.sip.message import SipRequest, SipResponse
from webgate.proto.sip.transaction import ClientTransaction, ServerTransaction
from webgate.proto.sip.ua_core import UACore
from webgate.proto.sip.ua_session import InviteSession
from webgate.proto.sip.ua_types import CallEnd, EndCause, SessionState


class SessionTimers(UACore):
    """RFC 4028 session timers of the user agent's sessions: set from the 2xx we get or send,
    checked on requests (422), refreshed by UPDATE or re-INVITE when we are the refresher."""

    def _arm_session_timer(self, session: InviteSession) -> None:
        at = session.timer.deadline
        if at is None:
            self._disarm(session, "session")
        else:
            self._arm(session, "session", at)

    def _timer_from_response(self, session: InviteSession, resp: SipResponse, now: float) -> None:
        """The 2xx to our INVITE, re-INVITE or UPDATE: it sets (or, without Session-Expires,
        stops) the session timer; ``refresher=uac`` means us, who sent the request (§7.2)."""
        try:
            se = session_expires_of(resp)
        except RemoteProtocolError:
            se = None
        if se is None or se.interval < self.config.min_se:
            session.timer.stop()
        else:
            local = se.refresher != "uas"  # absent: we asked, so we refresh (§7.2)
            session.timer.start(min(se.interval, MAX_SESSION_EXPIRES), local, now)
        self._arm_session_timer(session)

    def _timer_request_headers(self, session: InviteSession) -> list[tuple[str, str]]:
        """Session-Expires / Min-SE for a re-INVITE or UPDATE we send while a timer runs (§7.4)."""
        if not session.timer.running:
            return []
        return [("Session-Expires", session.timer.request_value()), ("Min-SE", str(session.timer.min_se))]

    def _check_session_expires(self, txn: ServerTransaction, req: SipRequest, now: float, to_tag: str | None) -> bool:
        """A request's Session-Expires below our Min-SE gets 422 (§8.1). False when answered."""
        se = session_expires_of(req)  # RemoteProtocolError: 400 by the caller
        floor = self.config.min_se
        if se is not None and se.interval < floor:
            self._respond(txn, req, 422, now, to_tag=to_tag, headers=[("Min-SE", str(floor))])
            return False
        return True

    def _timer_response_headers(self, session: InviteSession, req: SipRequest, now: float) -> list[tuple[str, str]]:
        """The 2xx we send to ``req`` (INVITE, re-INVITE, UPDATE) is a session refresh: with its
        Session-Expires the timer runs again, without it the timer stops (§9)."""
        try:
            se = session_expires_of(req)
            min_se = min_se_of(req)
        except RemoteProtocolError:
            se, min_se = None, None
        if se is None:
            session.timer.stop()
            self._arm_session_timer(session)
            return []
        supported = "timer" in option_tags(req, "Supported")
        refresher = se.refresher or ("uac" if supported else "uas")
        if refresher == "uac" and not supported:
            refresher = "uas"  # a UAC that does not know timers cannot refresh
        # no Min-SE in the request means 90 s (§5)
        session.timer.min_se = max(session.timer.min_se, min_se if min_se is not None else MIN_SE_FLOOR)
        interval = min(max(se.interval, session.timer.min_se), MAX_SESSION_EXPIRES)
        session.timer.start(interval, refresher == "uas", now)
        self._arm_session_timer(session)
        headers = [("Session-Expires", str(SessionExpires(interval, refresher)))]
        if refresher == "uac":
            headers.append(("Require", "timer"))
        return headers

    def _send_refresh(self, session: InviteSession, now: float) -> None:
        """Refresh the session: UPDATE without a body when the far end allows UPDATE, else a
        re-INVITE with our current SDP (RFC 4028 §7.4, RFC 6337 §5.3)."""
        d = session.dialog
        if d is None or session.state is not SessionState.CONFIRMED:
            return
        busy = session.refresh_txn is not None or session.pending_offer_txn is not None or session.reinvite_txn is not None
        use_update = session.peer_allows_update and not session.update_refused
        if busy and not (use_update and session.refresh_txn is None):
            # another exchange is in progress (it refreshes the session when it succeeds): try again soon
            expires = session.timer.expires_at or now
            if now + 2.0 < expires:
                self._arm(session, "session", now + 2.0)
            else:
                self._bye(session, end_cause=EndCause.SESSION_TIMER)
            return
        method = "UPDATE" if use_update else "INVITE"
        req = d.create_request(method, self._via(session.transport), self._contact(session.transport))
        req.headers.add("Supported", self._supported(session))
        for name, value in self._timer_request_headers(session):
            req.headers.add(name, value)
        req.headers.add("User-Agent", self.config.user_agent)
        if method == "INVITE":
            req.headers.add("Allow", self._allow(session))
            if session.local_sdp:
                req.headers.add("Content-Type", "application/sdp")
                req.body = session.local_sdp
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), now)
        session.refresh_txn = txn
        self._track(txn, "refresh", session)

    def _on_refresh_response(self, session: InviteSession, txn: ClientTransaction, resp: SipResponse, now: float) -> None:
        status = resp.status
        if status < 200:
            return
        if status < 300 and txn.is_invite:
            sent = session.reinvite_acks.get(id(txn))
            if sent is not None:
                self.tm.send_stateless(*sent)  # a retransmitted 2xx
                return
            d = session.dialog
            if d is None:
                return
            ack = self._make_ack(session, d, txn.request)
            if session.state is not SessionState.TERMINATED:
                d.update_target(resp)
            _, _, target = d.next_request_target()
            dest = self._in_dialog_dest(session, target)
            session.reinvite_acks[id(txn)] = (ack, dest)
            self.tm.send_stateless(ack, dest)
        if session.refresh_txn is not txn:
            return
        session.refresh_txn = None
        if session.state is SessionState.TERMINATED:
            return
        if status < 300:
            if session.dialog is not None and not txn.is_invite:
                session.dialog.update_target(resp)
            self._timer_from_response(session, resp, now)
            return
        if status in (401, 407):
            new = self._retry_in_dialog_with_auth(session, txn, resp, now, "refresh")
            if new is not None:
                session.refresh_txn = new
                return
        if status == 422:
            try:
                min_se = min_se_of(resp)
            except RemoteProtocolError:
                min_se = None
            if min_se is not None and session.timer.interval < min_se <= MAX_SESSION_EXPIRES:
                session.timer.min_se = min_se
                session.timer.interval = min_se
                self._send_refresh(session, now)
                return
        if status == 491:
            self._arm(session, "session", now + 2.0 + secrets.randbelow(2000) / 1000.0)  # glare: again (§14.1)
            return
        if status in (405, 501) and not txn.is_invite:
            session.update_refused = True  # no UPDATE after all: a re-INVITE then
            self._send_refresh(session, now)
            return
        self._refresh_failed(session, status, resp.reason)

    def _refresh_failed(self, session: InviteSession, status: int, reason: str) -> None:
        """Our refresh failed: the session cannot be kept alive, end it (RFC 4028 §10)."""
        if status == 481:
            self._end(session, CallEnd(EndCause.SESSION_TIMER, status, reason))  # the dialog is gone already
        else:
            self._bye(session, end_cause=EndCause.SESSION_TIMER, status=status, reason=reason)

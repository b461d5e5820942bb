"""The UAS side of INVITE sessions (RFC 3261 §13.3, RFC 3262 reliable provisionals): a mixin
over :class:`ua_core.UACore`. Part of :mod:`useragent`."""

from __future__ import annotations

import secrets
from typing import cast

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.dialog import Dialog, new_tag
from webgate.proto.sip.extensions import RAck, option_tags, parse_rack
from webgate.proto.sip.message import SipRequest, make_response
from webgate.proto.sip.transaction import Addr, ServerTransaction
from webgate.proto.sip.ua_session import IncomingCall, InviteSession, SessionOwner
from webgate.proto.sip.ua_timers import SessionTimers
from webgate.proto.sip.ua_types import CallEnd, EndCause, SessionState, _allows


class InviteServer(SessionTimers):
    """The callee's side of an INVITE: the incoming call, provisionals (reliable ones
    retransmitted until PRACKed, RFC 3262), the 2xx or a rejection, and our answer to the far
    end's re-offers."""

    # --- UAS ---------------------------------------------------------------------------
    def _on_new_invite(self, txn: ServerTransaction, req: SipRequest, source: Addr, now: float) -> None:
        if not self.config.accept_incoming:
            self._respond(txn, req, 403, now, to_tag=new_tag())
            return
        try:
            call_id = req.call_id
            if not req.from_.tag:
                raise RemoteProtocolError("INVITE without From tag", 400)
            if not req.contacts:
                raise RemoteProtocolError("INVITE without Contact", 400)
            if not self._check_session_expires(txn, req, now, new_tag()):
                return
        except RemoteProtocolError as e:
            self._respond(txn, req, e.status_hint or 400, now, to_tag=new_tag())
            return
        if (call_id, "uas") in self.sessions:
            # a second INVITE with the same Call-ID but no To tag: loop or merged request
            self._respond(txn, req, 482, now, to_tag=new_tag())
            return
        if req.body and req.content_type not in ("application/sdp", ""):
            self._respond(txn, req, 415, now, to_tag=new_tag(), headers=[("Accept", "application/sdp")])
            return
        session = InviteSession(cast(SessionOwner, self), "uas", call_id, new_tag())
        session.transport = source[0]
        session.invite = req
        session.invite_txn = txn
        session.remote_sdp = req.body or None
        session.rel_required = "100rel" in option_tags(req, "Require")
        session.peer_allows_update = _allows(req, "UPDATE")
        try:
            session.dialog = Dialog.from_uas(req, session.local_tag)
        except RemoteProtocolError as e:
            self._respond(txn, req, e.status_hint or 400, now, to_tag=session.local_tag)
            return
        self.sessions[(call_id, "uas")] = session
        self._track(txn, "uas_invite", session)
        self._events.append(IncomingCall(session, req, req.body or None, source))

    def _uas_provisional(self, session: InviteSession, status: int, sdp: bytes | None) -> None:
        if session.state not in (SessionState.INCOMING, SessionState.EARLY):
            return
        assert isinstance(session.invite_txn, ServerTransaction) and session.invite is not None
        if not session.rel_required or status == 100:
            self._respond(session.invite_txn, session.invite, status, self._now, to_tag=session.local_tag,
                          body=sdp or b"", contact=True, transport=session.transport)
            session.state = SessionState.EARLY
            return
        if session.rel_pending is not None:
            # one unacknowledged reliable provisional at a time (RFC 3262 §3)
            session.rel_queue.append((status, sdp))
            return
        session.rseq = session.rseq + 1 if session.rseq else 1 + secrets.randbelow(2**20)
        resp = self._respond(session.invite_txn, session.invite, status, self._now, to_tag=session.local_tag,
                             body=sdp or b"", contact=True, transport=session.transport,
                             headers=[("Require", "100rel"), ("RSeq", str(session.rseq)), ("Allow", self._allow(session))])
        session.state = SessionState.EARLY
        session.rel_pending = resp
        session.rel_started = self._now
        t1 = self.tm.timers.t1
        session.rel_interval = t1
        reliable = session.invite_txn.reliable
        self._arm(session, "rel", self._now + (self.tm.timers.timeout if reliable else t1))

    def _retransmit_reliable(self, session: InviteSession, now: float) -> None:
        """Our reliable provisional again (T1, doubling), or, after 64*T1 without its PRACK, the
        INVITE is refused with 5xx (RFC 3262 §3)."""
        resp, txn = session.rel_pending, session.invite_txn
        if resp is None or not isinstance(txn, ServerTransaction) or session.state is not SessionState.EARLY:
            return
        if now - session.rel_started >= self.tm.timers.timeout - 1e-9:
            session.rel_pending = None
            assert session.invite is not None
            final = make_response(session.invite, 500, "No PRACK", to_tag=session.local_tag)
            final.headers.add("Server", self.config.user_agent)
            self.tm.send_response(txn, final, now)
            self._end(session, CallEnd(EndCause.NO_ACK, 500, "No PRACK"))
            return
        self.tm.send_response(txn, resp, now)
        session.rel_interval *= 2
        self._arm(session, "rel", min(now + session.rel_interval, session.rel_started + self.tm.timers.timeout))

    def _on_prack(self, session: InviteSession, txn: ServerTransaction, req: SipRequest, now: float) -> None:
        rack = parse_rack(req.headers.get("RAck"))  # RemoteProtocolError -> 400
        pending = session.rel_pending
        invite = session.invite
        if pending is None or invite is None or rack != RAck(session.rseq, invite.cseq.number, "INVITE"):
            self._respond(txn, req, 481, now)  # matches no unacknowledged reliable provisional (§3)
            return
        self._respond(txn, req, 200, now)
        session.rel_pending = None
        self._disarm(session, "rel")
        if session.rel_deferred_answer is not None:
            sdp, session.rel_deferred_answer = session.rel_deferred_answer, None
            self._uas_answer(session, sdp)
        elif session.rel_queue:
            status, body = session.rel_queue.pop(0)
            self._uas_provisional(session, status, body)

    def _uas_answer(self, session: InviteSession, sdp: bytes) -> None:
        if session.state not in (SessionState.INCOMING, SessionState.EARLY):
            return
        assert isinstance(session.invite_txn, ServerTransaction) and session.invite is not None
        if session.rel_pending is not None and session.rel_pending.body:
            # a reliable provisional with SDP is PRACKed before the 2xx (RFC 3262 §3)
            session.rel_deferred_answer = sdp
            return
        session.rel_pending = None
        session.rel_queue.clear()
        self._disarm(session, "rel")
        session.local_sdp = sdp
        if session.remote_sdp is None:
            session.offer_in_2xx = session.invite.cseq.number  # delayed offer: the answer comes in the ACK
        headers = [("Allow", self._allow(session))]
        timer = self._timer_response_headers(session, session.invite, self._now)
        headers.append(("Supported", self._supported(session)))
        self._respond(session.invite_txn, session.invite, 200, self._now, to_tag=session.local_tag, body=sdp,
                      contact=True, transport=session.transport, headers=headers + timer)
        session.state = SessionState.ANSWERED

    def _uas_reject(self, session: InviteSession, status: int, reason: str | None) -> None:
        if session.state not in (SessionState.INCOMING, SessionState.EARLY):
            return
        if not 300 <= status <= 699:
            raise LocalProtocolError(f"reject status must be 3xx-6xx, not {status}")
        assert isinstance(session.invite_txn, ServerTransaction) and session.invite is not None
        resp = make_response(session.invite, status, reason, to_tag=session.local_tag)
        resp.headers.add("Server", self.config.user_agent)
        self.tm.send_response(session.invite_txn, resp, self._now)
        self._end(session, CallEnd(EndCause.DECLINED, status, resp.reason))

    def _answer_offer(self, session: InviteSession, sdp: bytes | None, status: int) -> None:
        txn = session.pending_offer_txn
        if txn is None:
            return
        session.pending_offer_txn = None
        req = txn.request
        if status >= 300:
            self._respond(txn, req, status, self._now)
            return
        if sdp is not None:
            session.local_sdp = sdp
        if req.method == "INVITE" and not req.body and sdp:
            session.offer_in_2xx = req.cseq.number  # our offer in the 2xx: the answer comes in the ACK
        headers = [("Allow", self._allow(session))]
        if session.state is SessionState.CONFIRMED:
            timer = self._timer_response_headers(session, req, self._now)  # a 2xx is a session refresh
            if timer:
                headers += [("Supported", self._supported(session)), *timer]
        self._respond(txn, req, 200, self._now, body=sdp or b"", contact=True, transport=session.transport,
                      headers=headers)

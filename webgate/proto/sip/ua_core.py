"""The base of the user agent's parts (:class:`UACore`): its state, its session timer heap and
the helpers every part uses. Part of :mod:`useragent`."""

from __future__ import annotations

import heapq

from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip import auth
from webgate.proto.sip.dialog import Dialog
from webgate.proto.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    SipURI,
    format_host,
    make_response,
)
from webgate.proto.sip.transaction import (
    Addr,
    ClientTransaction,
    ServerTransaction,
    TransactionManager,
    new_branch,
)
from webgate.proto.sip.ua_session import Ended, Event, InviteSession, Registration
from webgate.proto.sip.ua_types import (
    ALLOW,
    DEFAULT_PORTS,
    CallEnd,
    EndCause,
    LocalEndpoint,
    SessionState,
    UAConfig,
    challenge_of,
)


class UACore:
    """The user agent's state and what every part of it uses: its own timers, Via/Contact,
    destinations, responses, ACK/BYE in a dialog, digest retries of in-dialog requests, the
    end of a session. The parts (:mod:`ua_uac`, :mod:`ua_uas`, :mod:`ua_timers`,
    :mod:`ua_midcall`, :mod:`ua_register`) are mixins over it, composed by
    ``useragent.UserAgent``."""

    def __init__(self, config: UAConfig, tm: TransactionManager | None = None) -> None:
        self.config = config
        self.tm = tm or TransactionManager(config.timers, honour_maddr=config.honour_maddr)
        self.sessions: dict[tuple[str, str], InviteSession] = {}  # by (Call-ID, role)
        self.registrations: list[Registration] = []
        self._by_txn: dict[int, tuple[str, object]] = {}  # id(txn) -> (kind, owner)
        self._events: list[Event] = []
        self._forget_later: list[tuple[tuple[str, str], float]] = []
        self._source: Addr = ("udp", "", 0)  # where the message being handled came from
        self._now = 0.0  # the time of the input being handled (for calls made from event handlers)
        #: session timers (reliable provisional retransmission, session refresh/expiry):
        #: (deadline, sequence, session, name), stale entries skipped (session.deadlines)
        self._heap: list[tuple[float, int, InviteSession, str]] = []
        self._heap_seq = 0
        #: draining: out-of-dialog OPTIONS get 503, so a dispatcher's probing takes this node out
        self.out_of_service = False
        #: when the last out-of-dialog OPTIONS arrived (None: never), and how many got 503
        self.options_at: float | None = None
        self.options_refused = 0
        #: things worth a log line that a sans-IO core cannot write itself: the adapter takes
        #: them (:meth:`take_notices`) and logs them
        self._notices: list[str] = []

    # --- wire-facing -----------------------------------------------------------------
    def outgoing(self) -> list[tuple[SipMessage, Addr]]:
        return self.tm.outgoing()

    def next_timer(self) -> float | None:
        times = [t for t in [self.tm.next_timer(), self._next_session_timer()] if t is not None]
        times += [r.refresh_at for r in self.registrations if r.refresh_at is not None]
        times += [r.failover_at for r in self.registrations if r.failover_at is not None]
        return min(times) if times else None

    def _next_session_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, seq, session, name = heap[0]
            if session.deadlines.get(name) == (deadline, seq):
                return deadline
            heapq.heappop(heap)
        return None

    def _arm(self, session: InviteSession, name: str, at: float) -> None:
        self._heap_seq += 1
        session.deadlines[name] = (at, self._heap_seq)
        heapq.heappush(self._heap, (at, self._heap_seq, session, name))

    def _disarm(self, session: InviteSession, name: str) -> None:
        session.deadlines.pop(name, None)

    def take_notices(self) -> list[str]:
        """What the core wants logged since the last call (e.g. late 2xx ignored beyond the cap)."""
        out, self._notices = self._notices, []
        return out

    def _notice(self, text: str) -> None:
        if len(self._notices) < 100:  # nobody taking them (a bare core): keep a bounded few
            self._notices.append(text)

    def set_time(self, now: float) -> None:
        """Tell the UA the current time before calling session methods (hangup, INFO, ...)
        from outside an event handler: their transactions' timers start from it."""
        self._now = now

    def _drain(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    # --- helpers ---------------------------------------------------------------------
    def _endpoint(self, transport: str) -> LocalEndpoint:
        ep = self.config.endpoints.get(transport)
        if ep is None:
            raise LocalProtocolError(f"no SIP listener for transport {transport}")
        return ep

    def _via(self, transport: str) -> str:
        ep = self._endpoint(transport)
        return f"SIP/2.0/{transport.upper()} {format_host(ep.host)}:{ep.port};branch={new_branch()};rport"

    def _contact(self, transport: str, user: str | None = None) -> str:
        ep = self._endpoint(transport)
        t = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{user or self.config.contact_user}@{format_host(ep.host)}:{ep.port}{t}>"

    def _dest_for(self, uri: SipURI, transport: str | None = None) -> Addr:
        t = (transport or uri.transport).lower()
        if uri.scheme == "sips":
            t = "tls"
        maddr = uri.params.get("maddr")
        host = maddr or uri.host
        return (t, host, uri.port or DEFAULT_PORTS.get(t, 5060))

    def _session_for_txn(self, txn: object) -> tuple[str, object] | None:
        return self._by_txn.get(id(txn))

    def _track(self, txn: object, kind: str, owner: object) -> None:
        self._by_txn[id(txn)] = (kind, owner)

    def _respond(self, txn: ServerTransaction, request: SipRequest, status: int, now: float, *, to_tag: str | None = None,
                 headers: list[tuple[str, str]] | None = None, body: bytes = b"", content_type: str | None = None,
                 contact: bool = False, transport: str = "udp") -> SipResponse:
        resp = make_response(request, status, to_tag=to_tag)
        resp.headers.add("Server", self.config.user_agent)
        if contact:
            resp.headers.add("Contact", self._contact(transport))
        for name, value in headers or []:
            resp.headers.add(name, value)
        if body:
            resp.headers.add("Content-Type", content_type or "application/sdp")
            resp.body = body
        self.tm.send_response(txn, resp, now)
        return resp

    @staticmethod
    def _allow(session: InviteSession) -> str:
        """Our ``Allow`` for ``session``: REFER only where the application allows transfer."""
        return f"{ALLOW}, REFER" if session.allow_refer else ALLOW

    def _supported(self, session: InviteSession) -> str:
        """Our ``Supported`` header value for ``session``'s requests."""
        tags = ["replaces"]
        if self.config.support_100rel and session.role == "uac":
            tags.append("100rel")
        if session.timer.requested or session.timer.running:
            tags.append("timer")
        return ", ".join(tags)

    def _make_ack(self, session: InviteSession, d: Dialog, invite: SipRequest) -> SipRequest:
        """The ACK for a 2xx to ``invite`` (the initial INVITE or a re-INVITE), RFC 3261 §13.2.2.4."""
        ack = d.create_request("ACK", self._via(session.transport), self._contact(session.transport), cseq=invite.cseq.number)
        for name in ("Authorization", "Proxy-Authorization"):
            for v in invite.headers.get_all(name):
                ack.headers.add(name, v)
        return ack

    def _in_dialog_dest(self, session: InviteSession, target: SipURI, dialog: Dialog | None = None) -> Addr:
        """Where a request to ``target`` in ``dialog`` (default: the session's) goes."""
        d = dialog or session.dialog
        if session.outbound_proxy is not None and session.role == "uac" and d and not d.route_set:
            # where the INVITE went: the proxy, as located (RFC 3263), or its URI's host
            return session.dest or self._dest_for(session.outbound_proxy, session.transport)
        t = target.params.get("transport")
        return self._dest_for(target, t.lower() if t else session.transport)

    # --- BYE / in-dialog requests from us ---------------------------------------------
    def _bye(self, session: InviteSession, end_cause: EndCause = EndCause.LOCAL_HANGUP, status: int | None = None,
             reason: str = "") -> None:
        d = session.dialog
        if d is None or session.state is SessionState.TERMINATED and end_cause is EndCause.LOCAL_HANGUP:
            return
        req = d.create_request("BYE", self._via(session.transport), None)
        req.headers.add("User-Agent", self.config.user_agent)
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), self._now)
        self._track(txn, "bye", session)
        self._end(session, CallEnd(end_cause, status, reason))

    def _retry_in_dialog_with_auth(self, session: InviteSession, txn: ClientTransaction, resp: SipResponse, now: float,
                                   kind: str, dialog: Dialog | None = None) -> ClientTransaction | None:
        """``txn``'s request again with digest credentials after a 401/407 (once), in ``dialog``
        (default: the session's own, or the early dialog a PRACK belongs to)."""
        creds = session.credentials
        if creds is None or (dialog or session.dialog) is None:
            return None
        old = txn.request
        if old.headers.get("Authorization") or old.headers.get("Proxy-Authorization"):
            return None
        ch = challenge_of(resp)
        if ch is None:
            return None
        if dialog is None:
            dialog = session.dialog
            assert dialog is not None
            if old.method == "PRACK":
                dialog = self._early_dialog(session, old.to.tag or "") or dialog
        req = dialog.create_request(old.method, self._via(session.transport), old.headers.get("Contact"))
        for name, value in old.headers:
            if name in ("Content-Type", "User-Agent", "Allow", "Supported", "RAck", "Session-Expires", "Min-SE", "Event",
                        "Subscription-State"):
                req.headers.add(name, value)
        req.body = old.body
        value = auth.build_authorization(ch, old.method, str(req.uri), creds.username, creds.password, body=old.body)
        req.headers.add("Authorization" if resp.status == 401 else "Proxy-Authorization", value)
        new = self.tm.send_request(req, txn.dest, now)
        self._track(new, kind, session)
        return new

    def _early_dialog(self, session: InviteSession, to_tag: str) -> Dialog | None:
        if session.dialog is not None and session.dialog.remote_tag == to_tag:
            return session.dialog
        return session.early_dialogs.get(to_tag)

    # --- end of a session -------------------------------------------------------------
    def _end(self, session: InviteSession, end: CallEnd) -> None:
        if session.state is SessionState.TERMINATED:
            return
        session.state = SessionState.TERMINATED
        session.end = end
        if session.refer_txn is not None:  # a REFER nobody will answer now: the dialog is gone
            txn, session.refer_txn = session.refer_txn, None
            try:
                self._respond(txn, txn.request, 481, self._now)
            except LocalProtocolError:
                pass
        session.deadlines.clear()
        session.rel_pending = None
        session.timer.stop()
        self._events.append(Ended(session, end))
        # keep the session for late retransmissions; forget() removes it
        self._forget_later.append(((session.call_id, session.role), self._now + 32.0))
        self._gc(self._now)

    def _gc(self, now: float) -> None:
        keep = []
        for key, at in self._forget_later:
            if at <= now:
                s = self.sessions.get(key)
                if s is not None and s.state is SessionState.TERMINATED:
                    del self.sessions[key]
                    for k, (_, owner) in list(self._by_txn.items()):
                        if owner is s:
                            del self._by_txn[k]
            else:
                keep.append((key, at))
        self._forget_later = keep

"""The SIP user agent core: INVITE sessions (UAC and UAS), registration, OPTIONS. Sans-IO.

Layering as in pjproject: transport (adapter) -> transactions (:mod:`transaction`) ->
dialogs (:mod:`dialog`) -> invite sessions (this module) -> application (the call layer).

The application drives it with :meth:`UserAgent.receive` (a parsed message and where it
came from), :meth:`UserAgent.handle_timers` and calls on :class:`InviteSession`; it
drains :meth:`UserAgent.outgoing` to the wire and handles the returned events.
SDP bodies are opaque bytes here: offer/answer is the application's (see ``proto/sdp.py``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Union

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip import auth
from webgate.proto.sip.dialog import Dialog, new_call_id, new_tag
from webgate.proto.sip.message import (
    Headers,
    NameAddr,
    SipMessage,
    SipRequest,
    SipResponse,
    SipURI,
    check_display_name,
    check_header_value,
    check_host,
    check_token,
    check_user,
    format_host,
    make_response,
)
from webgate.proto.sip.transaction import (
    AckTimeout,
    Addr,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    TransactionManager,
    TransactionTimeout,
    TransportError,
    new_branch,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


class EndCause(enum.Enum):
    LOCAL_HANGUP = "local_hangup"  # we sent BYE
    REMOTE_HANGUP = "remote_hangup"  # far end sent BYE
    CANCELLED = "cancelled"  # we cancelled before answer
    REMOTE_CANCELLED = "remote_cancelled"  # the caller cancelled our incoming call
    REJECTED = "rejected"  # final 3xx-6xx to our INVITE (status set)
    DECLINED = "declined"  # we rejected an incoming call (status set)
    TIMEOUT = "timeout"  # Timer B / no response (408)
    AUTH_FAILED = "auth_failed"  # challenged again after our credentials, or none configured
    NO_ACK = "no_ack"  # our 2xx was never acknowledged
    TRANSPORT_ERROR = "transport_error"
    PROTOCOL_ERROR = "protocol_error"


@dataclass(frozen=True)
class CallEnd:
    cause: EndCause
    status: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    realm: str = ""  # empty: answer any realm


@dataclass(frozen=True)
class LocalEndpoint:
    """Where peers reach us on one transport: the advertised (not necessarily bound) address."""

    transport: str
    host: str
    port: int


@dataclass
class UAConfig:
    endpoints: dict[str, LocalEndpoint]  # by transport
    user_agent: str = "webgate"
    contact_user: str = "webgate"
    outbound_proxy: SipURI | None = None
    timers: TimerConfig = field(default_factory=TimerConfig)
    accept_incoming: bool = True
    #: send responses to a request's Via ``maddr`` (RFC 3261 §18.2.2); off: to the request's source
    honour_maddr: bool = False


# ---------------------------------------------------------------------------------------
# Events to the application


@dataclass(frozen=True)
class Progress:
    session: "InviteSession"
    status: int
    reason: str
    sdp: bytes | None  # a 18x with SDP: early media


@dataclass(frozen=True)
class Answered:
    session: "InviteSession"
    sdp: bytes | None


@dataclass(frozen=True)
class Confirmed:
    """UAS: the ACK for our 2xx arrived."""

    session: "InviteSession"


@dataclass(frozen=True)
class Ended:
    session: "InviteSession"
    end: CallEnd


@dataclass(frozen=True)
class IncomingCall:
    session: "InviteSession"
    request: SipRequest
    offer: bytes | None
    #: the transport's peer address the INVITE came from: the caller's address for every policy
    #: (never the request's own Via, which the sender writes)
    source: Addr


@dataclass(frozen=True)
class OfferReceived:
    """A re-INVITE or UPDATE with (or without) an offer: call ``session.answer_offer``."""

    session: "InviteSession"
    method: str
    offer: bytes | None


@dataclass(frozen=True)
class ReofferAnswered:
    """A 2xx to our re-INVITE (already ACKed): apply ``sdp``, the far end's answer."""

    session: "InviteSession"
    sdp: bytes | None


@dataclass(frozen=True)
class ReofferFailed:
    """A non-2xx final (or no) response to our re-INVITE. The call stays up (RFC 3261
    §14.1) unless the status was 481/408, which end the dialog (§12.2.1.2): an
    :class:`Ended` follows then. 491 (glare) is reported, not retried."""

    session: "InviteSession"
    status: int
    reason: str


@dataclass(frozen=True)
class DtmfInfo:
    session: "InviteSession"
    digit: str
    duration_ms: int


@dataclass(frozen=True)
class Registered:
    registration: "Registration"
    expires: int


@dataclass(frozen=True)
class RegistrationFailed:
    registration: "Registration"
    status: int
    reason: str


Event = Union[Progress, Answered, Confirmed, Ended, IncomingCall, OfferReceived, ReofferAnswered, ReofferFailed,
              DtmfInfo, Registered, RegistrationFailed]


class SessionState(enum.Enum):
    CALLING = "calling"  # UAC: INVITE sent
    EARLY = "early"  # UAC: provisional received / UAS: provisional sent
    INCOMING = "incoming"  # UAS: INVITE received, nothing sent yet
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for ACK
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_DTMF_RE = re.compile(r"^[0-9A-Da-d*#]$")


def parse_dtmf_info(content_type: str, body: bytes) -> tuple[str, int] | None:
    """application/dtmf-relay (Signal=5 / Duration=160) or application/dtmf ("5")."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if content_type == "application/dtmf-relay":
        signal = None
        duration = 160
        for line in text.splitlines():
            k, _, v = line.partition("=")
            k = k.strip().lower()
            v = v.strip()
            if k == "signal":
                signal = v
            elif k == "duration" and v.isdigit():
                duration = min(int(v), 10000)
        if signal == "10":
            signal = "*"
        elif signal == "11":
            signal = "#"
        if signal and _DTMF_RE.match(signal):
            return signal.upper(), duration
        return None
    if content_type == "application/dtmf":
        s = text.strip()
        if s.isdigit() and 0 <= int(s) <= 15:
            return "0123456789*#ABCD"[int(s)], 160
        if _DTMF_RE.match(s):
            return s.upper(), 160
    return None


def challenge_of(response: SipResponse) -> "auth.Challenge | None":
    """The digest challenge to answer in a 401/407 (the strongest algorithm offered), if any."""
    hname = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    challenges = []
    for v in response.headers.get_all(hname):
        try:
            challenges.append(auth.parse_challenge(v))
        except RemoteProtocolError:
            continue
    return auth.select_challenge(challenges) if challenges else None


class InviteSession:
    """One INVITE-initiated session, as caller (uac) or callee (uas)."""

    def __init__(self, ua: "UserAgent", role: str, call_id: str, local_tag: str) -> None:
        self.ua = ua
        self.role = role
        self.call_id = call_id
        self.local_tag = local_tag
        self.state = SessionState.CALLING if role == "uac" else SessionState.INCOMING
        self.dialog: Dialog | None = None
        self.invite: SipRequest | None = None  # our INVITE (uac) or theirs (uas)
        self.invite_txn: ClientTransaction | ServerTransaction | None = None
        self.dest: Addr | None = None
        self.transport = "udp"
        self.credentials: Credentials | None = None
        self.auth_attempts = 0
        self.cancel_pending = False
        self.cancelled = False
        self.ack: SipRequest | None = None
        self.ack_dest: Addr | None = None
        self.early_sdp: bytes | None = None
        self.remote_sdp: bytes | None = None
        self.local_sdp: bytes | None = None
        self.end: CallEnd | None = None
        self.pending_offer_txn: ServerTransaction | None = None
        self.pending_offer_method: str = ""
        self.reinvite_txn: ClientTransaction | None = None  # our re-INVITE awaiting its final response
        self.reinvite_acks: dict[int, tuple[SipRequest, Addr]] = {}  # id(txn) -> the ACK sent for its 2xx
        self.user_data: object = None  # for the application

    def __repr__(self) -> str:
        return f"<InviteSession {self.role} {self.call_id} {self.state.value}>"

    # --- application API ------------------------------------------------------------
    def cancel(self) -> None:
        self.ua._cancel(self)

    def hangup(self) -> None:
        """End the call whatever its state: CANCEL, BYE, or a 487/603 for an incoming one."""
        if self.state is SessionState.TERMINATED:
            return
        if self.role == "uac":
            if self.state in (SessionState.CALLING, SessionState.EARLY):
                self.ua._cancel(self)
            else:
                self.ua._bye(self)
        else:
            if self.state in (SessionState.INCOMING, SessionState.EARLY):
                self.reject(603)
            else:
                self.ua._bye(self)

    def ring(self, sdp: bytes | None = None) -> None:
        self.ua._uas_provisional(self, 183 if sdp else 180, sdp)

    def answer(self, sdp: bytes) -> None:
        self.ua._uas_answer(self, sdp)

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        self.ua._uas_reject(self, status, reason)

    def answer_offer(self, sdp: bytes | None, status: int = 200) -> None:
        self.ua._answer_offer(self, sdp, status)

    def send_info_dtmf(self, digit: str, duration_ms: int = 160) -> None:
        self.ua._send_info_dtmf(self, digit, duration_ms)

    def reinvite(self, sdp: bytes) -> None:
        """Send a re-INVITE with the offer ``sdp`` in the confirmed dialog (hold/resume,
        RFC 3264 §8.4). Yields :class:`ReofferAnswered` or :class:`ReofferFailed`.
        :class:`LocalProtocolError` when the dialog is not confirmed or an offer/answer
        exchange (ours or the far end's) is still in progress (RFC 3261 §14.1)."""
        self.ua._reinvite(self, sdp)

    @property
    def reinvite_pending(self) -> bool:
        return self.reinvite_txn is not None

    @property
    def ended(self) -> bool:
        return self.state is SessionState.TERMINATED


class Registration:
    """A REGISTER client binding with refresh (RFC 3261 §10.2)."""

    def __init__(self, ua: "UserAgent", aor: SipURI, registrar: SipURI, credentials: Credentials | None, expires: int, transport: str) -> None:
        self.ua = ua
        self.aor = aor
        self.registrar = registrar
        self.credentials = credentials
        self.expires = expires
        self.transport = transport
        self.call_id = new_call_id(ua._endpoint(transport).host)
        self.tag = new_tag()
        self.cseq = 0
        self.refresh_at: float | None = None
        self.registered_expires = 0
        self.auth_attempts = 0
        self.txn: ClientTransaction | None = None
        self.active = True


class UserAgent:
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

    # --- wire-facing -----------------------------------------------------------------
    def outgoing(self) -> list[tuple[SipMessage, Addr]]:
        return self.tm.outgoing()

    def next_timer(self) -> float | None:
        times = [t for t in [self.tm.next_timer()] if t is not None]
        times += [r.refresh_at for r in self.registrations if r.refresh_at is not None]
        return min(times) if times else None

    def set_time(self, now: float) -> None:
        """Tell the UA the current time before calling session methods (hangup, INFO, ...)
        from outside an event handler: their transactions' timers start from it."""
        self._now = now

    def handle_timers(self, now: float) -> list[Event]:
        for ev in self.tm.handle_timers(now):
            self._on_txn_event(ev, now)
        for reg in list(self.registrations):
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
    ) -> InviteSession:
        """Send an INVITE. Every value going into the message is validated first
        (:class:`LocalProtocolError` on CR/LF, control characters or illegal characters)."""
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
        if t not in self.config.endpoints:
            raise LocalProtocolError(f"no SIP listener for transport {t}")
        ep = self._endpoint(t)
        call_id = new_call_id(ep.host)
        session = InviteSession(self, "uac", call_id, new_tag())
        session.transport = t
        session.credentials = credentials
        session.local_sdp = sdp_offer

        from_uri = SipURI(scheme="sip", user=from_user, host=from_domain or format_host(ep.host))
        frm = NameAddr(from_uri, from_display or None, {"tag": session.local_tag})
        h = Headers()
        h.add("Via", self._via(t))
        h.add("Max-Forwards", "70")
        proxy = self.config.outbound_proxy
        if proxy is not None:
            lr = proxy.copy()
            lr.params.setdefault("lr", None)
            h.add("Route", f"<{lr}>")
            dest = self._dest_for(proxy, transport)
        else:
            dest = self._dest_for(target, t)
        h.add("From", str(frm))
        h.add("To", str(NameAddr(target)))
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self._contact(t))
        h.add("Allow", ALLOW)
        h.add("Supported", "replaces")
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
        return session

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
        h = old.headers.copy()
        h.remove("Via")
        h.remove("Authorization")
        h.remove("Proxy-Authorization")
        h.prepend("Via", self._via(session.transport))
        cseq = old.cseq.number + 1
        h.set("CSeq", f"{cseq} INVITE")
        value = auth.build_authorization(ch, "INVITE", str(old.uri), creds.username, creds.password, body=old.body)
        h.add("Authorization" if response.status == 401 else "Proxy-Authorization", value)
        req = SipRequest(headers=h, method="INVITE", uri=old.uri.copy(), body=old.body)
        session.invite = req
        txn = self.tm.send_request(req, session.dest, now)
        session.invite_txn = txn
        self._track(txn, "invite", session)
        return True

    def _on_invite_response(self, session: InviteSession, txn: ClientTransaction | None, resp: SipResponse, now: float) -> None:
        status = resp.status
        if session.state is SessionState.TERMINATED:
            if 200 <= status < 300:
                # a late 2xx for an ended call: ACK it and end the dialog properly
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
            session.dialog = dialog
            self._send_ack(session, now)
            if session.cancelled:
                # CANCEL lost the race against 200: the call is up; end it with BYE (§9.1)
                self._bye(session, end_cause=EndCause.CANCELLED)
                return
            sdp = resp.body if resp.body else None
            session.remote_sdp = sdp or session.early_sdp
            session.state = SessionState.CONFIRMED
            self._events.append(Answered(session, session.remote_sdp))
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

    def _make_ack(self, session: InviteSession, d: Dialog, invite: SipRequest) -> SipRequest:
        """The ACK for a 2xx to ``invite`` (the initial INVITE or a re-INVITE), RFC 3261 §13.2.2.4."""
        ack = d.create_request("ACK", self._via(session.transport), self._contact(session.transport), cseq=invite.cseq.number)
        for name in ("Authorization", "Proxy-Authorization"):
            for v in invite.headers.get_all(name):
                ack.headers.add(name, v)
        return ack

    def _send_ack(self, session: InviteSession, now: float) -> None:
        d = session.dialog
        assert d is not None and session.invite is not None
        ack = self._make_ack(session, d, session.invite)
        _, _, target = d.next_request_target()
        dest = self._in_dialog_dest(session, target)
        session.ack = ack
        session.ack_dest = dest
        self.tm.send_stateless(ack, dest)

    def _in_dialog_dest(self, session: InviteSession, target: SipURI) -> Addr:
        if self.config.outbound_proxy is not None and session.role == "uac" and session.dialog and not session.dialog.route_set:
            return self._dest_for(self.config.outbound_proxy, session.transport)
        t = target.params.get("transport")
        return self._dest_for(target, t.lower() if t else session.transport)

    def _ack_and_bye_late_2xx(self, session: InviteSession, resp: SipResponse, now: float) -> None:
        if session.invite is None:
            return
        try:
            d = Dialog.from_uac(session.invite, resp)
        except RemoteProtocolError:
            return
        if session.dialog is not None and session.dialog.remote_tag == d.remote_tag and session.ack is not None:
            # retransmitted 2xx of a dialog we already ACKed: re-send that ACK
            assert session.ack_dest is not None
            self.tm.send_stateless(session.ack, session.ack_dest)
            return
        session.dialog = d
        self._send_ack(session, now)
        req = d.create_request("BYE", self._via(session.transport), None)
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), now)
        self._track(txn, "bye", session)

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

    # --- BYE / in-dialog requests from us ---------------------------------------------
    def _bye(self, session: InviteSession, end_cause: EndCause = EndCause.LOCAL_HANGUP) -> None:
        d = session.dialog
        if d is None or session.state is SessionState.TERMINATED and end_cause is EndCause.LOCAL_HANGUP:
            return
        req = d.create_request("BYE", self._via(session.transport), None)
        req.headers.add("User-Agent", self.config.user_agent)
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), self._now)
        self._track(txn, "bye", session)
        self._end(session, CallEnd(end_cause))

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

    def _retry_in_dialog_with_auth(self, session: InviteSession, txn: ClientTransaction, resp: SipResponse, now: float,
                                   kind: str) -> ClientTransaction | None:
        creds = session.credentials
        if creds is None or session.dialog is None:
            return None
        old = txn.request
        if old.headers.get("Authorization") or old.headers.get("Proxy-Authorization"):
            return None
        ch = challenge_of(resp)
        if ch is None:
            return None
        req = session.dialog.create_request(old.method, self._via(session.transport),
                                            old.headers.get("Contact"))
        for name, value in old.headers:
            if name in ("Content-Type", "User-Agent", "Allow", "Supported"):
                req.headers.add(name, value)
        req.body = old.body
        value = auth.build_authorization(ch, old.method, str(req.uri), creds.username, creds.password, body=old.body)
        req.headers.add("Authorization" if resp.status == 401 else "Proxy-Authorization", value)
        new = self.tm.send_request(req, txn.dest, now)
        self._track(new, kind, session)
        return new

    # --- re-INVITE from us (UAC within the dialog) ------------------------------------
    def _reinvite(self, session: InviteSession, sdp: bytes) -> None:
        d = session.dialog
        if d is None or session.state is not SessionState.CONFIRMED:
            raise LocalProtocolError("re-INVITE needs a confirmed dialog")
        if session.reinvite_txn is not None:
            raise LocalProtocolError("a re-INVITE is already in progress")
        if session.pending_offer_txn is not None:
            raise LocalProtocolError("the far end's offer is still being answered")
        req = d.create_request("INVITE", self._via(session.transport), self._contact(session.transport))
        req.headers.add("Allow", ALLOW)
        req.headers.add("Supported", "replaces")
        req.headers.add("User-Agent", self.config.user_agent)
        req.headers.add("Content-Type", "application/sdp")
        req.body = sdp
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), self._now)
        session.reinvite_txn = txn
        self._track(txn, "reinvite", session)

    def _on_reinvite_response(self, session: InviteSession, txn: ClientTransaction, resp: SipResponse, now: float) -> None:
        status = resp.status
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
            ack = self._make_ack(session, d, req)
            if session.state is not SessionState.TERMINATED:
                d.update_target(resp)  # a 2xx to a re-INVITE is a target refresh
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
                    self._events.append(ReofferAnswered(session, resp.body or None))
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
        self._reinvite_failed(session, status, resp.reason)

    def _reinvite_failed(self, session: InviteSession, status: int, reason: str) -> None:
        self._events.append(ReofferFailed(session, status, reason))
        if status == 481:  # the dialog is gone at the far end (§12.2.1.2)
            self._end(session, CallEnd(EndCause.PROTOCOL_ERROR, status, reason))
        elif status == 408:
            self._bye(session, end_cause=EndCause.TIMEOUT)

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
        session = InviteSession(self, "uas", call_id, new_tag())
        session.transport = source[0]
        session.invite = req
        session.invite_txn = txn
        session.remote_sdp = req.body or None
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
        self._respond(session.invite_txn, session.invite, status, self._now, to_tag=session.local_tag,
                      body=sdp or b"", contact=True, transport=session.transport)
        session.state = SessionState.EARLY

    def _uas_answer(self, session: InviteSession, sdp: bytes) -> None:
        if session.state not in (SessionState.INCOMING, SessionState.EARLY):
            return
        assert isinstance(session.invite_txn, ServerTransaction) and session.invite is not None
        session.local_sdp = sdp
        self._respond(session.invite_txn, session.invite, 200, self._now, to_tag=session.local_tag, body=sdp,
                      contact=True, transport=session.transport,
                      headers=[("Allow", ALLOW), ("Supported", "replaces")])
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
        self._respond(txn, req, 200, self._now, body=sdp or b"", contact=True, transport=session.transport,
                      headers=[("Allow", ALLOW)])

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
                if obj.cancelled:
                    cause = EndCause.CANCELLED
                else:
                    cause = EndCause.TIMEOUT if timeout else EndCause.TRANSPORT_ERROR
                self._end(obj, CallEnd(cause, status, reason))
            elif kind == "reinvite" and isinstance(obj, InviteSession):
                if obj.reinvite_txn is ev.txn:
                    obj.reinvite_txn = None
                    if obj.state is not SessionState.TERMINATED:
                        self._reinvite_failed(obj, status, reason)
            elif kind in ("bye", "info", "cancel"):
                pass
            elif kind == "register" and isinstance(obj, Registration):
                self._events.append(RegistrationFailed(obj, 408, "Request Timeout"))
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
        if resp.status >= 300 or (resp.status >= 200 and kind not in ("invite", "reinvite")):
            # an INVITE transaction keeps delivering retransmitted 2xx: keep its mapping
            self._by_txn.pop(id(txn), None)
        if kind == "invite" and isinstance(obj, InviteSession):
            self._on_invite_response(obj, txn, resp, now)
        elif kind == "reinvite" and isinstance(obj, InviteSession):
            self._on_reinvite_response(obj, txn, resp, now)
        elif kind in ("bye", "info") and isinstance(obj, InviteSession):
            if resp.status in (401, 407):
                self._retry_in_dialog_with_auth(obj, txn, resp, now, kind)
        elif kind == "register" and isinstance(obj, Registration):
            self._on_register_response(obj, resp, now)

    def _on_request(self, txn: ServerTransaction | None, req: SipRequest, now: float) -> None:
        method = req.method
        to_tag = req.to.tag
        from_tag = req.from_.tag
        if method == "ACK":
            s = self._find_dialog_session(req, to_tag, from_tag)
            if s is not None and s.role == "uas" and s.state is SessionState.ANSWERED:
                if isinstance(s.invite_txn, ServerTransaction):
                    s.invite_txn.ack_received()
                s.state = SessionState.CONFIRMED
                self._events.append(Confirmed(s))
            # an ACK to a re-INVITE's 2xx: the transaction layer has stopped the retransmissions
            return
        assert txn is not None
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
                self._respond(txn, req, 200, now, to_tag=new_tag(),
                              headers=[("Allow", ALLOW), ("Accept", "application/sdp, application/dtmf-relay"),
                                       ("Supported", "replaces")])
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
        elif method in ("INVITE", "UPDATE"):
            if s.pending_offer_txn is not None or s.reinvite_txn is not None:
                # an offer/answer exchange is in progress either way: glare (RFC 3261 §14.2)
                self._respond(txn, req, 491 if method == "INVITE" or s.reinvite_txn is not None else 500, now)
                return
            if req.body and req.content_type != "application/sdp":
                self._respond(txn, req, 415, now, headers=[("Accept", "application/sdp")])
                return
            s.dialog.update_target(req)
            s.pending_offer_txn = txn
            s.pending_offer_method = method
            self._events.append(OfferReceived(s, method, req.body or None))
        elif method == "INFO":
            parsed = parse_dtmf_info(req.content_type, req.body)
            self._respond(txn, req, 200, now)
            if parsed is not None:
                self._events.append(DtmfInfo(s, parsed[0], parsed[1]))
        elif method == "OPTIONS":
            self._respond(txn, req, 200, now, headers=[("Allow", ALLOW)])
        else:
            self._respond(txn, req, 501, now, headers=[("Allow", ALLOW)])

    def _end(self, session: InviteSession, end: CallEnd) -> None:
        if session.state is SessionState.TERMINATED:
            return
        session.state = SessionState.TERMINATED
        session.end = end
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

    # --- REGISTER ------------------------------------------------------------------------
    def register(self, aor: SipURI, registrar: SipURI, now: float, *, credentials: Credentials | None = None,
                 expires: int = 300, transport: str | None = None) -> Registration:
        if aor.user is not None:
            check_user(aor.user, "registration user")
        t = (transport or registrar.transport).lower()
        reg = Registration(self, aor, registrar, credentials, expires, t)
        self.registrations.append(reg)
        self._send_register(reg, now)
        return reg

    def unregister(self, reg: Registration, now: float) -> None:
        reg.active = False
        reg.refresh_at = None
        self._send_register(reg, now, expires=0)

    def _send_register(self, reg: Registration, now: float, expires: int | None = None,
                       authorization: tuple[str, str] | None = None) -> None:
        reg.cseq += 1
        h = Headers()
        h.add("Via", self._via(reg.transport))
        h.add("Max-Forwards", "70")
        aor = reg.aor
        h.add("From", str(NameAddr(aor, None, {"tag": reg.tag})))
        h.add("To", str(NameAddr(aor)))
        h.add("Call-ID", reg.call_id)
        h.add("CSeq", f"{reg.cseq} REGISTER")
        h.add("Contact", self._contact(reg.transport, aor.user))
        h.add("Expires", str(reg.expires if expires is None else expires))
        h.add("Allow", ALLOW)
        h.add("User-Agent", self.config.user_agent)
        if authorization:
            h.add(*authorization)
        ruri = SipURI(scheme=reg.registrar.scheme, host=reg.registrar.host, port=reg.registrar.port)
        if reg.registrar.params.get("transport"):
            ruri.params["transport"] = reg.registrar.params["transport"]
        req = SipRequest(headers=h, method="REGISTER", uri=ruri)
        dest = self._dest_for(self.config.outbound_proxy or reg.registrar, reg.transport)
        txn = self.tm.send_request(req, dest, now)
        reg.txn = txn
        self._track(txn, "register", reg)

    def _on_register_response(self, reg: Registration, resp: SipResponse, now: float) -> None:
        if resp.status < 200:
            return
        if 200 <= resp.status < 300:
            reg.auth_attempts = 0
            if not reg.active:
                return
            expires = reg.expires
            for c in resp.contacts:
                ce = c.params.get("expires")
                if ce and ce.isdigit():
                    expires = int(ce)
                    break
            else:
                eh = resp.headers.get("Expires")
                if eh and eh.strip().isdigit():
                    expires = int(eh.strip())
            reg.registered_expires = expires
            reg.refresh_at = now + max(5.0, expires * 0.8 if expires > 30 else expires - 5.0)
            self._events.append(Registered(reg, expires))
            return
        if resp.status in (401, 407) and reg.credentials is not None and reg.auth_attempts < 2:
            ch = challenge_of(resp)
            if ch is not None:
                if reg.auth_attempts == 0 or getattr(ch, "stale", False):
                    reg.auth_attempts += 1
                    ruri = SipURI(scheme=reg.registrar.scheme, host=reg.registrar.host, port=reg.registrar.port)
                    if reg.registrar.params.get("transport"):
                        ruri.params["transport"] = reg.registrar.params["transport"]
                    value = auth.build_authorization(ch, "REGISTER", str(ruri), reg.credentials.username,
                                                     reg.credentials.password)
                    hdr = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                    self._send_register(reg, now, expires=None if reg.active else 0, authorization=(hdr, value))
                    return
        if resp.status == 423:
            mn = resp.headers.get("Min-Expires")
            if mn and mn.strip().isdigit() and reg.active:
                reg.expires = int(mn.strip())
                self._send_register(reg, now)
                return
        reg.auth_attempts = 0
        self._events.append(RegistrationFailed(reg, resp.status, resp.reason))
        if reg.active:
            reg.refresh_at = now + 30.0


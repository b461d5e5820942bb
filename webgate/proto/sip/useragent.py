"""The SIP user agent core: INVITE sessions (UAC and UAS), registration, OPTIONS. Sans-IO.

Beyond RFC 3261 the sessions speak 100rel/PRACK (RFC 3262), session timers (RFC 4028, both
refresher roles, refresh by UPDATE or re-INVITE), UPDATE (RFC 3311), delayed offer (an offer in
our 2xx, the answer in the ACK), REFER as the transferee (RFC 3515) and failover between located
servers (RFC 3263 §4.3); header parsing and the timer arithmetic are in :mod:`extensions`, the
server selection in :mod:`locate`. Dialog-level timers (reliable provisional retransmission,
session refresh/expiry) run in the user agent's own heap beside the transactions'.

Layering as in pjproject: transport (adapter) -> transactions (:mod:`transaction`) ->
dialogs (:mod:`dialog`) -> invite sessions (this module) -> application (the call layer).

The application drives it with :meth:`UserAgent.receive` (a parsed message and where it
came from), :meth:`UserAgent.handle_timers` and calls on :class:`InviteSession`; it
drains :meth:`UserAgent.outgoing` to the wire and handles the returned events.
SDP bodies are opaque bytes here: offer/answer is the application's (see ``proto/sdp.py``).
"""

from __future__ import annotations

import enum
import heapq
import re
import secrets
from dataclasses import dataclass, field
from typing import Union

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip import auth
from webgate.proto.sip.dialog import Dialog, new_call_id, new_tag
from webgate.proto.sip.extensions import (
    MAX_SESSION_EXPIRES,
    MIN_SE_FLOOR,
    RAck,
    SessionExpires,
    SessionTimer,
    min_se_of,
    option_tags,
    parse_rack,
    parse_rseq,
    session_expires_of,
    unsupported_required,
)
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
    TransactionState,
    TransactionTimeout,
    TransportError,
    new_branch,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK"
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
    SESSION_TIMER = "session_timer"  # the session expired, or our refresh of it failed (RFC 4028)


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
    #: UAC: ``Supported: 100rel`` in our INVITEs (reliable provisionals are PRACKed either way);
    #: the UAS side sends reliable provisionals when an INVITE requires them (RFC 3262)
    support_100rel: bool = True
    #: the smallest session interval we accept (RFC 4028 Min-SE: 90 s, the RFC's floor; only
    #: tests set less, to see timers fire in seconds)
    min_se: int = MIN_SE_FLOOR
    #: RFC 3263 §4.3 failover without waiting for Timer B/F: a located server that has not
    #: answered an INVITE or REGISTER at all (not even 100) within this many seconds is given up
    #: (its transaction abandoned) and the next one tried; 0 = wait for Timer B/F
    failover_timeout: float = 0.0


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
    """UAS: the ACK for our 2xx arrived. ``sdp``: the ACK's body, the caller's answer when its
    INVITE had no offer and our 2xx carried one (delayed offer)."""

    session: "InviteSession"
    sdp: bytes | None = None


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
class AckAnswer:
    """The ACK of a re-INVITE that had no offer: ``sdp`` is the far end's answer to the offer we
    put in our 2xx (``answer_offer``), None when the ACK had none."""

    session: "InviteSession"
    sdp: bytes | None


@dataclass(frozen=True)
class ReofferAnswered:
    """A 2xx to our re-INVITE (already ACKed) or UPDATE: apply ``sdp``, the far end's answer."""

    session: "InviteSession"
    sdp: bytes | None
    method: str = "INVITE"


@dataclass(frozen=True)
class ReofferFailed:
    """A non-2xx final (or no) response to our re-INVITE. The call stays up (RFC 3261
    §14.1) unless the status was 481/408, which end the dialog (§12.2.1.2): an
    :class:`Ended` follows then. 491 (glare) is reported, not retried."""

    session: "InviteSession"
    status: int
    reason: str
    method: str = "INVITE"


@dataclass(frozen=True)
class ReferReceived:
    """A REFER in a confirmed dialog whose session allows transfer (``allow_refer``; else the
    user agent answers 403 itself): call ``session.accept_refer()`` (202, then NOTIFY 100) or
    ``session.reject_refer(status)``, and report the outcome with ``session.notify_refer``
    (RFC 3515). ``refer_to`` is the Refer-To URI, ``referred_by`` the Referred-By value (RFC 3892)."""

    session: "InviteSession"
    refer_to: SipURI
    referred_by: str | None
    request: SipRequest


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


Event = Union[Progress, Answered, Confirmed, Ended, IncomingCall, OfferReceived, AckAnswer, ReofferAnswered,
              ReofferFailed, ReferReceived, DtmfInfo, Registered, RegistrationFailed]


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


def _allows(message: SipMessage, method: str) -> bool:
    """``method`` is among the message's ``Allow`` methods."""
    return method.lower() in option_tags(message, "Allow")


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
        #: UAC: the next servers to try after a 503 or no answer (RFC 3263 §4.3)
        self.fallbacks: list[Addr] = []
        self.outbound_proxy: SipURI | None = None  # UAC: the proxy our requests go through
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
        self.reinvite_txn: ClientTransaction | None = None  # our re-INVITE/UPDATE awaiting its final response
        self.reinvite_acks: dict[int, tuple[SipRequest, Addr]] = {}  # id(txn) -> the ACK sent for its 2xx
        #: CSeq of a (re-)INVITE whose 2xx carried our offer: its ACK carries the answer
        self.offer_in_2xx: int | None = None
        # RFC 3262, UAS: the INVITE requires reliable provisionals
        self.rel_required = False
        self.rseq = 0  # the last RSeq we sent
        self.rel_pending: SipResponse | None = None  # our reliable provisional not PRACKed yet
        self.rel_started = 0.0
        self.rel_interval = 0.0
        self.rel_queue: list[tuple[int, bytes | None]] = []  # provisionals waiting for that PRACK
        self.rel_deferred_answer: bytes | None = None  # a 2xx waiting for the PRACK of an SDP 18x
        # RFC 3262, UAC: the last RSeq PRACKed per early dialog (To tag), early dialogs besides ``dialog``
        self.early_rseq: dict[str, int] = {}
        self.early_dialogs: dict[str, Dialog] = {}
        # RFC 4028 session timer, and our refresh in progress
        self.timer = SessionTimer(min_se=ua.config.min_se)
        self.timer_retries = 0  # 422 retries of the initial INVITE
        self.refresh_txn: ClientTransaction | None = None
        self.peer_allows_update = False
        self.update_refused = False  # the far end answered our UPDATE with 405/501
        #: this session's timers in the UA's heap: name -> (deadline, sequence)
        self.deadlines: dict[str, tuple[float, int]] = {}
        # RFC 3515 REFER: allowed by the application (else 403 here, and no REFER in Allow)
        self.allow_refer = False
        self.refer_txn: ServerTransaction | None = None  # a REFER awaiting accept/reject
        self.refer_active = False  # an accepted REFER whose final NOTIFY is not sent yet
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

    def update(self, sdp: bytes) -> None:
        """Send an UPDATE with the offer ``sdp`` in the confirmed dialog (RFC 3311): hold or a
        codec change without a re-INVITE's three-way handshake. Same events and refusals as
        :meth:`reinvite`."""
        self.ua._reinvite(self, sdp, method="UPDATE")

    def accept_refer(self) -> None:
        """Accept the pending REFER: 202 Accepted, then NOTIFY ``SIP/2.0 100 Trying``."""
        self.ua._accept_refer(self)

    def reject_refer(self, status: int = 403) -> None:
        self.ua._reject_refer(self, status)

    def notify_refer(self, status: int, reason: str, final: bool) -> None:
        """NOTIFY the referrer of the referred call's progress (a sipfrag status line); ``final``
        ends the implicit subscription. Nothing is sent once the dialog has ended."""
        self.ua._notify_refer(self, status, reason, final)

    @property
    def reinvite_pending(self) -> bool:
        return self.reinvite_txn is not None or (self.refresh_txn is not None and self.refresh_txn.is_invite)

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
        #: RFC 3263 targets of the registrar (or proxy), in order; empty: ``registrar`` itself.
        #: ``dest_index`` is the one in use: the next is tried after a 503 or no answer
        self.destinations: list[Addr] = []
        self.dest_index = 0
        #: when the REGISTER in flight is given up if nothing came back (``failover_timeout``)
        self.failover_at: float | None = None


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
        #: session timers (reliable provisional retransmission, session refresh/expiry):
        #: (deadline, sequence, session, name), stale entries skipped (session.deadlines)
        self._heap: list[tuple[float, int, InviteSession, str]] = []
        self._heap_seq = 0
        #: draining: out-of-dialog OPTIONS get 503, so a dispatcher's probing takes this node out
        self.out_of_service = False
        #: when the last out-of-dialog OPTIONS arrived (None: never), and how many got 503
        self.options_at: float | None = None
        self.options_refused = 0

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

    def set_time(self, now: float) -> None:
        """Tell the UA the current time before calling session methods (hangup, INFO, ...)
        from outside an event handler: their transactions' timers start from it."""
        self._now = now

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
        session = InviteSession(self, "uac", call_id, new_tag())
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
        if session.outbound_proxy is not None and session.role == "uac" and session.dialog and not session.dialog.route_set:
            # where the INVITE went: the proxy, as located (RFC 3263), or its URI's host
            return session.dest or self._dest_for(session.outbound_proxy, session.transport)
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
        before = (session.dialog, session.ack, session.ack_dest)
        session.dialog = d
        self._send_ack(session, now)
        req = d.create_request("BYE", self._via(session.transport), None)
        _, _, target = d.next_request_target()
        txn = self.tm.send_request(req, self._in_dialog_dest(session, target), now)
        self._track(txn, "bye", session)
        if session.state in (SessionState.CALLING, SessionState.EARLY):
            # the 2xx of a server given up (failover_timeout) while the INVITE goes on elsewhere:
            # that server's dialog is ended; the session keeps waiting for the next server's answer
            session.dialog, session.ack, session.ack_dest = before

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
        dialog = session.dialog
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

    # --- PRACK (RFC 3262), UAC side ------------------------------------------------------
    def _early_dialog(self, session: InviteSession, to_tag: str) -> Dialog | None:
        if session.dialog is not None and session.dialog.remote_tag == to_tag:
            return session.dialog
        return session.early_dialogs.get(to_tag)

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

    # --- session timers (RFC 4028) ------------------------------------------------------
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
        session = InviteSession(self, "uas", call_id, new_tag())
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

    # --- REGISTER ------------------------------------------------------------------------
    def register(self, aor: SipURI, registrar: SipURI, now: float, *, credentials: Credentials | None = None,
                 expires: int = 300, transport: str | None = None,
                 destinations: list[Addr] | None = None) -> Registration:
        """REGISTER ``aor`` at ``registrar`` and keep it refreshed. ``destinations``: where to
        send it, in order (the registrar's RFC 3263 targets); the next one is tried after a 503,
        a transport error or no answer (Timer F, or ``failover_timeout`` with nothing back)."""
        if aor.user is not None:
            check_user(aor.user, "registration user")
        t = (transport or registrar.transport).lower()
        reg = Registration(self, aor, registrar, credentials, expires, t)
        self.registrations.append(reg)
        self.set_register_destinations(reg, destinations or [])
        self._send_register(reg, now)
        return reg

    def set_register_destinations(self, reg: Registration, destinations: list[Addr]) -> None:
        """New RFC 3263 targets for ``reg`` (a DNS refresh): the server in use stays in use
        while it is still among them; those without a listener of their transport are left out."""
        usable = [d for d in destinations if d[0] in self.config.endpoints]
        current = reg.destinations[reg.dest_index] if reg.destinations else None
        reg.destinations = usable
        reg.dest_index = usable.index(current) if current in usable else 0
        if usable:
            reg.transport = usable[reg.dest_index][0]

    def _register_failover(self, reg: Registration, now: float) -> bool:
        """After a 503 or no answer, the REGISTER goes to the next located server; False when
        there is none (the next attempt, 30 s later, starts again from the first)."""
        if reg.dest_index + 1 >= len(reg.destinations):
            reg.dest_index = 0
            if reg.destinations:
                reg.transport = reg.destinations[0][0]
            return False
        reg.dest_index += 1
        reg.transport = reg.destinations[reg.dest_index][0]
        reg.auth_attempts = 0
        self._send_register(reg, now, expires=None if reg.active else 0)
        return True

    def _register_failover_timer(self, reg: Registration, now: float) -> None:
        txn = reg.txn
        if txn is None or txn.state is not TransactionState.TRYING or reg.dest_index + 1 >= len(reg.destinations):
            return
        self.tm.abandon(txn)
        self._by_txn.pop(id(txn), None)
        reg.txn = None
        self._register_failover(reg, now)

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
        if reg.destinations:
            dest = reg.destinations[reg.dest_index]
        else:
            dest = self._dest_for(self.config.outbound_proxy or reg.registrar, reg.transport)
        txn = self.tm.send_request(req, dest, now)
        reg.txn = txn
        self._track(txn, "register", reg)
        more = reg.dest_index + 1 < len(reg.destinations)
        reg.failover_at = now + self.config.failover_timeout if more and self.config.failover_timeout > 0 else None

    def _on_register_response(self, reg: Registration, resp: SipResponse, now: float) -> None:
        if reg.txn is not None and resp.cseq.number == reg.txn.request.cseq.number:
            reg.failover_at = None  # the server answers: no failover for lack of an answer
        if resp.status < 200:
            return
        if resp.status == 503 and self._register_failover(reg, now):
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


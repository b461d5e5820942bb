"""An INVITE session (:class:`InviteSession`, the application's handle on one call) and a
REGISTER binding (:class:`Registration`), with the events the user agent reports about them.
Part of :mod:`useragent`, which re-exports every public name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

from webgate.proto.sip.dialog import Dialog, new_call_id, new_tag
from webgate.proto.sip.extensions import SessionTimer
from webgate.proto.sip.message import SipRequest, SipResponse, SipURI
from webgate.proto.sip.transaction import Addr, ClientTransaction, ServerTransaction
from webgate.proto.sip.ua_types import (
    CallEnd,
    Credentials,
    EndCause,
    LocalEndpoint,
    SessionState,
    UAConfig,
)

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


class RegistrationOwner(Protocol):
    """What :class:`Registration` uses of its user agent."""

    config: UAConfig

    def _endpoint(self, transport: str) -> LocalEndpoint: ...


class SessionOwner(RegistrationOwner, Protocol):
    """What :class:`InviteSession` calls on its user agent (``useragent.UserAgent``, which
    provides it: the parts that create sessions pass themselves cast to this)."""

    def _cancel(self, session: InviteSession) -> None: ...
    def _bye(self, session: InviteSession, end_cause: EndCause = ..., status: int | None = ...,
             reason: str = ...) -> None: ...
    def _uas_provisional(self, session: InviteSession, status: int, sdp: bytes | None) -> None: ...
    def _uas_answer(self, session: InviteSession, sdp: bytes) -> None: ...
    def _uas_reject(self, session: InviteSession, status: int, reason: str | None) -> None: ...
    def _answer_offer(self, session: InviteSession, sdp: bytes | None, status: int) -> None: ...
    def _send_info_dtmf(self, session: InviteSession, digit: str, duration_ms: int) -> None: ...
    def _reinvite(self, session: InviteSession, sdp: bytes, method: str = ...) -> None: ...
    def _accept_refer(self, session: InviteSession) -> None: ...
    def _reject_refer(self, session: InviteSession, status: int) -> None: ...
    def _notify_refer(self, session: InviteSession, status: int, reason: str, final: bool) -> None: ...


#: late dialogs (another fork's 2xx, or a given-up server's) kept per session: beyond, ignored
MAX_LATE_DIALOGS = 16


@dataclass
class LateDialog:
    """UAC: a dialog a 2xx created that the session does not keep (a forked INVITE's other 2xx,
    RFC 3261 §13.2.2.4, or the 2xx of a server given up by failover): ACKed, then ended with one
    BYE of its own. Its ACK is sent again for every retransmission of that 2xx."""

    dialog: Dialog
    ack: SipRequest
    ack_dest: Addr
    bye_txn: ClientTransaction | None = None  # the BYE awaiting its final response
    bye_status: int | None = None  # the BYE's final status (408/503: no answer, transport error)
    bye_auth_sent: bool = False  # a challenge to the BYE is answered once


class InviteSession:
    """One INVITE-initiated session, as caller (uac) or callee (uas)."""

    def __init__(self, ua: SessionOwner, role: str, call_id: str, local_tag: str) -> None:
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
        #: UAC: dialogs of 2xx the session does not keep, by remote tag (at most MAX_LATE_DIALOGS)
        self.late_dialogs: dict[str, LateDialog] = {}
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

    def __init__(self, ua: RegistrationOwner, aor: SipURI, registrar: SipURI, credentials: Credentials | None, expires: int, transport: str) -> None:
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

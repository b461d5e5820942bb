"""SIP transactions (RFC 3261 §17, with the "Accepted" states of RFC 6026 for 2xx). Sans-IO.

The :class:`TransactionManager` takes parsed messages and the current time and returns
typed events; messages to put on the wire are collected and drained with
:meth:`TransactionManager.outgoing`; timers are absolute times (``next_timer()``) that the
adapter arms and reports back with ``handle_timers(now)``.

Choices worth knowing (all within RFC 3261 unless noted):

* Reliability comes from the transport of an :data:`Addr` (``tcp``, ``tls``, ``ws`` and
  ``wss`` are reliable): nothing is ever retransmitted over them, and Timers D, I, J, K are
  zero there. A zero timer is still a timer: it is due at ``now`` and fires on the next
  ``handle_timers(now)`` call, so :meth:`~TransactionManager.send_response` never has to
  return events.
* Server INVITE: ``100 Trying`` is sent when the TU has not answered within
  ``TimerConfig.trying_delay`` (200 ms by default, §17.2.1); ``trying_delay=0`` sends it at
  once. A retransmitted INVITE before any response gets a ``100 Trying`` immediately.
* Server INVITE with a 2xx (RFC 6026 "Accepted"): the transaction re-sends the 2xx (T1
  doubling up to T2, unreliable transports only) until the ACK is seen or 64*T1 passes,
  which yields :class:`AckTimeout`. The ACK for a 2xx is a transaction of its own; it is
  always delivered as ``RequestReceived(None, ack)``. The manager also matches it by
  Call-ID, CSeq number and tags to the accepted transaction and stops the retransmission
  itself; ``txn.ack_received()`` does the same and may be called as well (idempotent).
  The transaction stays 64*T1 after the 2xx (Timer L) to absorb retransmitted INVITEs
  (answered by re-sending the 2xx).
* Client INVITE in Proceeding: RFC 3261 has no timeout there (the TU CANCELs). As a
  safety net against leaks, ``TimerConfig.timer_c`` (180 s, restarted by every
  provisional) ends it with :class:`TransactionTimeout`; a 2xx after that arrives as
  ``ResponseReceived(None, ...)``.
* Client INVITE with a 2xx goes to ``ACCEPTED`` for 64*T1 (Timer M); every 2xx that
  arrives then (retransmissions, forked answers) is delivered as
  ``ResponseReceived(txn, resp)``. A 2xx to an INVITE that matches no transaction is
  delivered as ``ResponseReceived(None, resp)``; any other unmatched response is reported
  as :class:`MessageDropped`.
* Requests with a branch lacking the ``z9hG4bK`` cookie (RFC 2543 peers) are matched by
  Call-ID, CSeq number, From tag, Request-URI and top Via (§17.2.3, To tag left out so the
  ACK of a non-2xx matches). Requests with no Via or bad mandatory headers are answered
  statelessly with 400 when a response can be routed, and reported as MessageDropped.
* The source of a request is the transport's peer address (the ``source`` given to
  :meth:`~TransactionManager.receive`), never what the request says about itself. Its top
  Via gets ``received=`` / ``rport=`` from that address (§18.2.1, RFC 3581); a ``received``
  or ``rport`` value the sender wrote itself is replaced. Responses go where §18.2.2 says,
  computed from the real source (:func:`response_destination`); a Via ``maddr`` is ignored
  unless the manager was made with ``honour_maddr=True`` (docs/decisions.md).
"""

from __future__ import annotations

import enum
import heapq
import secrets
from dataclasses import dataclass

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.sip.message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    Via,
    make_response,
)

Addr = tuple[str, str, int]
"""(transport "udp"|"tcp"|"tls"|"ws"|"wss", host, port)"""

BRANCH_COOKIE = "z9hG4bK"
RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss", "sctp"})


def is_reliable(transport: str) -> bool:
    return transport.lower() in RELIABLE_TRANSPORTS


@dataclass(frozen=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0  # unreliable transports; 0 on reliable ones
    trying_delay: float = 0.2  # server INVITE: automatic 100 Trying; 0 = immediately
    # client INVITE safety net (cf. Timer C, §16.6): Proceeding with no new provisional
    # for this long -> TransactionTimeout. The TU should CANCEL well before; None = never.
    timer_c: float | None = 180.0

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J and the RFC 6026 Timers L and M."""
        return 64 * self.t1


class TransactionState(enum.Enum):
    CALLING = "Calling"  # client INVITE
    TRYING = "Trying"  # client / server non-INVITE
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"  # server INVITE: ACK of a non-2xx received
    ACCEPTED = "Accepted"  # INVITE with a 2xx (RFC 6026)
    TERMINATED = "Terminated"


TxnKey = tuple[str, ...]


class _Timers:
    """Per-transaction timer table: name -> (deadline, sequence) for lazy heap invalidation."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[float, int]] = {}

    def cancel(self, name: str) -> None:
        self.table.pop(name, None)

    def clear(self) -> None:
        self.table.clear()


class Transaction:
    """Common attributes of client and server transactions."""

    is_client: bool = False

    def __init__(self, request: SipRequest, key: TxnKey, dest: Addr, state: TransactionState) -> None:
        self.request = request
        self.key = key
        self.dest = dest
        self.state = state
        self.last_response: SipResponse | None = None
        self.is_invite = request.method == "INVITE"
        self.reliable = is_reliable(dest[0])
        self._timers = _Timers()
        self._interval = 0.0  # current retransmission interval (A, E, G, 2xx)

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    def __repr__(self) -> str:
        kind = "Client" if self.is_client else "Server"
        return f"<{kind}Transaction {self.method} {self.state.value} {self.key!r}>"


class ClientTransaction(Transaction):
    is_client = True

    def __init__(self, request: SipRequest, key: TxnKey, dest: Addr) -> None:
        state = TransactionState.CALLING if request.method == "INVITE" else TransactionState.TRYING
        super().__init__(request, key, dest, state)
        self.ack: SipRequest | None = None  # the ACK this transaction built for a non-2xx


class ServerTransaction(Transaction):
    def __init__(self, request: SipRequest, key: TxnKey, dest: Addr, source: Addr) -> None:
        state = TransactionState.PROCEEDING if request.method == "INVITE" else TransactionState.TRYING
        super().__init__(request, key, dest, state)
        self.source = source
        self.acked = False  # ACK seen (non-2xx: Confirmed; 2xx: retransmission stopped)

    def ack_received(self) -> None:
        """The TU saw the ACK for our 2xx: stop re-sending it (idempotent)."""
        if self.state is TransactionState.ACCEPTED:
            self.acked = True
            self._timers.cancel("retransmit_2xx")


# ---------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class RequestReceived:
    txn: ServerTransaction | None  # None: ACK for a 2xx (goes to the dialog)
    request: SipRequest


@dataclass(frozen=True)
class ResponseReceived:
    txn: ClientTransaction | None  # None: a 2xx to an INVITE that matches no transaction
    response: SipResponse


@dataclass(frozen=True)
class TransactionTimeout:
    """Timer B or F fired: the TU treats it as a 408."""

    txn: ClientTransaction


@dataclass(frozen=True)
class TransportError:
    txn: Transaction


@dataclass(frozen=True)
class AckTimeout:
    """Timer H (non-2xx) or the 64*T1 wait for the ACK of a 2xx expired."""

    txn: ServerTransaction


@dataclass(frozen=True)
class TransactionTerminated:
    txn: Transaction


@dataclass(frozen=True)
class MessageDropped:
    """A message the layer could not use (malformed, or a response matching nothing)."""

    message: SipMessage
    reason: str
    source: Addr | None = None


Event = (
    RequestReceived
    | ResponseReceived
    | TransactionTimeout
    | TransportError
    | AckTimeout
    | TransactionTerminated
    | MessageDropped
)


# ---------------------------------------------------------------------------------------
# Helpers


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie plus 80 random bits."""
    return BRANCH_COOKIE + secrets.token_hex(10)


def response_destination(request_via: Via, source: Addr, honour_maddr: bool = False) -> Addr:
    """Where to send a response to a request received from ``source`` (§18.2.2, RFC 3581).

    ``source`` is the transport's peer address: the request's own ``received``/``rport``
    values are never read (a sender could aim our responses anywhere with them).
    Reliable transports: back to the source (the same connection). Otherwise ``maddr``
    only with ``honour_maddr``; else the source address at the source port when ``rport``
    was asked for, or else at the sent-by port (default 5060).
    """
    transport, src_host, src_port = source
    transport = transport.lower()
    if is_reliable(transport):
        return (transport, src_host, src_port)
    maddr = request_via.params.get("maddr") if honour_maddr else None
    if maddr:
        return (transport, maddr.strip("[]"), request_via.port or 5060)
    if "rport" in request_via.params:
        return (transport, src_host, src_port)
    return (transport, src_host, request_via.port or 5060)


def _stamp_via(request: SipRequest, via: Via, source: Addr) -> None:
    """Record the real source in the top Via of a received request (§18.2.1, RFC 3581):
    ``received=`` when the source differs from the sent-by host (or the sender asked for
    ``rport``, or wrote a ``received`` of its own), ``rport=`` the source port when present.
    Values the sender put there itself are replaced: they are the receiver's to write."""
    params = dict(via.params)
    src_host, src_port = source[1], source[2]
    if via.host.lower() != src_host.lower() or "rport" in params or "received" in params:
        params["received"] = src_host
    if "rport" in params:
        params["rport"] = str(src_port)
    if params == via.params:
        return
    new_via = Via(via.transport, via.host, via.port, params)
    new = Headers()
    done = False
    for name, value in request.headers:
        if name == "Via" and not done:
            new.add(name, str(new_via))
            done = True
        else:
            new.add(name, value)
    request.headers = new


def make_non2xx_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client INVITE transaction sends for a 300-699 response (§17.1.1.3)."""
    h = Headers()
    h.add("Via", invite.headers.get("Via") or "")
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", invite.headers.get("From") or "")
    h.add("To", response.headers.get("To") or invite.headers.get("To") or "")
    h.add("Call-ID", invite.headers.get("Call-ID") or "")
    h.add("CSeq", f"{invite.cseq.number} ACK")
    return SipRequest(headers=h, method="ACK", uri=invite.uri.copy())


def make_cancel(invite: SipRequest) -> SipRequest:
    """A CANCEL for a pending INVITE (§9.1): same URI, Call-ID, From, To, CSeq number,
    top Via (same branch) and Route set. Send it with ``send_request`` to the INVITE's dest."""
    h = Headers()
    h.add("Via", invite.headers.get("Via") or "")
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", invite.headers.get("From") or "")
    h.add("To", invite.headers.get("To") or "")
    h.add("Call-ID", invite.headers.get("Call-ID") or "")
    h.add("CSeq", f"{invite.cseq.number} CANCEL")
    return SipRequest(headers=h, method="CANCEL", uri=invite.uri.copy())


def _server_key(request: SipRequest, via: Via, method: str) -> TxnKey:
    """§17.2.3 (``method`` is INVITE for an ACK; CANCEL keeps its own)."""
    branch = via.branch or ""
    if branch.startswith(BRANCH_COOKIE):
        return ("s", branch, via.host.lower(), str(via.port or ""), method)
    # RFC 2543 fallback
    from_tag = request.from_.tag or ""
    return (
        "s2543",
        request.call_id,
        str(request.cseq.number),
        from_tag,
        str(request.uri),
        f"{via.transport} {via.host.lower()}:{via.port or ''} {branch}",
        method,
    )


def _to_tag(msg: SipMessage) -> str | None:
    try:
        return msg.to.tag
    except RemoteProtocolError:
        return None


@dataclass
class _Stats:
    retransmissions: int = 0
    dropped: int = 0
    timeouts: int = 0


# ---------------------------------------------------------------------------------------
# The manager


class TransactionManager:
    """All client and server transactions of one SIP endpoint."""

    def __init__(self, timers: TimerConfig = TimerConfig(), honour_maddr: bool = False) -> None:
        self.timers = timers
        #: send responses to a request's Via ``maddr`` (``[sip] honour_maddr``; off: to its source)
        self.honour_maddr = honour_maddr
        self.stats = _Stats()
        self._client: dict[TxnKey, ClientTransaction] = {}
        self._server: dict[TxnKey, ServerTransaction] = {}
        self._heap: list[tuple[float, int, Transaction, str]] = []
        self._seq = 0
        self._out: list[tuple[SipMessage, Addr]] = []

    # --- introspection ---------------------------------------------------------------
    @property
    def client_transactions(self) -> list[ClientTransaction]:
        return list(self._client.values())

    @property
    def server_transactions(self) -> list[ServerTransaction]:
        return list(self._server.values())

    # --- wire & timers -----------------------------------------------------------------
    def outgoing(self) -> list[tuple[SipMessage, Addr]]:
        out, self._out = self._out, []
        return out

    def send_stateless(self, message: SipMessage, dest: Addr) -> None:
        self._out.append((message, dest))

    def next_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, seq, txn, name = heap[0]
            if txn._timers.table.get(name) == (deadline, seq):
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timers(self, now: float) -> list[Event]:
        events: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, seq, txn, name = heapq.heappop(heap)
            if txn._timers.table.get(name) != (deadline, seq):
                continue
            del txn._timers.table[name]
            events.extend(self._fire(txn, name, now))
        return events

    def _set_timer(self, txn: Transaction, name: str, delay: float, now: float) -> None:
        self._seq += 1
        deadline = now + max(0.0, delay)
        txn._timers.table[name] = (deadline, self._seq)
        heapq.heappush(self._heap, (deadline, self._seq, txn, name))

    def _send(self, message: SipMessage, dest: Addr, retransmission: bool = False) -> None:
        if retransmission:
            self.stats.retransmissions += 1
        self._out.append((message, dest))

    def _terminate(self, txn: Transaction) -> list[Event]:
        if txn.state is TransactionState.TERMINATED:
            return []
        txn.state = TransactionState.TERMINATED
        txn._timers.clear()
        if isinstance(txn, ClientTransaction) and self._client.get(txn.key) is txn:
            del self._client[txn.key]
        elif isinstance(txn, ServerTransaction) and self._server.get(txn.key) is txn:
            del self._server[txn.key]
        return [TransactionTerminated(txn)]

    def _drop(self, message: SipMessage, reason: str, source: Addr | None) -> list[Event]:
        self.stats.dropped += 1
        return [MessageDropped(message, reason, source)]

    # --- client side -------------------------------------------------------------------
    def send_request(self, request: SipRequest, dest: Addr, now: float) -> ClientTransaction:
        if request.method == "ACK":
            raise LocalProtocolError("ACK is not sent in a client transaction; use send_stateless")
        try:
            via = request.top_via
            method = request.cseq.method
        except RemoteProtocolError as e:
            raise LocalProtocolError(f"cannot send request: {e.message}") from None
        branch = via.branch
        if not branch or not branch.startswith(BRANCH_COOKIE):
            raise LocalProtocolError("top Via needs a branch starting with z9hG4bK (use new_branch())")
        if method != request.method:
            raise LocalProtocolError(f"CSeq method {method} differs from request method {request.method}")
        key: TxnKey = ("c", branch, method)
        if key in self._client:
            raise LocalProtocolError(f"a client transaction with branch {branch} {method} exists")
        dest = (dest[0].lower(), dest[1], dest[2])
        txn = ClientTransaction(request, key, dest)
        self._client[key] = txn
        self._send(request, dest)
        t = self.timers
        if not txn.reliable:
            txn._interval = t.t1
            self._set_timer(txn, "A" if txn.is_invite else "E", t.t1, now)
        self._set_timer(txn, "B" if txn.is_invite else "F", t.timeout, now)
        return txn

    def _client_response(self, txn: ClientTransaction, resp: SipResponse, now: float) -> list[Event]:
        S = TransactionState
        t = self.timers
        status = resp.status
        if txn.is_invite:
            if txn.state in (S.CALLING, S.PROCEEDING):
                txn._timers.cancel("A")
                txn._timers.cancel("B")
                if status < 200:
                    txn.state = S.PROCEEDING
                    txn.last_response = resp
                    if t.timer_c is not None:
                        self._set_timer(txn, "C", t.timer_c, now)
                    return [ResponseReceived(txn, resp)]
                txn._timers.cancel("C")
                txn.last_response = resp
                if status < 300:
                    txn.state = S.ACCEPTED
                    self._set_timer(txn, "M", t.timeout, now)
                    return [ResponseReceived(txn, resp)]
                txn.state = S.COMPLETED
                txn.ack = make_non2xx_ack(txn.request, resp)
                self._send(txn.ack, txn.dest)
                self._set_timer(txn, "D", 0.0 if txn.reliable else t.timer_d, now)
                return [ResponseReceived(txn, resp)]
            if txn.state is S.ACCEPTED:
                if 200 <= status < 300:
                    return [ResponseReceived(txn, resp)]
                return []  # late provisional or a non-2xx after a 2xx: absorbed
            if txn.state is S.COMPLETED:
                if status >= 300 and txn.ack is not None:
                    self._send(txn.ack, txn.dest, retransmission=True)
                return []
            return []
        # non-INVITE
        if txn.state in (S.TRYING, S.PROCEEDING):
            txn.last_response = resp
            if status < 200:
                txn.state = S.PROCEEDING
                return [ResponseReceived(txn, resp)]
            txn.state = S.COMPLETED
            for name in ("E", "F"):
                txn._timers.cancel(name)
            self._set_timer(txn, "K", 0.0 if txn.reliable else t.t4, now)
            return [ResponseReceived(txn, resp)]
        return []  # Completed: retransmitted finals absorbed

    # --- server side -------------------------------------------------------------------
    def send_response(self, txn: ServerTransaction, response: SipResponse, now: float) -> None:
        S = TransactionState
        t = self.timers
        status = response.status
        if not 100 <= status <= 699:
            raise LocalProtocolError(f"bad status {status}")
        if txn.state is S.TERMINATED:
            raise LocalProtocolError(f"transaction {txn.key} is terminated")
        if txn.is_invite:
            if txn.state is S.PROCEEDING:
                txn._timers.cancel("trying")
                txn.last_response = response
                self._send(response, txn.dest)
                if status < 200:
                    return
                if status < 300:
                    txn.state = S.ACCEPTED
                    if not txn.reliable:
                        txn._interval = t.t1
                        self._set_timer(txn, "retransmit_2xx", t.t1, now)
                    self._set_timer(txn, "L", t.timeout, now)
                    return
                txn.state = S.COMPLETED
                if not txn.reliable:
                    txn._interval = t.t1
                    self._set_timer(txn, "G", t.t1, now)
                self._set_timer(txn, "H", t.timeout, now)
                return
            if txn.state is S.ACCEPTED and 200 <= status < 300:
                txn.last_response = response  # e.g. a corrected 2xx: re-sent from now on
                self._send(response, txn.dest)
                return
            raise LocalProtocolError(f"cannot send {status} in state {txn.state.value}")
        if txn.state in (S.TRYING, S.PROCEEDING):
            txn.last_response = response
            self._send(response, txn.dest)
            if status < 200:
                txn.state = S.PROCEEDING
                return
            txn.state = S.COMPLETED
            self._set_timer(txn, "J", 0.0 if txn.reliable else t.timeout, now)
            return
        raise LocalProtocolError(f"cannot send {status} in state {txn.state.value}")

    def find_server_invite(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL (or any request) targets (§9.2)."""
        try:
            via = cancel.top_via
            key = _server_key(cancel, via, "INVITE")
        except RemoteProtocolError:
            return None
        return self._server.get(key)

    def _find_accepted_for_ack(self, ack: SipRequest) -> ServerTransaction | None:
        try:
            call_id = ack.call_id
            number = ack.cseq.number
            from_tag = ack.from_.tag
            to_tag = ack.to.tag
        except RemoteProtocolError:
            return None
        for txn in self._server.values():
            if txn.state is not TransactionState.ACCEPTED or txn.last_response is None:
                continue
            r = txn.request
            try:
                if (
                    r.call_id == call_id
                    and r.cseq.number == number
                    and r.from_.tag == from_tag
                    and _to_tag(txn.last_response) == to_tag
                ):
                    return txn
            except RemoteProtocolError:
                continue
        return None

    def _server_request(self, txn: ServerTransaction, req: SipRequest, now: float) -> list[Event]:
        """A request matching an existing server transaction (retransmission or ACK)."""
        S = TransactionState
        t = self.timers
        if req.method == "ACK":
            if not txn.is_invite:
                return []
            if txn.state is S.COMPLETED:
                txn.state = S.CONFIRMED
                txn.acked = True
                txn._timers.cancel("G")
                txn._timers.cancel("H")
                self._set_timer(txn, "I", 0.0 if txn.reliable else t.t4, now)
                return []
            if txn.state is S.ACCEPTED:
                # an ACK for the 2xx reusing the INVITE branch: goes to the TU
                txn.ack_received()
                return [RequestReceived(None, req)]
            return []  # Proceeding (bogus) / Confirmed (retransmitted ACK): absorbed
        # retransmission of the request
        if txn.state is S.PROCEEDING and txn.last_response is None and txn.is_invite:
            txn._timers.cancel("trying")
            trying = make_response(txn.request, 100)
            txn.last_response = trying
            self._send(trying, txn.dest)
            return []
        if txn.state in (S.PROCEEDING, S.COMPLETED, S.ACCEPTED) and txn.last_response is not None:
            self._send(txn.last_response, txn.dest, retransmission=True)
        return []

    # --- receive -------------------------------------------------------------------------
    def receive(self, message: SipMessage, source: Addr, now: float) -> list[Event]:
        source = (source[0].lower(), source[1], source[2])
        if isinstance(message, SipResponse):
            return self._receive_response(message, source, now)
        return self._receive_request(message, source, now)

    def _receive_response(self, resp: SipResponse, source: Addr, now: float) -> list[Event]:
        try:
            via = resp.top_via
            cseq = resp.cseq
        except RemoteProtocolError as e:
            return self._drop(resp, f"bad response: {e.message}", source)
        if not 100 <= resp.status <= 699:
            return self._drop(resp, f"bad status {resp.status}", source)
        if not (via.branch or "").startswith(BRANCH_COOKIE):
            return self._drop(resp, "response without an RFC 3261 branch", source)
        txn = self._client.get(("c", via.branch or "", cseq.method))
        if txn is not None:
            return self._client_response(txn, resp, now)
        if cseq.method == "INVITE" and 200 <= resp.status < 300:
            return [ResponseReceived(None, resp)]
        return self._drop(resp, "response matches no transaction", source)

    def _receive_request(self, req: SipRequest, source: Addr, now: float) -> list[Event]:
        try:
            via = req.top_via
        except RemoteProtocolError as e:
            return self._drop(req, f"bad request: {e.message}", source)
        try:
            req.validate_basic()
            cseq = req.cseq
            if cseq.method != req.method:
                raise RemoteProtocolError(f"CSeq method {cseq.method} differs from {req.method}", 400)
            key = _server_key(req, via, "INVITE" if req.method == "ACK" else req.method)
        except RemoteProtocolError as e:
            if req.method != "ACK":
                self._reject_stateless(req, via, source, e)
            return self._drop(req, f"bad request: {e.message}", source)
        txn = self._server.get(key)
        if txn is not None:
            return self._server_request(txn, req, now)
        _stamp_via(req, via, source)
        if req.method == "ACK":
            acc = self._find_accepted_for_ack(req)
            if acc is not None:
                acc.ack_received()
            return [RequestReceived(None, req)]
        dest = response_destination(req.top_via, source, self.honour_maddr)
        stxn = ServerTransaction(req, key, dest, source)
        self._server[key] = stxn
        if stxn.is_invite:
            if self.timers.trying_delay <= 0:
                trying = make_response(req, 100)
                stxn.last_response = trying
                self._send(trying, dest)
            else:
                self._set_timer(stxn, "trying", self.timers.trying_delay, now)
        return [RequestReceived(stxn, req)]

    def _reject_stateless(self, req: SipRequest, via: Via, source: Addr, err: RemoteProtocolError) -> None:
        status = err.status_hint if err.status_hint and 400 <= err.status_hint <= 699 else 400
        try:
            _stamp_via(req, via, source)
            resp = make_response(req, status)
            resp.reason = _safe_reason(err.message, resp.reason)
            self.send_stateless(resp, response_destination(req.top_via, source, self.honour_maddr))
        except RemoteProtocolError:
            pass

    # --- transport errors ----------------------------------------------------------------
    def transport_error(self, txn: Transaction, now: float) -> list[Event]:
        """The adapter could not send for ``txn`` (§17.1.4/§17.2.4): it ends at once."""
        if txn.terminated:
            return []
        return [TransportError(txn), *self._terminate(txn)]

    def abandon(self, txn: ClientTransaction) -> None:
        """Give up ``txn`` silently (no retransmissions, no timeout event): the TU tries another
        server (RFC 3263 §4.3 failover before Timer B/F). A late response to it is then a stray
        one (a 2xx to an INVITE still reaches the TU, to be ACKed and ended)."""
        self._terminate(txn)

    def transport_failed(self, dest: Addr, now: float) -> list[Event]:
        """A connection to ``dest`` failed: every live transaction using it ends."""
        dest = (dest[0].lower(), dest[1], dest[2])
        events: list[Event] = []
        txns: list[Transaction] = [*self._client.values(), *self._server.values()]
        for txn in txns:
            if txn.dest == dest:
                events.extend(self.transport_error(txn, now))
        return events

    # --- timer dispatch --------------------------------------------------------------------
    def _fire(self, txn: Transaction, name: str, now: float) -> list[Event]:
        S = TransactionState
        t = self.timers
        if txn.state is S.TERMINATED:
            return []
        if isinstance(txn, ClientTransaction):
            if name == "A" and txn.state is S.CALLING:
                self._send(txn.request, txn.dest, retransmission=True)
                txn._interval *= 2
                self._set_timer(txn, "A", txn._interval, now)
                return []
            if name == "E" and txn.state in (S.TRYING, S.PROCEEDING):
                self._send(txn.request, txn.dest, retransmission=True)
                txn._interval = t.t2 if txn.state is S.PROCEEDING else min(2 * txn._interval, t.t2)
                self._set_timer(txn, "E", txn._interval, now)
                return []
            if name in ("B", "F") or (name == "C" and txn.state is S.PROCEEDING):
                self.stats.timeouts += 1
                return [TransactionTimeout(txn), *self._terminate(txn)]
            if name in ("D", "K", "M"):
                return self._terminate(txn)
            return []
        if not isinstance(txn, ServerTransaction):
            return []
        if name == "trying":
            if txn.state is S.PROCEEDING and txn.last_response is None:
                trying = make_response(txn.request, 100)
                txn.last_response = trying
                self._send(trying, txn.dest)
            return []
        if name in ("G", "retransmit_2xx") and txn.last_response is not None:
            self._send(txn.last_response, txn.dest, retransmission=True)
            txn._interval = min(2 * txn._interval, t.t2)
            self._set_timer(txn, name, txn._interval, now)
            return []
        if name == "H":
            return [AckTimeout(txn), *self._terminate(txn)]
        if name == "L":
            if not txn.acked:
                return [AckTimeout(txn), *self._terminate(txn)]
            return self._terminate(txn)
        if name in ("I", "J"):
            return self._terminate(txn)
        return []


def _safe_reason(text: str, default: str) -> str:
    cleaned = "".join(ch if 0x20 <= ord(ch) < 0x7F else " " for ch in text)[:100].strip()
    return cleaned or default


__all__ = [
    "BRANCH_COOKIE",
    "AckTimeout",
    "Addr",
    "ClientTransaction",
    "Event",
    "MessageDropped",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "TimerConfig",
    "Transaction",
    "TransactionManager",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportError",
    "is_reliable",
    "make_cancel",
    "make_non2xx_ack",
    "new_branch",
    "response_destination",
]

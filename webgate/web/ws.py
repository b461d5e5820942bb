"""``/ws``: WebSocket signalling for browser (WebRTC) calls.

One WebSocket carries at most one call at a time (the JS client opens one per call), so
"the WebSocket dropped" and "the browser went away" are the same event: the call is hung
up (BYE or CANCEL toward SIP). JSON text messages only; every message is documented in
docs/protocol.md (## WebSocket). Errors carry a stable ``code``; a bad message never
disturbs another client, and a client that keeps sending bad messages is disconnected.

Built on Twisted's own ``twisted.web.websocket`` (wsproto underneath, see docs/decisions.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from wsproto.utilities import LocalProtocolError as WsStateError

from webgate.adapters import aio
from webgate.legs.webrtc import InvalidOffer, WebRtcLeg, WebRtcSettings
from webgate.calls.call import Call, CallState
from webgate.calls.errors import HOLD_FAILED, CallRefused
from webgate.calls.policy import client_ip
from webgate.calls.users import check_registration, party, registration_expires
from webgate.logsafe import safe
from webgate.ops.metrics import count_error
from webgate.proto import sdp as sdp_mod
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.security.candidates import CANDIDATE_REFUSED, TOO_MANY_CANDIDATES, CandidateRefused
from webgate.security.connlimit import ConnectionLimiter
from webgate.security.origin import origin_allowed
from webgate.security.tokens import MAX_TOKEN_LENGTH, TokenError, verify_token

log = Logger()

__all__ = ["ERROR_CODES", "PROTOCOL_VERSION", "SignallingFactory", "SignallingProtocol", "make_ws_resource"]

PROTOCOL_VERSION = 1

# stable error codes of this module (the call layer adds its own: webgate/calls/errors.py)
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_TYPE = "unknown_type"
MESSAGE_TOO_LARGE = "message_too_large"
INVALID_SDP = "invalid_sdp"
INVALID_CANDIDATE = "invalid_candidate"
INVALID_DTMF = "invalid_dtmf"
NO_CALL = "no_call"
CALL_IN_PROGRESS = "call_in_progress"
TOO_MANY_ERRORS = "too_many_errors"
IDLE_TIMEOUT = "idle_timeout"
INTERNAL_ERROR = "internal_error"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"  # HTTP 403 to the upgrade request (no WebSocket)
TOO_MANY_CONNECTIONS = "too_many_connections"  # HTTP 503 to the upgrade request (no WebSocket)
NOT_REGISTERED = "not_registered"
# CANDIDATE_REFUSED ("candidate_refused"), TOO_MANY_CANDIDATES ("too_many_candidates"):
# webgate/security/candidates.py
ERROR_CODES = (
    BAD_JSON,
    BAD_MESSAGE,
    UNKNOWN_TYPE,
    MESSAGE_TOO_LARGE,
    INVALID_SDP,
    INVALID_CANDIDATE,
    INVALID_DTMF,
    NO_CALL,
    CALL_IN_PROGRESS,
    TOO_MANY_ERRORS,
    IDLE_TIMEOUT,
    INTERNAL_ERROR,
    ORIGIN_NOT_ALLOWED,
    TOO_MANY_CONNECTIONS,
    NOT_REGISTERED,
    CANDIDATE_REFUSED,
    TOO_MANY_CANDIDATES,
)

_DTMF_RE = re.compile(r"[0-9*#A-Da-d]{1,32}")
_SESSION_ID_RE = re.compile(r"\d{1,16}")
_MAX_SDP = 32768


def _host(request: Any) -> str:
    """The client address of an HTTP request (what the per-IP caps count)."""
    return str(getattr(request.getClientAddress(), "host", "?"))


def _peer(request: Any) -> str:
    """``host:port`` of the client of an HTTP request."""
    addr = request.getClientAddress()
    return f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', 0)}"


def _opt_str(msg: dict[str, Any], key: str, max_len: int) -> str | None:
    v = msg.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > max_len:
        raise _BadMessage(BAD_MESSAGE, f"'{key}' must be a string of at most {max_len} characters")
    return v


@dataclass(frozen=True)
class _Caller:
    """Who is calling, for CallManager.admit() before the WebRTC leg exists."""

    client: str
    kind: str = "webrtc"


class _BadMessage(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _InvitedLeg:
    """The leg of a call offered to this connection (``invited``) until the browser accepts:
    only the end matters (the caller cancelled, or the gateway gave up)."""

    kind = "webrtc"

    def __init__(self, proto: SignallingProtocol) -> None:
        self.proto = proto
        self.client = proto.client

    def call_progress(self, call: Call, state: CallState) -> None:
        pass

    def call_ended(self, call: Call, cause: str, status: int | None) -> None:
        msg: dict[str, Any] = {"type": "ended", "cause": cause, "session_id": call.session_id}
        if status is not None:
            msg["status"] = status
        self.proto.send(msg)
        if self.proto.call is call:
            self.proto.call = None

    def dtmf_received(self, call: Call, digit: str, method: str) -> None:
        pass

    def audio_from_sip(self, call: Call, pcm: Any, rate: int) -> None:
        pass


class SignallingProtocol:
    """One WebSocket connection (``twisted.web.websocket.WebSocketProtocol``).

    After a ``register`` it is also the registration of a web user
    (``webgate.calls.users.WebUserEndpoint``): calls from SIP toward the user are offered here
    (``invited``), one at a time, on the same connection."""

    kind = "webrtc"  # as a WebUserEndpoint

    def __init__(self, factory: SignallingFactory, client: str, channel: Any) -> None:
        self.factory = factory
        self.client = client
        self.channel = channel
        self.transport: WebSocketTransport | None = None
        self.closed = False
        self.closing = False  # we sent a close frame: nothing more is sent or handled
        self.leg: WebRtcLeg | None = None
        self.call: Call | None = None
        self.errors = 0
        self._idle: Any = None
        self._pending_candidates: list[Any] = []  # admitted before the answer (the leg's gate caps them)
        self._pending_end = False  # end-of-candidates arrived before the answer
        self._answer_ready = False
        self._bytes_since_message = 0
        self.token: str | None = None  # from an ``auth`` message: used by calls without their own
        self.registered_user: str | None = None  # the web user this connection receives calls for
        self.grant: Any = None  # the registration token's grant
        self.admitted: str | None = None  # the address holding a slot of the factory's limiter

    @property
    def settings(self) -> WebRtcSettings:
        return self.factory.settings

    # -- WebSocketProtocol ------------------------------------------------------------------
    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        self._guard_incoming_bytes()
        self.factory.connections.add(self)
        self._touch()
        self.send(
            {
                "type": "welcome",
                "version": PROTOCOL_VERSION,
                "ice_servers": [dict(s) for s in self.settings.ice_servers],
                "max_message_size": self.settings.max_message_size,
            }
        )

    def pongReceived(self, payload: bytes) -> None:
        self._touch()

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        if self.closing:
            return
        self._bytes_since_message = 0
        self._touch()
        self.error(BAD_MESSAGE, "binary messages are not accepted; send JSON text")

    def textMessageReceived(self, message: str) -> None:
        if self.closing:
            return
        self._bytes_since_message = 0
        self._touch()
        if len(message) > self.settings.max_message_size or len(message.encode("utf-8", "surrogatepass")) > self.settings.max_message_size:
            self.error(MESSAGE_TOO_LARGE, f"messages are limited to {self.settings.max_message_size} bytes")
            return
        try:
            msg = json.loads(message)
        except (ValueError, RecursionError):
            self.error(BAD_JSON, "the message is not valid JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self.error(BAD_MESSAGE, "a message is a JSON object with a string 'type'")
            return
        kind = msg["type"]
        handler = self._handlers.get(kind)
        if handler is None:
            self.error(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}", ref=kind[:40])
            return
        try:
            handler(self, msg)
        except _BadMessage as e:
            self.error(e.code, e.message, ref=kind)
        except CallRefused as e:
            self.error(e.code, e.message, ref=kind)
        except Exception:  # noqa: BLE001 - the edge: log, answer internal_error, keep serving
            log.failure("ws {client}: handling {kind} failed", client=self.client, kind=kind)
            self.error(INTERNAL_ERROR, "internal error", ref=kind)

    def connectionLost(self, reason: Failure) -> None:
        if self.closed:
            return
        self.closed = True
        self.factory.connections.discard(self)
        if self.admitted is not None:
            self.factory.limiter.release(self.admitted)
            self.admitted = None
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self._unregister()
        call, leg = self.call, self.leg
        if call is not None and not call.ended:
            log.info("call {session_id}: WebSocket closed, hanging up", session_id=call.session_id)
            call.hangup("ws_closed")
        if leg is not None:
            leg.close()

    # -- sending ------------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        if self.closed or self.closing or self.transport is None:
            return
        self.transport.sendTextMessage(json.dumps(msg, separators=(",", ":")))

    def error(self, code: str, message: str, ref: str | None = None, fatal: bool = False, counted: bool = True) -> None:
        """Send an ``error``; ``counted`` ones count toward ``[webrtc] max_errors``."""
        if counted:
            self.errors += 1
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if ref is not None:
            body["ref"] = ref
        if self.call is not None:
            body["session_id"] = self.call.session_id
        log.info("ws {client}: error {code}: {message}", client=self.client, code=code, message=safe(message))
        count_error("ws_protocol")
        self.send(body)
        if fatal:
            self.close(1008)
        elif counted and self.errors > self.settings.max_errors:
            self.send({"type": "error", "code": TOO_MANY_ERRORS, "message": "too many bad messages; closing"})
            self.close(1008)

    def close(self, code: int = 1000) -> None:
        if not self.closed and not self.closing and self.transport is not None:
            self.closing = True
            try:
                self.transport.loseConnection(code)
            except WsStateError:  # the peer's close already finished the handshake: nothing to send
                log.debug("ws {client}: closed by the peer before our close", client=self.client)

    # -- guards -------------------------------------------------------------------------------
    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.settings.idle_timeout_s)
        elif not self.closed:
            self._idle = self.factory.reactor.callLater(self.settings.idle_timeout_s, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        self.error(IDLE_TIMEOUT, f"no message for {self.settings.idle_timeout_s:g} s", fatal=True)

    def _guard_incoming_bytes(self) -> None:
        """twisted.web.websocket buffers a fragmented message without limit before
        delivering it; count the bytes received since the last complete message and cut a
        connection that streams far more than any valid message (RFC 6455 close 1009)."""
        channel = self.channel
        inner = getattr(channel, "dataReceived", None)
        if inner is None:
            return
        hard_limit = 2 * self.settings.max_message_size + 4096

        def data_received(data: bytes) -> None:
            if self.closed or self.closing:
                return
            self._bytes_since_message += len(data)
            if self._bytes_since_message > hard_limit:
                self.error(MESSAGE_TOO_LARGE, f"messages are limited to {self.settings.max_message_size} bytes; closing")
                self.close(1009)
                return
            inner(data)

        channel.dataReceived = data_received

    # -- messages -----------------------------------------------------------------------------
    def _on_ping(self, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong"}
        if isinstance(msg.get("id"), (str, int)) and len(str(msg["id"])) <= 64:
            reply["id"] = msg["id"]
        self.send(reply)

    def _on_call(self, msg: dict[str, Any]) -> None:
        if self.leg is not None and self.leg.closed:
            self._clear_call()
        if self.leg is not None or (self.call is not None and not self.call.ended):
            raise _BadMessage(CALL_IN_PROGRESS, "this connection already has a call; open another WebSocket")
        destination = msg.get("destination")
        sdp = msg.get("sdp")
        if not isinstance(sdp, str) or not sdp or len(sdp) > _MAX_SDP:
            raise _BadMessage(INVALID_SDP, "'sdp' must be the browser's SDP offer (a string)")
        session_id = msg.get("session_id")
        if session_id is not None and not isinstance(session_id, str):
            if isinstance(session_id, int) and not isinstance(session_id, bool):
                session_id = str(session_id)
            else:
                raise _BadMessage("invalid_session_id", "'session_id' must be a string of 8-10 digits")
        display_name = _opt_str(msg, "display_name", 128)
        token = _opt_str(msg, "token", MAX_TOKEN_LENGTH) or self.token
        manager = self.factory.manager
        # authorisation and limits before any WebRTC work (raises CallRefused with a stable code)
        admission = manager.admit(
            _Caller(self.client), destination, session_id=session_id, display_name=display_name,
            token=token, source_ip=client_ip(self.client),
        )
        leg = WebRtcLeg(self.client, self.settings, self.send, self.factory.reactor)
        self.leg = leg
        d: Deferred[None] = aio.as_deferred(self._start_call(leg, admission, sdp))
        d.addErrback(self._start_failed, leg)

    async def _start_call(self, leg: WebRtcLeg, admission: Any, sdp: str) -> None:
        route = admission.route
        try:
            codec = await leg.prepare_answer(sdp, route.codecs)
        except InvalidOffer as e:
            self._drop_leg(leg)
            self.error(INVALID_SDP, str(e), ref="call")
            return
        if self.closed or leg.closed:
            leg.close()
            return
        try:
            call = self.factory.manager.place_call(leg, route.destination, prefer_codecs=[codec], admission=admission)
        except CallRefused as e:
            self._drop_leg(leg)
            self.error(e.code, e.message, ref="call")
            return
        self.call = call
        await self._answer(leg, call, codec, trying=True)

    async def _answer(self, leg: WebRtcLeg, call: Call, codec: str, *, trying: bool) -> None:
        """The tail shared by an outgoing call and an accepted inbound one: attach the leg, send
        ``accepted`` (and ``progress trying`` for an outgoing call), finish the answer, send it
        and apply the candidates the client trickled before the answer was ready."""
        leg.attach(call)
        self.send({"type": "accepted", "session_id": call.session_id, "codec": codec})
        if trying:
            self.send({"type": "progress", "state": "trying"})
        answer = await leg.complete_answer()
        if call.ended or leg.closed:
            return
        self.send({"type": "answer", "sdp": answer})
        self._answer_ready = True
        pending, self._pending_candidates = self._pending_candidates, []
        if self._pending_end:
            pending.append(None)
            self._pending_end = False
        for cand in pending:
            await self._add_candidate(leg, cand)

    def _drop_leg(self, leg: WebRtcLeg) -> None:
        leg.close()
        if self.leg is leg:
            self.leg = None

    def _start_failed(self, failure: Failure, leg: WebRtcLeg) -> None:
        log.failure("ws {client}: starting a call failed", failure, client=self.client)
        call = self.call
        if call is not None and not call.ended:
            call.hangup("internal_error")
        self._drop_leg(leg)
        self.error(INTERNAL_ERROR, "the call could not be set up", ref="call")

    async def _add_candidate(self, leg: WebRtcLeg, cand: Any) -> None:
        try:
            await leg.add_candidate(cand)
        except Exception as e:  # noqa: BLE001 - aiortc/aioice reject bad candidates with assorted errors
            self.error(INVALID_CANDIDATE, f"unusable ICE candidate: {type(e).__name__}", ref="candidate")

    def _on_candidate(self, msg: dict[str, Any]) -> None:
        cand = msg.get("candidate")
        if cand is not None and not (isinstance(cand, dict) and isinstance(cand.get("candidate", ""), str)):
            raise _BadMessage(INVALID_CANDIDATE, "'candidate' must be an RTCIceCandidateInit object or null")
        if isinstance(cand, dict):
            mid = cand.get("sdpMid")
            idx = cand.get("sdpMLineIndex")
            if (mid is not None and not isinstance(mid, str)) or (idx is not None and not isinstance(idx, int)):
                raise _BadMessage(INVALID_CANDIDATE, "'sdpMid' must be a string and 'sdpMLineIndex' an integer")
            cand = {"candidate": cand.get("candidate", ""), "sdpMid": mid, "sdpMLineIndex": idx}
        leg = self.leg
        if leg is None:
            raise _BadMessage(NO_CALL, "no call on this connection")
        if cand is not None and cand["candidate"]:
            # the call's cap (for its whole life, before and after the answer) and address rules
            try:
                leg.admit_candidate(cand["candidate"])
            except CandidateRefused as e:
                # a refused address is not held against the connection (the cap bounds how many
                # there can be; a browser cannot choose its interfaces); past the cap, or
                # malformed, each counts toward max_errors
                self.error(e.code, e.message, ref="candidate", counted=e.code != CANDIDATE_REFUSED)
                return
        elif not self._answer_ready:
            self._pending_end = True  # end-of-candidates: remembered once, not queued
            return
        if not self._answer_ready:
            self._pending_candidates.append(cand)
            return
        aio.spawn(self._add_candidate(leg, cand), "add ICE candidate", client=self.client)

    def _on_dtmf(self, msg: dict[str, Any]) -> None:
        digits = msg.get("digits")
        if not isinstance(digits, str) or not _DTMF_RE.fullmatch(digits):
            raise _BadMessage(INVALID_DTMF, "'digits' must be 1-32 of 0-9 * # A-D")
        duration = msg.get("duration_ms", 160)
        if not isinstance(duration, int) or isinstance(duration, bool) or not 40 <= duration <= 2000:
            raise _BadMessage(INVALID_DTMF, "'duration_ms' must be an integer 40..2000")
        call = self.call
        if call is None or call.ended:
            raise _BadMessage(NO_CALL, "no call on this connection")
        call.send_dtmf(digits.upper(), duration)

    def _on_hold(self, msg: dict[str, Any]) -> None:
        """``{"type": "hold", "on": true|false}``: hold or resume the SIP far end (a re-INVITE,
        a=sendonly / a=sendrecv). Answered ``progress`` ``held``/``resumed`` once the far end
        agreed, else an error ``hold_failed`` (with its SIP ``status``; the call stays up)."""
        on = msg.get("on", True)
        if not isinstance(on, bool):
            raise _BadMessage(BAD_MESSAGE, "'on' must be true or false")
        call = self.call
        if call is None or call.ended:
            raise _BadMessage(NO_CALL, "no call on this connection")

        def done(ok: bool, status: int | None) -> None:
            if call.ended or self.call is not call:
                return
            if ok:
                self.send({"type": "progress", "state": "held" if call.held else "resumed"})
                return
            body: dict[str, Any] = {"type": "error", "code": HOLD_FAILED, "ref": "hold",
                                    "message": "the far end refused the hold/resume; the call goes on",
                                    "session_id": call.session_id, "held": call.held}
            if status is not None:
                body["status"] = status
            self.send(body)

        self.factory.manager.hold(call, on, done)

    def _on_auth(self, msg: dict[str, Any]) -> None:
        """``{"type": "auth", "token": JWT}``: the token for this connection's calls (a ``call``
        with its own ``token`` uses that one). Checked at once; answered with ``auth_ok``."""
        token = msg.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise _BadMessage(BAD_MESSAGE, f"'token' must be a string of at most {MAX_TOKEN_LENGTH} characters")
        manager = self.factory.manager
        try:
            grant = verify_token(token, manager.tokens, now=manager.wall_clock())
        except TokenError:
            self.token = None
            raise
        self.token = token
        reply: dict[str, Any] = {"type": "auth_ok", "expires": int(grant.expires)}
        if grant.sub is not None:
            reply["identity"] = grant.sub
        self.send(reply)

    # -- registration and calls toward this client -------------------------------------------
    def _on_register(self, msg: dict[str, Any]) -> None:
        """``{"type": "register", "user": U[, "token": JWT]}``: receive calls for U while this
        connection stays open and the token is valid. The token (this message's, else the
        ``auth`` one) must be valid and its ``sub`` must be U. Answered ``registered`` (with the
        registration's ``expires``); a connection holds one registration. At the token's expiry
        the registration ends (``unregistered``, reason ``token_expired``) unless the client
        registered again with a fresh token before."""
        user = msg.get("user")
        token = _opt_str(msg, "token", MAX_TOKEN_LENGTH) or self.token
        manager = self.factory.manager
        grant = check_registration(user, token, manager.tokens, manager.wall_clock())  # raises CallRefused
        assert isinstance(user, str)
        if self.registered_user is not None and self.registered_user != user:
            self._unregister()
        self.registered_user = user
        self.grant = grant
        manager.web_users.register(user, self, expires=registration_expires(grant, manager.tokens))
        log.info("ws {client}: registered web user {user}", client=self.client, user=safe(user))
        reply: dict[str, Any] = {"type": "registered", "user": user}
        if grant.expires:
            reply["expires"] = int(grant.expires)  # the token's exp: register again before it
        self.send(reply)

    def _on_unregister(self, msg: dict[str, Any]) -> None:
        user = self.registered_user
        if user is None:
            raise _BadMessage(NOT_REGISTERED, "this connection has no registration")
        self._unregister()
        self.send({"type": "unregistered", "user": user, "reason": "client"})

    def _unregister(self) -> None:
        user, self.registered_user = self.registered_user, None
        if user is not None:
            try:
                self.factory.manager.web_users.unregister(user, self)
            except Exception:  # noqa: BLE001 - telephony already gone at shutdown
                log.debug("ws {client}: unregistering {user} after telephony stopped", client=self.client, user=safe(user))

    # WebUserEndpoint
    def busy(self) -> bool:
        if self.closed or self.closing:
            return True
        if self.leg is not None and not self.leg.closed:
            return True
        return self.call is not None and not self.call.ended

    def invited(self, call: Call, caller: str, caller_display: str | None) -> _InvitedLeg:
        self.call = call
        self.leg, self._answer_ready, self._pending_candidates, self._pending_end = None, False, [], False
        self.send({
            "type": "invited",
            "call": call.session_id,
            "session_id": call.session_id,
            "from": caller,
            "display_name": caller_display,
            "from_uri": party(call.route.target),
            "to": call.destination,
        })
        return _InvitedLeg(self)

    def unregistered(self, user: str, reason: str) -> None:
        if self.registered_user == user:
            self.registered_user = None
            self.send({"type": "unregistered", "user": user, "reason": reason})

    def _invited_call(self, msg: dict[str, Any]) -> Call:
        call = self.call
        if call is None or call.ended or call.direction != "inbound" or call.answer_sdp is not None or self.leg is not None:
            raise _BadMessage(NO_CALL, "no incoming call on this connection")
        ref = msg.get("call", msg.get("session_id"))
        if ref is not None and str(ref) != call.session_id:
            raise _BadMessage(NO_CALL, "no such incoming call")
        return call

    def _on_accept(self, msg: dict[str, Any]) -> None:
        """``{"type": "accept", "sdp": OFFER[, "call": ID]}``: answer the offered call with the
        browser's SDP offer, as ``call`` does for an outgoing one."""
        call = self._invited_call(msg)
        offer = msg.get("sdp")
        if not isinstance(offer, str) or not offer or len(offer) > _MAX_SDP:
            raise _BadMessage(INVALID_SDP, "'sdp' must be the browser's SDP offer (a string)")
        leg = WebRtcLeg(self.client, self.settings, self.send, self.factory.reactor)
        self.leg = leg
        d: Deferred[None] = aio.as_deferred(self._accept_call(leg, call, offer))
        d.addErrback(self._start_failed, leg)

    async def _accept_call(self, leg: WebRtcLeg, call: Call, offer: str) -> None:
        try:
            media = next(m for m in sdp_mod.parse_sdp(call.remote_offer or b"").media if m.kind == "audio")
            order = [c.name for c in media.codecs() if not c.is_telephone_event]
        except (StopIteration, RemoteProtocolError, LocalProtocolError):
            order = []
        try:
            codec = await leg.prepare_answer(offer, order or ["PCMU", "PCMA", "G722", "opus"])
        except InvalidOffer as e:
            self._drop_leg(leg)
            self.error(INVALID_SDP, str(e), ref="accept")
            return
        if self.closed or leg.closed or call.ended:
            self._drop_leg(leg)
            return
        try:
            self.factory.manager.accept_inbound(call, leg, prefer_codecs=[codec])
        except CallRefused as e:
            self._drop_leg(leg)
            self.error(e.code, e.message, ref="accept")
            return
        await self._answer(leg, call, codec, trying=False)

    def _on_reject(self, msg: dict[str, Any]) -> None:
        """``{"type": "reject"[, "reason": "busy"|"decline"]}``: 486 Busy Here (default) or 603 Decline."""
        call = self._invited_call(msg)
        reason = _opt_str(msg, "reason", 32) or "busy"
        status = 603 if reason.lower() in ("decline", "declined", "603") else 486
        self.call = None
        self.factory.manager.reject_inbound(call, status)
        self.send({"type": "ended", "cause": "rejected", "status": status, "session_id": call.session_id})

    def _on_hangup(self, msg: dict[str, Any]) -> None:
        call, leg = self.call, self.leg
        if leg is None and call is not None and not call.ended and call.direction == "inbound":
            call.hangup("client_hangup")  # not accepted yet: 603 Decline
            self.call = None
            self.send({"type": "ended", "cause": "client_hangup", "session_id": call.session_id})
            return
        if leg is None:
            raise _BadMessage(NO_CALL, "no call on this connection")
        if call is not None and not call.ended:
            call.hangup("client_hangup")
        self.send({"type": "ended", "cause": "client_hangup"})
        leg.close()
        self._clear_call()

    def _clear_call(self) -> None:
        """Forget the connection's call and leg (the connection may then start another call)."""
        self.leg, self.call, self._answer_ready, self._pending_candidates, self._pending_end = None, None, False, [], False

    _handlers: ClassVar[dict[str, Callable[[SignallingProtocol, dict[str, Any]], None]]] = {
        "ping": _on_ping,
        "call": _on_call,
        "candidate": _on_candidate,
        "dtmf": _on_dtmf,
        "hold": _on_hold,
        "hangup": _on_hangup,
        "auth": _on_auth,
        "register": _on_register,
        "unregister": _on_unregister,
        "accept": _on_accept,
        "reject": _on_reject,
    }


class SignallingFactory:
    """``twisted.web.websocket.WebSocketServerFactory`` for ``/ws``."""

    def __init__(self, manager: Any, settings: WebRtcSettings, reactor: Any, limiter: ConnectionLimiter | None = None) -> None:
        self._manager = manager
        self.settings = settings
        self.reactor = reactor
        self.connections: set[SignallingProtocol] = set()
        # open WebSockets, total and per address ([webrtc] max_connections*); counted in /metrics
        self.limiter = limiter or ConnectionLimiter("ws", 512, 32)

    @property
    def manager(self) -> Any:
        """The CallManager; a TelephonyService may be given instead (its manager exists only
        once the service has started, so it is looked up per call)."""
        m = self._manager
        return m if hasattr(m, "place_call") else m.manager

    def buildProtocol(self, request: Any) -> SignallingProtocol:
        p = SignallingProtocol(self, _peer(request), request.channel)
        p.admitted = _host(request)  # SignallingResource.render_GET took the limiter slot
        return p


class SignallingResource(WebSocketResource):
    """``/ws`` with the Origin allow-list (``[http] allowed_origins``, webgate/security/origin.py):
    a handshake from a browser page of another origin gets HTTP 403 and no WebSocket."""

    def __init__(self, factory: SignallingFactory, allowed_origins: tuple[str, ...] = ()) -> None:
        super().__init__(factory)  # type: ignore[arg-type]
        self.allowed_origins = tuple(allowed_origins)
        self.refused_origins = 0

    def render_GET(self, request: Any) -> Any:
        origin = request.getHeader("origin")
        host = request.getHeader("host")
        if not origin_allowed(origin, host, self.allowed_origins, secure=bool(request.isSecure())):
            self.refused_origins += 1
            log.info(
                "ws {client}: origin {origin} not allowed, refused",
                client=_peer(request),
                origin=safe(origin or "", 200),
            )
            body = {"type": "error", "code": ORIGIN_NOT_ALLOWED, "message": "this page's origin may not use this gateway"}
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            return json.dumps(body, separators=(",", ":")).encode() + b"\n"
        factory: SignallingFactory = self.factory  # type: ignore[assignment]
        host = _host(request)
        refused = factory.limiter.admit(host)
        if refused is not None:
            log.info("ws {client}: refused, {reason} WebSocket cap reached", client=_peer(request), reason=refused)
            body = {"type": "error", "code": TOO_MANY_CONNECTIONS, "message": "too many connections; try again later"}
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"retry-after", b"10")
            request.setHeader(b"connection", b"close")
            return json.dumps(body, separators=(",", ":")).encode() + b"\n"
        result = super().render_GET(request)
        if result is not NOT_DONE_YET:
            factory.limiter.release(host)  # no upgrade (a bad handshake): the slot is free again
            return result
        # the connection is a WebSocket now: it leaves the HTTP listener's count (webgate/web/site.py)
        handover = getattr(request.channel, "upgraded", None)
        if callable(handover):
            handover()
        return result


def make_ws_resource(manager: Any, config: Any, reactor: Any, settings: WebRtcSettings | None = None) -> Resource:
    """The ``/ws`` resource. ``manager``: the CallManager, or the TelephonyService (looked up
    lazily). ``settings`` default to ``WebRtcSettings.from_config(config)``; the Origin
    allow-list comes from ``config.http.allowed_origins``."""
    webrtc = getattr(config, "webrtc", None)
    limiter = None
    if webrtc is not None:
        limiter = ConnectionLimiter("ws", webrtc.max_connections, webrtc.max_connections_per_ip)
    factory = SignallingFactory(manager, settings or WebRtcSettings.from_config(config), reactor, limiter)
    http = getattr(config, "http", None)
    res = SignallingResource(factory, tuple(getattr(http, "allowed_origins", ()) or ()))
    res.signalling = factory  # type: ignore[attr-defined]  # for health/metrics and tests
    return res

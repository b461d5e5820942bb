"""The ``/ws`` message handlers: what each JSON message of a browser (WebRTC) connection does.

``call``, ``accept``, ``reject``, ``hangup``, ``candidate``, ``dtmf``, ``hold``, ``auth``,
``register``, ``unregister``, ``watch`` and ``ping`` (docs/protocol.md, ## WebSocket), and the
connection as a registered web user (``webgate.calls.users.WebUserEndpoint``: ``invited``,
``busy``). A connection carries one call or one watch (``watch``: a call's video and data by its
session ID, ``webgate.adapters.webrtc_watch.WebRtcWatcher``). The
WebSocket itself (framing, size/rate/idle guards, Origin check, connection caps, close, ``send``)
is webgate/web/ws.py, whose ``SignallingProtocol`` is a ``SignallingHandlers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from webgate.adapters import aio
from webgate.adapters.webrtc import InvalidOffer, WebRtcLeg
from webgate.adapters.webrtc_watch import WebRtcWatcher, watch_video_format
from webgate.legs.hub_types import WatchRefused
from webgate.legs.webrtc import WebRtcSettings
from webgate.calls import elsewhere
from webgate.calls.call import Call, CallState
from webgate.calls.errors import HOLD_FAILED, CallRefused
from webgate.calls.policy import client_ip
from webgate.calls.users import check_registration, party, registration_expires
from webgate.calls.watch import NOT_FOUND
from webgate.logsafe import safe
from webgate.security.candidates import CANDIDATE_REFUSED, CandidateRefused
from webgate.security.tokens import MAX_TOKEN_LENGTH, TokenError, verify_token

log = Logger()

__all__ = ["BadMessage", "SignallingHandlers"]

# stable error codes of the messages (the transport's own are in webgate/web/ws.py, the call
# layer's in webgate/calls/errors.py; ws.ERROR_CODES lists them all)
BAD_MESSAGE = "bad_message"
INVALID_SDP = "invalid_sdp"
INVALID_CANDIDATE = "invalid_candidate"
INVALID_DTMF = "invalid_dtmf"
NO_CALL = "no_call"
CALL_IN_PROGRESS = "call_in_progress"
INTERNAL_ERROR = "internal_error"
NOT_REGISTERED = "not_registered"

_DTMF_RE = re.compile(r"[0-9*#A-Da-d]{1,32}")
_MAX_SDP = 32768

def _opt_str(msg: dict[str, Any], key: str, max_len: int) -> str | None:
    v = msg.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > max_len:
        raise BadMessage(BAD_MESSAGE, f"'{key}' must be a string of at most {max_len} characters")
    return v


@dataclass(frozen=True)
class _Caller:
    """Who is calling, for CallManager.admit() before the WebRTC leg exists."""

    client: str
    kind: str = "webrtc"


class BadMessage(Exception):
    """A message the handlers refuse: answered with an ``error`` of ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _InvitedLeg:
    """The leg of a call offered to this connection (``invited``) until the browser accepts:
    only the end matters (the caller cancelled, or the gateway gave up)."""

    kind = "webrtc"

    def __init__(self, proto: SignallingHandlers) -> None:
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


class SignallingContext(Protocol):
    """What the handlers need of the connection's factory (``webgate.web.ws.SignallingFactory``)."""

    @property
    def manager(self) -> Any: ...

    settings: WebRtcSettings
    reactor: Any
    #: [video] (config.video) for the calls' hubs; None: the hub's defaults
    video: Any


class SignallingHandlers:
    """The message handlers of one ``/ws`` connection and its call state (one call at a time).

    Mixed into ``webgate.web.ws.SignallingProtocol``, which provides the WebSocket side:
    ``send``, ``error``, ``client``, ``closed``/``closing`` and the ``factory``."""

    kind = "webrtc"  # as a WebUserEndpoint

    factory: SignallingContext
    client: str
    closed: bool
    closing: bool

    def __init__(self) -> None:
        self.leg: WebRtcLeg | None = None
        self.call: Call | None = None
        self._pending_candidates: list[Any] = []  # admitted before the answer (the leg's gate caps them)
        self._pending_end = False  # end-of-candidates arrived before the answer
        self._answer_ready = False
        self.token: str | None = None  # from an ``auth`` message: used by calls without their own
        self.registered_user: str | None = None  # the web user this connection receives calls for
        self.grant: Any = None  # the registration token's grant
        self.watch: WebRtcWatcher | None = None  # this connection's watch (instead of a call)

    @property
    def settings(self) -> WebRtcSettings:
        return self.factory.settings

    # provided by the WebSocket connection (webgate/web/ws.py)
    def send(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    def error(self, code: str, message: str, ref: str | None = None, fatal: bool = False, counted: bool = True) -> None:
        raise NotImplementedError

    def _connection_gone(self) -> None:
        """The WebSocket closed: end the registration and the watch, hang up the call, close the leg."""
        self._unregister()
        if self.watch is not None:
            self.watch.close("ws_closed")
        call, leg = self.call, self.leg
        if call is not None and not call.ended:
            log.info("call {session_id}: WebSocket closed, hanging up", session_id=call.session_id)
            call.hangup("ws_closed")
        if leg is not None:
            leg.close()

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
            raise BadMessage(CALL_IN_PROGRESS, "this connection already has a call; open another WebSocket")
        if self._watching():
            raise BadMessage(CALL_IN_PROGRESS, "this connection has a watch; open another WebSocket")
        destination = msg.get("destination")
        sdp = msg.get("sdp")
        if not isinstance(sdp, str) or not sdp or len(sdp) > _MAX_SDP:
            raise BadMessage(INVALID_SDP, "'sdp' must be the browser's SDP offer (a string)")
        session_id = msg.get("session_id")
        if session_id is not None and not isinstance(session_id, str):
            if isinstance(session_id, int) and not isinstance(session_id, bool):
                session_id = str(session_id)
            else:
                raise BadMessage("invalid_session_id", "'session_id' must be a string of 8-10 digits")
        display_name = _opt_str(msg, "display_name", 128)
        token = _opt_str(msg, "token", MAX_TOKEN_LENGTH) or self.token
        manager = self.factory.manager
        # authorisation and limits before any WebRTC work (raises CallRefused with a stable code)
        admission = manager.admit(
            _Caller(self.client), destination, session_id=session_id, display_name=display_name,
            token=token, source_ip=client_ip(self.client),
        )
        leg = WebRtcLeg(self.client, self.settings, self.send, self.factory.reactor, video=getattr(self.factory, "video", None))
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
        manager = self.factory.manager
        try:
            # a cluster node's limits and session ID across the cluster (at once in one process)
            admission = await manager.reserve(leg, admission)
            if self.closed or leg.closed:
                manager.release_reservation(admission)
                leg.close()
                return
            call = manager.place_call(leg, route.destination, prefer_codecs=[codec], admission=admission)
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
        await self._send_answer(leg, answer)

    async def _send_answer(self, peer: WebRtcLeg | WebRtcWatcher, answer: str) -> None:
        """Send our SDP answer, then apply the candidates that arrived before it (a call's leg
        or a watch's peer connection)."""
        self.send({"type": "answer", "sdp": answer})
        self._answer_ready = True
        pending, self._pending_candidates = self._pending_candidates, []
        if self._pending_end:
            pending.append(None)
            self._pending_end = False
        for cand in pending:
            await self._add_candidate(peer, cand)

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

    async def _add_candidate(self, leg: WebRtcLeg | WebRtcWatcher, cand: Any) -> None:
        try:
            await leg.add_candidate(cand)
        except Exception as e:  # noqa: BLE001 - aiortc/aioice reject bad candidates with assorted errors
            self.error(INVALID_CANDIDATE, f"unusable ICE candidate: {type(e).__name__}", ref="candidate")

    def _on_candidate(self, msg: dict[str, Any]) -> None:
        cand = msg.get("candidate")
        if cand is not None and not (isinstance(cand, dict) and isinstance(cand.get("candidate", ""), str)):
            raise BadMessage(INVALID_CANDIDATE, "'candidate' must be an RTCIceCandidateInit object or null")
        if isinstance(cand, dict):
            mid = cand.get("sdpMid")
            idx = cand.get("sdpMLineIndex")
            if (mid is not None and not isinstance(mid, str)) or (idx is not None and not isinstance(idx, int)):
                raise BadMessage(INVALID_CANDIDATE, "'sdpMid' must be a string and 'sdpMLineIndex' an integer")
            cand = {"candidate": cand.get("candidate", ""), "sdpMid": mid, "sdpMLineIndex": idx}
        leg: WebRtcLeg | WebRtcWatcher | None = self.leg
        if leg is None and self._watching():
            leg = self.watch
        if leg is None:
            raise BadMessage(NO_CALL, "no call on this connection")
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
            raise BadMessage(INVALID_DTMF, "'digits' must be 1-32 of 0-9 * # A-D")
        duration = msg.get("duration_ms", 160)
        if not isinstance(duration, int) or isinstance(duration, bool) or not 40 <= duration <= 2000:
            raise BadMessage(INVALID_DTMF, "'duration_ms' must be an integer 40..2000")
        call = self.call
        if call is None or call.ended:
            raise BadMessage(NO_CALL, "no call on this connection")
        call.send_dtmf(digits.upper(), duration)

    def _on_hold(self, msg: dict[str, Any]) -> None:
        """``{"type": "hold", "on": true|false}``: hold or resume the SIP far end (a re-INVITE,
        a=sendonly / a=sendrecv). Answered ``progress`` ``held``/``resumed`` once the far end
        agreed, else an error ``hold_failed`` (with its SIP ``status``; the call stays up)."""
        on = msg.get("on", True)
        if not isinstance(on, bool):
            raise BadMessage(BAD_MESSAGE, "'on' must be true or false")
        call = self.call
        if call is None or call.ended:
            raise BadMessage(NO_CALL, "no call on this connection")

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
            raise BadMessage(BAD_MESSAGE, f"'token' must be a string of at most {MAX_TOKEN_LENGTH} characters")
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
            raise BadMessage(NOT_REGISTERED, "this connection has no registration")
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
        if self.closed or self.closing or self._watching():
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
            raise BadMessage(NO_CALL, "no incoming call on this connection")
        ref = msg.get("call", msg.get("session_id"))
        if ref is not None and str(ref) != call.session_id:
            raise BadMessage(NO_CALL, "no such incoming call")
        return call

    def _on_accept(self, msg: dict[str, Any]) -> None:
        """``{"type": "accept", "sdp": OFFER[, "call": ID]}``: answer the offered call with the
        browser's SDP offer, as ``call`` does for an outgoing one."""
        call = self._invited_call(msg)
        offer = msg.get("sdp")
        if not isinstance(offer, str) or not offer or len(offer) > _MAX_SDP:
            raise BadMessage(INVALID_SDP, "'sdp' must be the browser's SDP offer (a string)")
        leg = WebRtcLeg(self.client, self.settings, self.send, self.factory.reactor, video=getattr(self.factory, "video", None))
        self.leg = leg
        d: Deferred[None] = aio.as_deferred(self._accept_call(leg, call, offer))
        d.addErrback(self._start_failed, leg)

    async def _accept_call(self, leg: WebRtcLeg, call: Call, offer: str) -> None:
        order = self.factory.manager.offered_audio_codecs(call)
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
        if self.watch is not None and self.leg is None:
            self.watch.close("client_hangup")  # answered ``ended`` (cause client_hangup) by _watch_ended
            return
        call, leg = self.call, self.leg
        if leg is None and call is not None and not call.ended and call.direction == "inbound":
            call.hangup("client_hangup")  # not accepted yet: 603 Decline
            self.call = None
            self.send({"type": "ended", "cause": "client_hangup", "session_id": call.session_id})
            return
        if leg is None:
            raise BadMessage(NO_CALL, "no call on this connection")
        if call is not None and not call.ended:
            call.hangup("client_hangup")
        self.send({"type": "ended", "cause": "client_hangup"})
        leg.close()
        self._clear_call()

    def _clear_call(self) -> None:
        """Forget the connection's call and leg (the connection may then start another call)."""
        self.leg, self.call, self._answer_ready, self._pending_candidates, self._pending_end = None, None, False, [], False

    # -- watching a call's video and data ------------------------------------------------------
    def _watching(self) -> bool:
        return self.watch is not None and not self.watch.closed

    def _on_watch(self, msg: dict[str, Any]) -> None:
        """``{"type": "watch", "session_id": ID, "sdp": OFFER[, "token": JWT][, "audio": true]}``: watch a web
        call's video and data by its session ID (docs/protocol.md "Who may watch"). The token
        (this message's, else the ``auth`` one) must allow it; every refusal but the attempt
        rate's and ``too_many_watchers`` is the same ``not_found``. Answered ``watching`` (with
        the caller's ``video``, before media), then ``answer``; ``video`` when the caller's
        video starts later, ``ended`` when the call or the watch ends."""
        if self.watch is not None and self.watch.closed:
            self._clear_watch()
        if self.watch is not None or self.leg is not None or (self.call is not None and not self.call.ended):
            raise BadMessage(CALL_IN_PROGRESS, "this connection already has a call or a watch; open another WebSocket")
        sdp = msg.get("sdp")
        if not isinstance(sdp, str) or not sdp or len(sdp) > _MAX_SDP:
            raise BadMessage(INVALID_SDP, "'sdp' must be the watcher's SDP offer (a string)")
        session_id = msg.get("session_id")
        if isinstance(session_id, int) and not isinstance(session_id, bool):
            session_id = str(session_id)
        token = _opt_str(msg, "token", MAX_TOKEN_LENGTH) or self.token
        manager = self.factory.manager
        try:
            call = manager.authorize_watch(session_id, token, client_ip(self.client))  # raises CallRefused
        except CallRefused as e:
            if e.code != NOT_FOUND or getattr(manager.registry, "elsewhere", None) is None:
                raise
            # a cluster node: the call may live on another node (docs/cluster.md "Redirects")
            lookup: Deferred[None] = aio.as_deferred(self._watch_elsewhere(session_id, token, e))
            lookup.addErrback(lambda f: log.failure("ws {client}: looking up a watch failed", f, client=self.client))
            return
        identity = verify_token(token, manager.tokens, now=manager.wall_clock()).sub  # (valid: just checked)
        watcher = WebRtcWatcher(
            call.hub, identity=identity, settings=self.settings, signal=self.send, reactor=self.factory.reactor,
            client=self.client, on_end=self._watch_ended, audio=msg.get("audio") is True,
        )
        try:
            video = watcher.join()
        except WatchRefused as e:
            raise BadMessage(e.code, e.message) from None
        self.watch, self._answer_ready, self._pending_candidates, self._pending_end = watcher, False, [], False
        log.info("ws {client}: watching {session_id} as {identity}", client=self.client, session_id=call.session_id,
                 identity=safe(identity or "-"))
        self.send({"type": "watching", "session_id": call.session_id, "video": video})
        watcher.announced = True
        d: Deferred[None] = aio.as_deferred(self._start_watch(watcher, sdp, watch_video_format(call)))
        d.addErrback(self._watch_failed, watcher)

    async def _watch_elsewhere(self, session_id: object, token: str | None, refusal: CallRefused) -> None:
        """The watched call is not here: if it lives on another node and this token may watch
        it there, ``{"type": "redirect", "url": NODE_WS_URL, ...}`` (the client re-sends its
        ``watch`` there); else the same refusal (``not_found``) as in one process."""
        manager = self.factory.manager
        try:
            found = await elsewhere.locate(manager.registry, session_id)
        except CallRefused as e:  # cluster_unavailable: the index cannot be read
            self.error(e.code, e.message, ref="watch")
            return
        if found is not None:
            entry, info = found
            if info.ws_url and elsewhere.may_watch(entry, token, manager.tokens, manager.wall_clock()):
                log.info("ws {client}: watch of {session_id} redirected to node {node}", client=self.client,
                         session_id=entry.session_id, node=safe(entry.node))
                self.send({"type": "redirect", "ref": "watch", "url": info.ws_url, "session_id": entry.session_id,
                           "node": entry.node})
                return
        self.error(refusal.code, refusal.message, ref="watch")

    async def _start_watch(self, watcher: WebRtcWatcher, sdp: str, fmt: Any) -> None:
        try:
            answer = await watcher.answer(sdp, fmt)
        except InvalidOffer as e:
            if not watcher.closed:
                self.error(INVALID_SDP, str(e), ref="watch")
                watcher.close("invalid_sdp")
            return
        if watcher.closed or self.watch is not watcher:
            return
        await self._send_answer(watcher, answer)

    def _watch_failed(self, failure: Failure, watcher: WebRtcWatcher) -> None:
        log.failure("ws {client}: starting a watch failed", failure, client=self.client)
        if not watcher.closed:
            self.error(INTERNAL_ERROR, "the watch could not be set up", ref="watch")
            watcher.close("internal_error")

    def _watch_ended(self, watcher: WebRtcWatcher, cause: str) -> None:
        """The watch is over (the call ended, the watcher hung up, ICE failed): ``ended``."""
        if self.watch is watcher:
            self.send({"type": "ended", "cause": cause, "session_id": watcher.session_id})
            self._clear_watch()

    def _clear_watch(self) -> None:
        self.watch, self._answer_ready, self._pending_candidates, self._pending_end = None, False, [], False

    _handlers: ClassVar[dict[str, Callable[[SignallingHandlers, dict[str, Any]], None]]] = {
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
        "watch": _on_watch,
    }


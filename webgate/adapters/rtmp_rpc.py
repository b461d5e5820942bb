"""Flash RPC on an RTMP connection: what a siprtmp-style client's commands do.

A Flash client connects to ``rtmp://HOST/sip/USER[@DOMAIN]`` and calls ``invite``/``accept``/
``reject``/``bye``/``sendDTMF``/``hold``/``register``/``sendData``; the server calls back ``ringing``/
``accepted``/``rejected``/``cancelled``/``byed``/``invited``/``dtmf``/``sessionId``/``registered``/
``unregistered``/``watchers``/``data`` (docs/protocol.md, "RTMP"; the last two and ``sendData`` are
the call's watchers: its media hub, webgate/legs/hub.py). With a call token whose ``sub`` is the URL's user the
connection is also the registration of that web user (``webgate.calls.users.WebUserEndpoint``:
``busy``, ``invited``, ``unregistered``). The connection itself (bytes, streams, connect, publish,
play, back-pressure) is webgate/adapters/rtmp.py, whose ``RtmpProtocol`` is a ``FlashRpc``; the
call's media is the connection's :class:`~webgate.legs.rtmp.RtmpLeg`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from webgate.adapters import aio
from webgate.calls.call import Call, CallState
from webgate.calls.errors import CallRefused
from webgate.calls.users import check_registration, party, registration_expires
from webgate.legs.rtmp import RtmpLeg
from webgate.logsafe import safe
from webgate.proto.errors import LocalProtocolError
from webgate.proto.rtmp import CommandReceived, RtmpServerConnection
from webgate.proto.rtmp.amf import Undefined

__all__ = [
    "APP_CALL", "APP_SESSION", "APP_SIP", "APP_WATCH", "TOKEN_OPTION", "ConnectionParts", "FlashRpc", "call_failed"]

log = Logger()

#: the connection's applications (rtmp://HOST/APP): Flash RPC, encoder style, by session ID, watch
APP_SIP = "sip"
APP_CALL = "call"
APP_SESSION = "session"
APP_WATCH = "watch"
# the call token on RTMP: "?token=" on the stream name (encoder style) or on the connect URL
# (rtmp://HOST/call?token=...), or the Flash RPC connect's second argument when it is a JWT
TOKEN_OPTION = "token"


def call_failed(description: str, **extra: Any) -> dict[str, Any]:
    """The info object of an RPC ``_error`` (``NetConnection.Call.Failed``)."""
    info = {"level": "error", "code": "NetConnection.Call.Failed", "description": description}
    info.update(extra)
    return info


class ConnectionParts:
    """What the RTMP connection's mixins (:class:`FlashRpc`, ``rtmp_play.RtmpPlayback``,
    ``rtmp_publish.RtmpPublishing``) call on the connection, ``webgate.adapters.rtmp.RtmpProtocol``,
    which provides them."""

    @property
    def manager(self) -> Any:
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def _place_reserved(self, leg: RtmpLeg, destination: Any, admission: Any, wanted: Callable[[], bool]) -> Call | None:
        """On a cluster node, the rest of placing ``leg``'s call after ``CallManager.admit``:
        ``CallManager.reserve`` (one await), then the call, attached to ``leg``. None when
        ``wanted()`` turned false meanwhile (the reservation given back); raises CallRefused."""
        manager = self.manager
        admission = await manager.reserve(leg, admission)
        if not wanted():
            manager.release_reservation(admission)  # the client gave up meanwhile
            return None
        call: Call = manager.place_call(leg, destination, admission=admission)
        leg.attach_call(call)
        return call


class FlashRpc(ConnectionParts):
    """The Flash RPC commands and web-user registration of one RTMP connection (a mixin of
    ``webgate.adapters.rtmp.RtmpProtocol``, which provides the attributes declared here)."""

    client: str
    peer_ip: str
    core: RtmpServerConnection
    mode: str | None
    flash_leg: RtmpLeg | None
    flash_user: str
    display_name: str | None
    conn_token: str | None
    publishes: dict[int, RtmpLeg]
    lost: bool
    registered_user: str | None
    grant: Any
    #: an ``invite`` awaits the cluster's admission step (CallManager.reserve)
    _inviting: bool = False

    def _end_publish(self, stream_id: int, why: str) -> None:
        raise NotImplementedError

    # ---- registration as a web user (calls toward this client)
    def _register(self, user: str, token: str | None) -> CallRefused | None:
        """Register ``user`` for this connection until ``token`` expires: the token must have
        ``sub`` == user. On success the client hears ``registered(user)``; a refusal is returned
        (an existing registration is then left as it was)."""
        manager = self.manager
        try:
            grant = check_registration(user, token, manager.tokens, manager.wall_clock())
        except CallRefused as e:
            log.info("RTMP {client}: registration of {user} refused: {code}", client=self.client, user=safe(user, 64), code=e.code)
            return e
        self.grant = grant
        self.registered_user = user
        manager.web_users.register(user, self, expires=registration_expires(grant, manager.tokens))
        log.info("RTMP {client}: registered web user {user}", client=self.client, user=safe(user))
        self.rpc_callback("registered", user)
        return None

    def _rpc_register(self, tid: float, args: list[Any]) -> None:
        """``register(token)``: register the connect URL's user again with a fresh call token,
        before the connect's (or the last) token expires -- at its expiry the registration ends
        with ``unregistered("token_expired")``. The token also becomes the connection's call token.
        ``_result`` = the user (and ``registered(user)``); ``_error`` with the refusal ``reason``
        (``token_required``, ``invalid_token``, ``token_expired``, ``user_not_allowed``), the
        current registration unchanged."""
        if self.mode != APP_SIP or self.flash_leg is None:
            self.core.send_error(tid, call_failed("register needs rtmp://HOST/sip/USER", reason="not_sip"))
            return
        token = args[0] if args and isinstance(args[0], str) and args[0] else None
        refused = self._register(self.flash_user.split("@", 1)[0], token)
        if refused is not None:
            if tid:
                self.core.send_error(tid, call_failed(refused.message, reason=refused.code))
            return
        self.conn_token = token
        if tid:
            self.core.send_result(tid, self.registered_user)

    def _unregister(self) -> None:
        user, self.registered_user = self.registered_user, None
        if user is not None:
            try:
                self.manager.web_users.unregister(user, self)
            except CallRefused:
                pass  # telephony already stopped

    # WebUserEndpoint
    def busy(self) -> bool:
        leg = self.flash_leg
        return leg is None or not self.is_open or (leg.call is not None and not leg.call.ended)

    def invited(self, call: Call, caller: str, caller_display: str | None) -> RtmpLeg:
        leg = self.flash_leg
        assert leg is not None
        leg.states.clear()
        leg.attach_call(call)
        self.rpc_callback("sessionId", call.session_id)
        to = call.sip.invite.uri if call.sip is not None and call.sip.invite is not None else call.destination
        self.rpc_callback("invited", party(call.route.target, caller_display), f"<{to}>")
        return leg

    def unregistered(self, user: str, reason: str) -> None:
        if self.registered_user == user:
            self.registered_user = None
            log.info("RTMP {client}: registration of {user} ended: {reason}", client=self.client, user=safe(user), reason=reason)
            self.rpc_callback("unregistered", reason)

    # ---- commands (Flash RPC)
    def rpc_callback(self, name: str, *args: Any) -> None:
        """Server -> client invocation (ringing, accepted, ..., sessionId)."""
        if not self.is_open:
            return
        try:
            self.core.call_client(name, *args)
        except LocalProtocolError:
            return
        self.flush()

    def _current_call(self) -> Call | None:
        if self.flash_leg is not None:
            return self.flash_leg.call
        for leg in reversed(list(self.publishes.values())):
            if leg.call is not None and not leg.call.ended:
                return leg.call
        return None

    def _on_command(self, ev: CommandReceived) -> None:
        name, tid, args = ev.name, ev.transaction_id, ev.args
        handler = {
            "invite": self._rpc_invite,
            "accept": self._rpc_accept,
            "reject": self._rpc_reject,
            "bye": self._rpc_bye,
            "sendDTMF": self._rpc_send_dtmf,
            "hold": self._rpc_hold,
            "register": self._rpc_register,
            "sendData": self._rpc_send_data,
        }.get(name)
        if handler is not None:
            handler(tid, args)
            return
        if name in ("FCSubscribe", "FCUnsubscribe", "_checkbw"):
            if tid:
                self.core.send_result(tid, Undefined)
            return
        if tid:
            self.core.send_error(tid, call_failed(f"unknown method {name!r}"))

    def _rpc_invite(self, tid: float, args: list[Any]) -> None:
        leg = self.flash_leg
        if leg is None:
            self.core.send_error(tid, call_failed("invite needs rtmp://HOST/sip/USER", reason="not_sip"))
            return
        if (leg.call is not None and not leg.call.ended) or self._inviting:
            self.core.send_error(tid, call_failed("a call is already in progress", reason="call_in_progress"))
            return
        destination = args[0] if args else None
        session_id: Any = None
        if len(args) > 1:
            opt = args[1]
            if isinstance(opt, str) and opt:
                session_id = opt
            elif isinstance(opt, dict):
                session_id = opt.get("sessionId") or None
        leg.states.clear()
        try:
            if session_id is not None and not isinstance(session_id, str):
                raise CallRefused("invalid_session_id", "sessionId must be a string of digits")
            # the URL's USER is a name the client chose: the identity is the token's sub or none
            if getattr(self.manager, "cluster", None) is not None:
                # a cluster node: the cluster-wide limits and session ID first (one await)
                admission = self.manager.admit(leg, destination, session_id=session_id, display_name=self.display_name,
                                               token=self.conn_token, source_ip=self.peer_ip)
                self._inviting = True
                d = aio.as_deferred(self._invite_reserved(tid, leg, destination, admission))
                d.addErrback(lambda f: log.failure("RTMP {client}: invite failed", f, client=self.client))
                return
            call = leg.place(self.manager, destination, session_id=session_id, display_name=self.display_name,
                             token=self.conn_token, source_ip=self.peer_ip)
        except CallRefused as e:
            self._invite_refused(tid, e)
            return
        self._invite_placed(tid, call)

    async def _invite_reserved(self, tid: float, leg: RtmpLeg, destination: Any, admission: Any) -> None:
        """The rest of an ``invite`` on a cluster node: ``CallManager.reserve``, then the call."""
        try:
            try:
                call = await self._place_reserved(leg, destination, admission, lambda: self.is_open and self.flash_leg is leg)
            except CallRefused as e:
                if self.is_open:
                    self._invite_refused(tid, e)
                    self.flush()
                return
            if call is not None:
                self._invite_placed(tid, call)
                self.flush()
        finally:
            self._inviting = False

    def _invite_refused(self, tid: float, e: CallRefused) -> None:
        log.info("RTMP {client}: invite refused: {code}", client=self.client, code=e.code)
        self.core.send_error(tid, call_failed(e.message, reason=e.code))
        self.rpc_callback("rejected", e.code)

    def _invite_placed(self, tid: float, call: Call) -> None:
        if tid:
            self.core.send_result(tid, call.session_id)
        self.rpc_callback("sessionId", call.session_id)

    def _incoming_call(self) -> Call | None:
        """The call offered to this client (``invited``) and not answered yet."""
        leg = self.flash_leg
        call = leg.call if leg is not None else None
        if call is None or call.ended or call.direction != "inbound" or call.answer_sdp is not None:
            return None
        return call

    def _rpc_accept(self, tid: float, args: list[Any]) -> None:
        """``accept()``: answer the call offered with ``invited`` (200 OK toward SIP); audio then
        flows on the connection's publish/play streams as for an outgoing call; ``accepted``
        follows when the caller's ACK arrives."""
        call = self._incoming_call()
        if call is None:
            if tid:
                self.core.send_error(tid, call_failed("no incoming call", reason="no_call"))
            return
        try:
            self.manager.accept_inbound(call)
        except CallRefused as e:
            if tid:
                self.core.send_error(tid, call_failed(e.message, reason=e.code))
            return
        if tid:
            self.core.send_result(tid, call.session_id)

    def _rpc_reject(self, tid: float, args: list[Any]) -> None:
        """``reject([reason])``: refuse the offered call: 486 Busy Here, or 603 Decline when the
        reason is ``"decline"``/``"603"``."""
        call = self._incoming_call()
        leg = self.flash_leg
        if call is None or leg is None:
            if tid:
                self.core.send_error(tid, call_failed("no incoming call", reason="no_call"))
            return
        reason = args[0] if args and isinstance(args[0], str) else ""
        status = 603 if reason.strip().lower() in ("decline", "declined", "603") else 486
        leg.release_call(call)
        self.manager.reject_inbound(call, status)
        if tid:
            self.core.send_result(tid, True)

    def _rpc_bye(self, tid: float, args: list[Any]) -> None:
        if self.flash_leg is not None and self.flash_leg.call is not None:
            self.flash_leg.client_hangup()
        else:
            for sid in list(self.publishes):
                self._end_publish(sid, "bye")
        if tid:
            self.core.send_result(tid, True)

    def _rpc_send_dtmf(self, tid: float, args: list[Any]) -> None:
        call = self._current_call()
        digits = args[0] if args else None
        if call is None or call.state is CallState.ENDED:
            self.core.send_error(tid, call_failed("no call in progress", reason="no_call"))
            return
        if not isinstance(digits, str) or not digits or len(digits) > 32:
            self.core.send_error(tid, call_failed("sendDTMF needs 1-32 digits", reason="invalid_dtmf"))
            return
        try:
            call.send_dtmf(digits)
        except CallRefused as e:
            self.core.send_error(tid, call_failed(e.message, reason=e.code))
            return
        if tid:
            self.core.send_result(tid, True)

    def _rpc_send_data(self, tid: float, args: list[Any]) -> None:
        """``sendData(message)``: to every watcher of the current call, label ``webgate`` (a string
        as it is, a ByteArray as binary, another value as its JSON). ``_result`` ``true``;
        ``_error`` ``no_call`` without a live call, ``data_dropped`` when the message was over
        ``[video] max_data_bytes`` or past ``data_rate_per_s``."""
        leg = self._data_leg()
        if leg is None or not args:
            if tid:
                reason = "no_call" if leg is None else "invalid_data"
                self.core.send_error(tid, call_failed("sendData needs a call and a message", reason=reason))
            return
        if not leg.send_data(args[0]):
            if tid:
                self.core.send_error(tid, call_failed("the message was dropped (size or rate)", reason="data_dropped"))
            return
        if tid:
            self.core.send_result(tid, True)

    def _data_leg(self) -> RtmpLeg | None:
        """The leg whose call ``sendData`` goes to: the Flash RPC call, else the newest live publish."""
        if self.flash_leg is not None:
            call = self.flash_leg.call
            return self.flash_leg if call is not None and not call.ended else None
        for leg in reversed(list(self.publishes.values())):
            if leg.call is not None and not leg.call.ended:
                return leg
        return None

    def _rpc_hold(self, tid: float, args: list[Any]) -> None:
        leg = self.flash_leg
        if leg is None or leg.call is None:
            self.core.send_error(tid, call_failed("no call in progress", reason="no_call"))
            return
        hold = bool(args[0]) if args else True

        def done(held: bool) -> None:
            # ``_result`` = the hold state in effect after the far end's answer
            if tid and not self.lost and not self.core.closed:
                self.core.send_result(tid, held)
                self.flush()

        try:
            leg.hold(hold, done)  # local mute at once; the SIP far end learns by re-INVITE
        except CallRefused as e:
            self.core.send_error(tid, call_failed(e.message, reason=e.code))

    def _flash_call_ended(self, leg: RtmpLeg, call: Call, cause: str, status: int | None) -> None:
        leg.set_hold(False)

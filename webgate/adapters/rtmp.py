"""RTMP ingress on Twisted: a thin adapter over the sans-IO core in :mod:`webgate.proto.rtmp`.

Two ways to signal a call (see docs/protocol.md, "RTMP"):

* **Encoder style** (ffmpeg, OBS, hardware encoders): publishing ``rtmp://HOST/call/DESTINATION``
  places a call; playing ``rtmp://HOST/call/DESTINATION`` (while that publish is live) or
  ``rtmp://HOST/session/SESSIONID`` receives the far end's audio; ending the publish hangs up.
* **Flash RPC** (siprtmp-compatible): connect to ``rtmp://HOST/sip/USER[@DOMAIN]``, then call
  ``invite``/``accept``/``reject``/``bye``/``sendDTMF``/``hold``; the server calls back
  ``ringing``/``accepted``/``rejected``/``cancelled``/``byed``/``invited``/``dtmf``/``sessionId``.

Adapter rule: after every call into the core, write ``data_to_send()`` and drop the connection
if the core is ``closed``. A failure while handling one connection closes that connection only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol, tcp
from twisted.logger import Logger

from webgate.calls.call import Call, CallState
from webgate.calls.errors import CallRefused
from webgate.calls.rtmp_leg import (
    Player,
    RtmpLeg,
    default_codec_for_flash,
    normalise_codec,
    split_stream_name,
)
from webgate.calls.users import check_registration, party
from webgate.ops.metrics import count_error
from webgate.proto.errors import LocalProtocolError
from webgate.proto.rtmp import (
    AudioReceived,
    CommandReceived,
    ConnectRequested,
    DataReceived,
    Event,
    PlayRequested,
    ProtocolViolation,
    PublishRequested,
    RtmpLimits,
    RtmpServerConfig,
    RtmpServerConnection,
    StreamClosed,
    VideoReceived,
)
from webgate.proto.rtmp.amf import Undefined
from webgate.security.tokens import TokenError, call_access_allowed, looks_like_jwt

log = Logger()

CONNECT_TIMEOUT_S = 10.0  # handshake + connect must be done by then
APP_CALL = "call"
APP_SESSION = "session"
APP_SIP = "sip"
_REFUSED_BAD_NAME = {"invalid_destination", "destination_not_allowed", "invalid_session_id", "session_id_in_use"}
# the call token on RTMP: "?token=" on the stream name (encoder style) or on the connect URL
# (rtmp://HOST/call?token=...), or the Flash RPC connect's second argument when it is a JWT
TOKEN_OPTION = "token"


def _call_failed(description: str, **extra: Any) -> dict[str, Any]:
    info = {"level": "error", "code": "NetConnection.Call.Failed", "description": description}
    info.update(extra)
    return info


class _StreamSink:
    """A player's RTMP stream on one connection (implements rtmp_leg.AudioSink)."""

    def __init__(self, conn: RtmpProtocol, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.live = True

    @property
    def open(self) -> bool:
        return self.live and self.conn.is_open

    def send_audio_tag(self, timestamp_ms: int, data: bytes) -> None:
        if not self.open:
            return
        try:
            self.conn.core.send_audio(self.stream_id, timestamp_ms, data)
        except LocalProtocolError:
            self.live = False
            return
        self.conn.flush()


class RtmpProtocol(protocol.Protocol):
    """One RTMP connection. In Flash RPC mode with a call token whose ``sub`` is the connect
    URL's user, it is also the registration of that web user (``webgate.calls.users``):
    calls from SIP toward the user are offered here (``invited``)."""

    transport: Any
    kind = "rtmp"  # as a WebUserEndpoint

    def __init__(self, factory: RtmpFactory, peer_ip: str) -> None:
        self.factory = factory
        self.peer_ip = peer_ip
        self.client = peer_ip
        self.core = RtmpServerConnection(factory.server_config)
        self.mode: str | None = None  # "call" | "session" | "sip"
        self.conn_codec: str | None = None  # from connect arguments
        self.flash_leg: RtmpLeg | None = None
        self.flash_user = ""
        self.display_name: str | None = None
        self.conn_token: str | None = None  # the connection's call token (never logged)
        self.publishes: dict[int, RtmpLeg] = {}  # stream id -> leg (encoder style)
        self.flash_publish: int | None = None  # stream id of the Flash mic stream
        self.players: dict[int, tuple[Player, _StreamSink, RtmpLeg]] = {}
        self.destination_by_stream: dict[int, str] = {}
        self.lost = False
        self._timeout: Any = None
        self.media_dropped = 0
        self.registered_user: str | None = None  # the web user this connection receives calls for
        self.grant: Any = None  # the registration token's grant
        self._write_through = False

    # ---- Twisted
    def connectionMade(self) -> None:
        t = self.transport
        # small real-time messages: no Nagle delay behind an unacknowledged one
        if hasattr(t, "setTcpNoDelay"):
            try:
                t.setTcpNoDelay(True)
            except OSError:
                pass
        # plain TCP (not TLS): flush() may hand bytes to the socket at once (see _write)
        self._write_through = isinstance(t, tcp.Connection)
        peer = self.transport.getPeer()
        self.client = f"{getattr(peer, 'host', self.peer_ip)}:{getattr(peer, 'port', 0)}"
        self._timeout = self.factory.reactor.callLater(self.factory.connect_timeout_s, self._connect_timeout)

    def dataReceived(self, data: bytes) -> None:
        if self.lost or self.core.closed:
            return
        events = self.core.receive_data(data, self.factory.reactor.seconds())
        for ev in events:
            if self.core.closed and not isinstance(ev, ProtocolViolation):
                # bad input later in this same read closed the core: act on nothing before it (no call
                # placed, no reply) -- connectionLost cleans up what earlier reads started
                continue
            try:
                self._handle(ev)
            except Exception:  # noqa: BLE001 - errors at the edge close this connection only
                log.failure("RTMP {client}: failed handling {event}", client=self.client, event=type(ev).__name__)
                self.core.close()
            if self.core.closed:
                break
        self.flush()

    def connectionLost(self, reason: Any = None) -> None:
        if self.lost:
            return
        self.lost = True
        self.core.close()
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        for sid in list(self.players):
            self._drop_player(sid)
        for sid in list(self.publishes):
            self._end_publish(sid, "connection lost")
        self._unregister()
        if self.flash_leg is not None:
            self.flash_leg.flash = None
            self.flash_leg.client_hangup()
            self.flash_leg = None
        self.factory.connection_lost(self)

    # ---- helpers
    @property
    def is_open(self) -> bool:
        return not self.lost and not self.core.closed

    def flush(self) -> None:
        if self.lost:
            return
        out = self.core.data_to_send()
        if out:
            self._write(out)
        if self.core.closed:
            self.transport.loseConnection()

    def _write(self, data: bytes) -> None:
        """``transport.write``, but straight to the socket when nothing is queued before it.

        Twisted queues every write and sends it on the next writable event, registering and
        unregistering the socket with the selector each time: for a player that gets one small
        audio message every 20 ms that is two epoll_ctl calls and a loop turn per message (a
        quarter of an RTMP call's CPU).  Like asyncio's own transports, try the send first; what
        the kernel does not take goes to Twisted's buffer as before (so order, flow control and
        error handling stay Twisted's)."""
        t = self.transport
        if (
            self._write_through
            and not t.TLS
            and t.connected
            and not t.disconnecting
            and not t._tempDataLen
            and len(t.dataBuffer) == t.offset
        ):
            try:
                n = t.socket.send(data)
            except OSError:  # EAGAIN, or an error Twisted's own write path will report
                n = 0
            if n >= len(data):
                return
            data = data[n:]
        t.write(data)

    def close(self) -> None:
        self.core.close()
        self.flush()

    def _connect_timeout(self) -> None:
        self._timeout = None
        if not self.core.connected and not self.lost:
            log.info("RTMP {client}: no connect within {s} s, closing", client=self.client, s=self.factory.connect_timeout_s)
            self.close()

    @property
    def manager(self) -> Any:
        return self.factory.manager

    # ---- event dispatch
    def _handle(self, ev: Event) -> None:
        if isinstance(ev, AudioReceived):
            self._on_audio(ev)
        elif isinstance(ev, (VideoReceived, DataReceived)):
            self.media_dropped += 1  # video and data never reach SIP (kept for a later issue)
        elif isinstance(ev, ConnectRequested):
            self._on_connect(ev)
        elif isinstance(ev, PublishRequested):
            self._on_publish(ev)
        elif isinstance(ev, PlayRequested):
            self._on_play(ev)
        elif isinstance(ev, CommandReceived):
            self._on_command(ev)
        elif isinstance(ev, StreamClosed):
            self._on_stream_closed(ev.stream_id)
        elif isinstance(ev, ProtocolViolation):
            log.info("RTMP {client}: protocol violation: {message}", client=self.client, message=ev.message)
            count_error("rtmp_protocol")

    # ---- connect
    def _on_connect(self, ev: ConnectRequested) -> None:
        app, _, app_query = ev.app.partition("?")
        base, _, rest = app.strip("/").partition("/")
        base = base.lower()
        _, opts = split_stream_name("?" + app_query) if app_query else ("", {})
        codec = normalise_codec(opts.get("codec"))
        for arg in ev.args:
            if isinstance(arg, dict) and "codec" in arg:
                codec = normalise_codec(arg.get("codec")) or codec
        token = opts.get(TOKEN_OPTION) or None
        if base in (APP_CALL, APP_SESSION) and not rest:
            self.mode = base
            self.conn_codec = codec
            self.conn_token = token
            self.core.accept_connect()
        elif base == APP_SIP:
            user = rest
            if not user or len(user) > 128 or any(c.isspace() or c in "<>\"'" for c in user):
                self.core.reject_connect(
                    "NetConnection.Connect.Rejected", "connect to rtmp://HOST/sip/USER[@DOMAIN]"
                )
                return
            self.mode = APP_SIP
            self.flash_user = user
            args = list(ev.args)
            # (auth name, password or token, display name[, options]); the password is never logged
            display = args[2] if len(args) > 2 and isinstance(args[2], str) and args[2] else None
            self.display_name = display
            # the second argument is a call token when it has the JWT form; anything else is a
            # siprtmp-style password, which grants nothing (only public destinations)
            secret = args[1] if len(args) > 1 else None
            self.conn_token = secret if looks_like_jwt(secret) else token
            self.conn_codec = codec or default_codec_for_flash(ev.command_object.get("flashVer"))
            leg = RtmpLeg(self.client, flash=self, label=user)
            leg.on_ended.append(self._flash_call_ended)
            self.flash_leg = leg
            self.core.accept_connect()
            if looks_like_jwt(self.conn_token):
                self._register(user.split("@", 1)[0])
        else:
            self.core.reject_connect(
                "NetConnection.Connect.InvalidApp", f"unknown application {base!r}: use call, session or sip"
            )
            return
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        log.info("RTMP {client}: connected to {app} ({codec})", client=self.client, app=app, codec=self.conn_codec)

    # ---- registration as a web user (calls toward this client)
    def _register(self, user: str) -> None:
        """Register ``user`` for this connection: the connect's token must have ``sub`` == user.
        The client hears ``registered(user)`` or ``unregistered(code)`` (docs/protocol.md)."""
        manager = self.manager
        try:
            self.grant = check_registration(user, self.conn_token, manager.tokens, manager.wall_clock())
        except CallRefused as e:
            log.info("RTMP {client}: registration of {user!r} refused: {code}", client=self.client, user=user[:64], code=e.code)
            self.rpc_callback("unregistered", e.code)
            return
        self.registered_user = user
        manager.web_users.register(user, self)
        log.info("RTMP {client}: registered web user {user}", client=self.client, user=user)
        self.rpc_callback("registered", user)

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
            log.info("RTMP {client}: registration of {user} ended: {reason}", client=self.client, user=user, reason=reason)
            self.rpc_callback("unregistered", reason)

    # ---- publish
    def _on_publish(self, ev: PublishRequested) -> None:
        name, opts = split_stream_name(ev.name)
        if self.mode == APP_SIP:
            if self.flash_publish is not None:
                self.core.reject_publish(ev.stream_id, "NetStream.Publish.BadName", "already publishing")
                return
            self.flash_publish = ev.stream_id
            self.core.accept_publish(ev.stream_id)
            return
        if self.mode != APP_CALL:
            self.core.reject_publish(
                ev.stream_id, "NetStream.Publish.Failed", "publish to rtmp://HOST/call/DESTINATION"
            )
            self.close()
            return
        leg = RtmpLeg(self.client, label=name)
        try:
            call = self.manager.place_call(
                leg,
                name,
                session_id=opts.get("session") or opts.get("sessionid") or None,
                display_name=opts.get("name") or None,
                token=opts.get(TOKEN_OPTION) or self.conn_token,
                source_ip=self.peer_ip,
            )
        except CallRefused as e:
            log.info("RTMP {client}: publish to {dest!r} refused: {code}", client=self.client, dest=name, code=e.code)
            code = "NetStream.Publish.BadName" if e.code in _REFUSED_BAD_NAME else "NetStream.Publish.Failed"
            self.core.reject_publish(ev.stream_id, code, f"{e.code}: {e.message}")
            self.close()  # an encoder has nothing else to do on this connection
            return
        leg.attach_call(call)
        stream_id = ev.stream_id

        def ended(lg: RtmpLeg, c: Call, cause: str, status: int | None) -> None:
            self._encoder_call_ended(stream_id, lg, c, cause)

        leg.on_ended.append(ended)
        self.publishes[ev.stream_id] = leg
        self.destination_by_stream[ev.stream_id] = name
        self.factory.add_live(name, leg)
        self.core.accept_publish(ev.stream_id, {"sessionId": call.session_id, "destination": name})

    def _encoder_call_ended(self, stream_id: int, leg: RtmpLeg, call: Call, cause: str) -> None:
        """The call of an encoder-style publish ended (far end, limits, or the publisher)."""
        self.factory.remove_live(leg)
        for player in list(leg.players):
            self.factory.end_player(player)
        leg.players.clear()
        if self.publishes.get(stream_id) is leg:
            del self.publishes[stream_id]
            self.destination_by_stream.pop(stream_id, None)
            if cause != "client_hangup" and self.is_open:
                self.core.send_status(
                    stream_id, "status", "NetStream.Unpublish.Success", f"call ended: {cause}",
                    sessionId=call.session_id, cause=cause,
                )
                self.flush()
                if not self.publishes and not self.players:
                    self.close()

    def _end_publish(self, stream_id: int, why: str) -> None:
        leg = self.publishes.get(stream_id)
        if leg is not None:
            log.info("RTMP {client}: publish ended ({why}), hanging up", client=self.client, why=why)
            leg.client_hangup()

    # ---- play
    def _on_play(self, ev: PlayRequested) -> None:
        name, opts = split_stream_name(ev.name)
        requested = opts.get("codec")
        codec = normalise_codec(requested) if requested is not None else None
        if requested is not None and codec is None:
            self.core.reject_play(ev.stream_id, "NetStream.Play.Failed", f"unknown codec {requested!r}")
            return
        leg: RtmpLeg | None = None
        if self.mode == APP_SIP:
            leg = self.flash_leg
            codec = codec or self.conn_codec or "nellymoser"
        elif self.mode == APP_CALL:
            leg = self.factory.live_leg(name)
            codec = codec or self.conn_codec or "aac"
        elif self.mode == APP_SESSION:
            call = self.manager.registry.by_session_id(name) if name.isdigit() else None
            if call is not None and isinstance(call.leg, RtmpLeg) and not call.ended:
                leg = call.leg
            codec = codec or self.conn_codec or "aac"
        if leg is None:
            self.core.reject_play(ev.stream_id, "NetStream.Play.StreamNotFound", f"no live call {name!r}")
            return
        if self.mode != APP_SIP and leg.call is not None and not self._may_listen(leg.call, opts.get(TOKEN_OPTION) or self.conn_token):
            # the same answer as for a call that does not exist: no oracle for live session IDs
            log.info("RTMP {client}: play of {name} refused (token)", client=self.client, name=name)
            self.core.reject_play(ev.stream_id, "NetStream.Play.StreamNotFound", f"no live call {name!r}")
            return
        if ev.stream_id in self.players:
            self._drop_player(ev.stream_id)
        sink = _StreamSink(self, ev.stream_id)
        player = Player(sink, codec or "aac", owner=self)
        sip_codec = leg.call.codec if leg.call is not None else None
        info = {"sessionId": leg.call.session_id} if leg.call is not None else None
        self.core.accept_play(ev.stream_id, metadata=player.metadata(sip_codec), info=info)
        leg.add_player(player)
        self.players[ev.stream_id] = (player, sink, leg)
        log.info("RTMP {client}: playing {name} as {codec}", client=self.client, name=name, codec=player.choice)

    def _may_listen(self, call: Call, token: str | None) -> bool:
        """Listening to a call placed with a token needs a valid token of the same identity
        (``sub``) or naming the call's ``session_id`` (docs/protocol.md, "Who may listen")."""
        manager = self.manager
        try:
            return call_access_allowed(call, token, manager.tokens, now=manager.wall_clock())
        except TokenError:
            return False

    def _drop_player(self, stream_id: int) -> None:
        entry = self.players.pop(stream_id, None)
        if entry is not None:
            player, sink, leg = entry
            sink.live = False
            leg.remove_player(player)

    def end_player(self, player: Player) -> None:
        """The call a player listens to has ended: Stream EOF + NetStream.Play.Stop."""
        for sid, (p, sink, _leg) in list(self.players.items()):
            if p is player:
                del self.players[sid]
                sink.live = False
                if self.is_open:
                    try:
                        self.core.end_stream(sid)
                    except LocalProtocolError:
                        pass
                    self.flush()

    # ---- streams closing
    def _on_stream_closed(self, stream_id: int) -> None:
        if stream_id in self.publishes:
            self._end_publish(stream_id, "unpublished")
        if stream_id == self.flash_publish:
            self.flash_publish = None
        self._drop_player(stream_id)

    # ---- audio in
    def _on_audio(self, ev: AudioReceived) -> None:
        leg = self.publishes.get(ev.stream_id)
        if leg is None and ev.stream_id == self.flash_publish:
            leg = self.flash_leg
        if leg is not None:
            leg.audio_tag(ev.data)

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
        }.get(name)
        if handler is not None:
            handler(tid, args)
            return
        if name in ("FCSubscribe", "FCUnsubscribe", "_checkbw"):
            if tid:
                self.core.send_result(tid, Undefined)
            return
        if tid:
            self.core.send_error(tid, _call_failed(f"unknown method {name!r}"))

    def _rpc_invite(self, tid: float, args: list[Any]) -> None:
        leg = self.flash_leg
        if leg is None:
            self.core.send_error(tid, _call_failed("invite needs rtmp://HOST/sip/USER", reason="not_sip"))
            return
        if leg.call is not None and not leg.call.ended:
            self.core.send_error(tid, _call_failed("a call is already in progress", reason="call_in_progress"))
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
            call = self.manager.place_call(
                leg,
                destination,
                session_id=session_id,
                display_name=self.display_name,
                identity=self.flash_user,
                token=self.conn_token,
                source_ip=self.peer_ip,
            )
        except CallRefused as e:
            log.info("RTMP {client}: invite refused: {code}", client=self.client, code=e.code)
            self.core.send_error(tid, _call_failed(e.message, reason=e.code))
            self.rpc_callback("rejected", e.code)
            return
        leg.attach_call(call)
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
                self.core.send_error(tid, _call_failed("no incoming call", reason="no_call"))
            return
        try:
            self.manager.accept_inbound(call)
        except CallRefused as e:
            if tid:
                self.core.send_error(tid, _call_failed(e.message, reason=e.code))
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
                self.core.send_error(tid, _call_failed("no incoming call", reason="no_call"))
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
            self.core.send_error(tid, _call_failed("no call in progress", reason="no_call"))
            return
        if not isinstance(digits, str) or not digits or len(digits) > 32:
            self.core.send_error(tid, _call_failed("sendDTMF needs 1-32 digits", reason="invalid_dtmf"))
            return
        try:
            call.send_dtmf(digits)
        except CallRefused as e:
            self.core.send_error(tid, _call_failed(e.message, reason=e.code))
            return
        if tid:
            self.core.send_result(tid, True)

    def _rpc_hold(self, tid: float, args: list[Any]) -> None:
        leg = self.flash_leg
        if leg is None or leg.call is None:
            self.core.send_error(tid, _call_failed("no call in progress", reason="no_call"))
            return
        hold = bool(args[0]) if args else True
        call = leg.call
        leg.set_hold(hold)  # local mute at once; the SIP far end learns by re-INVITE

        def done(ok: bool, status: int | None) -> None:
            # ``_result`` = the hold state in effect after the far end's answer
            if not ok and leg.call is call:
                leg.set_hold(call.held)
            if tid and not self.lost and not self.core.closed:
                self.core.send_result(tid, call.held)
                self.flush()

        try:
            call.manager.hold(call, hold, done)
        except CallRefused as e:
            leg.set_hold(call.held)
            self.core.send_error(tid, _call_failed(e.message, reason=e.code))

    def _flash_call_ended(self, leg: RtmpLeg, call: Call, cause: str, status: int | None) -> None:
        leg.set_hold(False)


class RtmpFactory(protocol.Factory):
    """``RtmpFactory(manager, rtmp_config, reactor)``.

    ``manager`` is a :class:`~webgate.calls.manager.CallManager`, or anything with a ``manager``
    attribute holding one once started (the TelephonyService), looked up per connection.
    """

    noisy = False  # no "Starting factory" lines (the gateway logs its listeners itself)

    def __init__(self, manager: Any, rtmp_config: Any, reactor: Any) -> None:
        self._manager_source = manager
        self.config = rtmp_config
        self.reactor = reactor
        self.server_config = RtmpServerConfig(
            limits=RtmpLimits(
                max_chunk_size=rtmp_config.max_chunk_size,
                max_message_length=rtmp_config.max_message_size,
                max_streams=rtmp_config.max_streams_per_connection,
            )
        )
        self.max_per_ip = rtmp_config.max_connections_per_ip
        self.by_ip: dict[str, int] = {}
        self.connections: set[RtmpProtocol] = set()
        self.live: dict[str, list[RtmpLeg]] = {}  # destination -> encoder-style legs, oldest first
        self.refused_connections = 0
        self.connect_timeout_s = CONNECT_TIMEOUT_S

    @property
    def manager(self) -> Any:
        src = self._manager_source
        if hasattr(src, "place_call"):
            return src
        mgr = getattr(src, "manager", None)
        if mgr is None:
            raise CallRefused("shutting_down", "telephony is not running", 503)
        return mgr

    def buildProtocol(self, addr: Any) -> RtmpProtocol | None:
        ip = getattr(addr, "host", str(addr))
        if self.by_ip.get(ip, 0) >= self.max_per_ip:
            self.refused_connections += 1
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                "RTMP: connection limit for {ip} reached ({n})", ip=ip, n=self.max_per_ip)
            return None
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        p = RtmpProtocol(self, ip)
        self.connections.add(p)
        return p

    def connection_lost(self, p: RtmpProtocol) -> None:
        if p in self.connections:
            self.connections.discard(p)
            n = self.by_ip.get(p.peer_ip, 0) - 1
            if n > 0:
                self.by_ip[p.peer_ip] = n
            else:
                self.by_ip.pop(p.peer_ip, None)

    # ---- live encoder-style calls by destination (for play rtmp://HOST/call/DESTINATION)
    def add_live(self, destination: str, leg: RtmpLeg) -> None:
        self.live.setdefault(destination, []).append(leg)

    def remove_live(self, leg: RtmpLeg) -> None:
        for dest, legs in list(self.live.items()):
            if leg in legs:
                legs.remove(leg)
            if not legs:
                del self.live[dest]

    def live_leg(self, destination: str) -> RtmpLeg | None:
        """The most recent live publish to ``destination``."""
        for leg in reversed(self.live.get(destination, [])):
            if leg.call is not None and not leg.call.ended:
                return leg
        return None

    def end_player(self, player: Player) -> None:
        owner = player.owner
        if isinstance(owner, RtmpProtocol):
            owner.end_player(player)

    def close_all(self) -> None:
        for p in list(self.connections):
            p.close()

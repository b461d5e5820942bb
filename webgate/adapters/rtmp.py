"""RTMP ingress on Twisted: a thin adapter over the sans-IO core in :mod:`webgate.proto.rtmp`.

Two ways to signal a call (see docs/protocol.md, "RTMP"):

* **Encoder style** (ffmpeg, OBS, hardware encoders): publishing ``rtmp://HOST/call/DESTINATION``
  places a call; playing ``rtmp://HOST/call/DESTINATION`` (while that publish is live) or
  ``rtmp://HOST/session/SESSIONID`` receives the far end's audio; ending the publish hangs up.
* **Flash RPC** (siprtmp-compatible): connect to ``rtmp://HOST/sip/USER[@DOMAIN]``, then call
  ``invite``/``accept``/``reject``/``bye``/``sendDTMF``/``hold``/``sendData``; the server calls back
  ``ringing``/``accepted``/``rejected``/``cancelled``/``byed``/``invited``/``dtmf``/``sessionId``/
  ``watchers``/``data``.

Watching a call (issue 14): playing ``rtmp://HOST/watch/SESSIONID?token=JWT`` gives the caller's
video and data (``CallManager.authorize_watch``, then a
:class:`~webgate.legs.rtmp_watch.RtmpWatcher` on the call's hub). A publisher's video tags and
data messages go to its call's hub (never to SIP).

Adapter rule: after every call into the core, write ``data_to_send()`` and drop the connection
if the core is ``closed``. A failure while handling one connection closes that connection only.

The Flash RPC commands are :mod:`webgate.adapters.rtmp_rpc`; what reaches the socket and how long
it waits, :mod:`webgate.adapters.outbox`; what a call does with the audio (FLV tags <-> the SIP
leg, players, pacing), :mod:`webgate.legs.rtmp`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger

from webgate.adapters.guard import DeadlineTimer
from webgate.adapters.outbox import Outbox
from webgate.adapters.rtmp_rpc import APP_SIP, FlashRpc
from webgate.calls.call import Call
from webgate.calls.errors import CallRefused
from webgate.calls.policy import client_ip
from webgate.calls.watch import NOT_FOUND
from webgate.counters import count_error
from webgate.legs.hub import TOO_MANY_WATCHERS, MediaHub, WatchRefused
from webgate.legs.rtmp import (
    LiveLegs,
    Player,
    RtmpLeg,
    default_codec_for_flash,
    essential_tag,
    may_listen,
    normalise_codec,
    split_stream_name,
)
from webgate.legs.rtmp_watch import RtmpWatcher
from webgate.logsafe import safe
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
from webgate.security.connlimit import PROBE, ConnectionLimiter, StreamDeadlines
from webgate.security.tokens import TokenError, looks_like_jwt, verify_token

log = Logger()

APP_CALL = "call"
APP_SESSION = "session"
APP_WATCH = "watch"
_REFUSED_BAD_NAME = {"invalid_destination", "destination_not_allowed", "invalid_session_id", "session_id_in_use"}
# the call token on RTMP: "?token=" on the stream name (encoder style) or on the connect URL
# (rtmp://HOST/call?token=...), or the Flash RPC connect's second argument when it is a JWT
TOKEN_OPTION = "token"


class _StreamSink:
    """A player's RTMP stream on one connection (implements webgate.legs.rtmp.AudioSink)."""

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
        if not self.conn.audio_wanted(data):
            return  # the client does not read in time (back-pressure): a gap, not a delay
        try:
            self.conn.core.send_audio(self.stream_id, timestamp_ms, data)
        except LocalProtocolError:
            self.live = False
            return
        self.conn.flush()


class _WatchStream:
    """A watcher's RTMP stream on one connection (implements webgate.legs.rtmp_watch.WatchSink)."""

    def __init__(self, conn: RtmpProtocol, stream_id: int, session_id: str) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.session_id = session_id
        self.live = True

    @property
    def open(self) -> bool:
        return self.live and self.conn.is_open

    def writable(self) -> bool:
        return self.conn.video_wanted()

    def accept(self, metadata: dict[str, Any] | None) -> None:
        try:
            self.conn.core.accept_play(self.stream_id, metadata=metadata, info={"sessionId": self.session_id})
        except LocalProtocolError:
            self.live = False
            return
        self.conn.flush()

    def send_video(self, timestamp_ms: int, body: bytes) -> None:
        if not self.open:
            return
        try:
            self.conn.core.send_video(self.stream_id, timestamp_ms, body)
        except LocalProtocolError:
            self.live = False
            return
        self.conn.flush()

    def send_data(self, timestamp_ms: int, name: str, value: Any) -> None:
        if not self.open:
            return
        try:
            self.conn.core.send_data(self.stream_id, name, value, timestamp_ms=timestamp_ms)
        except LocalProtocolError:
            self.live = False
            return
        self.conn.flush()

    def end(self, cause: str) -> None:
        self.conn.end_watch(self.stream_id, cause)


class RtmpProtocol(FlashRpc, protocol.Protocol):
    """One RTMP connection. In Flash RPC mode with a call token whose ``sub`` is the connect
    URL's user, it is also the registration of that web user (``webgate.calls.users``):
    calls from SIP toward the user are offered here (``invited``). The Flash RPC commands and
    that registration are :class:`~webgate.adapters.rtmp_rpc.FlashRpc`'s."""

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
        self.watches: dict[int, tuple[RtmpWatcher, _WatchStream, MediaHub]] = {}  # stream id -> (watcher, sink, hub)
        self.destination_by_stream: dict[int, str] = {}
        self.lost = False
        self._timeout: Any = None
        self.deadlines: DeadlineTimer | None = None  # idle / partial-message / ping (factory settings)
        self.media_dropped = 0
        self.registered_user: str | None = None  # the web user this connection receives calls for
        self.grant: Any = None  # the registration token's grant
        self.outbox: Outbox | None = None
        self._linger: Any = None  # aborts a closed connection whose peer reads nothing
        self.play_failures = 0
        self.audio_dropped = 0  # audio tags not sent to this client's players (back-pressure)
        self.video_dropped = 0  # video tags and data not sent to this client's watchers (back-pressure)

    # ---- Twisted
    def connectionMade(self) -> None:
        t = self.transport
        # small real-time messages: no Nagle delay behind an unacknowledged one
        if hasattr(t, "setTcpNoDelay"):
            try:
                t.setTcpNoDelay(True)
            except OSError:
                pass
        self.outbox = Outbox(t, self.factory.reactor.seconds)
        peer = self.transport.getPeer()
        self.client = f"{getattr(peer, 'host', self.peer_ip)}:{getattr(peer, 'port', 0)}"
        self._timeout = self.factory.reactor.callLater(self.factory.connect_timeout_s, self._connect_timeout)
        f = self.factory
        self.deadlines = DeadlineTimer(
            f.reactor, StreamDeadlines(f.reactor.seconds(), f.idle_timeout_s, f.partial_timeout_s, f.idle_timeout_s / 2), self._deadline
        )

    def dataReceived(self, data: bytes) -> None:
        if self.lost or self.core.closed:
            return
        events = self.core.receive_data(data, self.factory.reactor.seconds())
        if self.deadlines is not None:
            self.deadlines.received(progress=bool(events), pending=self.core.pending_input > 0)
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
        if self.deadlines is not None:
            self.deadlines.cancel()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        for sid in list(self.players):
            self._drop_player(sid)
        for sid in list(self.watches):
            self._drop_watch(sid)
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
            if self.outbox is not None:
                self.outbox.write(out)
            else:
                self.transport.write(out)
        if self.core.closed:
            outbox = self.outbox
            if outbox is not None:
                if outbox.waiting_since is not None and self._linger is None:
                    # loseConnection waits for the bytes to go: not forever for a peer that reads nothing
                    self._linger = self.factory.reactor.callLater(self.factory.player_max_behind_s, self._abort_lingering)
                outbox.close()
            self.transport.loseConnection()

    def _abort_lingering(self) -> None:
        self._linger = None
        if not self.lost:
            log.info("RTMP {client}: closed, but its peer read nothing for {s} s: aborting", client=self.client, s=self.factory.player_max_behind_s)
            self.transport.abortConnection()

    def audio_wanted(self, tag: bytes) -> bool:
        """Back-pressure for this connection's players: False (drop the tag) once its unsent data
        has waited ``[rtmp] player_max_queue_ms``; past ``player_max_behind_s`` the connection is
        closed. The AAC sequence header is never dropped."""
        late = self._late()
        if late is None or late < 0:
            return late is None
        if essential_tag(tag):
            return True
        self.audio_dropped += 1
        self.factory.player_audio_dropped += 1
        self._note_drop("player", "audio", self.audio_dropped, late)
        return False

    def video_wanted(self) -> bool:
        """Back-pressure for this connection's watchers: False (the watcher drops video until the
        next keyframe, and data) once its unsent data has waited ``[rtmp] player_max_queue_ms``;
        past ``player_max_behind_s`` the connection is closed."""
        late = self._late()
        if late is None:
            return True
        if late >= 0:
            self.video_dropped += 1
            self.factory.watcher_video_dropped += 1
            self._note_drop("watcher", "video", self.video_dropped, late)
        return False

    def _late(self) -> float | None:
        """None: nothing waits too long. Else how long the unsent data has waited (seconds);
        -1.0 when past ``player_max_behind_s`` (the connection has just been aborted)."""
        outbox = self.outbox
        if outbox is None or outbox.waiting_since is None:
            return None
        waited = outbox.waited(self.factory.reactor.seconds())
        if waited > self.factory.player_max_behind_s:
            self._abort_slow(waited)
            return -1.0
        return None if waited * 1000.0 <= self.factory.player_max_queue_ms else waited

    def _note_drop(self, who: str, kind: str, n: int, waited: float) -> None:
        if n in (1, 100, 10000):
            queued = self.outbox.queued_bytes if self.outbox is not None else 0
            log.info(
                "RTMP {client}: slow {who}, {n} {kind} messages dropped ({waited:.1f} s behind, {queued} bytes queued)",
                client=self.client, who=who, n=n, kind=kind, waited=waited, queued=queued,
            )

    def _abort_slow(self, waited: float) -> None:
        log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
            "RTMP {client}: player {waited:.1f} s behind ({queued} bytes queued), closing the connection",
            client=self.client, waited=waited, queued=self.outbox.queued_bytes if self.outbox else 0,
        )
        self.factory.slow_players_closed += 1
        count_error("rtmp_slow_player")
        self.core.close()
        if self.outbox is not None:
            self.outbox.close()
        self.transport.abortConnection()  # loseConnection would wait for a reader that does not read

    def close(self) -> None:
        self.core.close()
        self.flush()

    def _connect_timeout(self) -> None:
        self._timeout = None
        if not self.core.connected and not self.lost:
            log.info("RTMP {client}: no connect within {s} s, closing", client=self.client, s=self.factory.connect_timeout_s)
            self.factory.limiter.note_closed("handshake")
            self.close()

    def _deadline(self, reason: str) -> None:
        """Idle: nothing received for ``[rtmp] idle_timeout_s`` (a ping went out at half of it);
        partial: a message started and nothing completed for ``partial_timeout_s``."""
        if self.lost:
            return
        if reason == PROBE:
            if self.core.connected:
                self.core.send_ping(int(self.factory.reactor.seconds() * 1000) & 0xFFFFFFFF)
                self.flush()
            return
        log.info("RTMP {client}: {reason} timeout, closing", client=self.client, reason=reason)
        self.factory.limiter.note_closed(reason)
        if self.deadlines is not None:
            self.deadlines.cancel()
        self.core.close()
        self.transport.abortConnection()  # the peer may not be reading either

    @property
    def manager(self) -> Any:
        return self.factory.manager

    # ---- event dispatch
    def _handle(self, ev: Event) -> None:
        if isinstance(ev, AudioReceived):
            self._on_audio(ev)
        elif isinstance(ev, VideoReceived):
            self.media_dropped += 1  # video and data never reach SIP: they go to the call's hub
            self._on_video(ev)
        elif isinstance(ev, DataReceived):
            self.media_dropped += 1
            self._on_data(ev)
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
            log.info("RTMP {client}: protocol violation: {message}", client=self.client, message=safe(ev.message))
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
        if base in (APP_CALL, APP_SESSION, APP_WATCH) and not rest:
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
            leg = RtmpLeg(self.client, flash=self, label=user, video=self.factory.video_config)
            leg.on_ended.append(self._flash_call_ended)
            self.flash_leg = leg
            self.core.accept_connect()
            if looks_like_jwt(self.conn_token):
                refused = self._register(user.split("@", 1)[0], self.conn_token)
                if refused is not None:
                    self.rpc_callback("unregistered", refused.code)
        else:
            self.core.reject_connect(
                "NetConnection.Connect.InvalidApp", f"unknown application {base!r}: use call, session, watch or sip"
            )
            return
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        log.info("RTMP {client}: connected to {app} ({codec})", client=self.client, app=safe(app), codec=self.conn_codec)

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
        leg = RtmpLeg(self.client, label=name, video=self.factory.video_config)
        try:
            call = leg.place(
                self.manager,
                name,
                session_id=opts.get("session") or opts.get("sessionid") or None,
                display_name=opts.get("name") or None,
                token=opts.get(TOKEN_OPTION) or self.conn_token,
                source_ip=self.peer_ip,
            )
        except CallRefused as e:
            log.info("RTMP {client}: publish to {dest} refused: {code}", client=self.client, dest=safe(name), code=e.code)
            code = "NetStream.Publish.BadName" if e.code in _REFUSED_BAD_NAME else "NetStream.Publish.Failed"
            self.core.reject_publish(ev.stream_id, code, f"{e.code}: {e.message}")
            self.close()  # an encoder has nothing else to do on this connection
            return
        stream_id = ev.stream_id

        def ended(lg: RtmpLeg, c: Call, cause: str, status: int | None) -> None:
            self._encoder_call_ended(stream_id, lg, c, cause)

        leg.on_ended.append(ended)
        self.publishes[ev.stream_id] = leg
        self.destination_by_stream[ev.stream_id] = name
        self.factory.live.add(name, leg)
        self.core.accept_publish(ev.stream_id, {"sessionId": call.session_id, "destination": name})

    def _encoder_call_ended(self, stream_id: int, leg: RtmpLeg, call: Call, cause: str) -> None:
        """The call of an encoder-style publish ended (far end, limits, or the publisher)."""
        self.factory.live.discard(leg)
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
        if self.mode == APP_WATCH:
            self._on_watch(ev.stream_id, name, opts)
            return
        requested = opts.get("codec")
        codec = normalise_codec(requested) if requested is not None else None
        if requested is not None and codec is None:
            self.core.reject_play(ev.stream_id, "NetStream.Play.Failed", f"unknown codec {requested!r}")
            return
        leg: RtmpLeg | None = None
        if self.mode == APP_SIP:
            leg = self.flash_leg  # the connection's own call: nothing to find, nothing to guess
            codec = codec or self.conn_codec or "nellymoser"
            if leg is None:
                self.core.reject_play(ev.stream_id, "NetStream.Play.StreamNotFound", f"no live call {name!r}")
                return
        else:
            # a call found by name: a guess that fails counts (docs/security.md, "Session IDs and RTMP play")
            if not self._may_try_play(ev.stream_id):
                return
            codec = codec or self.conn_codec or "aac"
            if self.mode == APP_CALL:
                leg = self.factory.live.latest(name)
            elif self.mode == APP_SESSION:
                call = self.manager.registry.by_session_id(name) if name.isdigit() else None
                if call is not None and isinstance(call.leg, RtmpLeg) and not call.ended:
                    leg = call.leg
            if leg is not None and leg.call is not None and not may_listen(
                leg.call, opts.get(TOKEN_OPTION) or self.conn_token, self.manager,
                by_destination=self.mode == APP_CALL, source_ip=self.peer_ip,
            ):
                log.info("RTMP {client}: play of {name} refused (not the publisher, no valid token)", client=self.client, name=safe(name))
                leg = None  # the same answer as for a call that does not exist: no oracle for live calls
            if leg is None:
                self._play_failed(ev.stream_id, name)
                return
        if ev.stream_id in self.players:
            self._drop_player(ev.stream_id)
        elif not self.players and self.outbox is not None:
            # what the kernel holds for a reader that stalls is delay nobody can drop (docs/security.md)
            self.outbox.limit_kernel_buffer(self.factory.player_send_buffer)
        sink = _StreamSink(self, ev.stream_id)
        player = Player(sink, codec or "aac", owner=self)
        sip_codec = leg.call.codec if leg.call is not None else None
        info = {"sessionId": leg.call.session_id} if leg.call is not None else None
        self.core.accept_play(ev.stream_id, metadata=player.metadata(sip_codec), info=info)
        leg.add_player(player)
        self.players[ev.stream_id] = (player, sink, leg)
        log.info("RTMP {client}: playing {name} as {codec}", client=self.client, name=safe(name), codec=player.choice)

    def _may_try_play(self, stream_id: int) -> bool:
        """An address at its attempt limit (``[limits] max_attempts_per_ip_per_minute``, which
        failed plays count toward) may not play at all: a success would tell it what it guessed.
        It gets ``NetStream.Play.Failed`` and the connection is closed."""
        try:
            self.manager.policy.check_attempts(client_ip(self.peer_ip))
        except CallRefused as e:
            self._refuse_play(stream_id, "NetStream.Play.Failed", f"{e.code}: {e.message}", close=True)
            return False
        return True

    def _play_failed(self, stream_id: int, name: str) -> None:
        """A play of a call that does not exist or may not be heard: StreamNotFound, one attempt
        for the address's rate, and after ``[rtmp] play_failures_before_close`` of them (or at the
        address's limit) the connection is closed."""
        self.play_failures += 1
        close = self.play_failures >= self.factory.play_failures_before_close
        try:
            self.manager.policy.attempt(client_ip(self.peer_ip))
        except CallRefused:
            close = True
        self._refuse_play(stream_id, "NetStream.Play.StreamNotFound", f"no live call {name[:64]!r}", close=close)

    def _refuse_play(self, stream_id: int, code: str, description: str, *, close: bool) -> None:
        self.factory.plays_refused += 1
        count_error("rtmp_play_refused")
        self.core.reject_play(stream_id, code, description)
        if close:
            log.info("RTMP {client}: play refused ({code}) after {n} failed plays, closing",
                     client=self.client, code=code, n=self.play_failures)
            self.close()

    # ---- watch (issue 14: the caller's video and data by session ID)
    def _on_watch(self, stream_id: int, name: str, opts: dict[str, str]) -> None:
        """Play ``watch/SESSIONID?token=JWT[&audio=none]``: who may watch is
        ``CallManager.authorize_watch`` (it counts the attempt); every case of "no such call or not
        yours" gets the same ``NetStream.Play.StreamNotFound``."""
        audio = opts.get("audio", "none").strip().lower()
        if audio != "none":
            # options first: refused whatever the session ID, so nothing is learnt about calls
            why = "audio=both is not supported yet" if audio == "both" else f"audio must be none, not {audio[:16]!r}"
            self._refuse_play(stream_id, "NetStream.Play.Failed", why, close=False)
            return
        token = opts.get(TOKEN_OPTION) or self.conn_token
        try:
            call = self.manager.authorize_watch(name, token, self.peer_ip)
        except CallRefused as e:
            if e.code == NOT_FOUND:
                self._watch_not_found(stream_id, name)
            else:  # the address's attempt rate: as for a play at its limit
                self._refuse_play(stream_id, "NetStream.Play.Failed", f"{e.code}: {e.message}", close=True)
            return
        hub = getattr(call, "hub", None)
        if not isinstance(hub, MediaHub):
            self._watch_not_found(stream_id, name)
            return
        if stream_id in self.players:
            self._drop_player(stream_id)
        if stream_id in self.watches:
            self._drop_watch(stream_id)
        if not self.players and not self.watches and self.outbox is not None:
            self.outbox.limit_kernel_buffer(self.factory.player_send_buffer)
        sink = _WatchStream(self, stream_id, call.session_id)
        watcher = RtmpWatcher(sink, identity=self._token_sub(token), session_id=call.session_id, clock=self.factory.reactor.seconds)
        try:
            hub.add_watcher(watcher)
        except WatchRefused as e:
            if e.code == TOO_MANY_WATCHERS:
                log.info("RTMP {client}: watch of {session_id} refused: {code}", client=self.client, session_id=call.session_id, code=e.code)
                self._refuse_play(stream_id, "NetStream.Play.Failed", TOO_MANY_WATCHERS, close=False)
            else:
                self._watch_not_found(stream_id, name)
            return
        self.watches[stream_id] = (watcher, sink, hub)
        watcher.begin()
        log.info("RTMP {client}: watching call {session_id} ({codec})", client=self.client, session_id=call.session_id, codec=watcher.codec)

    def _token_sub(self, token: str | None) -> str | None:
        """The watcher's identity: its (already accepted) token's ``sub``."""
        try:
            return verify_token(token, self.manager.tokens, self.manager.wall_clock()).sub
        except TokenError:
            return None

    def _watch_not_found(self, stream_id: int, name: str) -> None:
        """StreamNotFound for every not-found case (the attempt was counted by authorize_watch);
        after ``[rtmp] play_failures_before_close`` of them the connection is closed."""
        self.play_failures += 1
        close = self.play_failures >= self.factory.play_failures_before_close
        self._refuse_play(stream_id, "NetStream.Play.StreamNotFound", f"no live call {name[:64]!r}", close=close)

    def _drop_watch(self, stream_id: int) -> None:
        entry = self.watches.pop(stream_id, None)
        if entry is not None:
            watcher, sink, hub = entry
            sink.live = False
            watcher.live = False
            hub.remove_watcher(watcher)

    def end_watch(self, stream_id: int, cause: str) -> None:
        """The watched call ended (the hub already let the watcher go): Stream EOF +
        NetStream.Play.Stop, as for a player."""
        entry = self.watches.pop(stream_id, None)
        if entry is None:
            return
        entry[1].live = False
        log.info("RTMP {client}: watch of {session_id} ended ({cause})", client=self.client, session_id=entry[0].session_id, cause=cause)
        if self.is_open:
            try:
                self.core.end_stream(stream_id)
            except LocalProtocolError:
                pass
            self.flush()

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
        self._drop_watch(stream_id)

    # ---- media in
    def _publishing_leg(self, stream_id: int) -> RtmpLeg | None:
        leg = self.publishes.get(stream_id)
        if leg is None and stream_id == self.flash_publish:
            leg = self.flash_leg
        return leg

    def _on_audio(self, ev: AudioReceived) -> None:
        leg = self._publishing_leg(ev.stream_id)
        if leg is not None:
            leg.audio_tag(ev.data)

    def _on_video(self, ev: VideoReceived) -> None:
        leg = self._publishing_leg(ev.stream_id)
        if leg is not None:
            leg.video_tag(ev.timestamp_ms, ev.data)

    def _on_data(self, ev: DataReceived) -> None:
        leg = self._publishing_leg(ev.stream_id)
        if leg is not None:
            leg.data_message(ev.name, ev.values)


class RtmpFactory(protocol.Factory):
    """``RtmpFactory(manager, rtmp_config, reactor)``.

    ``manager`` is a :class:`~webgate.calls.manager.CallManager`, or anything with a ``manager``
    attribute holding one once started (the TelephonyService), looked up per connection.
    """

    noisy = False  # no "Starting factory" lines (the gateway logs its listeners itself)

    def __init__(self, manager: Any, rtmp_config: Any, reactor: Any, video_config: Any = None) -> None:
        self._manager_source = manager
        self.config = rtmp_config
        self.video_config = video_config  # [video] for the calls' hubs (None: the hub's defaults)
        self.reactor = reactor
        self.server_config = RtmpServerConfig(
            limits=RtmpLimits(
                max_chunk_size=rtmp_config.max_chunk_size,
                max_message_length=rtmp_config.max_message_size,
                max_streams=rtmp_config.max_streams_per_connection,
                max_buffered_bytes=rtmp_config.max_buffer_bytes,
            )
        )
        # connection caps and deadlines (webgate/security/connlimit.py; counted in /metrics)
        self.limiter = ConnectionLimiter("rtmp", rtmp_config.max_connections, rtmp_config.max_connections_per_ip)
        self.idle_timeout_s = float(rtmp_config.idle_timeout_s)
        self.partial_timeout_s = float(rtmp_config.partial_timeout_s)
        self.connections: set[RtmpProtocol] = set()
        self.live = LiveLegs()  # destination -> encoder-style legs, oldest first
        self.connect_timeout_s = float(rtmp_config.handshake_timeout_s)
        # players' back-pressure and play guessing (docs/security.md)
        self.player_max_queue_ms = rtmp_config.player_max_queue_ms
        self.player_max_behind_s = rtmp_config.player_max_behind_s
        self.player_send_buffer = rtmp_config.player_send_buffer
        self.play_failures_before_close = rtmp_config.play_failures_before_close
        self.player_audio_dropped = 0
        self.watcher_video_dropped = 0
        self.slow_players_closed = 0
        self.plays_refused = 0

    @property
    def manager(self) -> Any:
        src = self._manager_source
        if hasattr(src, "place_call"):
            return src
        mgr = getattr(src, "manager", None)
        if mgr is None:
            raise CallRefused("shutting_down", "telephony is not running", 503)
        return mgr

    @property
    def by_ip(self) -> dict[str, int]:
        """Open connections per address (IPv6: per /64)."""
        return self.limiter.by_key

    @property
    def refused_connections(self) -> int:
        return sum(self.limiter.refused.values())

    def buildProtocol(self, addr: Any) -> RtmpProtocol | None:
        ip = getattr(addr, "host", str(addr))
        refused = self.limiter.admit(ip)
        if refused is not None:  # closed at accept; counted for /metrics
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                "RTMP: connection from {ip} refused: {reason} connection cap", ip=ip, reason=refused)
            return None
        p = RtmpProtocol(self, ip)
        self.connections.add(p)
        return p

    def connection_lost(self, p: RtmpProtocol) -> None:
        if p in self.connections:
            self.connections.discard(p)
            self.limiter.release(p.peer_ip)

    def end_player(self, player: Player) -> None:
        owner = player.owner
        if isinstance(owner, RtmpProtocol):
            owner.end_player(player)

    def close_all(self) -> None:
        for p in list(self.connections):
            p.close()

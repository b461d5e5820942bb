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

The connection class is thin: the Flash RPC commands are :mod:`webgate.adapters.rtmp_rpc`, the
publishes :mod:`webgate.adapters.rtmp_publish`, the players and watchers and their back-pressure
:mod:`webgate.adapters.rtmp_play` (mixins of :class:`RtmpProtocol`); what reaches the socket and
how long it waits, :mod:`webgate.adapters.outbox`; what a call does with the audio (FLV tags <->
the SIP leg, players, pacing), :mod:`webgate.legs.rtmp` and :mod:`webgate.legs.rtmp_audio`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger

from webgate.adapters.guard import DeadlineTimer
from webgate.adapters.outbox import Outbox
from webgate.adapters.rtmp_play import RtmpPlayback
from webgate.adapters.rtmp_publish import RtmpPublishing
from webgate.adapters.rtmp_rpc import (
    APP_CALL,
    APP_SESSION,
    APP_SIP,
    APP_WATCH,
    TOKEN_OPTION,
    FlashRpc,
)
from webgate.calls.errors import CallRefused
from webgate.counters import count_error
from webgate.legs.rtmp import (
    LiveLegs,
    RtmpLeg,
    default_codec_for_flash,
    split_stream_name,
)
from webgate.legs.rtmp_audio import Player, normalise_codec
from webgate.logsafe import safe
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
from webgate.security.tokens import looks_like_jwt

log = Logger()



class RtmpProtocol(RtmpPublishing, RtmpPlayback, FlashRpc, protocol.Protocol):
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
        self.players = {}  # stream id -> (player, sink, leg): RtmpPlayback's
        self.watches = {}  # stream id -> (watcher, sink, hub)
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

    # ---- streams closing
    def _on_stream_closed(self, stream_id: int) -> None:
        if stream_id in self.publishes:
            self._end_publish(stream_id, "unpublished")
        if stream_id == self.flash_publish:
            self.flash_publish = None
        self._drop_player(stream_id)
        self._drop_watch(stream_id)

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

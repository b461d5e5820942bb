"""The play side of an RTMP connection: players of a call's audio, watchers of its video, and
the back-pressure on both (a mixin of :class:`webgate.adapters.rtmp.RtmpProtocol`).

* **Players** (``call/DESTINATION``, ``session/SESSIONID``, a Flash client's own call): who may
  listen is :func:`~webgate.legs.rtmp.may_listen`; a failed guess counts toward the address's
  attempt rate and, after ``[rtmp] play_failures_before_close``, closes the connection. Each
  player is a :class:`~webgate.legs.rtmp_audio.Player` writing to a :class:`_StreamSink`.
* **Watchers** (``watch/SESSIONID?token=JWT``, issue 14): ``CallManager.authorize_watch``, then a
  :class:`~webgate.legs.rtmp_watch.RtmpWatcher` on the call's hub writing to a :class:`_WatchStream`.
* **Redirects**: on a cluster node, a play of a call that lives on another node is answered with
  that node's URL (docs/cluster.md "Redirects").
* **Back-pressure**: once the connection's unsent data has waited ``[rtmp] player_max_queue_ms``
  audio tags (but the AAC sequence header) and watchers' video are dropped; past
  ``player_max_behind_s`` the connection is aborted (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from webgate.adapters import aio
from webgate.adapters.outbox import Outbox
from webgate.adapters.rtmp_rpc import (
    APP_CALL,
    APP_SESSION,
    APP_SIP,
    APP_WATCH,
    TOKEN_OPTION,
    ConnectionParts,
)
from webgate.calls import elsewhere
from webgate.calls.errors import CallRefused
from webgate.calls.policy import client_ip
from webgate.calls.watch import NOT_FOUND
from webgate.counters import count_error
from webgate.legs.hub import MediaHub
from webgate.legs.hub_types import TOO_MANY_WATCHERS, WatchRefused
from webgate.legs.rtmp import RtmpLeg, may_listen, split_stream_name
from webgate.legs.rtmp_audio import Player, essential_tag, normalise_codec
from webgate.legs.rtmp_watch import RtmpWatcher
from webgate.logsafe import safe
from webgate.proto.errors import LocalProtocolError
from webgate.proto.rtmp import PlayRequested, RtmpServerConnection
from webgate.security.tokens import TokenError, verify_token

__all__ = ["RtmpPlayback"]

log = Logger()


class _Stream:
    """One play stream of a connection: sends through the RTMP core, then flushes; a stream the
    core refuses (closed, deleted) stops sending."""

    def __init__(self, conn: RtmpPlayback, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.live = True

    @property
    def open(self) -> bool:
        return self.live and self.conn.is_open

    def _send(self, send: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        if self.open:
            self._write(send, *args, **kwargs)

    def _write(self, send: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            send(self.stream_id, *args, **kwargs)
        except LocalProtocolError:
            self.live = False
            return
        self.conn.flush()

    def _send_audio(self, timestamp_ms: int, data: bytes) -> None:
        # the players' back-pressure: a gap, not a delay, for a client that does not read in time
        # (audio_wanted is only true while the connection is open: no second check)
        if self.open and self.conn.audio_wanted(data):
            self._write(self.conn.core.send_audio, timestamp_ms, data)


class _StreamSink(_Stream):
    """A player's RTMP stream on one connection (implements webgate.legs.rtmp_audio.AudioSink)."""

    def send_audio_tag(self, timestamp_ms: int, data: bytes) -> None:
        self._send_audio(timestamp_ms, data)


class _WatchStream(_Stream):
    """A watcher's RTMP stream on one connection (implements webgate.legs.rtmp_watch.WatchSink)."""

    def __init__(self, conn: RtmpPlayback, stream_id: int, session_id: str) -> None:
        super().__init__(conn, stream_id)
        self.session_id = session_id

    def writable(self) -> bool:
        return self.conn.video_wanted()

    def accept(self, metadata: dict[str, Any] | None) -> None:
        self._write(self.conn.core.accept_play, metadata=metadata, info={"sessionId": self.session_id})

    def send_video(self, timestamp_ms: int, body: bytes) -> None:
        self._send(self.conn.core.send_video, timestamp_ms, body)

    def send_data(self, timestamp_ms: int, name: str, value: Any) -> None:
        self._send(self.conn.core.send_data, name, value, timestamp_ms=timestamp_ms)

    def send_audio(self, timestamp_ms: int, data: bytes) -> None:
        """Supervisor audio (``audio=both``): the players' back-pressure (``audio_wanted``)."""
        self._send_audio(timestamp_ms, data)

    def end(self, cause: str) -> None:
        self.conn.end_watch(self.stream_id, cause)


class RtmpPlayback(ConnectionParts):
    """The plays of one RTMP connection: its players, its watchers and their back-pressure (a
    mixin of ``webgate.adapters.rtmp.RtmpProtocol``, which provides the attributes declared here)."""

    transport: Any
    factory: Any  # the connection's RtmpFactory
    client: str
    peer_ip: str
    core: RtmpServerConnection
    mode: str | None
    conn_codec: str | None
    conn_token: str | None
    flash_leg: RtmpLeg | None
    outbox: Outbox | None
    players: dict[int, tuple[Player, _StreamSink, RtmpLeg]]  # stream id -> (player, sink, leg)
    watches: dict[int, tuple[RtmpWatcher, _WatchStream, MediaHub]]  # stream id -> (watcher, sink, hub)
    play_failures: int
    audio_dropped: int  # audio tags not sent to this client's players (back-pressure)
    video_dropped: int  # video tags and data not sent to this client's watchers (back-pressure)

    # ---- back-pressure
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

    # ---- play
    def _on_play(self, ev: PlayRequested) -> None:
        name, opts = split_stream_name(ev.name)
        if self.mode == APP_WATCH:
            self._on_watch(ev.stream_id, name, opts, ev.name)
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
            token = opts.get(TOKEN_OPTION) or self.conn_token
            if self.mode == APP_CALL:
                leg = self.factory.live.latest(name)
            elif self.mode == APP_SESSION:
                call = self.manager.registry.by_session_id(name) if name.isdigit() else None
                if call is None and self._elsewhere(ev.stream_id, name, ev.name, token):
                    return
                if call is not None and isinstance(call.leg, RtmpLeg) and not call.ended:
                    leg = call.leg
            if leg is not None and leg.call is not None and not may_listen(
                leg.call, token, self.manager,
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
    def _on_watch(self, stream_id: int, name: str, opts: dict[str, str], played: str) -> None:
        """Play ``watch/SESSIONID?token=JWT[&audio=none|both][&codec=C]``: who may watch is
        ``CallManager.authorize_watch`` (it counts the attempt); every case of "no such call or not
        yours" gets the same ``NetStream.Play.StreamNotFound``."""
        audio = opts.get("audio", "none").strip().lower()
        requested = opts.get("codec")
        audio_codec = normalise_codec(requested) if requested is not None else None
        # options first: refused whatever the session ID, so nothing is learnt about calls
        if audio not in ("none", "both"):
            self._refuse_play(stream_id, "NetStream.Play.Failed", f"audio must be none or both, not {audio[:16]!r}", close=False)
            return
        if requested is not None and audio_codec is None:
            self._refuse_play(stream_id, "NetStream.Play.Failed", f"unknown codec {requested[:16]!r}", close=False)
            return
        if audio == "both":
            audio_codec = audio_codec or self.conn_codec or "aac"  # as for a player of session/ID
        else:
            audio_codec = None
        token = opts.get(TOKEN_OPTION) or self.conn_token
        try:
            call = self.manager.authorize_watch(name, token, self.peer_ip)
        except CallRefused as e:
            if e.code == NOT_FOUND and self.manager.registry.by_session_id(name) is None and self._elsewhere(
                    stream_id, name, played, token, watch=True):
                return
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
        watcher = RtmpWatcher(sink, identity=self._token_sub(token), session_id=call.session_id, clock=self.factory.reactor.seconds,
                              audio_codec=audio_codec)
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

    # ---- a call on another cluster node (docs/cluster.md "Redirects")
    def _elsewhere(self, stream_id: int, name: str, played: str, token: str | None, *, watch: bool = False) -> bool:
        """A call that is not live here: on a cluster node, look it up and answer the play when
        the index has answered (True); False: not a cluster node, answer as always."""
        if getattr(self.manager.registry, "elsewhere", None) is None:
            return False
        d = aio.as_deferred(self._redirect_play(stream_id, name, played, token, watch))
        d.addErrback(lambda f: log.failure("RTMP {client}: looking up {name} failed", f, client=self.client, name=safe(name)))
        return True

    async def _redirect_play(self, stream_id: int, name: str, played: str, token: str | None, watch: bool) -> None:
        """``NetStream.Play.Failed`` with ``redirect`` (the other node's ``rtmp_url`` + this
        application + the stream name as played) when this client may play the call there
        (``webgate.calls.elsewhere``); else the answer for a call that does not exist."""
        refused: CallRefused | None = None
        try:
            found = await elsewhere.locate(self.manager.registry, name)
        except CallRefused as e:  # cluster_unavailable
            found, refused = None, e
        if not self.is_open or not self.core.play_pending(stream_id):
            return
        if found is not None:
            entry, info = found
            now = self.manager.wall_clock()
            allowed = (elsewhere.may_watch(entry, token, self.manager.tokens, now) if watch
                       else elsewhere.may_listen(entry, token, self.manager.tokens, now))
            if allowed and info.rtmp_url:
                url = elsewhere.redirect_url(info.rtmp_url, f"{self.mode}/{played}")
                log.info("RTMP {client}: play of {name} redirected to node {node}", client=self.client,
                         name=safe(name), node=safe(entry.node))
                self.core.reject_play(stream_id, "NetStream.Play.Failed", f"the call lives on node {entry.node}",
                                      redirect=url, node=entry.node)
                self.flush()
                return
        if refused is not None:
            self._refuse_play(stream_id, "NetStream.Play.Failed", f"{refused.code}: {refused.message}", close=False)
        elif watch:
            self._watch_not_found(stream_id, name)
        else:
            self._play_failed(stream_id, name)
        self.flush()

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
        self._end_stream(stream_id)

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
                self._end_stream(sid)

    def _end_stream(self, stream_id: int) -> None:
        """Stream EOF + NetStream.Play.Stop on a play stream whose call has ended."""
        if self.is_open:
            try:
                self.core.end_stream(stream_id)
            except LocalProtocolError:
                pass
            self.flush()

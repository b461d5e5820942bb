"""The publish side of an RTMP connection: an encoder's publish places a call, and what a
publisher sends goes to its leg (a mixin of :class:`webgate.adapters.rtmp.RtmpProtocol`).

Publishing ``rtmp://HOST/call/DESTINATION`` places a call (one :class:`~webgate.legs.rtmp.RtmpLeg`
per published stream; on a cluster node after ``CallManager.reserve``, one await), answered with
``NetStream.Publish.Start`` and the call's session ID; ending the publish (or the connection)
hangs up, and the call's end unpublishes. A Flash RPC client's microphone stream is published
on ``sip/USER`` and feeds the connection's own leg. Audio, video and data messages of a
published stream go to its leg (:meth:`RtmpPublishing._publishing_leg`).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from webgate.adapters import aio
from webgate.adapters.rtmp_rpc import APP_CALL, APP_SIP, TOKEN_OPTION, ConnectionParts
from webgate.calls.call import Call
from webgate.calls.errors import CallRefused
from webgate.legs.rtmp import RtmpLeg, split_stream_name
from webgate.legs.rtmp_audio import Player
from webgate.logsafe import safe
from webgate.proto.rtmp import (
    AudioReceived,
    DataReceived,
    PublishRequested,
    RtmpServerConnection,
    VideoReceived,
)

__all__ = ["RtmpPublishing"]

log = Logger()

_REFUSED_BAD_NAME = {"invalid_destination", "destination_not_allowed", "invalid_session_id", "session_id_in_use"}


class RtmpPublishing(ConnectionParts):
    """The publishes of one RTMP connection (a mixin of ``webgate.adapters.rtmp.RtmpProtocol``,
    which provides the attributes declared here)."""

    factory: Any  # the connection's RtmpFactory
    client: str
    peer_ip: str
    core: RtmpServerConnection
    mode: str | None
    conn_token: str | None
    flash_leg: RtmpLeg | None
    flash_publish: int | None  # stream id of the Flash mic stream
    publishes: dict[int, RtmpLeg]  # stream id -> leg (encoder style)
    destination_by_stream: dict[int, str]
    players: dict[int, tuple[Player, Any, RtmpLeg]]

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
        session_id = opts.get("session") or opts.get("sessionid") or None
        token = opts.get(TOKEN_OPTION) or self.conn_token
        try:
            if getattr(self.manager, "cluster", None) is not None:
                # a cluster node: the cluster-wide limits and session ID first (one await)
                admission = self.manager.admit(leg, name, session_id=session_id, display_name=opts.get("name") or None,
                                               token=token, source_ip=self.peer_ip)
                d = aio.as_deferred(self._publish_reserved(ev.stream_id, name, leg, admission))
                d.addErrback(lambda f: log.failure("RTMP {client}: publish failed", f, client=self.client))
                return
            call = leg.place(self.manager, name, session_id=session_id, display_name=opts.get("name") or None,
                             token=token, source_ip=self.peer_ip)
        except CallRefused as e:
            self._publish_refused(ev.stream_id, name, e)
            return
        self._publish_placed(ev.stream_id, name, leg, call)

    async def _publish_reserved(self, stream_id: int, name: str, leg: RtmpLeg, admission: Any) -> None:
        """The rest of a publish on a cluster node: ``CallManager.reserve`` (the cluster-wide
        attempt rate, per-IP and per-identity limits and the session ID), then the call."""

        def pending() -> bool:  # the encoder still waits for the answer
            return self.is_open and self.core.publish_pending(stream_id)

        try:
            call = await self._place_reserved(leg, name, admission, pending)
        except CallRefused as e:
            if pending():
                self._publish_refused(stream_id, name, e)
                self.flush()
            return
        if call is not None:
            self._publish_placed(stream_id, name, leg, call)
            self.flush()

    def _publish_refused(self, stream_id: int, name: str, e: CallRefused) -> None:
        log.info("RTMP {client}: publish to {dest} refused: {code}", client=self.client, dest=safe(name), code=e.code)
        code = "NetStream.Publish.BadName" if e.code in _REFUSED_BAD_NAME else "NetStream.Publish.Failed"
        self.core.reject_publish(stream_id, code, f"{e.code}: {e.message}")
        self.close()  # an encoder has nothing else to do on this connection

    def _publish_placed(self, stream_id: int, name: str, leg: RtmpLeg, call: Call) -> None:
        """The publish's call is placed: the publisher learns its session ID (NetStream.Publish.Start)."""

        def ended(lg: RtmpLeg, c: Call, cause: str, status: int | None) -> None:
            self._encoder_call_ended(stream_id, lg, c, cause)

        leg.on_ended.append(ended)
        self.publishes[stream_id] = leg
        self.destination_by_stream[stream_id] = name
        self.factory.live.add(name, leg)
        self.core.accept_publish(stream_id, {"sessionId": call.session_id, "destination": name})

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

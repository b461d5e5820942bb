"""The RTMP ingress leg: a call's web side over RTMP (either style), without sockets.

The RTMP adapter (:mod:`webgate.adapters.rtmp`) owns the connections and hands the leg a small
*sink* per RTMP stream to write FLV audio tags to. Placing, holding and listening to a call are
the leg's: :meth:`RtmpLeg.place`, :meth:`RtmpLeg.hold`, :class:`LiveLegs` (encoder-style calls by
destination) and :func:`may_listen` (who may play a call).

* **Audio** both ways is :mod:`webgate.legs.rtmp_audio`: the leg's :class:`~webgate.legs.rtmp_audio.AudioIn`
  (publisher -> SIP, paced on the media clock) and its :class:`~webgate.legs.rtmp_audio.Player`
  list (SIP -> players); the leg fans the far end's audio out to the players (G.711 and wideband
  Speex undecoded).
* **Video and data** (issue 14) never reach SIP: the leg gives the call a media hub
  (:func:`~webgate.legs.hub.attach_hub`) and feeds it the publisher's FLV video tags and AMF data
  messages (:func:`amf_data_json`); as the hub's caller it passes watchers' data and the watcher
  count to a Flash RPC client (``data``/``watchers`` callbacks). Watchers of the call over RTMP
  are :class:`~webgate.legs.rtmp_watch.RtmpWatcher`.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from webgate.calls.call import Call, CallState
from webgate.calls.errors import CallRefused
from webgate.calls.policy import client_ip
from webgate.legs.hub import MediaHub, attach_hub
from webgate.legs.hub_types import FlvVideo
from webgate.legs.rtmp_audio import AudioIn, Player
from webgate.media.audio import PCM
from webgate.media.codecs import Decoder, create_decoder
from webgate.media.speex import split_frames as speex_frames
from webgate.proto.errors import RemoteProtocolError
from webgate.proto.rtmp.amf import Undefined
from webgate.security.tokens import TokenError, call_access_allowed


def split_stream_name(name: str) -> tuple[str, dict[str, str]]:
    """``"echo?codec=pcmu&session=12345678"`` -> ``("echo", {"codec": "pcmu", ...})``."""
    base, sep, query = name.partition("?")
    opts: dict[str, str] = {}
    if sep:
        for k, v in parse_qsl(query, keep_blank_values=True):
            opts[k.lower()] = v
    return base, opts


def default_codec_for_flash(flash_ver: object) -> str:
    """Flash Player 11+ (``flashVer`` "WIN 11,2,...") takes G.711; older players get Nellymoser."""
    if isinstance(flash_ver, str):
        parts = flash_ver.strip().split(" ", 1)
        if len(parts) == 2:
            major = parts[1].split(",", 1)[0]
            if major.isdigit() and int(major) >= 11:
                return "g711"
    return "nellymoser"


def may_listen(call: Call, token: str | None, manager: Any, *, by_destination: bool, source_ip: str) -> bool:
    """Whether the client at ``source_ip`` may play ``call``: ``webgate.security.tokens.call_access_allowed``
    (docs/protocol.md, "Who may listen"): by session ID, a call placed without a token is open; by
    destination, only to the address that placed it; anything else needs a valid token naming the
    call (its ``session_id``) or, for a call placed with a token, of the same identity (``sub``)."""
    try:
        return call_access_allowed(
            call, token, manager.tokens, now=manager.wall_clock(),
            by_destination=by_destination, client_ip=client_ip(source_ip),
        )
    except TokenError:
        return False


#: data message names of a publisher that are stream metadata, not data for watchers
_NOT_DATA = frozenset({"onMetaData", "@setDataFrame", "@clearDataFrame", "|RtmpSampleAccess"})
#: data label of the Flash RPC ``sendData`` call (and of the WebSocket caller's default channel)
DATA_LABEL = "webgate"


def _bytes_of(value: Any) -> bytes | None:
    """The bytes of an AMF binary value (bytes, or Py3AMF's ByteArray, a byte stream), else None."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    getvalue = getattr(value, "getvalue", None)
    if callable(getvalue):
        raw = getvalue()
        if isinstance(raw, (bytes, bytearray)):
            return bytes(raw)
    return None


def _jsonable(value: Any, depth: int = 0) -> Any:
    """An AMF value (Py3AMF's types) as plain JSON: objects and ECMA arrays -> objects, arrays ->
    lists, undefined -> null, dates -> ISO 8601, ByteArray/bytes -> base64, whole numbers -> ints,
    non-finite numbers -> null, anything else -> its text."""
    if depth > 32:
        return None
    if value is None or value is Undefined or isinstance(value, (bool, str)):
        return None if value is Undefined else value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raw = _bytes_of(value)
    if raw is not None:
        return base64.b64encode(raw).decode("ascii")
    return str(value)


def _json_text(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def amf_data_json(values: list[Any]) -> str:
    """The data of a publisher's AMF data message for watchers: the JSON text of its values (an
    array, the message name not included), e.g. ``onTextData({text: "hi"})`` -> ``[{"text":"hi"}]``."""
    return _json_text(list(values))


def is_watcher_data(name: str) -> bool:
    """Whether a publisher's data message goes to watchers: any but stream metadata
    (``@setDataFrame onMetaData``, ``onMetaData``)."""
    return name not in _NOT_DATA and not name.startswith("|")


def data_from_flash(message: Any) -> str | bytes:
    """A Flash RPC ``sendData(message)`` argument as hub data: a string as it is, a ByteArray as
    binary, any other AMF value as its JSON text."""
    if isinstance(message, str):
        return message
    raw = _bytes_of(message)
    return raw if raw is not None else _json_text(message)


# ---- the leg ----------------------------------------------------------------------------------


class RtmpLeg:
    """The web side of one call placed over RTMP (either style).

    Flash RPC: one leg per connection, reused call after call (``flash`` is the connection's
    callback target). Encoder style: one leg per published stream, one call.
    """

    kind = "rtmp"
    # G.711 and wideband Speex from SIP are fanned out to players undecoded
    packet_codecs: ClassVar[tuple[str, ...]] = ("PCMU", "PCMA", "SPEEX/16000")

    def __init__(self, client: str, *, flash: Any = None, label: str = "", video: Any = None) -> None:
        self.client = client
        self.flash = flash  # an object with rpc_callback(name, *args) (Flash RPC mode)
        self.label = label
        self.video_config = video  # [video] (config.video) for the call's hub; None: its defaults
        self.call: Call | None = None
        self.hub: MediaHub | None = None  # the current call's (call.hub)
        self.video_tags = 0
        self.data_messages = 0
        self.audio_in = AudioIn(label)
        self.players: list[Player] = []
        self.on_hold = False
        self.ticker: Callable[[float], None] | None = None
        self.on_ended: list[Callable[[RtmpLeg, Call, str, int | None], None]] = []
        self.states: list[str] = []
        self._speex_decoder: Decoder | None = None  # speex/16000 packet path, for non-Speex players

    # -- wiring
    def attach_call(self, call: Call) -> None:
        self.call = call
        self.audio_in.reset()
        hub = attach_hub(call, caller=self, video=self.video_config)
        self.hub = hub
        if call.ended:  # ended while it was being placed: nobody may watch it
            hub.close(call.end_cause or "ended")
        clock = call.manager.rtp_pool.clock

        def tick(now: float) -> None:
            c = self.call
            if c is not None and not c.ended:
                self.audio_in.tick(c, now)

        self.ticker = tick
        clock.add_ticker(tick)

    def _detach_clock(self, call: Call) -> None:
        if self.ticker is not None:
            call.manager.rtp_pool.clock.remove_ticker(self.ticker)
            self.ticker = None

    def audio_tag(self, tag: bytes) -> None:
        call = self.call
        if call is not None and not call.ended:
            self.audio_in.feed(call, tag)

    # -- video and data (to the call's hub; never to SIP)
    def _live_hub(self) -> MediaHub | None:
        call, hub = self.call, self.hub
        if call is None or call.ended or hub is None or hub.closed or call.hub is not hub:
            return None
        return hub

    def video_tag(self, timestamp_ms: int, body: bytes) -> None:
        """A published FLV video tag body: to the call's watchers as it came."""
        self.video_tags += 1
        hub = self._live_hub()
        if hub is not None:
            hub.flv_from_caller(FlvVideo(timestamp_ms, body))

    def data_message(self, name: str, values: list[Any]) -> None:
        """A published AMF data message (``onTextData``, ``onCuePoint``, ...): to the watchers with
        label = its name, data = the JSON text of its values. Stream metadata is not data."""
        if not is_watcher_data(name):
            return
        self.data_messages += 1
        hub = self._live_hub()
        if hub is not None:
            hub.data_from_caller(name, amf_data_json(values))

    def send_data(self, message: Any, label: str = DATA_LABEL) -> bool:
        """Flash RPC ``sendData(message)``: to every watcher (False: no call, or the hub dropped it
        for its size or rate)."""
        hub = self._live_hub()
        if hub is None:
            return False
        st = hub.stats
        before = st.data_dropped_too_big + st.data_dropped_rate
        hub.data_from_caller(label, data_from_flash(message))
        return st.data_dropped_too_big + st.data_dropped_rate == before

    def _close_hub(self, call: Call, cause: str) -> None:
        hub = call.hub
        if isinstance(hub, MediaHub) and hub.caller is self:
            hub.close(cause)
        if self.hub is hub:
            self.hub = None

    # -- HubCaller (the hub's side of this leg)
    def watchers_changed(self, count: int) -> None:
        if self.flash is not None:
            self.flash.rpc_callback("watchers", count)

    def data_to_caller(self, label: str, data: str | bytes, sender: str | None) -> None:
        """A watcher's message: the Flash client's ``data(message, label, from)`` callback (binary
        as base64 with a fourth argument ``"base64"``). An encoder cannot receive: dropped."""
        if self.flash is None:
            return
        if isinstance(data, str):
            self.flash.rpc_callback("data", data, label, sender)
        else:
            self.flash.rpc_callback("data", base64.b64encode(data).decode("ascii"), label, sender, "base64")

    def request_keyframe(self) -> None:
        """An RTMP encoder cannot be asked for a keyframe (the hub replays its cached GOP)."""

    def limit_bitrate(self, bps: int) -> None:
        """An RTMP encoder's bitrate is its own."""

    def add_player(self, player: Player) -> None:
        self.players.append(player)

    def remove_player(self, player: Player) -> None:
        if player in self.players:
            self.players.remove(player)

    def set_hold(self, hold: bool) -> None:
        self.on_hold = hold
        self.audio_in.muted = hold
        if hold:
            self.audio_in.reset()

    # -- call control
    def place(self, manager: Any, destination: Any, *, session_id: str | None, display_name: str | None,
              token: str | None, source_ip: str) -> Call:
        """Place a call from this leg through ``manager`` (a :class:`~webgate.calls.manager.CallManager`)
        and attach it; raises :class:`~webgate.calls.errors.CallRefused`."""
        call: Call = manager.place_call(
            self, destination, session_id=session_id, display_name=display_name, token=token, source_ip=source_ip
        )
        self.attach_call(call)
        return call

    def hold(self, hold: bool, done: Callable[[bool], None]) -> None:
        """Hold (or resume) the leg's call: muted here at once, the SIP far end learns by re-INVITE;
        ``done(held)`` gets the hold state in effect after the far end's answer. Raises
        :class:`~webgate.calls.errors.CallRefused` (the hold state in effect restored)."""
        call = self.call
        assert call is not None
        self.set_hold(hold)

        def answered(ok: bool, status: int | None) -> None:
            if not ok and self.call is call:
                self.set_hold(call.held)
            done(call.held)

        try:
            call.manager.hold(call, hold, answered)
        except CallRefused:
            self.set_hold(call.held)
            raise

    # -- IngressLeg
    def call_progress(self, call: Call, state: CallState) -> None:
        self.states.append(state.value)
        if self.flash is None or call is not self.call:
            return
        if state in (CallState.RINGING, CallState.EARLY_MEDIA):
            if "ringing_sent" not in self.states:
                self.states.append("ringing_sent")
                self.flash.rpc_callback("ringing")
        elif state is CallState.ANSWERED:
            self.flash.rpc_callback("accepted")
        elif state is CallState.TRANSFERRED:
            self.flash.rpc_callback("transferred")  # the SIP far end moved the call (REFER)

    def call_ended(self, call: Call, cause: str, status: int | None) -> None:
        self._detach_clock(call)
        self._close_hub(call, cause)
        if call is self.call:
            self.call = None
            self.audio_in.reset()
        if self.flash is not None:
            if call.times.answered is not None:
                self.flash.rpc_callback("byed")
            elif call.direction == "inbound":
                self.flash.rpc_callback("cancelled")  # the caller gave up (or the call failed) before the answer
            else:
                reason = f"{status} {cause}" if status else cause
                self.flash.rpc_callback("rejected", reason)
        for fn in list(self.on_ended):
            fn(self, call, cause, status)

    def release_call(self, call: Call) -> None:
        """Forget ``call`` without hanging it up (the caller ends it another way, e.g. reject)."""
        if call is self.call:
            self._detach_clock(call)
            self._close_hub(call, "rejected")
            self.call = None
            self.audio_in.reset()

    def client_hangup(self) -> None:
        call = self.call
        if call is None:
            return
        self._detach_clock(call)
        self._close_hub(call, "client_hangup")
        self.call = None
        self.audio_in.reset()
        call.hangup()
        for fn in list(self.on_ended):
            fn(self, call, "client_hangup", None)

    def dtmf_received(self, call: Call, digit: str, method: str) -> None:
        if self.flash is not None and call is self.call:
            self.flash.rpc_callback("dtmf", digit)

    def audio_from_sip(self, call: Call, pcm: PCM, rate: int) -> None:
        if self.on_hold:
            return
        for p in list(self.players):
            p.pcm(pcm, rate)

    def payload_from_sip(self, call: Call, payload: bytes, samples: int) -> None:
        if self.on_hold or not self.players:
            return
        codec = call.codec or "PCMU"
        if codec.upper() == "SPEEX":
            self._speex_from_sip(call, payload)
            return
        for p in list(self.players):
            p.payload(payload, codec)

    def _speex_from_sip(self, call: Call, payload: bytes) -> None:
        """Packet path for speex/16000: Speex players get the frames as they are; the others get
        them decoded once here (the SIP stream decodes nothing on the packet path)."""
        try:
            frames = speex_frames(payload, 16000)
        except RemoteProtocolError:
            return
        for f in frames:
            pcm: PCM | None = None
            for p in list(self.players):
                if p.speex_frame(f):
                    continue
                if pcm is None:
                    if self._speex_decoder is None:
                        self._speex_decoder = create_decoder("speex", 16000)
                    try:
                        pcm = self._speex_decoder.decode(f)
                    except RemoteProtocolError:
                        return
                p.pcm(pcm, 16000)


class LiveLegs(dict[str, list[RtmpLeg]]):
    """Encoder-style legs by destination, oldest first: ``rtmp://HOST/call/DESTINATION`` plays
    the newest live one."""

    def add(self, destination: str, leg: RtmpLeg) -> None:
        self.setdefault(destination, []).append(leg)

    def discard(self, leg: RtmpLeg) -> None:
        for dest, legs in list(self.items()):
            if leg in legs:
                legs.remove(leg)
            if not legs:
                del self[dest]

    def latest(self, destination: str) -> RtmpLeg | None:
        """The most recent live publish to ``destination``."""
        for leg in reversed(self.get(destination, [])):
            if leg.call is not None and not leg.call.ended:
                return leg
        return None

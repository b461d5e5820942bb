"""The RTMP ingress leg: FLV audio tags <-> a call's SIP leg.

No sockets here. The RTMP adapter (:mod:`webgate.adapters.rtmp`) owns the connections and hands
this module a small *sink* per RTMP stream (:class:`AudioSink`) to write FLV audio tags to.
Placing, holding and listening to a call are the leg's too: :meth:`RtmpLeg.place`,
:meth:`RtmpLeg.hold`, :class:`LiveLegs` (encoder-style calls by destination) and
:func:`may_listen` (who may play a call).

* **In** (publisher -> SIP): :class:`AudioIn` takes FLV audio tags, passes G.711 of the SIP leg's
  own law straight through (packet path, re-cut into 20 ms payloads) and decodes everything else
  (Nellymoser, Speex, AAC, MP3, ADPCM, linear PCM, the other G.711 law) to PCM at the SIP codec's
  rate (frame path). Both go through a small 20 ms pacing queue driven by the gateway's media
  clock, because RTMP encoders send audio in bursts (ffmpeg: 128 ms of G.711 at a time).
* **Out** (SIP -> players): :class:`Player` turns the far end's audio into FLV tags in the codec
  the client chose (:data:`OUT_CODECS`): G.711 pass-through, Nellymoser, Speex or AAC (sequence
  header first). Timestamps come from the count of samples sent, so RTMP milliseconds never drift
  from the RTP clock over a long call.
* **Video and data** (issue 14) never reach SIP: the leg gives the call a media hub
  (:func:`~webgate.legs.hub.attach_hub`) and feeds it the publisher's FLV video tags and AMF data
  messages (:func:`amf_data_json`); as the hub's caller it passes watchers' data and the watcher
  count to a Flash RPC client (``data``/``watchers`` callbacks). Watchers of the call over RTMP
  are :class:`~webgate.legs.rtmp_watch.RtmpWatcher`.
"""

from __future__ import annotations

import base64
import collections
import datetime
import json
import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl

from twisted.logger import Logger

from webgate.calls.call import Call, CallState
from webgate.calls.errors import CallRefused
from webgate.calls.policy import client_ip
from webgate.legs.hub import FlvVideo, MediaHub, attach_hub
from webgate.logsafe import safe
from webgate.media.audio import PCM, Framer, Resampler
from webgate.media.codecs import (
    Decoder,
    Encoder,
    alaw_decode,
    alaw_encode,
    audio_specific_config,
    create_decoder,
    create_encoder,
    get_codec,
    ulaw_decode,
    ulaw_encode,
)
from webgate.media.speex import FRAME_SAMPLES as SPEEX_FRAME_SAMPLES
from webgate.media.speex import split_frames as speex_frames
from webgate.proto import flv
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.rtmp.amf import Undefined
from webgate.security.tokens import TokenError, call_access_allowed

log = Logger()

#: What a client may ask for as the out (SIP -> client) codec.
#: ``g711`` = whatever law the SIP leg uses, untranscoded (µ-law when it must be transcoded).
OUT_CODECS = ("pcmu", "pcma", "g711", "nellymoser", "speex", "aac")
_OUT_ALIASES = {
    "ulaw": "pcmu",
    "mulaw": "pcmu",
    "pcm_mulaw": "pcmu",
    "alaw": "pcma",
    "pcm_alaw": "pcma",
    "nelly": "nellymoser",
    "mp4a": "aac",
}

FRAME_MS = 20
MAX_QUEUE_MS = 400  # pacing queue toward SIP: older audio is dropped beyond this
DRAIN_WINDOW_S = 2.0  # a queue that never fell below the prebuffer for this long is drained to it
MIN_PREBUFFER_MS = 40
MAX_PREBUFFER_MS = 300

#: FLV audio tag headers of the codecs sent as they are (built once, prefixed to every payload)
_G711_TAG = {
    "pcmu": flv.build_audio_tag(flv.audio_header_for("pcm_mulaw"), b""),
    "pcma": flv.build_audio_tag(flv.audio_header_for("pcm_alaw"), b""),
}
_SPEEX_TAG = flv.build_audio_tag(flv.audio_header_for("speex"), b"")


def normalise_codec(value: object) -> str | None:
    """A client's codec option -> one of :data:`OUT_CODECS`, or None if not recognised."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    v = _OUT_ALIASES.get(v, v)
    return v if v in OUT_CODECS else None


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


def essential_tag(tag: bytes) -> bool:
    """An FLV audio tag a player cannot do without (the AAC sequence header): never dropped."""
    return len(tag) > 1 and tag[0] >> 4 == 10 and tag[1] == 0


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


class AudioSink(Protocol):
    """Where a player's FLV tags go (one RTMP stream of one connection)."""

    @property
    def open(self) -> bool: ...

    def send_audio_tag(self, timestamp_ms: int, data: bytes) -> None: ...


# ---- in: publisher -> SIP ---------------------------------------------------------------------


class AudioIn:
    """FLV audio tags from one published stream -> the call, paced in 20 ms units."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.aac_config: bytes | None = None
        self._decoder: Decoder | None = None
        self._decoder_key: tuple[Any, ...] | None = None
        self._format_byte = -1  # the first tag byte self._format was read from
        self._format: tuple[str, int, int] | None = None  # (codec, rate, channels) of the tags
        self._resampler: Resampler | None = None
        self._framer: Framer | None = None
        self._target_rate: int | None = None
        self._g711 = bytearray()
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()
        self._started = False
        self._next_due: float | None = None
        self.prebuffer_ms = MIN_PREBUFFER_MS
        self.tags = 0
        self.bad_tags = 0
        self.dropped_ms = 0
        self.drained_ms = 0  # of dropped_ms: standing delay removed (a burst that never drained)
        self._win_min: int | None = None  # the queue's lowest depth (frames) in this drain window
        self._win_end = 0.0
        self.sent_frames = 0
        self.passthrough_frames = 0  # G.711 relayed to SIP untranscoded
        self.codec: str | None = None
        self.muted = False

    # -- feeding
    def feed(self, call: Call, tag: bytes) -> None:
        self.tags += 1
        try:
            self._feed(call, tag)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self.bad_tags += 1
            if self.bad_tags in (1, 10, 100, 1000):
                log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                    "call {session_id}: RTMP audio dropped ({n} so far): {e}",
                    session_id=call.session_id,
                    n=self.bad_tags,
                    e=safe(exc.message),
                )

    def _feed(self, call: Call, tag: bytes) -> None:
        header, payload = flv.parse_audio_tag(tag)
        if header.sound_format == flv.SOUND_AAC and header.aac_packet_type == flv.AAC_SEQUENCE_HEADER:
            self.aac_config = payload
            self._decoder = None
            self._decoder_key = None
            self._format = None
            return
        if not payload:
            return
        if self._format is None or tag[0] != self._format_byte:
            # once per format change, not per tag (for AAC it parses the AudioSpecificConfig)
            self._format = flv.audio_codec_of(tag, self.aac_config)
            self._format_byte = tag[0]
        codec, rate, channels = self._format
        self.codec = codec
        stream = call.stream
        if self.muted or stream is None or stream.codec is None or call.state is CallState.ENDED:
            return  # no media negotiated yet (or on hold): nothing to send to
        sip_codec = stream.codec.name.upper()
        if (codec, sip_codec) in (("pcm_mulaw", "PCMU"), ("pcm_alaw", "PCMA")):
            # packet path: the payload is already in the SIP codec; re-cut to 20 ms
            self._g711 += payload
            n = 160
            while len(self._g711) >= n:
                self._queue.append(("payload", bytes(self._g711[:n])))
                del self._g711[:n]
            self._note_chunk(len(payload) * 1000 // 8000)
            return
        if codec == "speex" and sip_codec == "SPEEX" and stream.codec.rtp_clock_rate == 16000:
            # packet path: FLV Speex is wideband like the SIP leg's; one RTP payload per 20 ms frame
            try:
                frames = speex_frames(payload, 16000)
            except RemoteProtocolError:
                frames = []  # not wideband frames we can cut: decode it instead
            for f in frames:
                self._queue.append(("speex", f))
            if frames:
                self._note_chunk(len(frames) * FRAME_MS)
                return
        # frame path: decode -> resample to the SIP codec's rate -> 20 ms frames
        key = (codec, rate, channels, self.aac_config if codec == "aac" else None)
        if key != self._decoder_key or self._decoder is None:
            self._decoder = self._make_decoder(codec, rate, channels)
            self._decoder_key = key
            self._resampler = None
        pcm = self._decoder.decode(payload)
        if not len(pcm):
            return
        src_rate = self._decoder.sample_rate
        target = stream.codec.sample_rate
        if self._target_rate != target or self._framer is None:
            self._target_rate = target
            self._framer = Framer(target // 50)
            self._resampler = None
        if src_rate != target:
            if self._resampler is None or self._resampler.from_rate != src_rate:
                self._resampler = Resampler(src_rate, target)
            pcm = self._resampler.resample(pcm)
        self._note_chunk(len(pcm) * 1000 // target)
        for frame in self._framer.push(pcm):
            self._queue.append(("pcm", (frame, target)))

    def _make_decoder(self, codec: str, rate: int, channels: int) -> Decoder:
        if codec == "pcm_mulaw":
            return create_decoder("PCMU")
        if codec == "pcm_alaw":
            return create_decoder("PCMA")
        if codec == "pcm_s16le":
            return create_decoder("pcm_s16le", rate, channels)
        if codec == "aac":
            if not self.aac_config:
                raise RemoteProtocolError("AAC audio before its sequence header")
            return create_decoder("aac", extradata=self.aac_config)
        if codec in ("nellymoser", "speex", "mp3", "adpcm_swf"):
            return create_decoder(codec, rate)
        raise RemoteProtocolError(f"unsupported FLV audio codec {codec}")

    def _note_chunk(self, ms: int) -> None:
        want = min(MAX_PREBUFFER_MS, max(MIN_PREBUFFER_MS, ms + FRAME_MS))
        self.prebuffer_ms = max(self.prebuffer_ms, want)

    # -- pacing (called by the media clock every ~20 ms)
    @property
    def queued_ms(self) -> int:
        return len(self._queue) * FRAME_MS

    def tick(self, call: Call, now: float) -> None:
        while self.queued_ms > MAX_QUEUE_MS:
            self._queue.popleft()
            self.dropped_ms += FRAME_MS
        if not self._started:
            if self.queued_ms < self.prebuffer_ms:
                return
            self._started = True
            self._next_due = now
        assert self._next_due is not None
        # send every frame that is due (the clock may fire late; never fall behind)
        while self._next_due <= now + 0.001:
            if not self._queue:
                self._started = False  # underrun: prebuffer again
                return
            kind, item = self._queue.popleft()
            if kind in ("payload", "speex"):
                call.send_payload(item, len(item) if kind == "payload" else SPEEX_FRAME_SAMPLES[16000])
                self.passthrough_frames += 1
            else:
                frame, rate = item
                call.send_audio(frame, rate)
            self.sent_frames += 1
            self._next_due += FRAME_MS / 1000.0
        if now - self._next_due > 0.2:  # a long stall: resynchronise
            self._next_due = now
        self._drain(now)

    def _drain(self, now: float) -> None:
        """Standing delay: a burst (a publisher's start-up, a stalled network catching up) leaves
        frames queued that the steady clock never removes, so every later frame reaches SIP that
        much late.  When the queue stayed above the prebuffer for a whole window, the oldest
        frames beyond it are dropped (once per window: a short cut, not a gap per frame)."""
        depth = len(self._queue)
        if self._win_min is None:
            self._win_min, self._win_end = depth, now + DRAIN_WINDOW_S
            return
        self._win_min = min(self._win_min, depth)
        if now < self._win_end:
            return
        keep = math.ceil(self.prebuffer_ms / FRAME_MS)  # frames
        for _ in range(self._win_min - keep):
            self._queue.popleft()
            self.dropped_ms += FRAME_MS
            self.drained_ms += FRAME_MS
        self._win_min = None

    def reset(self) -> None:
        self._queue.clear()
        self._g711.clear()
        self._started = False
        self._win_min = None
        if self._framer is not None:
            self._framer.reset()


# ---- out: SIP -> players ----------------------------------------------------------------------


class Player:
    """One RTMP stream playing the far end's audio, in the codec its client chose."""

    def __init__(self, sink: AudioSink, codec: str, owner: object = None) -> None:
        if codec not in OUT_CODECS:
            raise LocalProtocolError(f"unknown out codec {codec!r}")
        self.sink = sink
        self.choice = codec
        self.owner = owner  # the connection that plays (for cleanup)
        self._encoder: Encoder | None = None
        self._enc_rate = 0
        self._resampler: Resampler | None = None
        self._samples = 0  # samples sent, at self._clock_rate
        self._clock_rate = 0
        self._header: bytes = b""
        self._sent_sequence_header = False
        self.tags_sent = 0
        if codec in ("pcmu", "pcma", "g711"):
            self._clock_rate = 8000

    # -- what the client is told in onMetaData
    def metadata(self, sip_codec: str | None = None) -> dict[str, Any]:
        c = self.choice
        if c == "g711":
            c = "pcma" if (sip_codec or "").upper() == "PCMA" else "pcmu"
        ids = {"pcmu": flv.SOUND_G711_MULAW, "pcma": flv.SOUND_G711_ALAW, "nellymoser": flv.SOUND_NELLYMOSER_8K,
               "speex": flv.SOUND_SPEEX, "aac": flv.SOUND_AAC}
        rates = {"pcmu": 8000, "pcma": 8000, "nellymoser": 8000, "speex": 16000, "aac": 16000}
        return {
            "audiocodecid": ids[c],
            "audiosamplerate": rates[c],
            "audiosamplesize": 16,
            "stereo": False,
            "hasAudio": True,
            "hasVideo": False,
        }

    def _ts(self) -> int:
        # integer arithmetic from the total sample count: no drift however long the call
        return self._samples * 1000 // self._clock_rate if self._clock_rate else 0

    def _emit(self, data: bytes, samples: int) -> None:
        if not self.sink.open:
            return
        self.sink.send_audio_tag(self._ts(), data)
        self.tags_sent += 1
        self._samples += samples

    # -- input from the call
    def payload(self, payload: bytes, sip_codec: str) -> None:
        """A G.711 payload straight from RTP (packet path)."""
        law = "pcma" if sip_codec.upper() == "PCMA" else "pcmu"
        if self.choice == "g711" or self.choice == law:
            self._emit(_G711_TAG[law] + payload, len(payload))
            return
        pcm = alaw_decode(payload) if law == "pcma" else ulaw_decode(payload)
        self.pcm(pcm, 8000)

    def speex_frame(self, frame: bytes) -> bool:
        """A wideband Speex frame straight from RTP (packet path): sent as it is when this player
        takes Speex (True); False when it needs the frame decoded."""
        if self.choice != "speex":
            return False
        if not self._clock_rate:
            self._clock_rate = 16000
            self._header = _SPEEX_TAG
        self._emit(self._header + frame, SPEEX_FRAME_SAMPLES[16000])
        return True

    def pcm(self, pcm: PCM, rate: int) -> None:
        """Decoded PCM (frame path, or G.711 this player needs transcoded)."""
        c = self.choice
        if c in ("pcmu", "pcma", "g711"):
            pcm = self._resample(pcm, rate, 8000)
            if not len(pcm):
                return
            if c == "pcma":
                self._emit(_G711_TAG["pcma"] + alaw_encode(pcm), len(pcm))
            else:
                self._emit(_G711_TAG["pcmu"] + ulaw_encode(pcm), len(pcm))
            return
        if self._encoder is None:
            self._open_encoder(rate)
        assert self._encoder is not None
        pcm = self._resample(pcm, rate, self._enc_rate)
        packets = self._encoder.encode(pcm)
        if not packets:
            return
        frame = self._encoder.info.codec_frame_samples or self._encoder.info.frame_samples
        if c == "aac" and not self._sent_sequence_header:
            asc = self._encoder.extradata or audio_specific_config(self._enc_rate, 1)
            if self.sink.open:
                self.sink.send_audio_tag(self._ts(), bytes([0xAF, flv.AAC_SEQUENCE_HEADER]) + asc)
            self._sent_sequence_header = True
        for p in packets:
            self._emit(self._header + p, frame)

    def _open_encoder(self, rate: int) -> None:
        c = self.choice
        if c == "speex":
            info = get_codec("speex", 16000)
            if not info.can_encode:  # no libspeex: fall back to Nellymoser
                self.choice = c = "nellymoser"
        if c == "nellymoser":
            self._enc_rate = 16000 if rate >= 16000 else 8000
            hdr = flv.audio_header_for("nellymoser", self._enc_rate)
            self._header = flv.build_audio_tag(hdr, b"")
        elif c == "speex":
            self._enc_rate = 16000
            self._header = _SPEEX_TAG
        else:  # aac
            self._enc_rate = 16000
            self._header = bytes([0xAF, flv.AAC_RAW])
        self._encoder = create_encoder(c, self._enc_rate)
        self._clock_rate = self._enc_rate

    def _resample(self, pcm: PCM, rate: int, target: int) -> PCM:
        if rate == target:
            return pcm
        if self._resampler is None or self._resampler.from_rate != rate or self._resampler.to_rate != target:
            self._resampler = Resampler(rate, target)
        return self._resampler.resample(pcm)


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

"""FLV audio of the RTMP leg: a publisher's tags -> the call (:class:`AudioIn`) and the far end's
audio -> a player's tags (:class:`Player`).

No sockets and no call control here (those are :mod:`webgate.adapters.rtmp` and
:class:`webgate.legs.rtmp.RtmpLeg`, which owns one :class:`AudioIn` and its players).

* **In** (publisher -> SIP): :class:`AudioIn` takes FLV audio tags, passes G.711 of the SIP leg's
  own law straight through (packet path, re-cut into 20 ms payloads) and decodes everything else
  (Nellymoser, Speex, AAC, MP3, ADPCM, linear PCM, the other G.711 law) to PCM at the SIP codec's
  rate (frame path). Both go through a small 20 ms pacing queue driven by the gateway's media
  clock, because RTMP encoders send audio in bursts (ffmpeg: 128 ms of G.711 at a time).
* **Out** (SIP -> players): :class:`Player` turns the far end's audio into FLV tags in the codec
  the client chose (:data:`OUT_CODECS`): G.711 pass-through, Nellymoser, Speex or AAC (sequence
  header first), written to an :class:`AudioSink` (one RTMP stream). Timestamps come from the
  count of samples sent, so RTMP milliseconds never drift from the RTP clock over a long call.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Protocol

from twisted.logger import Logger

from webgate.calls.call import Call, CallState
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


def essential_tag(tag: bytes) -> bool:
    """An FLV audio tag a player cannot do without (the AAC sequence header): never dropped."""
    return len(tag) > 1 and tag[0] >> 4 == 10 and tag[1] == 0


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

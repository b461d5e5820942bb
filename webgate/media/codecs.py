"""Audio codec registry: names -> :class:`CodecInfo`, encoders and decoders.

PCM in and out is always signed 16-bit mono ``numpy.int16`` at the codec's
native sample rate (:attr:`CodecInfo.sample_rate`; G.722 is 16 kHz although its
RTP clock is 8 kHz, Opus is 48 kHz).

* G.711 (PCMU/PCMA), L16 and pcm_s16le are pure numpy (lookup tables).
* G.722, Opus, Nellymoser, AAC, MP3, ADPCM-SWF, Speex/GSM/iLBC decoding go
  through PyAV.  This module and its siblings are the only ones importing ``av``.
* Speex and GSM encoding use the system's libspeex / libgsm (Debian packages
  ``libspeex1`` and ``libgsm1``) through :mod:`webgate.media._native` when
  present; otherwise those codecs are decode-only (``can_encode=False``).
  iLBC is always decode-only.

Decoders treat their input as hostile: any payload that cannot be decoded
raises :class:`~webgate.proto.errors.RemoteProtocolError`, never anything else.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Literal, cast

import av
import numpy as np
import numpy.typing as npt

from webgate.media import _native
from webgate.media.audio import PCM, Framer, as_pcm, silence
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "OPUS_SILENCE",
    "AudioSpecificConfig",
    "CodecInfo",
    "Decoder",
    "Encoder",
    "alaw_decode",
    "alaw_encode",
    "audio_specific_config",
    "available_codecs",
    "create_decoder",
    "create_encoder",
    "get_codec",
    "opus_packet_samples",
    "parse_audio_specific_config",
    "parse_fmtp",
    "ulaw_decode",
    "ulaw_encode",
]

MAX_PAYLOAD = 65536
"""Largest payload a decoder accepts (bytes); bigger is a remote error."""

_Conceal = Literal["repeat", "silence"]


# --- G.711 ---------------------------------------------------------------------------


def _ulaw_to_linear(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    c = ~codes & 0xFF
    t = ((c & 0x0F) << 3) + 0x84
    t = t << ((c & 0x70) >> 4)
    return np.where(c & 0x80, 0x84 - t, t - 0x84)


def _alaw_to_linear(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    c = codes ^ 0x55
    t = c & 0x0F
    seg = (c & 0x70) >> 4
    t = np.where(
        seg > 0, (((t << 1) + 33) << np.maximum(seg - 1, 0)) << 3, (t << 4) + 8
    )
    return np.where(c & 0x80, t, -t)


def _encode_table(decode: npt.NDArray[np.int32], mask: int) -> npt.NDArray[np.uint8]:
    """65536-entry linear -> code table.

    Decision levels are the mid-points between adjacent reconstruction levels
    (G.711 tables 1a/2a), evaluated on 14-bit input (the 16-bit sample >> 2), so
    the result is the same as FFmpeg's ``pcm_mulaw``/``pcm_alaw`` encoders.
    """
    i = np.arange(127)
    bounds = (decode[i ^ mask] + decode[(i + 1) ^ mask] + 4) >> 3
    j = np.arange(1, 8192)
    k = np.searchsorted(bounds, j, side="right")
    tab14 = np.empty(16384, dtype=np.int32)
    tab14[8192] = mask
    tab14[8192 + j] = k ^ mask
    tab14[8192 - j] = k ^ (mask ^ 0x80)
    tab14[0] = tab14[1]
    linear = np.arange(65536, dtype=np.int32)  # index = sample + 32768
    table: npt.NDArray[np.uint8] = tab14[linear >> 2].astype(np.uint8)
    return table


_CODES = np.arange(256, dtype=np.int32)
_ULAW_DEC: npt.NDArray[np.int16] = _ulaw_to_linear(_CODES).astype(np.int16)
_ALAW_DEC: npt.NDArray[np.int16] = _alaw_to_linear(_CODES).astype(np.int16)
_ULAW_ENC = _encode_table(_ulaw_to_linear(_CODES), 0xFF)
_ALAW_ENC = _encode_table(_alaw_to_linear(_CODES), 0xD5)


def ulaw_encode(pcm: PCM) -> bytes:
    """G.711 µ-law: one byte per int16 sample."""
    idx = as_pcm(pcm).view(np.uint16) ^ 0x8000
    return bytes(_ULAW_ENC[idx])


def alaw_encode(pcm: PCM) -> bytes:
    """G.711 A-law: one byte per int16 sample."""
    idx = as_pcm(pcm).view(np.uint16) ^ 0x8000
    return bytes(_ALAW_ENC[idx])


def ulaw_decode(payload: bytes) -> PCM:
    """G.711 µ-law bytes -> int16 samples."""
    return _ULAW_DEC[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> PCM:
    """G.711 A-law bytes -> int16 samples."""
    return _ALAW_DEC[np.frombuffer(payload, dtype=np.uint8)]


# --- Opus packets (relayed undecoded on the packet path) ------------------------------

#: one 20 ms Opus frame that decodes to silence (TOC 0xF8: CELT fullband 20 ms, mono, one frame)
OPUS_SILENCE = b"\xf8\xff\xfe"

# RFC 6716 §3.1: frame duration (in 48 kHz samples) by TOC configuration number
_OPUS_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK-only NB/MB/WB: 10, 20, 40, 60 ms
    + [480, 960] * 2  # Hybrid SWB/FB: 10, 20 ms
    + [120, 240, 480, 960] * 4  # CELT-only NB/WB/SWB/FB: 2.5, 5, 10, 20 ms
)


def opus_packet_samples(payload: bytes) -> int:
    """The duration of one Opus packet in 48 kHz samples, from its TOC byte (RFC 6716 §3.1).

    Raises :class:`RemoteProtocolError` for a packet that is not valid Opus framing (empty,
    a code 3 packet without its frame count, or longer than 120 ms)."""
    if not payload:
        raise RemoteProtocolError("empty Opus packet")
    toc = payload[0]
    per_frame = _OPUS_FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(payload) < 2:
            raise RemoteProtocolError("Opus code 3 packet without a frame count")
        frames = payload[1] & 0x3F
        if frames == 0:
            raise RemoteProtocolError("Opus code 3 packet with zero frames")
    samples = per_frame * frames
    if samples > 5760:  # 120 ms
        raise RemoteProtocolError(f"Opus packet longer than 120 ms ({samples} samples)")
    return samples


# --- CodecInfo and the registry ---------------------------------------------------------


@dataclass(frozen=True)
class CodecInfo:
    """What a codec is, as negotiated.

    ``name`` is the SDP spelling.  ``channels`` is the SDP channel count (Opus
    is always ``2`` there, RFC 7587); PCM exchanged with encoders/decoders is
    always mono.  ``frame_samples`` is 20 ms at ``sample_rate``;
    ``codec_frame_samples`` is the codec's own block (256 for Nellymoser, 1024
    for AAC, 240 for iLBC 30 ms mode), which the encoder buffers towards.
    """

    name: str
    sample_rate: int
    rtp_clock_rate: int
    channels: int
    frame_samples: int
    codec_frame_samples: int
    can_encode: bool
    can_decode: bool
    payload_type: int | None = None
    fmtp: str | None = None

    @property
    def frame_ms(self) -> int:
        return 20


@dataclass(frozen=True)
class _Spec:
    name: str
    rates: tuple[int, ...]  # allowed PCM rates; first is the default
    channels: int = 1
    payload_type: int | None = None
    clock_divisor: int = 1  # rtp_clock_rate = sample_rate // clock_divisor (G.722: 2)
    av_encoder: tuple[str, ...] = ()
    av_decoder: tuple[str, ...] = ()
    av_format: str = "s16"  # encoder input sample format
    native: str | None = None  # "pcmu" | "pcma" | "l16" | "s16le" | "gsm" | "speex"
    codec_frame_ms: float | None = 20.0  # None: the encoder's own frame_size
    conceal: _Conceal = "silence"
    bit_rate: int | None = None
    aliases: tuple[str, ...] = field(default=())


_SPECS: tuple[_Spec, ...] = (
    _Spec("PCMU", (8000,), payload_type=0, native="pcmu", conceal="repeat"),
    _Spec("PCMA", (8000,), payload_type=8, native="pcma", conceal="repeat"),
    _Spec(
        "G722",
        (16000,),
        payload_type=9,
        clock_divisor=2,
        av_encoder=("g722",),
        av_decoder=("g722",),
        conceal="repeat",
        bit_rate=64000,
    ),
    _Spec(
        "opus",
        (48000,),
        channels=2,
        av_encoder=("libopus",),
        av_decoder=("libopus", "opus"),
        bit_rate=32000,
    ),
    _Spec("speex", (8000, 16000, 32000), av_decoder=("speex",), native="speex"),
    _Spec("GSM", (8000,), payload_type=3, av_decoder=("gsm",), native="gsm"),
    _Spec("iLBC", (8000,), av_decoder=("ilbc",), codec_frame_ms=30.0),
    _Spec(
        "L16",
        (8000, 16000, 11025, 22050, 32000, 44100, 48000),
        native="l16",
        conceal="repeat",
    ),
    _Spec(
        "pcm_s16le",
        (44100, 5512, 8000, 11025, 16000, 22050, 48000),
        native="s16le",
        conceal="repeat",
    ),
    _Spec(
        "nellymoser",
        (8000, 16000, 11025, 22050, 44100),
        av_encoder=("nellymoser",),
        av_decoder=("nellymoser",),
        av_format="flt",
        codec_frame_ms=None,
    ),
    _Spec(
        "aac",
        (44100, 48000, 32000, 24000, 22050, 16000, 11025, 8000),
        av_encoder=("aac",),
        av_decoder=("aac",),
        av_format="fltp",
        codec_frame_ms=None,
        bit_rate=64000,
        aliases=("mpeg4-generic",),
    ),
    _Spec(
        "mp3",
        (44100, 48000, 32000, 22050, 24000, 16000, 11025, 12000, 8000),
        av_encoder=("libmp3lame",),
        av_decoder=("mp3float", "mp3"),
        av_format="s16p",
        codec_frame_ms=None,
        bit_rate=64000,
        aliases=("mpa",),
    ),
    _Spec(
        "adpcm_swf",
        (22050, 11025, 44100),
        av_encoder=("adpcm_swf",),
        av_decoder=("adpcm_swf",),
        codec_frame_ms=None,
    ),
)

_BY_NAME: dict[str, _Spec] = {}
for _s in _SPECS:
    _BY_NAME[_s.name.lower()] = _s
    for _a in _s.aliases:
        _BY_NAME[_a.lower()] = _s


def _av_has(name: str, mode: Literal["r", "w"]) -> bool:
    try:
        av.Codec(name, mode)
    except ValueError:  # av.codec.codec.UnknownCodecError: not built into this FFmpeg
        return False
    return True


def _pick(names: tuple[str, ...], mode: Literal["r", "w"]) -> str | None:
    for n in names:
        if _av_has(n, mode):
            return n
    return None


def _can_encode(spec: _Spec) -> bool:
    if spec.native in ("pcmu", "pcma", "l16", "s16le"):
        return True
    if spec.native == "gsm" and _native.gsm_available():
        return True
    if spec.native == "speex" and _native.speex_available():
        return True
    return _pick(spec.av_encoder, "w") is not None


def _can_decode(spec: _Spec) -> bool:
    if spec.native in ("pcmu", "pcma", "l16", "s16le"):
        return True
    return _pick(spec.av_decoder, "r") is not None


def parse_fmtp(fmtp: str | None) -> dict[str, str]:
    """``"mode=20; useinbandfec=1"`` -> ``{"mode": "20", "useinbandfec": "1"}`` (keys lower-cased)."""
    out: dict[str, str] = {}
    if not fmtp:
        return out
    for part in fmtp.split(";"):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        out[key.strip().lower()] = value.strip()
    return out


def get_codec(
    name: str,
    clock_rate: int | None = None,
    channels: int | None = None,
    fmtp: str | None = None,
) -> CodecInfo:
    """Look a codec up by (case-insensitive) name, as found in an SDP ``rtpmap``.

    ``clock_rate`` is the RTP clock rate for RTP codecs (8000 for G.722) and the
    PCM rate otherwise.  Unknown names or unsupported rates raise
    :class:`LocalProtocolError` (the SDP negotiator should only ask for codecs
    listed by :func:`available_codecs`).
    """
    spec = _BY_NAME.get(name.lower())
    if spec is None:
        raise LocalProtocolError(f"unknown codec {name!r}")
    rate = spec.rates[0]
    if clock_rate is not None:
        rate = clock_rate * spec.clock_divisor
        if rate not in spec.rates:
            raise LocalProtocolError(f"{spec.name} does not support rate {clock_rate}")
    if spec.name == "opus":
        chans = 2
    elif channels is not None:
        if channels not in (1, 2) or (
            channels == 2 and spec.name not in ("L16", "pcm_s16le")
        ):
            raise LocalProtocolError(
                f"{spec.name} with {channels} channels is not supported"
            )
        chans = channels
    else:
        chans = spec.channels
    params = parse_fmtp(fmtp)
    codec_frame_ms = spec.codec_frame_ms
    if spec.name == "iLBC":
        codec_frame_ms = 20.0 if params.get("mode") == "20" else 30.0
    if codec_frame_ms is None:
        codec_frame = {"nellymoser": 256, "aac": 1024, "adpcm_swf": 4096}.get(
            spec.name, 0
        )
        if spec.name == "mp3":
            codec_frame = 1152 if rate >= 32000 else 576
    else:
        codec_frame = int(rate * codec_frame_ms / 1000)
    return CodecInfo(
        name=spec.name,
        sample_rate=rate,
        rtp_clock_rate=rate // spec.clock_divisor,
        channels=chans,
        frame_samples=rate // 50,
        codec_frame_samples=codec_frame,
        can_encode=_can_encode(spec),
        can_decode=_can_decode(spec),
        payload_type=spec.payload_type,
        fmtp=fmtp,
    )


def available_codecs() -> list[CodecInfo]:
    """Every registered codec at its default rate, with what this build can do."""
    return [get_codec(s.name) for s in _SPECS]


# --- interfaces ------------------------------------------------------------------------


class Encoder(abc.ABC):
    """PCM -> packets.  Buffers input; emits only whole codec frames."""

    info: CodecInfo

    @abc.abstractmethod
    def encode(self, pcm: PCM) -> list[bytes]:
        """Add mono int16 samples at ``info.sample_rate``; return finished packets."""

    def flush(self) -> list[bytes]:
        """End of stream: pad the buffered tail with silence and drain the codec.

        The encoder must not be used afterwards.
        """
        return []

    @property
    def extradata(self) -> bytes | None:
        """Out-of-band codec configuration (AAC: the AudioSpecificConfig), if any."""
        return None


class Decoder(abc.ABC):
    """Packets -> PCM, with packet-loss concealment."""

    info: CodecInfo

    def __init__(self, info: CodecInfo, conceal: _Conceal) -> None:
        self.info = info
        self.sample_rate = info.sample_rate
        self._conceal_mode: _Conceal = conceal
        self._last: PCM = silence(0)
        self._lost = 0

    @abc.abstractmethod
    def _decode(self, payload: bytes) -> PCM: ...

    def decode(self, payload: bytes) -> PCM:
        """Decode one payload to mono int16 at :attr:`sample_rate`.

        Raises :class:`RemoteProtocolError` for anything undecodable.
        """
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise LocalProtocolError("payload must be bytes")
        if len(payload) > MAX_PAYLOAD:
            raise RemoteProtocolError(
                f"{self.info.name} payload too large ({len(payload)} bytes)"
            )
        try:
            pcm = self._decode(bytes(payload))
        except RemoteProtocolError:
            raise
        except Exception as exc:  # decoder libraries fail in many ways on hostile input
            raise RemoteProtocolError(
                f"undecodable {self.info.name} payload: {exc}"
            ) from exc
        if len(pcm):
            self._last = pcm
            self._lost = 0
        return pcm

    def conceal(self) -> PCM:
        """One 20 ms frame standing in for a lost packet.

        Waveform codecs (G.711, G.722, linear PCM) repeat the last frame, fading
        to silence over three consecutive losses; other codecs give silence
        (FFmpeg exposes no PLC entry point through PyAV: an empty packet means
        end of stream).
        """
        n = self.sample_rate // 50
        self._lost += 1
        if self._conceal_mode == "silence" or not len(self._last) or self._lost > 3:
            return silence(n)
        src = np.resize(self._last[-n:], n).astype(np.float32)
        start = 1.0 - (self._lost - 1) / 3.0
        ramp = np.linspace(
            start, start - 1.0 / 3.0, n, endpoint=False, dtype=np.float32
        )
        return as_pcm(src * ramp)

    def reset(self) -> None:
        """Forget concealment state (e.g. after an SSRC change)."""
        self._last = silence(0)
        self._lost = 0


# --- table / numpy codecs ------------------------------------------------------------


class _TableEncoder(Encoder):
    def __init__(self, info: CodecInfo, kind: str) -> None:
        self.info = info
        self._kind = kind
        self._framer = Framer(info.frame_samples)

    def _one(self, frame: PCM) -> bytes:
        if self._kind == "pcmu":
            return ulaw_encode(frame)
        if self._kind == "pcma":
            return alaw_encode(frame)
        samples = (
            np.repeat(frame, self.info.channels) if self.info.channels > 1 else frame
        )
        if self._kind == "l16":
            return samples.astype(">i2").tobytes()
        return samples.astype("<i2").tobytes()

    def encode(self, pcm: PCM) -> list[bytes]:
        return [self._one(f) for f in self._framer.push(pcm)]

    def flush(self) -> list[bytes]:
        return [self._one(f) for f in self._framer.flush()]


class _TableDecoder(Decoder):
    def __init__(self, info: CodecInfo, kind: str) -> None:
        super().__init__(info, "repeat")
        self._kind = kind

    def _decode(self, payload: bytes) -> PCM:
        if self._kind == "pcmu":
            return ulaw_decode(payload)
        if self._kind == "pcma":
            return alaw_decode(payload)
        width = 2 * self.info.channels
        if len(payload) % width:
            raise RemoteProtocolError(
                f"{self.info.name} payload of {len(payload)} bytes is not whole samples"
            )
        arr = np.frombuffer(
            payload, dtype=">i2" if self._kind == "l16" else "<i2"
        ).astype(np.int16)
        if self.info.channels > 1:
            arr = arr.reshape(-1, self.info.channels).mean(axis=1).astype(np.int16)
        return arr


# --- PyAV codecs ---------------------------------------------------------------------


def frame_to_mono(frame: av.AudioFrame) -> PCM:
    """Any PyAV audio frame -> mono int16 (channels averaged)."""
    arr = frame.to_ndarray()
    fmt = frame.format
    nch = len(frame.layout.channels)
    if not fmt.is_planar and nch > 1:
        arr = arr.reshape(-1, nch).T
    if arr.dtype.kind == "f":
        mono = arr.mean(axis=0) if nch > 1 else arr[0]
        return as_pcm(mono * 32768.0)
    if arr.dtype == np.int16:
        if nch == 1:
            return np.ascontiguousarray(arr.reshape(-1))
        return as_pcm(arr.astype(np.int32).mean(axis=0))
    if arr.dtype == np.int32:
        return as_pcm(arr.astype(np.int64).mean(axis=0) / 65536.0)
    if arr.dtype == np.uint8:
        return as_pcm((arr.astype(np.int32).mean(axis=0) - 128) * 256)
    raise RemoteProtocolError(f"unexpected decoded sample format {fmt.name}")


def mono_frame(pcm: PCM, rate: int, pts: int) -> av.AudioFrame:
    """Mono int16 PCM as a PyAV s16 frame stamped ``pts`` in units of 1/``rate`` (for aiortc tracks)."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm))
    frame.planes[0].update(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())
    frame.pts = pts
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    return frame


class _AvEncoder(Encoder):
    def __init__(
        self, info: CodecInfo, codec: str, fmt: str, bit_rate: int | None
    ) -> None:
        self.info = info
        ctx = cast(av.AudioCodecContext, av.CodecContext.create(codec, "w"))
        ctx.sample_rate = info.sample_rate
        ctx.layout = "mono"
        ctx.format = fmt
        ctx.time_base = Fraction(1, info.sample_rate)
        if bit_rate:
            ctx.bit_rate = bit_rate
        if codec == "libopus":
            ctx.options = {"application": "voip", "frame_duration": "20"}
        ctx.open()
        self._ctx = ctx
        self._fmt = fmt
        self._framer = Framer(
            ctx.frame_size or info.codec_frame_samples or info.frame_samples
        )
        self._pts = 0
        self._closed = False

    def _frame(self, pcm: PCM) -> av.AudioFrame:
        if self._fmt in ("s16", "s16p"):
            frame = av.AudioFrame.from_ndarray(
                pcm.reshape(1, -1), format=self._fmt, layout="mono"
            )
        else:
            data = (pcm.astype(np.float32) / np.float32(32768.0)).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format=self._fmt, layout="mono")
        frame.sample_rate = self.info.sample_rate
        frame.time_base = Fraction(1, self.info.sample_rate)
        frame.pts = self._pts
        self._pts += len(pcm)
        return frame

    def encode(self, pcm: PCM) -> list[bytes]:
        if self._closed:
            raise LocalProtocolError("encoder already flushed")
        out: list[bytes] = []
        for chunk in self._framer.push(pcm):
            out.extend(bytes(p) for p in self._ctx.encode(self._frame(chunk)))
        return out

    def flush(self) -> list[bytes]:
        if self._closed:
            return []
        out: list[bytes] = []
        for chunk in self._framer.flush():
            out.extend(bytes(p) for p in self._ctx.encode(self._frame(chunk)))
        out.extend(bytes(p) for p in self._ctx.encode(None))
        self._closed = True
        return out

    @property
    def extradata(self) -> bytes | None:
        data = self._ctx.extradata
        return bytes(data) if data else None


class _AvDecoder(Decoder):
    def __init__(
        self,
        info: CodecInfo,
        codec: str,
        conceal: _Conceal,
        extradata: bytes | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        super().__init__(info, conceal)
        self._codec = codec
        self._extradata = extradata
        self._options = options or {}
        self._ctx = self._open()

    def _open(self) -> av.AudioCodecContext:
        ctx = cast(av.AudioCodecContext, av.CodecContext.create(self._codec, "r"))
        ctx.sample_rate = self.info.sample_rate
        ctx.layout = "mono"
        if self._extradata:
            ctx.extradata = self._extradata
        if self._options:
            ctx.options = dict(self._options)
        return ctx

    def _decode(self, payload: bytes) -> PCM:
        if not payload:
            raise RemoteProtocolError(f"empty {self.info.name} payload")
        frames = self._ctx.decode(av.Packet(payload))
        parts = [frame_to_mono(f) for f in frames]
        if frames:
            self.sample_rate = frames[-1].sample_rate or self.sample_rate
        if not parts:
            return silence(0)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _IlbcDecoder(_AvDecoder):
    """iLBC: the mode (20 ms / 38 bytes or 30 ms / 50 bytes) follows the payload size."""

    def __init__(self, info: CodecInfo, codec: str) -> None:
        self._block = 38 if info.codec_frame_samples == 160 else 50
        super().__init__(
            info, codec, "silence", options={"block_align": str(self._block)}
        )

    def _decode(self, payload: bytes) -> PCM:
        if payload and len(payload) % 50 == 0 and len(payload) % 38 != 0:
            block = 50
        elif payload and len(payload) % 38 == 0 and len(payload) % 50 != 0:
            block = 38
        else:
            block = self._block
        if not payload or len(payload) % block:
            raise RemoteProtocolError(
                f"iLBC payload of {len(payload)} bytes is not whole frames"
            )
        if block != self._block:
            self._block = block
            self._options = {"block_align": str(block)}
            self._ctx = self._open()
        parts = [
            super(_IlbcDecoder, self)._decode(payload[i : i + block])
            for i in range(0, len(payload), block)
        ]
        return np.concatenate(parts)


# --- native (ctypes) codecs ----------------------------------------------------------


class _NativeEncoder(Encoder):
    def __init__(self, info: CodecInfo, impl: _native.FrameEncoder) -> None:
        self.info = info
        self._impl = impl
        self._framer = Framer(impl.frame_samples)

    def encode(self, pcm: PCM) -> list[bytes]:
        return [self._impl.encode(f) for f in self._framer.push(pcm)]

    def flush(self) -> list[bytes]:
        return [self._impl.encode(f) for f in self._framer.flush()]


# --- factories -----------------------------------------------------------------------


def _resolve(
    name: str | CodecInfo,
    clock_rate: int | None,
    channels: int | None,
    fmtp: str | None,
) -> tuple[CodecInfo, _Spec]:
    info = (
        name
        if isinstance(name, CodecInfo)
        else get_codec(name, clock_rate, channels, fmtp)
    )
    return info, _BY_NAME[info.name.lower()]


def create_encoder(
    name: str | CodecInfo,
    clock_rate: int | None = None,
    channels: int | None = None,
    fmtp: str | None = None,
    *,
    bit_rate: int | None = None,
) -> Encoder:
    """An encoder for ``name`` (or a :class:`CodecInfo` from :func:`get_codec`).

    Raises :class:`LocalProtocolError` if this build cannot encode the codec.
    """
    info, spec = _resolve(name, clock_rate, channels, fmtp)
    if not info.can_encode:
        raise LocalProtocolError(f"no encoder available for {info.name}")
    if spec.native in ("pcmu", "pcma", "l16", "s16le"):
        return _TableEncoder(info, spec.native)
    if spec.native == "gsm" and _native.gsm_available():
        return _NativeEncoder(info, _native.GsmEncoder())
    if spec.native == "speex" and _native.speex_available():
        return _NativeEncoder(info, _native.SpeexEncoder(info.sample_rate))
    codec = _pick(spec.av_encoder, "w")
    if codec is None:  # pragma: no cover - can_encode said otherwise
        raise LocalProtocolError(f"no encoder available for {info.name}")
    rate = bit_rate or spec.bit_rate
    if spec.name == "opus":
        params = parse_fmtp(info.fmtp)
        if "maxaveragebitrate" in params and params["maxaveragebitrate"].isdigit():
            rate = max(6000, min(int(params["maxaveragebitrate"]), 510000))
    return _AvEncoder(info, codec, spec.av_format, rate)


def create_decoder(
    name: str | CodecInfo,
    clock_rate: int | None = None,
    channels: int | None = None,
    fmtp: str | None = None,
    *,
    extradata: bytes | None = None,
) -> Decoder:
    """A decoder for ``name`` (or a :class:`CodecInfo`).

    ``extradata`` is out-of-band configuration, e.g. the AAC AudioSpecificConfig
    from an FLV AAC sequence header (see :func:`parse_audio_specific_config`).
    """
    info, spec = _resolve(name, clock_rate, channels, fmtp)
    if not info.can_decode:
        raise LocalProtocolError(f"no decoder available for {info.name}")
    if spec.native in ("pcmu", "pcma", "l16", "s16le"):
        return _TableDecoder(info, spec.native)
    codec = _pick(spec.av_decoder, "r")
    if codec is None:  # pragma: no cover
        raise LocalProtocolError(f"no decoder available for {info.name}")
    if spec.name == "iLBC":
        return _IlbcDecoder(info, codec)
    if spec.name == "aac" and extradata:
        asc = parse_audio_specific_config(extradata)
        info = replace(
            info, sample_rate=asc.sample_rate, frame_samples=asc.sample_rate // 50
        )
    return _AvDecoder(info, codec, spec.conceal, extradata=extradata)


# --- AAC AudioSpecificConfig ------------------------------------------------------------

_AAC_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


@dataclass(frozen=True)
class AudioSpecificConfig:
    """The fields of an MPEG-4 AudioSpecificConfig (ISO 14496-3 §1.6.2.1) we use."""

    object_type: int  # 2 = AAC-LC
    sample_rate: int
    channels: int


def audio_specific_config(
    sample_rate: int, channels: int = 1, object_type: int = 2
) -> bytes:
    """Build the 2-byte AudioSpecificConfig (as sent in an FLV AAC sequence header)."""
    if sample_rate not in _AAC_RATES:
        raise LocalProtocolError(
            f"AAC has no sampling frequency index for {sample_rate}"
        )
    if not 1 <= object_type <= 30 or not 1 <= channels <= 7:
        raise LocalProtocolError("bad AAC object type or channel count")
    index = _AAC_RATES.index(sample_rate)
    value = (object_type << 11) | (index << 7) | (channels << 3)
    return value.to_bytes(2, "big")


def parse_audio_specific_config(data: bytes) -> AudioSpecificConfig:
    """Parse an AudioSpecificConfig; raise :class:`RemoteProtocolError` if it is malformed."""
    if len(data) < 2:
        raise RemoteProtocolError("AudioSpecificConfig too short")
    bits = int.from_bytes(data[:5].ljust(5, b"\0"), "big")
    pos = 40

    def take(n: int) -> int:
        nonlocal pos
        pos -= n
        if pos < 0:
            raise RemoteProtocolError("AudioSpecificConfig truncated")
        return (bits >> pos) & ((1 << n) - 1)

    object_type = take(5)
    if object_type == 31:
        object_type = 32 + take(6)
    index = take(4)
    if index == 15:
        if len(data) < 5:
            raise RemoteProtocolError("AudioSpecificConfig truncated")
        rate = take(24)
    elif index < len(_AAC_RATES):
        rate = _AAC_RATES[index]
    else:
        raise RemoteProtocolError(f"reserved AAC sampling frequency index {index}")
    channels = take(4)
    if object_type == 0 or rate <= 0:
        raise RemoteProtocolError("invalid AudioSpecificConfig")
    return AudioSpecificConfig(
        object_type=object_type, sample_rate=rate, channels=channels
    )

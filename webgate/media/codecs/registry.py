"""The codec catalogue: every codec webgate knows by name, and what this build can do with it.

:func:`get_codec` turns an SDP ``rtpmap`` name (with clock rate, channels and fmtp) into a
:class:`CodecInfo`; ``can_encode``/``can_decode`` come from probing PyAV's FFmpeg and the system
libraries of :mod:`webgate.media._native`. :class:`CodecSpec` is the catalogue's own entry,
which :mod:`webgate.media.codecs.coders` builds encoders and decoders from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import av

from webgate.media import _native
from webgate.media.codecs import libraries
from webgate.proto.errors import LocalProtocolError

#: packet-loss concealment: repeat the last frame, fading out (waveform codecs), or silence
Conceal = Literal["repeat", "silence"]


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
class CodecSpec:
    """One codec of the catalogue: its rates, and how it is encoded and decoded here."""

    name: str
    rates: tuple[int, ...]  # allowed PCM rates; first is the default
    channels: int = 1
    payload_type: int | None = None
    clock_divisor: int = 1  # rtp_clock_rate = sample_rate // clock_divisor (G.722: 2)
    av_encoder: tuple[str, ...] = ()
    av_decoder: tuple[str, ...] = ()
    av_format: str = "s16"  # encoder input sample format
    native: str | None = None  # "pcmu" | "pcma" | "l16" | "s16le" | "gsm" | "speex" | "g729" | "amrnb" | "amrwb" | "g726" | "g723" | "opus"
    codec_frame_ms: float | None = 20.0  # None: the encoder's own frame_size
    conceal: Conceal = "silence"
    bit_rate: int | None = None
    aliases: tuple[str, ...] = field(default=())
    #: payloads of consecutive frames concatenate into one RTP payload (a packet time of n frames)
    joinable: bool = False
    #: a waveform codec whose frame may be any multiple of 10 ms (the packet time itself)
    frameless: bool = False


_SPECS: tuple[CodecSpec, ...] = (
    CodecSpec("PCMU", (8000,), payload_type=0, native="pcmu", conceal="repeat", joinable=True, frameless=True),
    CodecSpec("PCMA", (8000,), payload_type=8, native="pcma", conceal="repeat", joinable=True, frameless=True),
    CodecSpec(
        "G722",
        (16000,),
        payload_type=9,
        clock_divisor=2,
        av_encoder=("g722",),
        av_decoder=("g722",),
        conceal="repeat",
        bit_rate=64000,
        joinable=True,
    ),
    CodecSpec(
        "opus",
        (48000,),
        channels=2,
        av_encoder=("libopus",),
        av_decoder=("libopus", "opus"),
        bit_rate=32000,
        native="opus",  # decoded by the system libopus when it loads: real PLC and in-band FEC
    ),
    # G.729 / G.729A (RFC 3551; Annex B SID frames decoded): libbcg729 both ways
    CodecSpec("G729", (8000,), payload_type=18, native="g729", codec_frame_ms=10.0, joinable=True),
    # AMR-NB / AMR-WB (RFC 4867): opencore (PyAV or the system library), vo-amrwbenc encodes WB
    CodecSpec("AMR", (8000,), native="amrnb", av_encoder=("libopencore_amrnb",),
              av_decoder=("libopencore_amrnb",), joinable=True),
    CodecSpec("AMR-WB", (16000,), native="amrwb", av_decoder=("libopencore_amrwb",), joinable=True),
    # G.726-32: RFC 3551 packing (first codeword in the low bits) and ITU-T I.366.2 (AAL2) packing
    CodecSpec("G726-32", (8000,), native="g726", av_decoder=("adpcm_g726le",), conceal="repeat",
              joinable=True, frameless=True),
    CodecSpec("AAL2-G726-32", (8000,), native="g726", av_decoder=("adpcm_g726",), conceal="repeat",
              joinable=True, frameless=True),
    # G.723.1 at 6.3 kbit/s (PT 4, 30 ms frames; 5.3 kbit/s and SID frames decoded)
    CodecSpec("G723", (8000,), payload_type=4, native="g723", av_encoder=("g723_1",),
              av_decoder=("g723_1",), codec_frame_ms=30.0, conceal="repeat", bit_rate=6300,
              joinable=True),
    CodecSpec("speex", (8000, 16000, 32000), av_decoder=("speex",), native="speex"),
    CodecSpec("GSM", (8000,), payload_type=3, av_decoder=("gsm",), native="gsm"),
    CodecSpec("iLBC", (8000,), av_decoder=("ilbc",), codec_frame_ms=30.0),
    CodecSpec(
        "L16",
        (8000, 16000, 11025, 22050, 32000, 44100, 48000),
        native="l16",
        conceal="repeat",
        joinable=True,
        frameless=True,
    ),
    CodecSpec(
        "pcm_s16le",
        (44100, 5512, 8000, 11025, 16000, 22050, 48000),
        native="s16le",
        conceal="repeat",
    ),
    CodecSpec(
        "nellymoser",
        (8000, 16000, 11025, 22050, 44100),
        av_encoder=("nellymoser",),
        av_decoder=("nellymoser",),
        av_format="flt",
        codec_frame_ms=None,
        conceal="repeat",
    ),
    CodecSpec(
        "aac",
        (44100, 48000, 32000, 24000, 22050, 16000, 11025, 8000),
        av_encoder=("aac",),
        av_decoder=("aac",),
        av_format="fltp",
        codec_frame_ms=None,
        bit_rate=64000,
        aliases=("mpeg4-generic",),
        conceal="repeat",
    ),
    CodecSpec(
        "mp3",
        (44100, 48000, 32000, 22050, 24000, 16000, 11025, 12000, 8000),
        av_encoder=("libmp3lame",),
        av_decoder=("mp3float", "mp3"),
        av_format="s16p",
        codec_frame_ms=None,
        bit_rate=64000,
        aliases=("mpa",),
    ),
    CodecSpec(
        "adpcm_swf",
        (22050, 11025, 44100),
        av_encoder=("adpcm_swf",),
        av_decoder=("adpcm_swf",),
        codec_frame_ms=None,
    ),
)

_BY_NAME: dict[str, CodecSpec] = {}
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


def pick_av_codec(names: tuple[str, ...], mode: Literal["r", "w"]) -> str | None:
    """The first of ``names`` that this FFmpeg has as an encoder (``"w"``) or decoder (``"r"``)."""
    for n in names:
        if _av_has(n, mode):
            return n
    return None


#: FFmpeg's own decoders, the last resort of the AMR decoders (no concealment through PyAV)
AMR_FALLBACK_DECODERS = {"amrnb": "amrnb", "amrwb": "amrwb"}


def encode_libraries(spec: CodecSpec) -> tuple[str, ...]:
    """The system libraries (:mod:`~webgate.media.codecs.libraries` keys) this build still
    needs to encode ``spec``: empty when it needs none or PyAV's FFmpeg has the encoder."""
    if spec.native == "g729":
        return ("bcg729",)
    if spec.native == "amrnb":
        return () if pick_av_codec(spec.av_encoder, "w") else ("amrnb",)
    if spec.native == "amrwb":
        return ("amrwbenc",)
    if spec.native == "g726":
        return ("spandsp",)
    return ()


def required_libraries(name: str) -> tuple[str, ...]:
    """The system libraries a codec named as in a configuration (``"G729"``,
    ``"speex/16000"``) needs to be offered; unknown names need none."""
    spec = _BY_NAME.get(name.split("/", 1)[0].lower())
    return encode_libraries(spec) if spec is not None else ()


def _can_encode(spec: CodecSpec) -> bool:
    if spec.native in ("pcmu", "pcma", "l16", "s16le"):
        return True
    if spec.native == "gsm" and _native.gsm_available():
        return True
    if spec.native == "speex" and _native.speex_available():
        return True
    if spec.native in ("g729", "amrnb", "amrwb", "g726"):
        return all(libraries.available(k) for k in encode_libraries(spec))
    return pick_av_codec(spec.av_encoder, "w") is not None


def _can_decode(spec: CodecSpec) -> bool:
    if spec.native in ("pcmu", "pcma", "l16", "s16le"):
        return True
    if spec.native == "g729":
        return libraries.available("bcg729")
    if spec.native in AMR_FALLBACK_DECODERS:
        if pick_av_codec(spec.av_decoder, "r") or libraries.available(spec.native):
            return True
        return _av_has(AMR_FALLBACK_DECODERS[spec.native], "r")
    return pick_av_codec(spec.av_decoder, "r") is not None


def packet_plan(info: CodecInfo, ptime: int | None, maxptime: int | None = None) -> tuple[int, int]:
    """How to send ``info`` at the packet time the far end asked for (SDP ``ptime``, capped by
    ``maxptime``): ``(frame_ms, frames per packet)``. Waveform codecs make frames of the packet
    time itself (a multiple of 10 ms, 10..120); codecs with frames of their own put as many
    whole frames in a packet as fit (at least one: G.723.1's 30 ms when 20 ms is asked); the
    others (Opus) send one 20 ms frame per packet."""
    spec = codec_spec(info)
    want = ptime if ptime is not None and ptime > 0 else 20
    if maxptime is not None and maxptime > 0:
        want = min(want, maxptime)
    want = max(10, min(want, 120))
    if spec.frameless:
        return max(10, want // 10 * 10), 1
    frame = spec.codec_frame_ms
    if frame is None or not spec.joinable:
        return int(frame or 20), 1
    return int(frame), max(1, int(want // frame))


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


def codec_spec(info: CodecInfo) -> CodecSpec:
    """The catalogue entry of a codec :func:`get_codec` returned."""
    return _BY_NAME[info.name.lower()]

"""AMR-NB and AMR-WB (RTP ``AMR``/8000 and ``AMR-WB``/16000, RFC 4867): the payload format in
both packings (octet-aligned and bandwidth-efficient; no CRC, robust sorting or interleaving),
the fmtp parameters (``mode-set``, ``mode-change-period``, ``mode-change-neighbor``), and the
encoders/decoders.

The speech frames themselves are coded by OpenCORE AMR (AMR-NB both ways, AMR-WB decoding):
the system libraries (Debian ``libopencore-amrnb0``/``libopencore-amrwb0``) through ctypes when
they load, else PyAV's ``libopencore_amrnb``/``libopencore_amrwb`` when its FFmpeg has them
(newer PyAV wheels may not), else FFmpeg's own decoders (decode only, no concealment); AMR-WB is
encoded by VisualOn's encoder (Debian ``libvo-amrwbenc0``, ctypes). All of them speak the
RFC 4867 §5 storage format (one header octet ``FT<<3 | Q<<2``, then the frame's bits, octet
aligned), which :func:`storage_frame`/:func:`from_storage` convert.

A lost packet is concealed by the decoder's own concealment (a NO_DATA frame); a Codec Mode
Request from the far end becomes :attr:`AmrDecoder.mode_request`, which the stream hands to
:meth:`AmrEncoder.request_mode` (the mode set and the mode-change rules honoured).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol, cast

import av
import numpy as np

from webgate.media.audio import PCM, Framer, silence
from webgate.media.codecs import libraries
from webgate.media.codecs.base import Decoder, Encoder, frame_to_mono
from webgate.media.codecs.registry import (
    AMR_FALLBACK_DECODERS,
    CodecInfo,
    parse_fmtp,
    pick_av_codec,
)
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "NB_BITS",
    "NB_RATES",
    "NO_DATA",
    "WB_BITS",
    "WB_RATES",
    "AmrDecoder",
    "AmrEncoder",
    "AmrFrame",
    "AmrParams",
    "amr_params",
    "from_storage",
    "pack_payload",
    "storage_frame",
    "unpack_payload",
]

#: speech bits per frame type (FT 0-7 the modes, 8 the SID frame) — 3GPP TS 26.101 table 1a
NB_BITS = (95, 103, 118, 134, 148, 159, 204, 244, 39)
#: AMR-WB (FT 0-8 the modes, 9 the SID frame) — 3GPP TS 26.201 table 2
WB_BITS = (132, 177, 253, 285, 317, 365, 397, 461, 477, 40)
NB_RATES = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)
WB_RATES = (6600, 8850, 12650, 14250, 15850, 18250, 19850, 23050, 23850)
NO_DATA = 15
SPEECH_LOST = 14  # AMR-WB only
NO_REQUEST = 15  # CMR: no mode request
MAX_FRAMES = 16  # frames in one payload (320 ms); more is refused


def _modes(wideband: bool) -> int:
    return len(WB_RATES) if wideband else len(NB_RATES)


def frame_bits(ft: int, wideband: bool) -> int:
    """Speech bits of a frame of type ``ft`` (0 for NO_DATA / SPEECH_LOST); a reserved type
    raises :class:`RemoteProtocolError` (RFC 4867 §4.3.2: the packet is discarded)."""
    table = WB_BITS if wideband else NB_BITS
    if 0 <= ft < len(table):
        return table[ft]
    if ft == NO_DATA or (wideband and ft == SPEECH_LOST):
        return 0
    raise RemoteProtocolError(f"AMR{'-WB' if wideband else ''} frame type {ft} is reserved")


@dataclass(frozen=True)
class AmrFrame:
    """One frame of a payload: its type, quality bit and speech bits (MSB first, zero padded
    to whole octets)."""

    ft: int
    q: bool
    bits: bytes


def storage_frame(frame: AmrFrame) -> bytes:
    """The frame in the RFC 4867 §5 storage format the codec libraries take."""
    return bytes([(frame.ft << 3) | (0x04 if frame.q else 0)]) + frame.bits


def from_storage(data: bytes, wideband: bool) -> AmrFrame:
    """A storage-format frame (as the encoders emit) as an :class:`AmrFrame`."""
    if not data:
        raise LocalProtocolError("empty AMR storage frame")
    ft = (data[0] >> 3) & 0x0F
    nbytes = (frame_bits(ft, wideband) + 7) // 8
    if len(data) < 1 + nbytes:
        raise LocalProtocolError(f"AMR storage frame of type {ft} too short")
    return AmrFrame(ft, bool(data[0] & 0x04), bytes(data[1 : 1 + nbytes]))


def pack_payload(frames: list[AmrFrame], *, wideband: bool, octet_align: bool, cmr: int = NO_REQUEST) -> bytes:
    """An RTP payload (RFC 4867 §4.3 bandwidth-efficient, §4.4 octet-aligned) carrying ``frames``
    in order, with the Codec Mode Request ``cmr``."""
    if not frames:
        raise LocalProtocolError("an AMR payload needs at least one frame")
    last = len(frames) - 1
    if octet_align:
        out = bytearray([(cmr & 0x0F) << 4])
        for i, f in enumerate(frames):
            out.append((0x80 if i < last else 0) | (f.ft << 3) | (0x04 if f.q else 0))
        for f in frames:
            out += f.bits[: (frame_bits(f.ft, wideband) + 7) // 8]
        return bytes(out)
    acc = cmr & 0x0F
    nbits = 4
    for i, f in enumerate(frames):
        acc = (acc << 6) | ((1 if i < last else 0) << 5) | (f.ft << 1) | (1 if f.q else 0)
        nbits += 6
    for f in frames:
        n = frame_bits(f.ft, wideband)
        if n:
            nbytes = (n + 7) // 8
            value = int.from_bytes(f.bits[:nbytes].ljust(nbytes, b"\0"), "big") >> (nbytes * 8 - n)
            acc = (acc << n) | value
            nbits += n
    pad = -nbits % 8
    return (acc << pad).to_bytes((nbits + pad) // 8, "big")


def unpack_payload(payload: bytes, *, wideband: bool, octet_align: bool) -> tuple[int, list[AmrFrame]]:
    """``(cmr, frames)`` of an RTP payload; malformed input raises :class:`RemoteProtocolError`."""
    name = "AMR-WB" if wideband else "AMR"
    if octet_align:
        if len(payload) < 2:
            raise RemoteProtocolError(f"{name} payload too short")
        cmr = payload[0] >> 4
        pos = 1
        tocs: list[tuple[int, bool]] = []
        while True:
            if pos >= len(payload) or len(tocs) >= MAX_FRAMES:
                raise RemoteProtocolError(f"{name} payload's table of contents does not end")
            b = payload[pos]
            pos += 1
            tocs.append(((b >> 3) & 0x0F, bool(b & 0x04)))
            if not b & 0x80:
                break
        frames: list[AmrFrame] = []
        for ft, q in tocs:
            nbytes = (frame_bits(ft, wideband) + 7) // 8
            if pos + nbytes > len(payload):
                raise RemoteProtocolError(f"{name} payload shorter than its table of contents says")
            frames.append(AmrFrame(ft, q, payload[pos : pos + nbytes]))
            pos += nbytes
        return cmr, frames
    total = len(payload) * 8
    if total < 10:
        raise RemoteProtocolError(f"{name} payload too short")
    value = int.from_bytes(payload, "big")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > total:
            raise RemoteProtocolError(f"{name} payload shorter than its table of contents says")
        pos += n
        return (value >> (total - pos)) & ((1 << n) - 1)

    cmr = read(4)
    tocs = []
    while True:
        if len(tocs) >= MAX_FRAMES:
            raise RemoteProtocolError(f"{name} payload's table of contents does not end")
        entry = read(6)
        tocs.append(((entry >> 1) & 0x0F, bool(entry & 1)))
        if not entry & 0x20:
            break
    frames = []
    for ft, q in tocs:
        n = frame_bits(ft, wideband)
        nbytes = (n + 7) // 8
        bits = (read(n) << (nbytes * 8 - n)).to_bytes(nbytes, "big") if n else b""
        frames.append(AmrFrame(ft, q, bits))
    if total - pos >= 8:
        raise RemoteProtocolError(f"{name} payload longer than its table of contents says")
    return cmr, frames


# --- the fmtp parameters -----------------------------------------------------------------


@dataclass(frozen=True)
class AmrParams:
    """The RFC 4867 §8.1 parameters that shape what we send."""

    wideband: bool
    octet_align: bool = False
    mode_set: tuple[int, ...] = ()  # empty: every mode
    mode_change_period: int = 1
    mode_change_neighbor: bool = False

    @property
    def modes(self) -> tuple[int, ...]:
        return self.mode_set or tuple(range(_modes(self.wideband)))


def amr_params(fmtp: str | None, wideband: bool) -> AmrParams:
    """The parameters of an ``a=fmtp`` value. Unknown or malformed values fall back to the
    RFC's defaults; the options webgate does not implement (``crc``, ``robust-sorting``,
    ``interleaving``) raise :class:`LocalProtocolError` (the SDP layer never picks them)."""
    p = parse_fmtp(fmtp)
    for key in ("crc", "robust-sorting"):
        if p.get(key, "0") == "1":
            raise LocalProtocolError(f"AMR {key}=1 is not supported")
    if "interleaving" in p:
        raise LocalProtocolError("AMR interleaving is not supported")
    top = _modes(wideband)
    mode_set: list[int] = []
    for part in p.get("mode-set", "").split(","):
        part = part.strip()
        if part.isdigit() and int(part) < top and int(part) not in mode_set:
            mode_set.append(int(part))
    period = p.get("mode-change-period", "1")
    return AmrParams(
        wideband=wideband,
        octet_align=p.get("octet-align", "0") == "1",
        mode_set=tuple(sorted(mode_set)),
        mode_change_period=2 if period == "2" else 1,
        mode_change_neighbor=p.get("mode-change-neighbor", "0") == "1",
    )


# --- frame codecs (storage format in and out) ------------------------------------------------

Backend = Literal["av", "lib", "native"]


class _FrameEncoder(Protocol):
    def encode(self, pcm: PCM, mode: int) -> bytes: ...

    def close(self) -> None: ...


class _FrameDecoder(Protocol):
    plc: bool

    def decode(self, frame: bytes) -> PCM: ...

    def close(self) -> None: ...


class _AvFrameEncoder:
    """PyAV's libopencore_amrnb: the mode follows ``bit_rate``, which may change per frame."""

    def __init__(self, codec: str, rate: int, rates: tuple[int, ...]) -> None:
        ctx = cast(av.AudioCodecContext, av.CodecContext.create(codec, "w"))
        ctx.sample_rate = rate
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.time_base = Fraction(1, rate)
        ctx.bit_rate = rates[-1]
        ctx.open()
        self._ctx = ctx
        self._rates = rates
        self._rate = rate
        self._pts = 0

    def encode(self, pcm: PCM, mode: int) -> bytes:
        if self._ctx.bit_rate != self._rates[mode]:
            self._ctx.bit_rate = self._rates[mode]
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate
        frame.time_base = Fraction(1, self._rate)
        frame.pts = self._pts
        self._pts += len(pcm)
        return b"".join(bytes(p) for p in self._ctx.encode(frame))

    def close(self) -> None:
        pass


class _AvFrameDecoder:
    def __init__(self, codec: str, rate: int, plc: bool) -> None:
        ctx = cast(av.AudioCodecContext, av.CodecContext.create(codec, "r"))
        ctx.sample_rate = rate
        ctx.layout = "mono"
        self._ctx = ctx
        self.plc = plc

    def decode(self, frame: bytes) -> PCM:
        parts = [frame_to_mono(f) for f in self._ctx.decode(av.Packet(frame))]
        if not parts:
            return silence(0)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        pass


def _lib(key: str) -> ctypes.CDLL:
    lib = libraries.load(key)
    if lib is None:
        raise LocalProtocolError(f"{libraries.LIBRARIES[key].name} is not available")
    return lib


class _NbLibEncoder:
    """libopencore-amrnb (ctypes): ``Encoder_Interface_Encode`` writes a storage frame."""

    def __init__(self) -> None:
        lib = _lib("amrnb")
        lib.Encoder_Interface_init.restype = ctypes.c_void_p
        lib.Encoder_Interface_init.argtypes = [ctypes.c_int]
        lib.Encoder_Interface_exit.restype = None
        lib.Encoder_Interface_exit.argtypes = [ctypes.c_void_p]
        lib.Encoder_Interface_Encode.restype = ctypes.c_int
        lib.Encoder_Interface_Encode.argtypes = [
            ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
        ]
        self._lib = lib
        state = lib.Encoder_Interface_init(0)
        if not state:
            raise MemoryError("Encoder_Interface_init failed")
        self._state: int | None = state
        self._out = ctypes.create_string_buffer(64)

    def encode(self, pcm: PCM, mode: int) -> bytes:
        if self._state is None:
            raise LocalProtocolError("encoder closed")
        data = np.ascontiguousarray(pcm, dtype=np.int16)
        n = self._lib.Encoder_Interface_Encode(self._state, mode, data.ctypes.data, self._out, 0)
        return self._out.raw[: max(0, n)]

    def close(self) -> None:
        if self._state is not None:
            self._lib.Encoder_Interface_exit(self._state)
            self._state = None


class _WbLibEncoder:
    """libvo-amrwbenc (ctypes): ``E_IF_encode`` writes a storage frame."""

    def __init__(self) -> None:
        lib = _lib("amrwbenc")
        lib.E_IF_init.restype = ctypes.c_void_p
        lib.E_IF_init.argtypes = []
        lib.E_IF_exit.restype = None
        lib.E_IF_exit.argtypes = [ctypes.c_void_p]
        lib.E_IF_encode.restype = ctypes.c_int
        lib.E_IF_encode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self._lib = lib
        state = lib.E_IF_init()
        if not state:
            raise MemoryError("E_IF_init failed")
        self._state: int | None = state
        self._out = ctypes.create_string_buffer(128)

    def encode(self, pcm: PCM, mode: int) -> bytes:
        if self._state is None:
            raise LocalProtocolError("encoder closed")
        data = np.ascontiguousarray(pcm, dtype=np.int16)
        n = self._lib.E_IF_encode(self._state, mode, data.ctypes.data, self._out, 0)
        return self._out.raw[: max(0, n)]

    def close(self) -> None:
        if self._state is not None:
            self._lib.E_IF_exit(self._state)
            self._state = None


class _LibDecoder:
    """libopencore-amrnb ``Decoder_Interface_Decode`` / libopencore-amrwb ``D_IF_decode``."""

    plc = True

    def __init__(self, wideband: bool) -> None:
        lib = _lib("amrwb" if wideband else "amrnb")
        init, exit_, decode = (
            (lib.D_IF_init, lib.D_IF_exit, lib.D_IF_decode)
            if wideband
            else (lib.Decoder_Interface_init, lib.Decoder_Interface_exit, lib.Decoder_Interface_Decode)
        )
        init.restype = ctypes.c_void_p
        init.argtypes = []
        exit_.restype = None
        exit_.argtypes = [ctypes.c_void_p]
        decode.restype = None
        decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self._exit = exit_
        self._decode = decode
        state = init()
        if not state:
            raise MemoryError("AMR decoder init failed")
        self._state: int | None = state
        self._pcm = np.zeros(320 if wideband else 160, dtype=np.int16)
        self._in = ctypes.create_string_buffer(64)

    def decode(self, frame: bytes) -> PCM:
        if self._state is None:
            raise LocalProtocolError("decoder closed")
        # the library reads as many bytes as the header's frame type says: give it a full buffer
        ctypes.memmove(self._in, frame.ljust(64, b"\0")[:64], 64)
        self._decode(self._state, self._in, self._pcm.ctypes.data, 0)
        return self._pcm.copy()

    def close(self) -> None:
        if self._state is not None:
            self._exit(self._state)
            self._state = None


def _frame_encoder(wideband: bool, backend: Backend | None) -> _FrameEncoder:
    """The system library first (bench/codec_cost.py: a third cheaper than through PyAV's frames),
    PyAV's opencore when it is absent."""
    if wideband:
        return _WbLibEncoder()
    if backend in (None, "lib") and libraries.available("amrnb"):
        return _NbLibEncoder()
    if backend in (None, "av") and pick_av_codec(("libopencore_amrnb",), "w"):
        return _AvFrameEncoder("libopencore_amrnb", 8000, NB_RATES)
    raise LocalProtocolError(f"no AMR encoder backend {backend or ''}".rstrip())


def _frame_decoder(wideband: bool, backend: Backend | None) -> _FrameDecoder:
    codec = "libopencore_amrwb" if wideband else "libopencore_amrnb"
    rate = 16000 if wideband else 8000
    if backend in (None, "lib") and libraries.available("amrwb" if wideband else "amrnb"):
        return _LibDecoder(wideband)
    if backend in (None, "av") and pick_av_codec((codec,), "r"):
        return _AvFrameDecoder(codec, rate, plc=True)
    if backend in (None, "native"):
        # FFmpeg's own decoder: no concealment entry point (NO_DATA is an error there)
        return _AvFrameDecoder(AMR_FALLBACK_DECODERS["amrwb" if wideband else "amrnb"], rate, plc=False)
    raise LocalProtocolError(f"no AMR decoder backend {backend!r}")


# --- Encoder / Decoder -----------------------------------------------------------------------


class AmrEncoder(Encoder):
    """PCM -> RFC 4867 payloads, one 20 ms frame each (joinable: :meth:`pack` rebuilds the
    table of contents). Starts at the highest mode of the mode set."""

    joinable = True

    def __init__(self, info: CodecInfo, backend: Backend | None = None) -> None:
        self.info = info
        self.wideband = info.name.upper() == "AMR-WB"
        self.params = amr_params(info.fmtp, self.wideband)
        self._codec = _frame_encoder(self.wideband, backend)
        self._framer = Framer(info.sample_rate // 50)
        self.mode = self.params.modes[-1]
        self._target = self.mode
        self._frames = 0

    @property
    def frame_samples(self) -> int:
        return self.info.sample_rate // 50

    def request_mode(self, mode: int) -> None:
        """The far end's Codec Mode Request: move toward the highest mode of the mode set not
        above ``mode`` (RFC 4867 §4.3.1), one neighbouring mode at a time when
        ``mode-change-neighbor=1``, at frame counts that are multiples of ``mode-change-period``."""
        if mode == NO_REQUEST or not 0 <= mode < _modes(self.wideband):
            return
        allowed = self.params.modes
        below = [m for m in allowed if m <= mode]
        self._target = below[-1] if below else allowed[0]

    def _next_mode(self) -> int:
        if self._target != self.mode and self._frames % self.params.mode_change_period == 0:
            allowed = self.params.modes
            if self.params.mode_change_neighbor and self.mode in allowed:
                i = allowed.index(self.mode)
                self.mode = allowed[i + 1] if self._target > self.mode else allowed[i - 1]
            else:
                self.mode = self._target
        self._frames += 1
        return self.mode

    def _one(self, frame: PCM) -> bytes:
        data = self._codec.encode(frame, self._next_mode())
        return pack_payload([from_storage(data, self.wideband)], wideband=self.wideband,
                            octet_align=self.params.octet_align)

    def encode(self, pcm: PCM) -> list[bytes]:
        return [self._one(f) for f in self._framer.push(pcm)]

    def flush(self) -> list[bytes]:
        out = [self._one(f) for f in self._framer.flush()]
        self._codec.close()
        return out

    def pack(self, payloads: Sequence[bytes]) -> bytes:
        if len(payloads) == 1:
            return payloads[0]
        kw = {"wideband": self.wideband, "octet_align": self.params.octet_align}
        frames = [f for p in payloads for f in unpack_payload(p, **kw)[1]]
        return pack_payload(frames, **kw)

    def __del__(self) -> None:
        codec = getattr(self, "_codec", None)
        if codec is not None:
            codec.close()


class AmrDecoder(Decoder):
    """RFC 4867 payloads (either packing, as negotiated) -> PCM; NO_DATA frames and lost
    packets concealed by the decoder itself; a CMR other than 15 lands in :attr:`mode_request`."""

    def __init__(self, info: CodecInfo, backend: Backend | None = None) -> None:
        super().__init__(info, "silence")
        self.wideband = info.name.upper() == "AMR-WB"
        self.params = amr_params(info.fmtp, self.wideband)
        self._codec = _frame_decoder(self.wideband, backend)
        self._frame = info.sample_rate // 50
        self._no_data = bytes([(NO_DATA << 3) | 0x04])

    def _decode(self, payload: bytes) -> PCM:
        cmr, frames = unpack_payload(payload, wideband=self.wideband, octet_align=self.params.octet_align)
        if cmr != NO_REQUEST:
            self.mode_request = cmr
        parts: list[PCM] = []
        for f in frames:
            if f.ft in (NO_DATA, SPEECH_LOST) and not self._codec.plc:
                parts.append(silence(self._frame))
            else:
                parts.append(self._codec.decode(storage_frame(f) if f.ft != SPEECH_LOST else self._no_data))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _conceal(self, n: int) -> PCM:
        if not self._codec.plc:
            return super()._conceal(n)
        if n <= 0:
            return silence(0)
        count = -(-n // self._frame)
        out = np.concatenate([self._codec.decode(self._no_data) for _ in range(count)])
        return out[:n]

    def __del__(self) -> None:
        codec = getattr(self, "_codec", None)
        if codec is not None:
            codec.close()

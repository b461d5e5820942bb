"""Encoders and decoders: the :class:`Encoder`/:class:`Decoder` interfaces and their
implementations, made by :func:`create_encoder`/:func:`create_decoder` from the catalogue of
:mod:`webgate.media.codecs.registry`.

Three kinds: numpy table codecs (G.711, linear PCM), PyAV's FFmpeg codecs, and the system
libraries of :mod:`webgate.media._native` (Speex and GSM encoding). Decoders treat their input
as hostile: anything undecodable raises :class:`~webgate.proto.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import abc
from dataclasses import replace
from fractions import Fraction
from typing import cast

import av
import numpy as np

from webgate.media import _native
from webgate.media.audio import PCM, Framer, as_pcm, silence
from webgate.media.codecs.bitstream import parse_audio_specific_config
from webgate.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from webgate.media.codecs.registry import CodecInfo, CodecSpec, Conceal, codec_spec, get_codec, parse_fmtp, pick_av_codec
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

MAX_PAYLOAD = 65536
"""Largest payload a decoder accepts (bytes); bigger is a remote error."""


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

    def __init__(self, info: CodecInfo, conceal: Conceal) -> None:
        self.info = info
        self.sample_rate = info.sample_rate
        self._conceal_mode: Conceal = conceal
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
        conceal: Conceal,
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
) -> tuple[CodecInfo, CodecSpec]:
    info = (
        name
        if isinstance(name, CodecInfo)
        else get_codec(name, clock_rate, channels, fmtp)
    )
    return info, codec_spec(info)


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
    codec = pick_av_codec(spec.av_encoder, "w")
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
    codec = pick_av_codec(spec.av_decoder, "r")
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

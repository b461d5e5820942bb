"""Encoders and decoders made from the catalogue of :mod:`webgate.media.codecs.registry`:
:func:`create_encoder`/:func:`create_decoder` pick the implementation of each codec.

The kinds: numpy table codecs (G.711, linear PCM, here), PyAV's FFmpeg codecs
(:mod:`~webgate.media.codecs.base`), the system libraries of :mod:`webgate.media._native`
(Speex and GSM encoding), and the codec modules loading system libraries at run time:
:mod:`~webgate.media.codecs.g729` (libbcg729), :mod:`~webgate.media.codecs.amr` (OpenCORE AMR,
VisualOn AMR-WB), :mod:`~webgate.media.codecs.g726` (spandsp), :mod:`~webgate.media.codecs.g723`
and :mod:`~webgate.media.codecs.opus` (libopus decoding, for its concealment and FEC). Decoders
treat their input as hostile: anything undecodable raises
:class:`~webgate.proto.errors.RemoteProtocolError`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from webgate.media import _native
from webgate.media.audio import PCM, Framer
from webgate.media.codecs.amr import AmrDecoder, AmrEncoder
from webgate.media.codecs.base import AvDecoder, AvEncoder, Decoder, Encoder
from webgate.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from webgate.media.codecs.g723 import G723Decoder, G723Encoder
from webgate.media.codecs.g726 import G726Decoder, G726Encoder
from webgate.media.codecs.g729 import G729Decoder, G729Encoder
from webgate.media.codecs.opus import OpusDecoder, opus_library_available
from webgate.media.codecs.registry import (
    CodecInfo,
    CodecSpec,
    codec_spec,
    get_codec,
    parse_fmtp,
    pick_av_codec,
)
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.flv import parse_audio_specific_config

#: the packet loss (percent) libopus sizes its in-band FEC for, when the far end says useinbandfec=1
OPUS_FEC_LOSS_PERCENT = 10
# --- table / numpy codecs ------------------------------------------------------------


class _TableEncoder(Encoder):
    def __init__(self, info: CodecInfo, kind: str, frame_ms: int = 20) -> None:
        self.info = info
        self._kind = kind
        self._framer = Framer(max(1, info.sample_rate * frame_ms // 1000))
        self.joinable = kind in ("pcmu", "pcma", "l16")

    @property
    def frame_samples(self) -> int:
        return self._framer.frame_samples

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


class _IlbcDecoder(AvDecoder):
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
    frame_ms: int = 20,
) -> Encoder:
    """An encoder for ``name`` (or a :class:`CodecInfo` from :func:`get_codec`).

    ``frame_ms`` is the frame of the waveform codecs that have none of their own (G.711,
    linear PCM, G.726): the packet time (:func:`~webgate.media.codecs.registry.packet_plan`).
    Raises :class:`LocalProtocolError` if this build cannot encode the codec.
    """
    info, spec = _resolve(name, clock_rate, channels, fmtp)
    if not info.can_encode:
        raise LocalProtocolError(f"no encoder available for {info.name}")
    if spec.native in ("pcmu", "pcma", "l16", "s16le"):
        return _TableEncoder(info, spec.native, frame_ms if spec.frameless else 20)
    if spec.native == "gsm" and _native.gsm_available():
        return _NativeEncoder(info, _native.GsmEncoder())
    if spec.native == "speex" and _native.speex_available():
        return _NativeEncoder(info, _native.SpeexEncoder(info.sample_rate))
    if spec.native == "g729":
        return G729Encoder(info)
    if spec.native in ("amrnb", "amrwb"):
        return AmrEncoder(info)
    if spec.native == "g726":
        return G726Encoder(info, frame_ms)
    if spec.native == "g723":
        return G723Encoder(info)
    codec = pick_av_codec(spec.av_encoder, "w")
    if codec is None:  # pragma: no cover - can_encode said otherwise
        raise LocalProtocolError(f"no encoder available for {info.name}")
    rate = bit_rate or spec.bit_rate
    options: dict[str, str] = {}
    if spec.name == "opus":
        params = parse_fmtp(info.fmtp)
        if "maxaveragebitrate" in params and params["maxaveragebitrate"].isdigit():
            rate = max(6000, min(int(params["maxaveragebitrate"]), 510000))
        if params.get("useinbandfec") == "1":
            # the far end's decoder uses in-band FEC (RFC 7587): send it, sized for 10 % loss
            options = {"fec": "1", "packet_loss": str(OPUS_FEC_LOSS_PERCENT)}
    return AvEncoder(info, codec, spec.av_format, rate, joinable=spec.joinable, options=options)


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
    if spec.native == "g729":
        return G729Decoder(info)
    if spec.native in ("amrnb", "amrwb"):
        return AmrDecoder(info)
    if spec.native == "g726":
        return G726Decoder(info)
    if spec.native == "g723":
        return G723Decoder(info)
    if spec.native == "opus" and opus_library_available():
        return OpusDecoder(info)
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
    return AvDecoder(info, codec, spec.conceal, extradata=extradata)

"""The encoder and decoder interfaces (:class:`Encoder`, :class:`Decoder`) and their generic PyAV
implementations (:class:`AvEncoder`, :class:`AvDecoder`), which the codec modules of this package
(``coders``, ``g729``, ``amr``, ``g726``, ``g723``) build on.

Decoders treat their input as hostile: anything undecodable raises
:class:`~webgate.proto.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from fractions import Fraction
from typing import cast

import av
import numpy as np

from webgate.media.audio import PCM, Framer, as_pcm, silence
from webgate.media.codecs.registry import CodecInfo, Conceal
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

MAX_PAYLOAD = 65536
"""Largest payload a decoder accepts (bytes); bigger is a remote error."""


# --- interfaces ------------------------------------------------------------------------


class Encoder(abc.ABC):
    """PCM -> packets.  Buffers input; emits only whole codec frames.

    Each payload :meth:`encode` returns is one codec frame of :attr:`frame_samples` (20 ms
    unless the codec's frame is another length: 10 ms G.729, 30 ms G.723.1, or the packet time
    a waveform codec was made for). When :attr:`joinable`, consecutive payloads may travel in
    one RTP packet as :meth:`pack` joins them (the packet time the far end asked for).
    """

    info: CodecInfo

    #: several payloads may be joined into one RTP packet by :meth:`pack`
    joinable: bool = False

    @abc.abstractmethod
    def encode(self, pcm: PCM) -> list[bytes]:
        """Add mono int16 samples at ``info.sample_rate``; return finished packets."""

    @property
    def frame_samples(self) -> int:
        """Samples (at ``info.sample_rate``) each payload of :meth:`encode` stands for."""
        return self.info.frame_samples

    def request_mode(self, mode: int) -> None:
        """The far end asked for another codec mode (AMR's CMR); codecs without modes ignore it."""

    def pack(self, payloads: Sequence[bytes]) -> bytes:
        """Several consecutive payloads of this encoder as one RTP payload (only when
        :attr:`joinable`; the payload formats here concatenate, AMR rebuilds its table of
        contents)."""
        if len(payloads) > 1 and not self.joinable:
            raise LocalProtocolError(f"{self.info.name} payloads cannot be joined")
        return b"".join(payloads)

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
        self._concealed = 0  # samples concealed since the last decoded payload
        #: a codec mode the far end asked us to send (AMR's Codec Mode Request), for the encoder
        self.mode_request: int | None = None

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
            self._concealed = 0
        return pcm

    def conceal(self, samples: int | None = None) -> PCM:
        """Audio standing in for a lost packet: ``samples`` (default 20 ms) at :attr:`sample_rate`.

        Codecs with a concealment of their own (G.729, AMR, Opus) run it; waveform codecs
        (G.711, G.722, G.726, linear PCM) and the frame-path codecs Nellymoser and AAC repeat
        the last frame, fading to silence over 60 ms of consecutive loss; the others give
        silence (FFmpeg exposes no PLC entry point through PyAV: an empty packet means end of
        stream).
        """
        n = self.sample_rate // 50 if samples is None else max(0, samples)
        self._lost += 1
        out = self._conceal(n)
        self._concealed += n
        return out

    def recover(self, following: bytes, samples: int | None = None) -> PCM:
        """Like :meth:`conceal`, knowing the payload that follows the lost one (Opus rebuilds
        the lost frame from that payload's in-band FEC data; the others conceal)."""
        return self.conceal(samples)

    def _conceal(self, n: int) -> PCM:
        """``n`` samples of concealment; the default repeats and fades (or is silent)."""
        fade = 3 * self.sample_rate // 50
        done = self._concealed
        if self._conceal_mode == "silence" or not len(self._last) or done >= fade or n == 0:
            return silence(n)
        period = min(len(self._last), self.sample_rate // 50)
        src = np.resize(self._last[-period:], n).astype(np.float32)
        start = 1.0 - done / fade
        ramp = np.clip(
            np.linspace(start, start - n / fade, n, endpoint=False, dtype=np.float32), 0.0, 1.0
        )
        return as_pcm(src * ramp)

    def reset(self) -> None:
        """Forget concealment state (e.g. after an SSRC change)."""
        self._last = silence(0)
        self._lost = 0
        self._concealed = 0


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


class AvEncoder(Encoder):
    def __init__(
        self,
        info: CodecInfo,
        codec: str,
        fmt: str,
        bit_rate: int | None,
        *,
        joinable: bool = False,
        options: dict[str, str] | None = None,
    ) -> None:
        self.info = info
        self.joinable = joinable
        ctx = cast(av.AudioCodecContext, av.CodecContext.create(codec, "w"))
        ctx.sample_rate = info.sample_rate
        ctx.layout = "mono"
        ctx.format = fmt
        ctx.time_base = Fraction(1, info.sample_rate)
        if bit_rate:
            ctx.bit_rate = bit_rate
        if codec == "libopus":
            ctx.options = {"application": "voip", "frame_duration": "20", **(options or {})}
        elif options:
            ctx.options = dict(options)
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


class AvDecoder(Decoder):
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



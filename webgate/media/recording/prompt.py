"""Sound played to both parties of a call while it is recorded: the announcement at the start
and the periodic beep (``[recording] record_announcement``, ``record_beep_s``; docs/recording.md).

A :class:`PromptPlayer` hangs on the call's :class:`~webgate.media.stream.RtpAudioStream`
(``prompt``) and mixes its sound into what the stream sends toward SIP (the SIP party hears it)
and into what the stream hands to the web side (the caller hears it), in each direction once.
On the frame path it mixes PCM before encoding / after decoding; on the packet path it decodes,
mixes and re-encodes the relayed payload (:class:`_Recoder`: G.711 by its tables; Opus, G.722 and
the other codecs this build encodes with a decoder and an encoder of
:mod:`webgate.media.codecs` made when a prompt starts and dropped when it ends), one payload of
the same duration for each, so the RTP timestamps stay as they are. While nothing is queued every
call returns its input at once: the relay is untouched.
"""

from __future__ import annotations

import wave
from collections.abc import Callable

import numpy as np

from webgate.media.analysis import read_wav
from webgate.media.audio import PCM, Resampler, as_pcm
from webgate.media.codecs import (
    CodecInfo,
    Decoder,
    Encoder,
    create_decoder,
    create_encoder,
    opus_packet_samples,
)
from webgate.media.codecs.base import AvEncoder
from webgate.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from webgate.media.codecs.registry import codec_spec, pick_av_codec
from webgate.media.tones import ToneGenerator
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["BEEP_HZ", "PromptPlayer", "beep", "load_prompt"]

BEEP_HZ = 1400.0
BEEP_S = 0.2

_G711: dict[str, tuple[Callable[[bytes], PCM], Callable[[PCM], bytes]]] = {
    "PCMU": (ulaw_decode, ulaw_encode),
    "PCMA": (alaw_decode, alaw_encode),
}


def beep(rate: int, seconds: float = BEEP_S, hz: float = BEEP_HZ, amplitude: float = 0.25) -> PCM:
    """A short tone at ``rate`` with 10 ms ramps (no click)."""
    n = int(rate * seconds)
    pcm = np.asarray(ToneGenerator(hz, rate, amplitude).generate(n), dtype=np.float64)
    ramp = min(n // 2, rate // 100)
    if ramp:
        env = np.ones(n)
        env[:ramp] = np.linspace(0.0, 1.0, ramp)
        env[-ramp:] = np.linspace(1.0, 0.0, ramp)
        pcm *= env
    return as_pcm(pcm)


def load_prompt(path: str, rate: int) -> PCM:
    """A WAV file as int16 mono at ``rate`` (``OSError``/``ValueError`` if it cannot be read)."""
    try:
        pcm, src = read_wav(path)
    except (EOFError, KeyError, wave.Error) as e:
        raise ValueError(f"not a PCM WAV file: {e}") from None
    if src != rate:
        rs = Resampler(src, rate)
        pcm = as_pcm(np.concatenate([rs.resample(pcm), rs.resample(np.zeros(rate // 50, dtype=np.int16))]))
    return pcm


class _Direction:
    def __init__(self, info: CodecInfo) -> None:
        self.queue: PCM = np.zeros(0, dtype=np.int16)
        self.recoder = _Recoder(info)

    def take(self, n: int) -> PCM:
        out = np.zeros(n, dtype=np.int16)
        k = min(n, len(self.queue))
        out[:k] = self.queue[:k]
        self.queue = self.queue[k:]
        return out

    def mix(self, pcm: PCM) -> PCM:
        add = self.take(len(pcm))
        return as_pcm(np.clip(pcm.astype(np.int32) + add, -32768, 32767).astype(np.int16))


class _Recoder:
    """One direction's relayed payloads with the prompt mixed in: decode, mix, encode, one payload
    of the same duration out for each in (the RTP timestamps and the durations stay right).

    G.711 goes through its tables (stateless). The other codecs get a decoder and an encoder of
    :mod:`webgate.media.codecs` when a prompt starts (:meth:`recode` with nothing open), kept
    while it plays so the codec state runs on, and dropped by :meth:`close` when it has played:
    the payloads in between are relayed untouched and nothing is decoded. A payload that cannot
    be decoded, or whose duration this encoder cannot make (G.722 packets of other than
    multiples of 20 ms, Speex packets of several frames, Opus packets of other than
    10/20/40/60 ms; those are remade as one frame), is relayed as it came while
    the prompt's samples for it are skipped (the prompt keeps time, that packet does not carry
    it)."""

    def __init__(self, info: CodecInfo) -> None:
        self.info = info
        self._g711 = _G711.get(info.name.upper())
        self._opus = info.name.lower() == "opus"
        self._decoder: Decoder | None = None
        self._encoder: Encoder | None = None
        self._enc_samples = 0  # Opus: the frame duration (48 kHz samples) the encoder makes
        self._broken = False  # this build cannot encode/decode the codec: pass payloads on
        #: payloads re-encoded and payloads passed on during a prompt (tests, diagnostics)
        self.recoded = 0
        self.passed = 0

    def recode(self, d: _Direction, payload: bytes) -> bytes:
        if self._g711 is not None:
            decode, encode = self._g711
            self.recoded += 1
            return encode(d.mix(decode(payload)))
        if self._broken:
            return self._pass(d, payload, None)
        try:
            if self._decoder is None:
                self._decoder = create_decoder(self.info)
            pcm = self._decoder.decode(payload)
        except LocalProtocolError:
            self._broken = True
            return self._pass(d, payload, None)
        except RemoteProtocolError:
            return self._pass(d, payload, None)
        n = len(pcm)
        if n == 0:
            return payload
        encoder = self._encoder_for(n)
        if encoder is None:
            return self._pass(d, payload, n)
        try:
            out = encoder.encode(d.mix(pcm))
        except Exception:  # noqa: BLE001 - an encoder failing never stops the relay
            out = []
        if self._made(out, encoder) != n or (len(out) > 1 and not encoder.joinable):
            self._encoder = None  # failed or out of step (it buffered): a fresh one next time
            self.passed += 1  # (the prompt's samples for it were taken: it keeps time)
            return payload
        self.recoded += 1
        return out[0] if len(out) == 1 else encoder.pack(out)

    def _made(self, out: list[bytes], encoder: Encoder) -> int:
        """The samples the encoder's payloads stand for (Opus: from their TOC bytes)."""
        if self._opus:
            try:
                return sum(opus_packet_samples(x) for x in out)
            except RemoteProtocolError:
                return -1
        return len(out) * encoder.frame_samples

    def _pass(self, d: _Direction, payload: bytes, n: int | None) -> bytes:
        if n is None:
            n = self._samples(payload)
        d.take(n)
        self.passed += 1
        return payload

    def _samples(self, payload: bytes) -> int:
        """A payload's duration without decoding it: Opus from its TOC, else 20 ms."""
        if self._opus:
            try:
                return opus_packet_samples(payload)
            except RemoteProtocolError:
                return 0
        return self.info.sample_rate // 50

    def _encoder_for(self, n: int) -> Encoder | None:
        try:
            if self._opus:
                if self._encoder is None or self._enc_samples != n:
                    self._encoder = _opus_encoder(self.info, n)
                    self._enc_samples = n
                return self._encoder
            if self._encoder is None:
                self._encoder = create_encoder(self.info)
        except LocalProtocolError:
            self._broken = True
            return None
        enc = self._encoder
        if enc is None or n % enc.frame_samples or (n > enc.frame_samples and not enc.joinable):
            return None
        return enc

    def close(self) -> None:
        """The prompt has played: forget the codec state (the next prompt starts afresh)."""
        self._decoder = self._encoder = None
        self._enc_samples = 0


def _opus_encoder(info: CodecInfo, samples: int) -> Encoder | None:
    """An Opus encoder making one frame of ``samples`` (48 kHz) per payload: 20 ms as the codec
    module makes it (the far end's fmtp honoured), 10/40/60 ms through PyAV's libopus; None for
    other durations (2.5/5 ms, several frames a packet)."""
    if samples == 960:
        return create_encoder(info)
    ms = {480: 10, 1920: 40, 2880: 60}.get(samples)
    spec = codec_spec(info)
    codec = pick_av_codec(spec.av_encoder, "w")
    if ms is None or codec is None or not info.can_encode:
        return None
    return AvEncoder(info, codec, spec.av_format, spec.bit_rate, options={"frame_duration": str(ms)})


class PromptPlayer:
    """Mixes queued sound into both directions of one stream, at the codec's ``sample_rate``."""

    def __init__(self, info: CodecInfo) -> None:
        self.info = info
        self.rate = info.sample_rate
        self._out = _Direction(info)  # toward SIP
        self._in = _Direction(info)  # toward the web side

    @property
    def active(self) -> bool:
        return bool(len(self._out.queue) or len(self._in.queue))

    @property
    def recoded(self) -> tuple[int, int]:
        """Relayed payloads re-encoded with the prompt in them: (toward SIP, toward the web side)."""
        return self._out.recoder.recoded, self._in.recoder.recoded

    def play(self, pcm: PCM) -> None:
        """Queue ``pcm`` (at :attr:`rate`) toward both parties (after what is already queued)."""
        for d in (self._out, self._in):
            d.queue = np.concatenate([d.queue, as_pcm(pcm)])

    def clear(self) -> None:
        self._out.queue = self._in.queue = np.zeros(0, dtype=np.int16)
        self._out.recoder.close()
        self._in.recoder.close()

    # --- the stream's hooks ----------------------------------------------------------------
    def out_pcm(self, pcm: PCM) -> PCM:
        return self._out.mix(as_pcm(pcm)) if len(self._out.queue) else pcm

    def in_pcm(self, pcm: PCM) -> PCM:
        return self._in.mix(as_pcm(pcm)) if len(self._in.queue) else pcm

    def out_payload(self, payload: bytes) -> bytes:
        return self._payload(self._out, payload)

    def in_payload(self, payload: bytes) -> bytes:
        return self._payload(self._in, payload)

    def _payload(self, d: _Direction, payload: bytes) -> bytes:
        if not len(d.queue) or not payload:
            return payload
        out = d.recoder.recode(d, payload)
        if not len(d.queue):
            d.recoder.close()
        return out

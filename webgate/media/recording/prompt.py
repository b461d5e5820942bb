"""Sound played to both parties of a call while it is recorded: the announcement at the start
and the periodic beep (``[recording] record_announcement``, ``record_beep_s``; docs/recording.md).

A :class:`PromptPlayer` hangs on the call's :class:`~webgate.media.stream.RtpAudioStream`
(``prompt``) and mixes its sound into what the stream sends toward SIP (the SIP party hears it)
and into what the stream hands to the web side (the caller hears it), in each direction once.
On the frame path it mixes PCM before encoding / after decoding; on the packet path it decodes,
mixes and re-encodes the relayed payload, which it does for G.711 only (other relayed codecs:
that direction stays as it is). While nothing is queued every call returns its input at once.
"""

from __future__ import annotations

import wave
from collections.abc import Callable

import numpy as np

from webgate.media.analysis import read_wav
from webgate.media.audio import PCM, Resampler, as_pcm
from webgate.media.codecs import CodecInfo
from webgate.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from webgate.media.tones import ToneGenerator

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
    def __init__(self) -> None:
        self.queue: PCM = np.zeros(0, dtype=np.int16)

    def take(self, n: int) -> PCM:
        out = np.zeros(n, dtype=np.int16)
        k = min(n, len(self.queue))
        out[:k] = self.queue[:k]
        self.queue = self.queue[k:]
        return out

    def mix(self, pcm: PCM) -> PCM:
        add = self.take(len(pcm))
        return as_pcm(np.clip(pcm.astype(np.int32) + add, -32768, 32767).astype(np.int16))


class PromptPlayer:
    """Mixes queued sound into both directions of one stream, at the codec's ``sample_rate``."""

    def __init__(self, info: CodecInfo) -> None:
        self.info = info
        self.rate = info.sample_rate
        self._out = _Direction()  # toward SIP
        self._in = _Direction()  # toward the web side
        self._g711 = _G711.get(info.name.upper())

    @property
    def active(self) -> bool:
        return bool(len(self._out.queue) or len(self._in.queue))

    def play(self, pcm: PCM) -> None:
        """Queue ``pcm`` (at :attr:`rate`) toward both parties (after what is already queued)."""
        for d in (self._out, self._in):
            d.queue = np.concatenate([d.queue, as_pcm(pcm)])

    def clear(self) -> None:
        self._out.queue = self._in.queue = np.zeros(0, dtype=np.int16)

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
        if not len(d.queue) or self._g711 is None or not payload:
            return payload
        decode, encode = self._g711
        return encode(d.mix(decode(payload)))

"""The benchmark callers' audio signal and its analysis (numpy + PyAV, no I/O).

Signal (preamble "audio convention"): 20 ms frames in a 25-frame (500 ms) loop; frame 0 is the
"mark", a 20 ms burst of 2000 Hz at -3 dBFS (peak), frames 1..24 a steady 400 Hz tone at
-20 dBFS (peak; the levels here are peak levels of the sine).  Both tones have a whole number of
periods per frame, so the loop is phase-continuous.

``make_frames(codec)`` returns the 25 encoded payloads ("pcmu": 160 bytes of µ-law each,
"opus": 20 ms packets encoded once at 48 kHz mono).  ``Analyzer(codec)`` is fed the payloads
that come back and finds each mark's onset sample-accurately, counts near-silent frames and
keeps the RFC 3550 interarrival jitter.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from webgate.media.codecs import (
    ulaw_encode,  # the gateway's own G.711 (the callers' encoder too)
)

FRAMES_PER_LOOP = 25          # one mark every 25 frames = 500 ms
FRAME_S = 0.02
BASE_HZ, BASE_DBFS = 400.0, -20.0
MARK_HZ, MARK_DBFS = 2000.0, -3.0
SILENT_DBFS = -45.0           # a returned frame whose peak is below this is "lost content"
MARK_THRESHOLD_DBFS = -9.0    # onset = first sample above this (base tone peaks at -20 dBFS)
MARK_QUIET_S = 0.1            # ... after at least this long with no sample above it

CLOCK = {"pcmu": 8000, "opus": 48000}   # RTP clock rate (= decoded sample rate here)
PT = {"pcmu": 0}                         # static payload types; opus is dynamic (from the SDP)


def _amp(dbfs: float) -> float:
    return 32767.0 * 10 ** (dbfs / 20)


def pcm_loop(rate: int) -> list[np.ndarray]:
    """The 25 frames of int16 PCM at ``rate``."""
    n = rate // 50
    t = np.arange(n) / rate
    mark = np.round(_amp(MARK_DBFS) * np.sin(2 * np.pi * MARK_HZ * t)).astype(np.int16)
    base = np.round(_amp(BASE_DBFS) * np.sin(2 * np.pi * BASE_HZ * t)).astype(np.int16)
    return [mark] + [base] * (FRAMES_PER_LOOP - 1)


# ---- G.711 µ-law (no audioop) ----

def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exp = (u >> 4) & 0x07
    mant = u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(sign != 0, -mag, mag).astype(np.int16)


ULAW_DECODE = _ulaw_decode_table()
ULAW_ABS = np.abs(ULAW_DECODE.astype(np.int32)).astype(np.int16)
# µ-law byte -> magnitude code 0..127, monotonic in |x|: max(payload.translate(ULAW_CODE)) is the
# frame's peak without numpy (bytes.translate + max run in C)
ULAW_CODE = bytes((~b) & 0x7F for b in range(256))


def ulaw_code_above(level: int) -> int:
    """The largest magnitude code whose decoded |x| is <= level (codes above it exceed level)."""
    mags = [int(ULAW_ABS[(~c) & 0xFF]) for c in range(128)]   # code c = byte ~c (either sign)
    return max([c for c in range(128) if mags[c] <= level] or [-1])


# ---- Opus via PyAV ----

def _opus_encoder() -> Any:
    import av

    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = 48000
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.time_base = Fraction(1, 48000)
    ctx.bit_rate = 32000
    ctx.options = {"application": "voip", "frame_duration": "20"}
    ctx.open()
    return ctx


def _opus_decoder() -> Any:
    import av

    ctx = av.CodecContext.create("libopus", "r")
    ctx.sample_rate = 48000
    ctx.layout = "mono"
    return ctx


def _encode_opus(frames: list[np.ndarray]) -> list[bytes]:
    """Encode three loops continuously and keep the last: the encoder is then in its steady
    state at the loop's start, so replaying the 25 packets in a loop decodes cleanly."""
    import av

    enc = _opus_encoder()
    out: list[bytes] = []
    pts = 0
    for pcm in frames * 3:
        f = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.time_base, f.pts = 48000, Fraction(1, 48000), pts
        pts += len(pcm)
        out.extend(bytes(p) for p in enc.encode(f))
    if len(out) < 3 * FRAMES_PER_LOOP:   # encoder delay: packets lag the input
        for _ in range(3 * FRAMES_PER_LOOP - len(out)):
            f = av.AudioFrame.from_ndarray(frames[1].reshape(1, -1), format="s16", layout="mono")
            f.sample_rate, f.time_base, f.pts = 48000, Fraction(1, 48000), pts
            pts += 960
            out.extend(bytes(p) for p in enc.encode(f))
    # out[k] holds input frame k (libopus lookahead shifts the content a few ms later)
    return out[2 * FRAMES_PER_LOOP : 3 * FRAMES_PER_LOOP]


_FRAMES_CACHE: dict[str, list[bytes]] = {}


def make_frames(codec: str) -> list[bytes]:
    """The caller's 25 payloads (index 0 = the mark)."""
    if codec not in _FRAMES_CACHE:
        if codec == "pcmu":
            _FRAMES_CACHE[codec] = [ulaw_encode(p) for p in pcm_loop(8000)]
        elif codec == "opus":
            _FRAMES_CACHE[codec] = _encode_opus(pcm_loop(48000))
        else:
            raise ValueError(f"unknown codec {codec!r}")
    return _FRAMES_CACHE[codec]


_CALIBRATION: dict[str, float] = {}


def codec_delay_s(codec: str) -> float:
    """The caller's own encode+decode delay: where the mark onset lands when our own
    payloads are decoded locally (0 for µ-law; libopus lookahead for Opus).  Subtracted from
    the measured round trip so that the figure is the gateway's (and the far end's) only."""
    if codec not in _CALIBRATION:
        a = Analyzer(codec, calibrate=False)
        frames = make_frames(codec)
        t = 0.0
        for loop in range(3):
            for i, p in enumerate(frames):
                if i == 0:
                    a.mark_sent(t)
                a.feed(p, t, (loop * 25 + i) & 0xFFFF, (loop * 25 + i) * CLOCK[codec] // 50)
                t += FRAME_S
        rtts = [r for _, r in a.onsets[1:]] or [0.0]
        _CALIBRATION[codec] = float(np.median(rtts))
    return _CALIBRATION[codec]


class Analyzer:
    """Fed each returned payload with its arrival time (monotonic s), RTP seq and timestamp.

    - Decodes every frame (µ-law: a table lookup; Opus: PyAV) and takes its abs-max: frames
      below -45 dBFS count as ``silent``.  Only frames whose abs-max is above the mark
      threshold get the sample-accurate onset search.
    - An onset = the first sample above the threshold after ≥ 100 ms with none.  Its time is
      ``arrival + index / rate`` (a received packet's first sample is taken to "sound" at its
      arrival, as the sent mark sounds at its send time); the round trip is measured against
      the latest mark sent before it (marks are 500 ms apart, so a round trip must stay below
      that), minus the caller's own codec delay (see ``codec_delay_s``).
    - RFC 3550 jitter: J += (|D| - J) / 16 with D from arrival times vs RTP timestamps.
    """

    def __init__(self, codec: str, calibrate: bool = True) -> None:
        self.codec = codec
        self.rate = CLOCK[codec]
        self.frame_samples = self.rate // 50
        self.threshold = int(_amp(MARK_THRESHOLD_DBFS))
        self.silent_level = int(_amp(SILENT_DBFS))
        self._code_thr = ulaw_code_above(self.threshold)       # code > this: some |x| > threshold
        self._code_silent = ulaw_code_above(self.silent_level - 1)  # code <= this: |x| < silent_level
        self.quiet_need = int(MARK_QUIET_S * self.rate)
        self.quiet = self.quiet_need           # samples since the last above-threshold sample
        self.offset = codec_delay_s(codec) if calibrate else 0.0
        self._dec = _opus_decoder() if codec == "opus" else None
        self.marks: list[float] = []           # send times of our marks
        self.onsets: list[tuple[float, float]] = []   # (onset time, one-way latency... RTT s)
        self.rx = 0
        self.silent: list[float] = []          # arrival times of near-silent frames
        self.arrivals_first: float | None = None
        self.jitter = 0.0                      # in RTP clock units
        self.jitter_max = 0.0
        self.jitter_max_after: float | None = None   # only track the max after this time
        self._transit: float | None = None
        self.max_seq: int | None = None        # extended highest seq
        self.base_seq: int | None = None
        self.decode_errors = 0
        self.win_start = float("inf")          # the caller's steady window [win_start, win_end)
        self.win_end = float("inf")
        self.rx_win = 0                        # packets that arrived inside it

    def mark_sent(self, t: float) -> None:
        self.marks.append(t)

    def _pcm(self, payload: bytes) -> np.ndarray | None:
        if self._dec is None:
            return ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
        import av

        try:
            frames = self._dec.decode(av.Packet(payload))
        except Exception:  # noqa: BLE001 - a corrupt packet: count it, go on
            self.decode_errors += 1
            return None
        if not frames:
            return None
        arr = frames[0].to_ndarray()
        if arr.ndim > 1:
            arr = arr[0]
        if arr.dtype.kind == "f":
            arr = arr * 32768.0
        return arr

    def feed(self, payload: bytes, t: float, seq: int, ts: int) -> None:
        self.rx += 1
        if self.win_start <= t < self.win_end:
            self.rx_win += 1
        # sequence (extended) for the RFC 3550 loss count
        if self.max_seq is None:
            self.max_seq = self.base_seq = seq
        else:
            d = (seq - self.max_seq) & 0xFFFF
            if d < 0x8000:
                self.max_seq += d
        # jitter
        transit = t * self.rate - ts
        if self._transit is not None:
            d = transit - self._transit
            if d > 2**31:
                d -= 2**32
            elif d < -(2**31):
                d += 2**32
            self.jitter += (abs(d) - self.jitter) / 16
            if self.jitter_max_after is not None and t >= self.jitter_max_after and self.jitter > self.jitter_max:
                self.jitter_max = self.jitter
        self._transit = transit
        # content
        if self._dec is None:
            code = max(payload.translate(ULAW_CODE)) if payload else 0
            n = len(payload)
            if code <= self._code_silent:
                self.silent.append(t)
            if code <= self._code_thr:
                self.quiet += n
                return
            pcm = ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
        else:
            pcm = self._pcm(payload)
            if pcm is None:
                self.silent.append(t)
                self.quiet += self.frame_samples
                return
            peak = int(np.abs(pcm).max()) if len(pcm) else 0
            n = len(pcm)
            if peak < self.silent_level:
                self.silent.append(t)
            if peak <= self.threshold:
                self.quiet += n
                return
        above = np.flatnonzero(np.abs(pcm.astype(np.int32)) > self.threshold)
        first, last = int(above[0]), int(above[-1])
        if self.quiet + first >= self.quiet_need:
            onset = t + first / self.rate
            sent = self._mark_before(onset)
            if sent is not None:
                self.onsets.append((onset, onset - sent - self.offset))
        self.quiet = n - last - 1

    def _mark_before(self, t: float) -> float | None:
        for s in reversed(self.marks):
            if s <= t:
                return s
        return None

    @property
    def seq_expected(self) -> int:
        return 0 if self.max_seq is None else self.max_seq - self.base_seq + 1  # type: ignore[operator]

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.rate

    @property
    def jitter_max_ms(self) -> float:
        return 1000.0 * self.jitter_max / self.rate


if __name__ == "__main__":   # self-check: encode, decode our own loop, print the calibration
    for c in ("pcmu", "opus"):
        fr = make_frames(c)
        print(c, "frames", len(fr), "bytes", [len(x) for x in fr[:3]], "codec_delay_ms %.2f" % (1000 * codec_delay_s(c)))

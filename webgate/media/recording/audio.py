"""The stereo audio of a recorded call, sans-IO: left = the web caller, right = the SIP party.

:class:`RecordingTap` hangs on the call's :class:`~webgate.media.stream.RtpAudioStream` (the one
stream toward SIP, which sees both directions in the SIP codec). On the forwarding path it only
appends ``(ssrc, timestamp, payload, arrival)`` to a list; :meth:`RecordingTap.drain` (the
recording's flush, off the forwarding path) decodes them with decoders of its own and places
the PCM on the call's timeline through a :class:`StereoTimeline`.

Alignment: each direction's RTP timestamps are anchored to the timeline at its first packet
(arrival time since the recording's start) and again after an SSRC change or when timestamps
and arrival times disagree by more than :data:`REANCHOR_S` (a jump, a silent stretch the
sender did not count, the far end's hold). Gaps, loss and hold are silence. A packet that
comes after its place was written (later than the reorder delay) is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from webgate.media.audio import PCM, Resampler, as_pcm
from webgate.media.codecs import CodecInfo, Decoder, create_decoder
from webgate.proto.errors import RemoteProtocolError

__all__ = ["LEFT", "RIGHT", "RecordingTap", "StereoTimeline", "StreamAnchor"]

Stereo = npt.NDArray[np.int16]
LEFT, RIGHT = 0, 1
#: timestamps more than this far from the arrival times: anchor the stream again
REANCHOR_S = 0.12
#: what is kept back for late (reordered) packets before it is written
REORDER_DELAY_S = 0.3
#: the most queued packets per direction (a stuck flush must not grow memory without bound)
MAX_QUEUED = 3000


class StereoTimeline:
    """Two channels of int16 at ``rate`` on one timeline (sample 0 = the recording's start).

    :meth:`place` puts samples at a position, :meth:`take` hands out everything before a
    position as shape (n, 2) and forgets it; what was never placed is silence, and the
    pauses (:meth:`pause`) are silence too."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.base = 0  # the first sample not yet taken
        self._buf = [np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.int16)]
        self.pauses: list[list[int | None]] = []  # [start, end or None] in samples
        self.late_samples = 0

    def place(self, channel: int, pos: int, pcm: PCM) -> None:
        if pos < self.base:
            cut = self.base - pos
            self.late_samples += min(cut, len(pcm))
            pcm, pos = pcm[cut:], self.base
        if not len(pcm):
            return
        off = pos - self.base
        buf = self._buf[channel]
        end = off + len(pcm)
        if end > len(buf):
            grown = np.zeros(max(end, 2 * len(buf)), dtype=np.int16)
            grown[:len(buf)] = buf
            buf = self._buf[channel] = grown
        buf[off:end] = pcm

    def pause(self, pos: int) -> None:
        if not self.pauses or self.pauses[-1][1] is not None:
            self.pauses.append([max(pos, self.base), None])

    def resume(self, pos: int) -> None:
        if self.pauses and self.pauses[-1][1] is None:
            self.pauses[-1][1] = max(pos, self.pauses[-1][0] or 0)

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1][1] is None

    def take(self, upto: int) -> Stereo:
        """The samples ``base`` .. ``upto`` as (n, 2) (silence where nothing was placed)."""
        n = upto - self.base
        if n <= 0:
            return np.zeros((0, 2), dtype=np.int16)
        out = np.zeros((n, 2), dtype=np.int16)
        for ch in (LEFT, RIGHT):
            buf = self._buf[ch]
            k = min(n, len(buf))
            out[:k, ch] = buf[:k]
            self._buf[ch] = buf[k:].copy()
        for start, end in self.pauses:
            assert start is not None
            a, b = max(start, self.base), upto if end is None else min(end, upto)
            if b > a:
                out[a - self.base:b - self.base] = 0
        self.base = upto
        self.pauses = [p for p in self.pauses if p[1] is None or p[1] > upto]
        return out


@dataclass
class StreamAnchor:
    """One direction's RTP timestamps -> timeline positions (samples at the recording's rate)."""

    rate: int
    ssrc: int | None = None
    ts0: int = 0
    pos0: int = 0
    clock: int = 8000
    reanchors: int = 0

    def position(self, ssrc: int, timestamp: int, clock: int, arrival_pos: int) -> int:
        if self.ssrc is not None and ssrc == self.ssrc and clock == self.clock:
            delta = (timestamp - self.ts0) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            pos = self.pos0 + delta * self.rate // clock
            if abs(pos - arrival_pos) <= REANCHOR_S * self.rate:
                return pos
            self.reanchors += 1
        self.ssrc, self.ts0, self.pos0, self.clock = ssrc, timestamp, arrival_pos, clock
        return arrival_pos


#: the "SSRC" of PCM the frame path hands over before encoding (never a real 32-bit SSRC)
PCM_SOURCE = -1


class _Side:
    """One direction: its queue, anchor, decoder and resampler."""

    def __init__(self, rate: int) -> None:
        self.queue: list[tuple[int, int, bytes | PCM, float]] = []
        self.pcm_ts = 0  # the RTP-clock position of the next PCM handed over (frame path)
        self.anchor = StreamAnchor(rate)
        self.info: CodecInfo | None = None
        self.decoder: Decoder | None = None
        self.resampler: Resampler | None = None
        self.dropped = 0


class RecordingTap:
    """Both directions of one RTP audio stream, recorded in stereo at ``rate``.

    ``codec()`` is the stream's current :class:`CodecInfo` (None before negotiation);
    ``start``: the recording's start on ``clock`` (``time.monotonic``)."""

    def __init__(self, rate: int, codec: Callable[[], CodecInfo | None], start: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.start = clock() if start is None else start
        self.codec = codec
        self.timeline = StereoTimeline(rate)
        self._sides = (_Side(rate), _Side(rate))
        self.decode_errors = 0

    # --- on the forwarding path: only an append ------------------------------------------
    def _queue(self, side: _Side, ssrc: int, timestamp: int, payload: bytes | PCM) -> None:
        if len(side.queue) < MAX_QUEUED:
            side.queue.append((ssrc, timestamp, payload, self.clock()))
        else:
            side.dropped += 1

    def sent(self, ssrc: int, timestamp: int, payload: bytes) -> None:
        """A payload the stream sent toward SIP (the web caller: left)."""
        self._queue(self._sides[LEFT], ssrc, timestamp, payload)

    def received(self, ssrc: int, timestamp: int, payload: bytes) -> None:
        """A payload received from SIP in the negotiated codec (the SIP party: right)."""
        self._queue(self._sides[RIGHT], ssrc, timestamp, payload)

    def received_pcm(self, ssrc: int, timestamp: int, pcm: PCM) -> None:
        """Frame path: a packet from SIP the stream decoded (at the codec's rate)."""
        self._queue(self._sides[RIGHT], ssrc, timestamp, pcm)

    def sent_pcm(self, pcm: PCM) -> None:
        """Frame path: PCM (the codec's rate) about to be encoded toward SIP (the web caller)."""
        side = self._sides[LEFT]
        info = self.codec()
        if info is None:
            return
        if len(side.queue) < MAX_QUEUED:
            side.queue.append((PCM_SOURCE, side.pcm_ts & 0xFFFFFFFF, pcm.copy(), self.clock()))
        else:
            side.dropped += 1
        side.pcm_ts += len(pcm) * info.rtp_clock_rate // info.sample_rate

    # --- off the forwarding path -----------------------------------------------------------
    def now_pos(self) -> int:
        return int((self.clock() - self.start) * self.rate)

    def drain(self) -> None:
        """Decode what was queued and place it on the timeline."""
        info = self.codec()
        for ch, side in enumerate(self._sides):
            items, side.queue = side.queue, []
            if info is None or not items:
                continue
            if side.info is not info:
                side.info = info
                side.decoder = None  # made at the first payload (the frame path hands PCM)
                side.resampler = Resampler(info.sample_rate, self.rate) if info.sample_rate != self.rate else None
            items.sort(key=lambda it: (it[0], it[3]))  # per source in arrival order
            for ssrc, ts, payload, arrived in items:
                if isinstance(payload, bytes):
                    if side.decoder is None:
                        if not info.can_decode:
                            self.decode_errors += 1
                            continue
                        side.decoder = create_decoder(info)
                    try:
                        pcm = side.decoder.decode(payload)
                    except (RemoteProtocolError, ValueError):
                        self.decode_errors += 1
                        continue
                else:
                    pcm = payload  # decoded by the call already (frame path)
                if side.resampler is not None:
                    pcm = side.resampler.resample(as_pcm(pcm))
                arrival = int((arrived - self.start) * self.rate)
                pos = side.anchor.position(ssrc, ts, info.rtp_clock_rate, arrival)
                self.timeline.place(ch, pos, as_pcm(pcm))

    def take(self, final: bool = False) -> Stereo:
        """Drain, then the stereo up to now less the reorder delay (``final``: up to now)."""
        self.drain()
        upto = self.now_pos() - (0 if final else int(REORDER_DELAY_S * self.rate))
        return self.timeline.take(upto)

    def pause(self) -> None:
        self.timeline.pause(self.now_pos())

    def resume(self) -> None:
        self.timeline.resume(self.now_pos())

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._sides)

    @property
    def reanchors(self) -> int:
        return sum(s.anchor.reanchors for s in self._sides)

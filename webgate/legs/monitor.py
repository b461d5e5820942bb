"""Supervisor audio (silent monitoring): a call's two directions mixed, for its audio watchers.

A watcher that asked for audio (WebSocket ``watch`` with ``audio: true``, RTMP
``watch/SESSIONID?audio=both``) hears both parties: the web caller and the SIP far end, mixed.
The hub (:class:`~webgate.legs.hub.MediaHub`) starts one :class:`CallMonitor` when its first
audio watcher joins and stops it when the last one leaves, so a call nobody listens to does no
audio work at all (``call.monitor`` is None and every tap point is one attribute test).

While it runs, the call's tap points hand it what passes, as it passes, and nothing more:

- web -> SIP: :meth:`Call.send_payload` (packet path) and :meth:`Call.send_audio` (frame path);
- SIP -> web: the SIP stream's payloads (packet path) and decoded PCM (frame path), in
  ``webgate.calls.media_path``.

A payload is only queued there (a deque append): the decoding (the SIP codec's decoder, one per
direction), resampling to :data:`MIX_RATE` and mixing happen on the gateway's media clock, every
20 ms, off the forwarding path of the call's own audio. Each direction has a small prebuffer
(:data:`PREBUFFER_MS`, against the jitter between packet arrival and the clock) and a bound
(:data:`MAX_BUFFER_MS`: older audio is dropped, so monitoring never drifts behind the call).
The mix is the clipped sum of one 20 ms frame of each direction; a silent or absent direction
counts as silence. A frame goes out every tick, also when both are silent, so players' clocks
move on.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np
from twisted.logger import Logger

from webgate.media.audio import PCM, Resampler, as_pcm, mix, silence
from webgate.media.codecs import Decoder, create_decoder
from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["MIX_RATE", "CallMonitor", "MixDirection"]

log = Logger()

MIX_RATE = 16000  # wideband: a phone's audio has no more band; watchers resample to their codec
FRAME_MS = 20
FRAME = MIX_RATE * FRAME_MS // 1000
PREBUFFER_MS = 40
MAX_BUFFER_MS = 200
_MAX_QUEUED = 64  # items (payloads or PCM blocks) waiting for the next tick, per direction


class MixDirection:
    """One direction's audio: queued as it passes, decoded and resampled on the tick."""

    def __init__(self) -> None:
        self._items: collections.deque[tuple[Any, int]] = collections.deque(maxlen=_MAX_QUEUED)
        self._buf: PCM = silence(0)
        self._decoder: Decoder | None = None
        self._decoder_key: tuple[Any, ...] | None = None
        self._resamplers: dict[int, Resampler] = {}
        self._flowing = False  # past the prebuffer (False: wait for it again)
        self.bad = 0
        self.dropped_ms = 0

    # the tap points (the packet path's cost: one append)
    def put_payload(self, payload: bytes) -> None:
        self._items.append((payload, 0))

    def put_pcm(self, pcm: PCM, rate: int) -> None:
        self._items.append((pcm, rate))

    # the tick
    def drain(self, codec: Any) -> None:
        """Decode (``codec``: the SIP leg's CodecInfo, for payloads) and resample what is queued."""
        blocks = [self._buf] if len(self._buf) else []
        while self._items:
            item, rate = self._items.popleft()
            if rate == 0:
                decoded = self._decode(item, codec)
                if decoded is None:
                    continue
                item, rate = decoded
            if rate != MIX_RATE:
                rs = self._resamplers.get(rate)
                if rs is None:
                    rs = self._resamplers[rate] = Resampler(rate, MIX_RATE)
                item = rs.resample(item)
            blocks.append(as_pcm(item))
        if blocks:
            self._buf = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        limit = MIX_RATE * MAX_BUFFER_MS // 1000
        if len(self._buf) > limit:
            self.dropped_ms += (len(self._buf) - limit) * 1000 // MIX_RATE
            self._buf = self._buf[-limit:]

    def _decode(self, payload: bytes, codec: Any) -> tuple[PCM, int] | None:
        if codec is None or not payload:
            return None
        key = (codec.name, codec.sample_rate, codec.channels)
        if self._decoder is None or self._decoder_key != key:
            try:
                self._decoder = create_decoder(codec)
            except (LocalProtocolError, RemoteProtocolError, ValueError):
                self._decoder = None
            self._decoder_key = key
        if self._decoder is None:
            self.bad += 1
            return None
        try:
            return self._decoder.decode(payload), self._decoder.sample_rate
        except RemoteProtocolError:
            self.bad += 1
            return None

    def take(self) -> PCM:
        """One frame (silence while it prebuffers or after an underrun)."""
        if not self._flowing:
            if len(self._buf) < MIX_RATE * PREBUFFER_MS // 1000:
                return silence(FRAME)
            self._flowing = True
        frame, self._buf = self._buf[:FRAME], self._buf[FRAME:]
        if len(frame) < FRAME:
            self._flowing = False  # underrun: prebuffer again
            frame = np.concatenate((frame, silence(FRAME - len(frame))))
        return frame


class CallMonitor:
    """The mixed audio of one call while its hub has audio watchers (see the module doc).

    ``deliver(pcm, rate)`` gets each mixed 20 ms frame. :meth:`start` sets ``call.monitor`` and
    joins the media clock; :meth:`stop` undoes both."""

    def __init__(self, call: Any, deliver: Callable[[PCM, int], None], clock: Any = None) -> None:
        self.call = call
        self.deliver = deliver
        self.clock = clock if clock is not None else call.manager.rtp_pool.clock
        self.web = MixDirection()
        self.sip = MixDirection()
        self.frames = 0
        self.running = False
        self._next_due: float | None = None

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.call.monitor = self
        self.clock.add_ticker(self.tick)
        log.info("call {session_id}: supervisor audio on (both directions mixed)", session_id=self.call.session_id)

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        if getattr(self.call, "monitor", None) is self:
            self.call.monitor = None
        self.clock.remove_ticker(self.tick)
        log.info("call {session_id}: supervisor audio off ({frames} frames mixed)", session_id=self.call.session_id, frames=self.frames)

    # -- the call's tap points (web: the caller; sip: the far end)
    def web_payload(self, payload: bytes) -> None:
        self.web.put_payload(payload)

    def web_pcm(self, pcm: PCM, rate: int) -> None:
        self.web.put_pcm(pcm, rate)

    def sip_payload(self, payload: bytes) -> None:
        self.sip.put_payload(payload)

    def sip_pcm(self, pcm: PCM, rate: int) -> None:
        self.sip.put_pcm(pcm, rate)

    # -- the media clock
    def tick(self, now: float) -> None:
        """Every ~20 ms: one mixed frame per 20 ms elapsed (the clock may fire late)."""
        if not self.running:
            return
        stream = getattr(self.call, "stream", None)
        codec = getattr(stream, "codec", None)
        self.web.drain(codec)
        self.sip.drain(codec)
        if self._next_due is None:
            self._next_due = now
        if now - self._next_due > 0.2:  # a long stall: resynchronise, do not burst
            self._next_due = now
        while self._next_due <= now + 0.001:
            self._next_due += FRAME_MS / 1000.0
            self.frames += 1
            try:
                self.deliver(mix(self.web.take(), self.sip.take()), MIX_RATE)
            except Exception:  # noqa: BLE001 - a watcher's failure must not stop the clock
                log.failure("call {session_id}: supervisor audio delivery failed", session_id=self.call.session_id)

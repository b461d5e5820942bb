"""One RTP audio stream toward SIP: codec, jitter buffer, RFC 4733, RTCP, symmetric RTP,
strict source (RTP and RTCP only from the far end's learnt address: webgate/proto/rtp_source.py).

No sockets here: the adapter hands in datagrams and the time, and gives a ``send``
callable. A shared 20 ms media clock calls :meth:`RtpAudioStream.tick`.

Two media paths, kept apart (see docs/architecture.md):
- *frame path*: :meth:`send_pcm` (resample -> encode -> packetize) and decoded PCM out
  through ``on_audio``;
- *packet path*: :meth:`send_payload` takes already-encoded payloads in the negotiated
  codec, and ``on_payload`` hands received payloads out undecoded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from webgate.media.audio import PCM, Framer, Resampler
from webgate.media.codecs import CodecInfo, Decoder, Encoder, create_decoder, create_encoder, get_codec, packet_plan
from webgate.proto import rtp
from webgate.proto.errors import RemoteProtocolError
from webgate.proto.rtp_source import SourceGuard
from webgate.proto.sdp import NegotiatedMedia

class StreamLog(Protocol):
    """Where a stream's few log lines go: a ``twisted.logger.Logger`` given by the adapter
    that owns the sockets (media/ itself imports no I/O framework)."""

    def info(self, format: str, **kwargs: Any) -> None: ...

    def warn(self, format: str, **kwargs: Any) -> None: ...


class AudioTap(Protocol):
    """Sees both directions' payloads in the SIP codec (a call recording,
    webgate/media/recording/audio.py); it must only queue them: it runs on the forwarding path."""

    def sent(self, ssrc: int, timestamp: int, payload: bytes) -> None: ...

    def received(self, ssrc: int, timestamp: int, payload: bytes) -> None: ...

    def sent_pcm(self, pcm: PCM) -> None: ...

    def received_pcm(self, ssrc: int, timestamp: int, pcm: PCM) -> None: ...


class AudioPrompt(Protocol):
    """Sound mixed into both directions (a recording's announcement and beeps,
    webgate/media/recording/prompt.py): toward SIP (``out``) and toward the web side (``in``)."""

    def out_pcm(self, pcm: PCM) -> PCM: ...

    def in_pcm(self, pcm: PCM) -> PCM: ...

    def out_payload(self, payload: bytes) -> bytes: ...

    def in_payload(self, payload: bytes) -> bytes: ...


class NativeLink(Protocol):
    """A native relay carrying this stream's packet path in C (webgate/adapters/native_relay.py):
    while it does, relayed packets do not pass through this object, so it hands its state back
    before Python writes or reports."""

    def yield_out(self) -> None:
        """Python is about to write toward the far end: the native direction into it stops and
        the sender's sequence/timestamp/counters are brought up to date."""

    def sync(self) -> None:
        """Bring the statistics (sent, received, RTCP receiver state, last packet time) up to date."""

    def changed(self) -> None:
        """Something the native path depends on changed (SDP, recorder, prompt, close): check now."""


class _NoLog:
    def info(self, format: str, **kwargs: Any) -> None:
        pass

    def warn(self, format: str, **kwargs: Any) -> None:
        pass


HostPort = tuple[str, int]
RTCP_INTERVAL = 5.0
RTP_HEADER = 12  # bytes of a plain RTP header (what the native relay counts per packet it relays)
MAX_PACKETS_PER_TICK = 8  # 10 ms packets play two per tick; a burst of late ones no more than this
MAX_CONCEALED_MS = 120  # the longest gap one Loss is concealed for


@dataclass
class StreamStats:
    packets_sent: int = 0
    packets_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    dtmf_sent: int = 0
    dtmf_received: int = 0
    bad_packets: int = 0
    concealed: int = 0
    recovered: int = 0  # lost packets rebuilt from the next one's in-band FEC (Opus)


@dataclass
class _Resamplers:
    to_codec: dict[int, Resampler] = field(default_factory=dict)
    from_codec: dict[int, Resampler] = field(default_factory=dict)


class RtpAudioStream:
    def __init__(
        self,
        send_rtp: Callable[[bytes, HostPort], None],
        send_rtcp: Callable[[bytes, HostPort], None] | None = None,
        *,
        jitter_min_ms: int = 20,
        jitter_max_ms: int = 200,
        cname: str = "webgate",
        label: str = "",
        strict_source: bool = True,
        relearn_after_s: float = 0.0,
        log: StreamLog | None = None,
    ) -> None:
        self.log: StreamLog = log if log is not None else _NoLog()
        self._send_rtp = send_rtp
        self._send_rtcp = send_rtcp
        self.jitter_min = jitter_min_ms / 1000.0
        self.jitter_max = jitter_max_ms / 1000.0
        self.cname = cname
        self.label = label
        self.stats = StreamStats()
        self.media: NegotiatedMedia | None = None
        self.codec: CodecInfo | None = None
        self.encoder: Encoder | None = None
        self.decoder: Decoder | None = None
        self.sender: rtp.RtpSender | None = None
        self.jitter: rtp.JitterBuffer | None = None
        self.rx_stats: rtp.RtpStats | None = None
        self.dtmf_rx: rtp.DtmfReceiver | None = None
        self.remote: HostPort | None = None
        self.remote_rtcp: HostPort | None = None
        #: where RTP/RTCP may come from ([rtp] strict_source, relearn_after_s)
        self.source_guard = SourceGuard(strict_source, relearn_after_s)
        self._framer: Framer | None = None
        self._resamplers = _Resamplers()
        #: (frame_ms, frames per packet) we send with: the far end's ptime/maxptime
        self.packet_plan: tuple[int, int] = (20, 1)
        self._pending: list[bytes] = []  # encoded frames waiting for the rest of their packet
        self._packet_samples = 0  # RTP timestamp step of one packet we send
        self._rx_samples = 0  # duration of the last packet received (codec rate samples)
        self._rx_last: tuple[int, int] | None = None  # packet path: (sequence, timestamp) of the last payload
        self._rx_step = 0  # packet path: the far end's timestamp step (RTP clock)
        #: packets (and payload octets) per SSRC that Python counted into rx_stats since the native
        #: relay's last rx_snapshot: the relay does not see them (events, comfort noise)
        self._rx_side: dict[int, tuple[int, int]] = {}
        self._dtmf_queue: list[rtp.RtpPacket] = []
        self._pending_digits: list[tuple[str, int]] = []
        self._next_rtcp = 0.0
        self.closed = False
        # sinks (set by the call / built-in destination)
        self.on_audio: Callable[[PCM, int], None] | None = None
        self.on_payload: Callable[[bytes, int, rtp.RtpPacket], None] | None = None
        self.on_dtmf: Callable[[str, int], None] | None = None
        #: the native relay carrying the packet path (None: Python relays); set by the adapter
        self.native: NativeLink | None = None
        #: the adapter object that owns this stream's sockets (opaque here)
        self.owner: Any = None
        #: a call recording's tap on both directions (None: not recorded)
        self._recorder: AudioTap | None = None
        #: sound mixed into both directions while a recording plays it (None: nothing)
        self._prompt: AudioPrompt | None = None
        self._encoding = False  # send_pcm's payloads are already mixed
        self.first_packet_at: float | None = None
        self.remote_report: rtp.ReportBlock | None = None  # the far end's RTCP report on what we send

    @property
    def recorder(self) -> AudioTap | None:
        """A call recording's tap on both directions (None: not recorded)."""
        return self._recorder

    @recorder.setter
    def recorder(self, tap: AudioTap | None) -> None:
        self._recorder = tap
        if self.native is not None:
            self.native.changed()  # a recorded packet path is relayed by Python (the tap sees it)

    @property
    def prompt(self) -> AudioPrompt | None:
        """Sound mixed into both directions while a recording plays it (None: nothing)."""
        return self._prompt

    @prompt.setter
    def prompt(self, prompt: AudioPrompt | None) -> None:
        self._prompt = prompt
        if self.native is not None:
            self.native.changed()

    # --- the native relay (webgate/adapters/native_relay.py) --------------------------------
    @property
    def dtmf_pending(self) -> bool:
        """RFC 4733 events queued or being sent (no audio may be sent meanwhile)."""
        return bool(self._dtmf_queue or self._pending_digits)

    def rx_snapshot(self) -> tuple[int | None, int, int, int, int] | None:
        """The receiver statistics when the native relay starts receiving for this stream
        (ssrc, received, cycles, max_seq, octets), for :meth:`native_received`. Python's own
        counts (the packets the relay hands back: RFC 4733 events, comfort noise) start again here."""
        self._rx_side = {}
        rx = self.rx_stats
        return (rx.ssrc, rx.received, rx.cycles, rx.max_seq, rx.octets) if rx is not None else None

    def native_sent(self, packets: int, octets: int, last_seq: int, last_ts: int, step: int) -> None:
        """Packets the native relay sent toward the far end for this stream since the last call:
        the sender continues after them (``step``: the last timestamp step, 0 if unknown)."""
        s = self.sender
        if s is None or packets <= 0:
            return
        s.sequence = (last_seq + 1) & 0xFFFF
        s.timestamp = (last_ts + (step or self.samples_per_packet)) & 0xFFFFFFFF
        s.packet_count += packets
        s.octet_count += octets
        self.stats.packets_sent += packets
        self.stats.bytes_sent += RTP_HEADER * packets + octets

    def native_received(self, packets: int, octets: int, first_rx: float, last_rx: float, last_seq: int,
                        last_ts: int, step: int, rx: dict[str, Any], base: tuple[int | None, int, int, int, int] | None) -> None:
        """Packets the native relay received from the far end for this stream since the last call
        (times on this stream's clock; ``rx``: its RFC 3550 statistics since it started, merged
        into :attr:`rx_stats` onto ``base``, the :meth:`rx_snapshot` taken then)."""
        if packets <= 0:
            return
        self.stats.packets_received += packets
        self.stats.bytes_received += RTP_HEADER * packets + octets
        if self.first_packet_at is None:
            self.first_packet_at = first_rx
        self.source_guard.last_rx = last_rx
        self._rx_last = (last_seq, last_ts)
        if step:
            self._rx_step = step
        stats = self.rx_stats
        if stats is None or not rx["received"]:
            return
        ssrc = rx["last_in_ssrc"]
        side_packets, side_octets = self._rx_side.get(ssrc, (0, 0))  # Python's since the snapshot
        # the highest sequence number Python saw (an event after C's last packet), same numbering
        mine = stats.ssrc == ssrc and side_packets
        py_ext = stats.cycles + stats.max_seq if mine else None
        py_base = stats.base_seq if mine else None
        if base is not None and base[0] == ssrc and base[1]:
            # the same source Python counted before: go on from its counts
            stats.cycles = base[2] + (1 << 16 if rx["base_seq"] < base[3] else 0) + rx["cycles"]
            stats.received = base[1] + rx["received"] + side_packets
            stats.octets = base[4] + rx["received_octets"] + side_octets
        else:
            stats.ssrc = ssrc
            stats.base_seq = rx["base_seq"]
            stats.cycles = rx["cycles"]
            if py_base is not None and rtp.seq_diff(py_base, rx["base_seq"]) < 0:
                # the source's first packets were Python's (events before C's first audio)
                stats.cycles += 1 << 16 if py_base > rx["base_seq"] else 0
                stats.base_seq = py_base
            stats.received = rx["received"] + side_packets
            stats.octets = rx["received_octets"] + side_octets
            stats.expected_prior = stats.received_prior = 0
        stats.max_seq = rx["max_seq"]
        if py_ext is not None and py_ext > stats.cycles + stats.max_seq:
            stats.cycles, stats.max_seq = py_ext & ~0xFFFF, py_ext & 0xFFFF
        stats._jitter = rx["jitter"]

    # --- negotiation -----------------------------------------------------------------
    def configure(self, media: NegotiatedMedia) -> None:
        """(Re)configure from an offer/answer outcome; a codec change resets the codecs."""
        c = media.codec
        changed = self.media is None or self.media.codec != c
        self.media = media
        remote = (media.remote_address, media.remote_port) if media.remote_port else None
        remote_rtcp = (media.remote_rtcp_address, media.remote_rtcp_port) if media.remote_rtcp_port else None
        g = self.source_guard
        if g.expect(remote, remote_rtcp):
            # a new (or the first) SDP address: send there, learn the source again
            if g.relearns:
                self.log.info("call {session_id}: far end's media moved to {remote}: learning its RTP source again", session_id=self.label,
                         remote=_fmt(remote))
            self.remote, self.remote_rtcp = remote, remote_rtcp
        elif remote is None or g.locked is None:
            self.remote, self.remote_rtcp = remote, remote_rtcp
        # else: the same SDP address (hold, unhold, a codec change): keep sending where its packets come from
        plan_changed = False
        if changed:
            info = get_codec(c.name, c.clock_rate, c.channels, c.fmtp)
            self.codec = info
            self.decoder = create_decoder(info) if info.can_decode else None
            self._rx_samples = info.frame_samples
        if self.codec is not None:
            plan = packet_plan(self.codec, media.ptime, media.maxptime)
            plan_changed = plan != self.packet_plan
            self.packet_plan = plan
        if (changed or plan_changed) and self.codec is not None:
            info = self.codec
            self.encoder = create_encoder(info, frame_ms=self.packet_plan[0]) if info.can_encode else None
            self._pending = []
            if self.encoder is not None:
                frames = self.packet_plan[1] if self.encoder.joinable else 1
                self.packet_plan = (self.packet_plan[0], frames)
                self._packet_samples = frames * self.encoder.frame_samples * info.rtp_clock_rate // info.sample_rate
        if changed:
            assert self.codec is not None
            info = self.codec
            pt = c.payload_type if c.payload_type is not None else 0
            if self.sender is None:
                self.sender = rtp.RtpSender(pt, info.rtp_clock_rate)
            else:
                self.sender.payload_type = pt
                self.sender.clock_rate = info.rtp_clock_rate
            self.jitter = rtp.JitterBuffer(info.rtp_clock_rate, ptime=0.02, min_delay=self.jitter_min, max_delay=self.jitter_max)
            self._rx_last, self._rx_step = None, 0
            self.rx_stats = rtp.RtpStats(info.rtp_clock_rate)
            self._framer = Framer(info.frame_samples)
            self._resamplers = _Resamplers()
        te_rate = media.telephone_event_clock_rate or (self.codec.rtp_clock_rate if self.codec else 8000)
        self.dtmf_rx = rtp.DtmfReceiver(te_rate)
        if self.native is not None:
            self.native.changed()

    @property
    def samples_per_packet(self) -> int:
        assert self.codec is not None
        return self.codec.rtp_clock_rate // 50

    @property
    def packets_lost(self) -> int:
        return self.rx_stats.lost if self.rx_stats is not None else 0

    @property
    def jitter_ms(self) -> float:
        if self.rx_stats is None or self.codec is None:
            return 0.0
        return 1000.0 * self.rx_stats.jitter / self.codec.rtp_clock_rate

    @property
    def can_send(self) -> bool:
        m = self.media
        return m is not None and self.remote is not None and m.sends and not m.on_hold and not self.closed

    # --- input from the network --------------------------------------------------------
    def datagram_received(self, data: bytes, source: HostPort, now: float) -> None:
        if self.closed:
            return
        g = self.source_guard
        if self.media is None:
            g.dropped_learning += 1  # before the far end's SDP: nobody's yet
            return
        if rtp.is_rtcp(data):
            if g.admit_rtcp_mux(source):
                self._rtcp(data, now)
            return
        if source == g.locked:
            g.last_rx = now
        elif not self._admit(data, source, now):
            return
        try:
            packet = rtp.RtpPacket.parse(data)
        except RemoteProtocolError:
            self.stats.bad_packets += 1
            return
        self.stats.packets_received += 1
        self.stats.bytes_received += len(data)
        if self.first_packet_at is None:
            self.first_packet_at = now
        m = self.media
        if m.telephone_event is not None and packet.payload_type == m.telephone_event:
            if self.dtmf_rx is not None:
                try:
                    digits = self.dtmf_rx.receive(packet, now)
                except RemoteProtocolError:
                    self.stats.bad_packets += 1
                    return
                self._rx_count(packet, now)  # RFC 3550: per source, whatever the payload type
                for d in digits:
                    self.stats.dtmf_received += 1
                    if self.on_dtmf is not None:
                        self.on_dtmf(d.digit, d.duration_ms)
            return
        if packet.payload_type != m.codec.payload_type:
            if packet.payload_type == 13:  # comfort noise: play silence
                self._rx_count(packet, now)
                return
            self.stats.bad_packets += 1
            return
        if self.rx_stats is not None:
            self.rx_stats.update(packet, now)
        if self.on_payload is not None:
            payload = packet.payload if self._prompt is None else self._prompt.in_payload(packet.payload)
            self.on_payload(payload, self._payload_samples(packet), packet)
        elif self.jitter is not None:
            self.jitter.put(packet, now)
        if self._recorder is not None and self.on_payload is not None:
            # packet path, after the relay: it only queues (decoded at its flush); the frame
            # path hands it the PCM it decodes anyway (tick)
            self._recorder.received(packet.ssrc, packet.timestamp, packet.payload)

    def _rx_count(self, packet: rtp.RtpPacket, now: float) -> None:
        """A packet of the source that is not audio (an RFC 4733 event, comfort noise): counted as
        received, left out of the jitter, which only the codec's packets enter (docs/decisions.md;
        as in the native relay, webgate/native/relay.c, which counts the codec's packets only and
        hands these back to Python)."""
        if self.rx_stats is None or not self.rx_stats.update(packet, now, jitter=False):
            return
        if self.native is not None:
            n, o = self._rx_side.get(packet.ssrc, (0, 0))
            self._rx_side[packet.ssrc] = (n + 1, o + len(packet.payload))

    def _payload_samples(self, packet: rtp.RtpPacket) -> int:
        """Packet path: the duration of a received payload (RTP clock), from the timestamp step
        between consecutive packets (the far end's packet time: 10, 20, 30 ms ...), 20 ms until
        one is seen."""
        last = self._rx_last
        self._rx_last = (packet.sequence, packet.timestamp)
        if last is not None and packet.sequence == (last[0] + 1) & 0xFFFF and self.codec is not None:
            step = (packet.timestamp - last[1]) & 0xFFFFFFFF
            if 0 < step <= self.codec.rtp_clock_rate * 12 // 100:
                self._rx_step = step
        return self._rx_step or self.samples_per_packet

    def _admit(self, data: bytes, source: HostPort, now: float) -> bool:
        """A packet not from the locked source (the slow path): the guard decides; a new lock
        is where RTP (and RTCP) go from now on (symmetric RTP, RFC 4961 practice)."""
        if len(data) < 12 or data[0] >> 6 != 2:
            self.stats.bad_packets += 1
            return False
        g = self.source_guard
        if self.native is not None:
            self.native.sync()  # the last packet's time from the native path (relearn_after_s)
        before, foreign = g.locked, g.dropped_foreign
        ok = g.admit(source, int.from_bytes(data[8:12], "big"), (data[2] << 8) | data[3], now)
        if g.locked != before and g.locked is not None:
            locked = g.locked
            self.remote = locked
            if self.remote_rtcp is not None and not (self.media is not None and self.media.rtcp_mux):
                self.remote_rtcp = (locked[0], locked[1] + 1)
            elif self.remote_rtcp is not None:
                self.remote_rtcp = locked
            if g.strict:
                self.log.info("call {session_id}: RTP source locked to {source} ({how})", session_id=self.label, source=_fmt(locked),
                         how="probation" if g.provisional else "signalled address")
        n = g.dropped_foreign
        if n != foreign and n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... drop
            self.log.warn("call {session_id}: {n} RTP packet(s) from other sources dropped (strict source; latest {source}, locked to {locked})",
                     session_id=self.label, n=n, source=_fmt(source), locked=_fmt(g.locked))
        return ok

    def rtcp_received(self, data: bytes, source: HostPort, now: float) -> None:
        """RTCP that arrived on the RTCP port."""
        if self.closed:
            return
        g = self.source_guard
        if not g.admit_rtcp(source):
            return
        if g.strict and g.rtcp_locked == source and self.remote_rtcp is not None:
            self.remote_rtcp = source  # symmetric RTCP
        self._rtcp(data, now)

    def _rtcp(self, data: bytes, now: float) -> None:
        try:
            packets = rtp.parse_rtcp(data)
        except RemoteProtocolError:
            self.stats.bad_packets += 1
            return
        for p in packets:
            if isinstance(p, rtp.SenderReport) and self.rx_stats is not None:
                self.rx_stats.on_sender_report(p, now)
            if isinstance(p, (rtp.SenderReport, rtp.ReceiverReport)) and self.sender is not None:
                for block in p.reports:
                    if block.ssrc == self.sender.ssrc:
                        self.remote_report = block

    # --- the media clock ---------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Every 20 ms: play out one frame, send a queued DTMF packet, RTCP when due."""
        if self.closed or self.media is None:
            return
        if self._dtmf_queue and not self.can_send:
            self._drop_dtmf()
        if self._dtmf_queue:
            pkt = self._dtmf_queue.pop(0)
            self._write(pkt)
        elif self._pending_digits:
            digit, duration = self._pending_digits.pop(0)
            self._start_digit(digit, duration)
        if self.dtmf_rx is not None:
            for d in self.dtmf_rx.poll(now):
                self.stats.dtmf_received += 1
                if self.on_dtmf is not None:
                    self.on_dtmf(d.digit, d.duration_ms)
        if self.jitter is not None and self.on_payload is None and self.codec is not None:
            # play 20 ms of audio: one packet, two of 10 ms, or none while a 30 ms one lasts
            budget = self.codec.sample_rate // 50
            played = 0
            for _ in range(MAX_PACKETS_PER_TICK):
                item = self.jitter.get(now)
                if item is None:
                    break
                pcm = self._play(item)
                if pcm is not None and len(pcm) and self._recorder is not None and isinstance(item, rtp.RtpPacket):
                    self._recorder.received_pcm(item.ssrc, item.timestamp, pcm)
                if pcm is not None and len(pcm) and self._prompt is not None:
                    pcm = self._prompt.in_pcm(pcm)
                if pcm is not None and len(pcm):
                    played += len(pcm)
                    if self.on_audio is not None:
                        self.on_audio(pcm, self.codec.sample_rate)
                if played >= budget:
                    break
        if now >= self._next_rtcp:
            self._next_rtcp = now + RTCP_INTERVAL
            if self.native is not None:
                self.native.sync()
            self._send_report(now)

    def _play(self, item: rtp.RtpPacket | rtp.Loss) -> PCM | None:
        """Decode one packet from the jitter buffer, or conceal one that was lost (the codec's
        own concealment, Opus FEC from the packet that follows, or repeat-and-fade)."""
        decoder = self.decoder
        if decoder is None or self.jitter is None:
            return None
        if isinstance(item, rtp.RtpPacket):
            try:
                pcm = decoder.decode(item.payload)
            except RemoteProtocolError:
                self.stats.bad_packets += 1
                return decoder.conceal(self._rx_samples or None)
            if len(pcm) and len(pcm) != self._rx_samples:
                self._rx_samples = len(pcm)
                self.jitter.ptime = len(pcm) / decoder.sample_rate
            if decoder.mode_request is not None:
                if self.encoder is not None:
                    self.encoder.request_mode(decoder.mode_request)
                decoder.mode_request = None
            return pcm
        # the whole gap (the jitter buffer skips several packets at once when the next one is
        # already due), at most MAX_CONCEALED_MS: past that the far end went quiet, not lost
        self.stats.concealed += item.count
        each = self._rx_samples or decoder.sample_rate // 50
        total = min(item.count * each, decoder.sample_rate * MAX_CONCEALED_MS // 1000)
        following = self.jitter.peek() if item.count == 1 else None
        if following is not None and following.sequence == (item.sequence + 1) & 0xFFFF:
            before = getattr(decoder, "fec_recovered", None)
            pcm = decoder.recover(following.payload, total)
            if before is not None and getattr(decoder, "fec_recovered", before) != before:
                self.stats.recovered += 1
            return pcm
        return decoder.conceal(total)

    def _send_report(self, now: float) -> None:
        if self._send_rtcp is None or self.remote_rtcp is None or self.sender is None:
            return
        blocks = []
        if self.rx_stats is not None and self.stats.packets_received:
            blocks.append(self.rx_stats.report_block(now))
        wall = time.time()
        if self.sender.packet_count:
            report: rtp.RtcpPacket = self.sender.sender_report(wall, blocks)
        else:
            report = rtp.ReceiverReport(ssrc=self.sender.ssrc, reports=tuple(blocks))
        sdes = rtp.SourceDescription((rtp.SdesChunk(self.sender.ssrc, ((rtp.SDES_CNAME, self.cname.encode()[:255]),)),))
        self._send_rtcp(rtp.serialize_rtcp([report, sdes]), self.remote_rtcp)

    # --- output ------------------------------------------------------------------------
    def _write(self, packet: rtp.RtpPacket) -> None:
        if not self.can_send or self.remote is None:
            return
        data = packet.serialize()
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(data)
        self._send_rtp(data, self.remote)

    def send_pcm(self, pcm: PCM, rate: int) -> None:
        """Frame path: any rate, any length -> packets in the negotiated codec, of the packet
        time the far end asked for (:attr:`packet_plan`: whole codec frames per packet)."""
        if self.encoder is None or self.codec is None or self.sender is None or self._framer is None:
            return
        if rate != self.codec.sample_rate:
            rs = self._resamplers.to_codec.get(rate)
            if rs is None:
                rs = self._resamplers.to_codec[rate] = Resampler(rate, self.codec.sample_rate)
            pcm = rs.resample(pcm)
        if self._prompt is not None:
            pcm = self._prompt.out_pcm(pcm)
        if self._recorder is not None and self.can_send:
            self._recorder.sent_pcm(pcm)  # the frame path: the PCM, not the payloads, is recorded
        frames = self.packet_plan[1]
        self._encoding = True
        try:
            for payload in self.encoder.encode(pcm):
                if frames <= 1:
                    self.send_payload(payload, self._packet_samples)
                    continue
                self._pending.append(payload)
                if len(self._pending) >= frames:
                    packet = self.encoder.pack(self._pending)
                    self._pending = []
                    self.send_payload(packet, self._packet_samples)
        finally:
            self._encoding = False

    def send_payload(self, payload: bytes, samples: int | None = None, marker: bool = False) -> None:
        """Packet path: an already-encoded payload in the negotiated codec."""
        if self.sender is None:
            return
        n = self.samples_per_packet if samples is None else samples
        if self._dtmf_queue:
            # RFC 4733 §2.5.1.2: audio is not sent while the event is being signalled
            self.sender.skip(n)
            return
        if self.native is not None:
            self.native.yield_out()  # the sender's sequence number and timestamp from the native path
        if self._prompt is not None and not self._encoding:
            payload = self._prompt.out_payload(payload)
        if not self.can_send:
            # on hold / not sending: the media clock goes on, the sequence number does not (RFC 3550
            # §5.1: +1 per packet sent; a skipped number would be a loss at the far end)
            self.sender.skip(n)
            return
        pkt = self.sender.next_packet(payload, n, marker=marker)
        self._write(pkt)
        if self._recorder is not None and self.can_send and not self._encoding:
            self._recorder.sent(pkt.ssrc, pkt.timestamp, payload)

    def send_dtmf(self, digit: str, duration_ms: int = 160) -> bool:
        """Queue an RFC 4733 digit. False when the far end did not negotiate telephone-event."""
        if self.media is None or self.media.telephone_event is None or self.sender is None:
            return False
        self._pending_digits.append((digit, max(40, min(duration_ms, 2000))))
        return True

    def _start_digit(self, digit: str, duration_ms: int) -> None:
        assert self.media is not None and self.sender is not None and self.media.telephone_event is not None
        if self.native is not None:
            self.native.yield_out()  # RFC 4733: no audio while the event is sent; and our sequence numbers
        if not self.can_send:
            return  # on hold: the digit is not sent (and takes no sequence numbers)
        clock = self.media.telephone_event_clock_rate or self.sender.clock_rate
        sender = rtp.DtmfSender(self.media.telephone_event, clock)
        packets = sender.packets(digit, duration_ms, self.sender)
        self.stats.dtmf_sent += 1
        if packets:
            self._write(packets[0])
            self._dtmf_queue.extend(packets[1:])

    def _drop_dtmf(self) -> None:
        """Sending stopped during an event (hold): its remaining packets are not sent, so give back
        their sequence numbers (nothing else took any meanwhile: audio waits for the queue)."""
        queue, self._dtmf_queue = self._dtmf_queue, []
        s = self.sender
        if s is None or not queue:
            return
        s.sequence = queue[0].sequence
        s.packet_count -= len(queue)
        s.octet_count -= sum(len(p.payload) for p in queue)

    def close(self) -> None:
        self.closed = True
        self._dtmf_queue.clear()
        self._pending_digits.clear()
        self.on_audio = None
        self.on_payload = None
        self.on_dtmf = None
        self._recorder = None
        self._prompt = None
        if self.native is not None:
            self.native.changed()


def _fmt(addr: HostPort | None) -> str:
    if addr is None:
        return "-"
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

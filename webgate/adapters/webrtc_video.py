"""Video RTP below aiortc: the caller's video in, and each watcher's video out (issue 14).

Nothing here decodes or encodes video. aiortc negotiates both peer connections (ICE, DTLS-SRTP,
codecs, the watcher's RTCP reports), but its video pipeline never runs:

- :class:`CallerVideo`, the caller's side: the video section is answered ``recvonly`` with only
  the codecs a watcher can take as they are (VP8, H.264 packetization-mode 1; no RTX, no
  header extension but ``mid``, so the browser sends neither retransmissions on another SSRC
  nor padding), and aiortc's video receiver is never started (``receive`` is replaced on the
  instance: no decoder thread, no jitter buffer, no routing of video RTP). Once DTLS is
  connected the video payload types are taken off the nominated ICE socket
  (:class:`~webgate.adapters.webrtc_direct.SrtpTap`, the technique of the direct audio),
  unprotected once and handed to the leg. RTCP toward the caller is written here: a receiver
  report with REMB (``[video] max_bitrate_kbps``, lowered to the lowest watcher's estimate) about
  once a second, a PLI when the hub wants a keyframe, a NACK when a sequence gap shows loss
  (the retransmission then reaches every watcher like any packet).
- :class:`WatcherVideo`, one watcher's side: the caller's packets re-sent as they are with this
  watcher's SSRC, payload type, sequence numbers (a fixed offset: loss upstream stays visible
  to the watcher's NACKs) and timestamps (a fixed offset), protected with the watcher's SRTP
  session and written to its nominated ICE pair. It starts at a keyframe (until then it asks the
  hub for one, at most every half second) and keeps the last packets it sent to serve the
  watcher's NACKs. The watcher's PLI/FIR and REMB are taken off aiortc's sender and handed to
  the hub; its receiver reports go on to aiortc, whose sender (with a track that never yields a
  frame: nothing is encoded) sends the sender reports with the counters kept here.

aiortc 1.16 / aioice private internals used (besides those of
:mod:`webgate.adapters.webrtc_direct`): ``RTCRtpTransceiver._codecs`` and ``._headerExtensions``
(set before the answer), ``._offerDirection`` and ``._get_mline_index()`` (read; in
:mod:`webgate.adapters.webrtc` and :mod:`webgate.adapters.webrtc_watch`), ``RTCRtpReceiver.receive``
(replaced on the instance),
``RTCRtpSender._ssrc``, ``.transport`` (``RTCDtlsTransport``: ``_tx_srtp.protect`` /
``protect_rtcp``, ``_rx_srtp.unprotect``, the nominated pair), ``_handle_rtcp_packet`` (replaced
on the instance) and the sender-report counters ``_RTCRtpSender__packet_count``,
``__octet_count``, ``__ntp_timestamp``, ``__rtp_timestamp``. :meth:`CallerVideo.start` and
:meth:`WatcherVideo.start` return False when any is missing: the call then has no video
forwarding (audio and data are unaffected).
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import clock
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from twisted.logger import Logger

from webgate.adapters.webrtc_direct import SrtpTap, nominated_path
from webgate.legs.hub_bits import vp8_keyframe_size
from webgate.legs.hub_types import RtpVideo
from webgate.proto.rtp import parse_payload

__all__ = ["FORWARDED_CODECS", "CallerVideo", "WatcherVideo", "forwardable", "starts_keyframe"]

log = Logger()

#: the video codecs a watcher can take as the caller sent them
FORWARDED_CODECS = ("VP8", "H264")
_HDR = struct.Struct("!BBHII")
_FEEDBACK_EVERY_S = 1.0  # receiver report + REMB toward the caller
_NACK_MAX_GAP = 64  # a larger jump is a new stream position, not loss worth asking for
_KEYFRAME_RETRY_S = 0.5
_HISTORY = 512  # packets a watcher's NACK can be served from (about 4 s at 1 Mbit/s)
_SR_EVERY = 50


def forwardable(mime_name: str, parameters: dict[str, Any]) -> str | None:
    """The hub's codec name ("VP8"/"H264") of a negotiated video codec, if a watcher can take
    its packets as they are: VP8, or H.264 in packetization-mode 1 (FU-A/STAP-A)."""
    name = mime_name.upper()
    if name == "VP8":
        return "VP8"
    if name == "H264" and str(parameters.get("packetization-mode", "0")) == "1":
        return "H264"
    return None


def starts_keyframe(codec: str, payload: bytes) -> bool:
    """Whether an RTP payload starts a picture a decoder can start from (VP8 keyframe; H.264
    SPS or IDR, alone, first in a STAP-A, or an FU-A start)."""
    if codec == "VP8":
        return vp8_keyframe_size(payload) is not None
    if codec == "H264":
        if not payload:
            return False
        t = payload[0] & 0x1F
        if t == 24:  # STAP-A: its first NAL unit
            return len(payload) > 3 and (payload[3] & 0x1F) in (5, 7)
        if t == 28:  # FU-A: the start of an IDR slice
            return len(payload) > 1 and bool(payload[1] & 0x80) and (payload[1] & 0x1F) == 5
        return t in (5, 7)
    return True


class CallerVideo:
    """The caller's video RTP read off the ICE socket, and our RTCP toward the caller (see the
    module doc). ``sender`` is the video transceiver's ``RTCRtpSender`` (never started: its SSRC
    is the one our RTCP comes from, announced in the answer); ``codecs`` maps the answered
    payload types to the hub's codec names; ``on_rtp(codec, seq, timestamp, marker, payload)``
    gets every packet that carries a payload."""

    def __init__(self, sender: Any, codecs: dict[int, str], on_rtp: Callable[[str, int, int, bool, bytes], None],
                 now: Callable[[], float] = time.monotonic) -> None:
        self._sender = sender
        self._codecs = dict(codecs)
        self._on_rtp = on_rtp
        self._now = now
        self._tap: SrtpTap | None = None
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._addr: Any = None
        self._protect_rtcp: Callable[[bytes], bytes] | None = None
        self._ssrc = 0  # ours (RTCP sender)
        self.media_ssrc: int | None = None  # the caller's video SSRC (learnt from its packets)
        self.bitrate_bps: int | None = None  # the REMB we send (the hub's bound)
        self.active = False
        # receiver-report state (RFC 3550 A.3)
        self._base: int | None = None
        self._max = 0
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._feedback_at = -1e9
        # counters
        self.packets_received = 0
        self.bytes_received = 0
        self.padding_dropped = 0
        self.srtp_errors = 0
        self.bad_packets = 0
        self.handler_errors = 0
        self.send_errors = 0
        self.plis_sent = 0
        self.rembs_sent = 0
        self.nacks_sent = 0

    def start(self) -> bool:
        """Take the video payload types off the socket (DTLS must be connected)."""
        if self.active:
            return True
        if not self._codecs:
            return False
        try:
            dtls = self._sender.transport
            protocol, self._sendto, self._addr = nominated_path(dtls)
            self._protect_rtcp = dtls._tx_srtp.protect_rtcp
            unprotect = dtls._rx_srtp.unprotect
            self._ssrc = int(self._sender._ssrc)
        except (AttributeError, KeyError, TypeError) as e:
            log.warn("WebRTC caller video unavailable ({error}): no video forwarding for this call", error=repr(e))
            return False
        self._tap = SrtpTap.take(protocol, unprotect, set(self._codecs), self._received_packet)
        self.active = True
        return True

    def stop(self) -> None:
        if self._tap is not None:
            self._tap.release(set(self._codecs))
            self._tap = None
        self.active = False
        self._sendto = None

    # -- in -------------------------------------------------------------------------------
    def _received_packet(self, plain: bytes | None) -> None:
        if plain is None:
            self.srtp_errors += 1
            return
        parsed = parse_payload(plain)
        if parsed is None:
            self.bad_packets += 1
            return
        pt, seq, ts, marker, payload = parsed
        ssrc = int.from_bytes(plain[8:12], "big")
        if ssrc != self.media_ssrc:
            self.media_ssrc = ssrc
            self._base = None
        lost = self._account(seq)
        self.packets_received += 1
        if lost:
            self._send_nack(lost)
        now = self._now()
        if now - self._feedback_at >= _FEEDBACK_EVERY_S:
            self._feedback_at = now
            self._send_feedback()
        if not payload:
            self.padding_dropped += 1  # padding only (bandwidth probing): nothing to forward
            return
        self.bytes_received += len(payload)
        try:
            self._on_rtp(self._codecs[pt], seq, ts, marker, payload)
        except Exception:  # noqa: BLE001 - one bad packet must not reach the event loop
            self.handler_errors += 1
            if self.handler_errors in (1, 100, 10000):
                log.failure("WebRTC caller video: packet handling failed ({n} so far)", n=self.handler_errors)

    def _account(self, seq: int) -> list[int]:
        """Receiver statistics; returns the sequence numbers a forward jump skipped."""
        self._received += 1
        if self._base is None:
            self._base, self._max, self._cycles = seq, seq, 0
            self._received, self._expected_prior, self._received_prior = 1, 0, 0
            return []
        delta = (seq - self._max) & 0xFFFF
        if delta == 0 or delta >= 0x8000:
            return []  # a duplicate, a retransmission or a late packet
        if seq < self._max:
            self._cycles += 0x10000
        skipped = [(self._max + i) & 0xFFFF for i in range(1, delta)] if 1 < delta <= _NACK_MAX_GAP else []
        self._max = seq
        return skipped

    # -- RTCP toward the caller -----------------------------------------------------------
    def request_keyframe(self) -> None:
        """A PLI (RFC 4585 6.3.1) for the caller's video."""
        if self.media_ssrc is None:
            return
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._ssrc, media_ssrc=self.media_ssrc)
        if self._send_rtcp([self._report(), pli]):
            self.plis_sent += 1

    def limit_bitrate(self, bps: int) -> None:
        """Bound the caller's video bitrate (REMB now, and with every report after)."""
        self.bitrate_bps = max(1, int(bps))
        if self.media_ssrc is not None:
            self._send_feedback()

    def _send_feedback(self) -> None:
        packets: list[Any] = [self._report()]
        if self.bitrate_bps is not None and self.media_ssrc is not None:
            packets.append(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=self._ssrc, media_ssrc=0,
                                          fci=pack_remb_fci(self.bitrate_bps, [self.media_ssrc])))
        if self._send_rtcp(packets) and len(packets) > 1:
            self.rembs_sent += 1

    def _send_nack(self, lost: list[int]) -> None:
        assert self.media_ssrc is not None
        nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self._ssrc, media_ssrc=self.media_ssrc)
        nack.lost = lost
        if self._send_rtcp([self._report(), nack]):
            self.nacks_sent += 1

    def _report(self) -> RtcpRrPacket:
        if self.media_ssrc is None or self._base is None:
            return RtcpRrPacket(ssrc=self._ssrc)
        extended = self._cycles + self._max
        expected = extended - self._base + 1
        lost = max(0, expected - self._received)
        exp_i, rec_i = expected - self._expected_prior, self._received - self._received_prior
        self._expected_prior, self._received_prior = expected, self._received
        lost_i = exp_i - rec_i
        fraction = (lost_i << 8) // exp_i if exp_i > 0 and lost_i > 0 else 0
        info = RtcpReceiverInfo(ssrc=self.media_ssrc, fraction_lost=min(255, fraction), packets_lost=min(lost, 0x7FFFFF),
                                highest_sequence=extended & 0xFFFFFFFF, jitter=0, lsr=0, dlsr=0)
        return RtcpRrPacket(ssrc=self._ssrc, reports=[info])

    def _send_rtcp(self, packets: list[Any]) -> bool:
        if not self.active or self._sendto is None or self._protect_rtcp is None:
            return False
        try:
            self._sendto(self._protect_rtcp(b"".join(bytes(p) for p in packets)), self._addr)
        except Exception as e:  # noqa: BLE001 - a closed socket or SRTP error must not end the call
            self.send_errors += 1
            if self.send_errors == 1:
                log.warn("WebRTC caller video: RTCP send failed: {error}", error=repr(e))
            return False
        return True


class WatcherVideo:
    """One watcher's video, sent by webgate itself on the watcher's peer connection (see the
    module doc). ``sender`` is the watcher's video ``RTCRtpSender``; ``payload_type`` and
    ``codec`` what its answer settled; ``header_extensions`` the negotiated ids of ``mid`` and
    ``abs-send-time`` (by URI, either may be missing); ``keyframe_wanted()`` and
    ``bitrate(bps)`` go to the hub."""

    def __init__(
        self,
        sender: Any,
        payload_type: int,
        codec: str,
        *,
        keyframe_wanted: Callable[[], None],
        bitrate: Callable[[int], None],
        mid: str | None = None,
        mid_id: int | None = None,
        abs_send_time_id: int | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self.payload_type = payload_type
        self.codec = codec
        self._keyframe_wanted = keyframe_wanted
        self._bitrate = bitrate
        self._now = now
        self._mid = mid.encode() if mid and mid_id and 0 < len(mid) <= 16 else b""
        self._mid_id = mid_id or 0
        self._ast_id = abs_send_time_id or 0
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._addr: Any = None
        self._protect: Callable[[bytes], bytes] | None = None
        self._ssrc = 0
        self._seq_offset: int | None = None
        self._ts_offset = random.randint(0, 0xFFFFFFFF)
        self._next_seq = random.randint(0, 0x7FFF)  # own numbering (an RTMP caller's repackaged video: the hub may replay)
        self._history: list[tuple[int, bytes] | None] = [None] * _HISTORY
        self._waiting = True  # for a keyframe to start from
        self._asked_at = -1e9
        self.active = False
        self.packets_sent = 0
        self.bytes_sent = 0
        self.skipped_before_keyframe = 0
        self.retransmitted = 0
        self.nacks_unserved = 0
        self.keyframe_requests = 0
        self.send_errors = 0
        self.remb_bps: int | None = None

    def start(self) -> bool:
        """Send from now on (the watcher's DTLS must be connected); asks the hub for a keyframe."""
        if self.active:
            return True
        try:
            dtls = self._sender.transport
            _protocol, self._sendto, self._addr = nominated_path(dtls)
            self._protect = dtls._tx_srtp.protect
            self._ssrc = int(self._sender._ssrc)
            original: Callable[[Any], Awaitable[None]] = self._sender._handle_rtcp_packet
            int(self._sender._RTCRtpSender__packet_count)
        except (AttributeError, KeyError, TypeError) as e:
            log.warn("WebRTC watcher video unavailable ({error}): this watcher gets data only", error=repr(e))
            return False

        async def handle_rtcp_packet(packet: Any) -> None:
            if not self._feedback(packet):
                await original(packet)

        self._sender._handle_rtcp_packet = handle_rtcp_packet  # the dtls transport looks it up on the instance
        self.active = True
        self._ask()
        return True

    def stop(self) -> None:
        if self.active:
            try:
                del self._sender._handle_rtcp_packet
            except AttributeError:
                pass
        self.active = False
        self._sendto = None

    # -- out ------------------------------------------------------------------------------
    def send(self, packet: RtpVideo, own_numbers: bool = False) -> None:
        """One of the caller's packets to this watcher (``own_numbers``: number it here, for a
        source whose numbers are not a stream's, e.g. a replayed GOP)."""
        if not self.active or self._sendto is None or self._protect is None:
            return
        if self._waiting:
            if not (packet.keyframe or starts_keyframe(packet.codec, packet.payload)):
                self.skipped_before_keyframe += 1
                if self._now() - self._asked_at >= _KEYFRAME_RETRY_S:
                    self._ask()
                return
            self._waiting = False
        if own_numbers:
            seq = self._next_seq
        else:
            if self._seq_offset is None:
                # start low in the 16-bit space: an early wrap can make a receiver guess the
                # wrong SRTP rollover counter
                self._seq_offset = (random.randint(0, 0x7FFF) - packet.seq) & 0xFFFF
            seq = (packet.seq + self._seq_offset) & 0xFFFF
        self._next_seq = (seq + 1) & 0xFFFF
        ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        ext = self._extension()
        first = 0x90 if ext else 0x80
        plain = _HDR.pack(first, self.payload_type | (0x80 if packet.marker else 0), seq, ts, self._ssrc) + ext + packet.payload
        try:
            data = self._protect(plain)
            self._sendto(data, self._addr)
        except Exception as e:  # noqa: BLE001 - a closed socket or SRTP error must not end the watch
            self.send_errors += 1
            if self.send_errors == 1:
                log.warn("WebRTC watcher video: send failed: {error}", error=repr(e))
            return
        self._history[seq % _HISTORY] = (seq, data)
        self.packets_sent += 1
        self.bytes_sent += len(packet.payload)
        s = self._sender
        s._RTCRtpSender__packet_count = self.packets_sent
        s._RTCRtpSender__octet_count = self.bytes_sent
        if self.packets_sent % _SR_EVERY == 1:
            s._RTCRtpSender__ntp_timestamp = clock.current_ntp_time()
            s._RTCRtpSender__rtp_timestamp = ts

    def _extension(self) -> bytes:
        """RFC 8285 one-byte header extensions: abs-send-time (the watcher's bandwidth
        estimate, hence its REMB) and mid, when negotiated."""
        if not self._ast_id and not self._mid:
            return b""
        body = b""
        if self._ast_id:
            ast = (clock.current_ntp_time() >> 14) & 0xFFFFFF
            body += bytes([(self._ast_id << 4) | 2]) + ast.to_bytes(3, "big")
        if self._mid:
            body += bytes([(self._mid_id << 4) | (len(self._mid) - 1)]) + self._mid
        body += b"\x00" * (-len(body) % 4)
        return b"\xbe\xde" + (len(body) // 4).to_bytes(2, "big") + body

    def _ask(self) -> None:
        self._asked_at = self._now()
        self.keyframe_requests += 1
        self._keyframe_wanted()

    # -- RTCP from the watcher ------------------------------------------------------------
    def _feedback(self, packet: Any) -> bool:
        """A NACK, PLI/FIR or REMB handled here (True); anything else goes on to aiortc."""
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self._retransmit(list(packet.lost))
            return True
        if isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self._ask()
                return True
            if packet.fmt == RTCP_PSFB_APP:
                try:
                    bps, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return True
                if self._ssrc in ssrcs:
                    self.remb_bps = bps
                    self._bitrate(bps)
                return True
        return False

    def _retransmit(self, lost: list[int]) -> None:
        if not self.active or self._sendto is None:
            return
        for seq in lost:
            kept = self._history[seq % _HISTORY]
            if kept is None or kept[0] != seq:
                self.nacks_unserved += 1  # too old, or lost before the gateway (asked upstream)
                continue
            try:
                self._sendto(kept[1], self._addr)
            except Exception:  # noqa: BLE001 - as in send()
                self.send_errors += 1
                return
            self.retransmitted += 1

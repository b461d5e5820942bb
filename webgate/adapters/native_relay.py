"""A WebRTC call's relayed audio handed to the native relay (issue 18, ``[rtp] media_io = "native"``).

On the packet path (the browser and the SIP far end agree on G.711 or Opus) every audio packet
is relayed untouched but for its header: SRTP off, a new SSRC, sequence number and timestamp,
the SIP payload type, and out; and back the same way.  With the native reader
(:mod:`webgate.adapters.native_reader`) that work runs in C, inside the one call the event loop
makes per wake-up, while nothing in Python needs to see the packets.

:class:`CallOffload` decides, per direction, when the C rule may carry it, and hands state back
and forth so that the streams look as if Python had relayed every packet:

- *web -> SIP* ("up"): the browser's audio payload type from the nominated ICE pair's address,
  SRTP-unprotected with aiortc's rx session, re-stamped with the SIP stream's sender (SSRC, the
  next sequence number and timestamp, then continuing by the input's own steps) and sent from
  the SIP RTP socket to the far end's address;
- *SIP -> web* ("down"): the SIP codec's payload type from the far end's **locked** source (the
  strict-source guard, webgate/proto/rtp_source.py: never a source Python has not admitted),
  re-stamped with the browser-facing sender of :class:`~webgate.adapters.webrtc_direct.DirectAudio`,
  SRTP-protected with aiortc's tx session and sent to the nominated pair.

Everything else on those sockets (RTCP, STUN, DTLS, RFC 4733 events, comfort noise, other
sources, video) still reaches Python, where it always went.  A direction is carried in C only
while: the call is on the packet path, no recording tap, prompt or supervisor listens, no DTMF is
being sent on it, the SIP side may be sent to (not on hold), and the source is locked.  Python
takes a direction back *before* it writes on it itself (:meth:`yield_out`, :meth:`yield_web`: an
RFC 4733 digit, a prompt, a packet from a newly admitted source), and the periodic check
(:data:`CHECK_S`) or a change (:meth:`changed`) gives it to C again.  The counters the rest of
the gateway reads (stream statistics, RTCP sender and receiver state, the leg's relayed packets,
aiortc's sender report counters) are brought up to date on each check, before every RTCP report,
and when a direction is taken back.
"""

from __future__ import annotations

import socket
import time
import weakref
from typing import Any

from twisted.logger import Logger

from webgate.adapters.rtp import ip_literal

__all__ = ["CHECK_S", "CallOffload"]

log = Logger()

#: how often each offloaded call's conditions are checked and its counters brought up to date
CHECK_S = 0.5


class _Checker:
    """One timer per reader checking every offload on it (not one timer per call)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.offloads: weakref.WeakSet[CallOffload] = weakref.WeakSet()
        self._handle: Any = None

    def add(self, off: CallOffload) -> None:
        self.offloads.add(off)
        if self._handle is None:
            self._handle = self.reader.loop.call_later(CHECK_S, self._run)

    def _run(self) -> None:
        self._handle = None
        for off in list(self.offloads):
            try:
                off.check()
            except Exception:  # noqa: BLE001 - one call's state must not stop the others' checks
                log.failure("native relay check failed")
                off.stop()
        if len(self.offloads) and not self.reader.closed:
            self._handle = self.reader.loop.call_later(CHECK_S, self._run)


_CHECKERS: weakref.WeakKeyDictionary[Any, _Checker] = weakref.WeakKeyDictionary()


class _Direction:
    """One direction's rule: its input socket and what was last copied over from its stats."""

    __slots__ = ("base_rx", "clock_rate", "in_sock", "seen_octets", "seen_packets", "seen_srtp")

    def __init__(self, in_sock: socket.socket, clock_rate: int, base_rx: tuple[Any, ...] | None = None) -> None:
        self.in_sock = in_sock
        self.clock_rate = clock_rate
        self.base_rx = base_rx
        self.seen_packets = 0
        self.seen_octets = 0
        self.seen_srtp = 0


class CallOffload:
    """The native relay of one WebRTC call's audio (see the module doc)."""

    def __init__(self, reader: Any, direct: Any, leg: Any) -> None:
        self.reader = reader
        self.direct = direct
        self.leg = leg
        self.stream: Any = None
        self._up: _Direction | None = None
        self._down: _Direction | None = None
        self._down_src: Any = None  # the locked source SIP -> web relays from
        self.closed = False
        #: packets relayed in C, both directions; directions given to C and taken back (tests, bench)
        self.relayed = 0
        self.given = 0
        self.taken_back = 0
        checker = _CHECKERS.get(reader)
        if checker is None:
            checker = _CHECKERS[reader] = _Checker(reader)
        checker.add(self)

    # --- NativeLink (webgate.media.stream) ------------------------------------------------------
    def yield_out(self) -> None:
        """The SIP stream writes itself (a DTMF digit, a packet relayed by Python): take web -> SIP back."""
        if self._up is not None:
            self._stop_up()

    def yield_web(self) -> None:
        """DirectAudio sends itself (a DTMF event, a payload relayed by Python): take SIP -> web back."""
        if self._down is not None:
            self._stop_down()

    def sync(self) -> None:
        if self._up is not None:
            self._sync_up(self.reader.rule_stats(self._up.in_sock))
        if self._down is not None:
            self._sync_down(self.reader.rule_stats(self._down.in_sock))

    def changed(self) -> None:
        """A change the rules depend on: take both back, and give them again if still allowed."""
        if self.closed:
            return
        try:
            self.yield_out()
            self.yield_web()
            self.check()
        except Exception:  # noqa: BLE001 - the stream's caller (SDP, a recording) must not fail for it
            log.failure("native relay: taking the call back failed; Python relays it from now on")
            self.stop()

    # --- the decision ---------------------------------------------------------------------------
    def _call_stream(self) -> tuple[Any, Any] | None:
        leg = self.leg
        call = getattr(leg, "call", None)
        if call is None or call.ended or call.media_path != "packet" or call.monitor is not None:
            return None
        stream = call.stream
        if stream is None or stream.closed or stream.media is None or stream.sender is None:
            return None
        if stream.native is not self:
            if stream.native is not None:
                return None  # another offload has it (a transfer's new leg): leave it be
            stream.native = self
            self.stream = stream
        if stream.recorder is not None or stream.prompt is not None:
            return None
        ep = stream.owner
        sock = getattr(ep, "rtp_socket", None)
        if sock is None or ep.reader is not self.reader:
            return None
        return stream, sock

    def check(self) -> None:
        """Periodically and on a change: bring counters up to date, take back a direction whose
        conditions no longer hold, give one whose conditions hold to C."""
        if self.closed:
            return
        d = self.direct
        if not d.active or d.ice_sock is None or d.ice_sock.fileno() < 0:
            self.stop()
            return
        found = self._call_stream()
        if found is None:
            if self._up is not None:
                self._stop_up()
            if self._down is not None:
                self._stop_down()
            return
        stream, sip_sock = found
        if sip_sock.fileno() < 0:
            self.stop()
            return
        self.sync()
        leg = self.leg
        web_pt = leg._audio_pt
        media = stream.media
        sip_pt = media.codec.payload_type
        if web_pt is None or sip_pt is None:
            return
        rate = stream.codec.rtp_clock_rate if stream.codec is not None else 8000
        # web -> SIP
        up_ok = (stream.can_send and stream.remote is not None and not stream.dtmf_pending
                 and ip_literal(stream.remote[0], sip_sock.family))
        if up_ok and self._up is None:
            s = stream.sender
            self.reader.set_rule(
                d.ice_sock, src=d.remote_addr, in_pt=web_pt, out_sock=sip_sock, dst=stream.remote, out_pt=sip_pt,
                out_ssrc=s.ssrc, next_seq=s.sequence, next_ts=s.timestamp, clock_rate=rate, rx=d.rx_session, tx=None)
            self._up = _Direction(d.ice_sock, rate)
            self.given += 1
        elif not up_ok and self._up is not None:
            self._stop_up()
        # SIP -> web
        g = stream.source_guard
        locked = g.locked
        down_ok = locked is not None and not g.provisional and leg.out_track is not None
        if down_ok and self._down is not None and self._down_src != locked:
            self._stop_down()  # the guard moved the lock: the rule follows it
        if down_ok and self._down is None:
            base = stream.rx_snapshot()
            self.reader.set_rule(
                sip_sock, src=locked, in_pt=sip_pt, out_sock=d.ice_sock, dst=d.remote_addr, out_pt=web_pt,
                out_ssrc=d.ssrc, next_seq=d.next_seq, next_ts=d.next_ts, clock_rate=rate, rx=None, tx=d.tx_session)
            self._down = _Direction(sip_sock, rate, base)
            self._down_src = locked
            self.given += 1
        elif not down_ok and self._down is not None:
            self._stop_down()

    # --- counters -------------------------------------------------------------------------------
    def _delta(self, dirn: _Direction, st: dict[str, Any]) -> tuple[int, int, int]:
        dp = st["packets"] - dirn.seen_packets
        do = st["octets"] - dirn.seen_octets
        ds = st["srtp_errors"] - dirn.seen_srtp
        dirn.seen_packets, dirn.seen_octets, dirn.seen_srtp = st["packets"], st["octets"], st["srtp_errors"]
        return dp, do, ds

    def _sync_up(self, st: dict[str, Any] | None) -> None:
        dirn, stream = self._up, self.stream
        if st is None or dirn is None or stream is None:
            return
        dp, do, ds = self._delta(dirn, st)
        d, leg = self.direct, self.leg
        d.srtp_errors += ds
        if not dp:
            return
        self.relayed += dp
        stream.native_sent(dp, do, st["last_out_seq"], st["last_out_ts"], st["last_step"])
        d.packets_received += dp
        leg._rx_rtp += dp
        leg.stats.packets_relayed += dp
        leg.stats.frames_from_browser += dp

    def _sync_down(self, st: dict[str, Any] | None) -> None:
        dirn, stream = self._down, self.stream
        if st is None or dirn is None or stream is None:
            return
        dp, do, _ = self._delta(dirn, st)
        if not dp:
            return
        self.relayed += dp
        d, leg = self.direct, self.leg
        # C's times are CLOCK_MONOTONIC; the stream's are the reactor's (Twisted: wall-clock seconds)
        shift = stream.owner.pool.reactor.seconds() - time.monotonic()
        stream.native_received(dp, do, st["first_rx"] + shift, st["last_rx"] + shift, st["last_in_seq"],
                               st["last_in_ts"], st["last_step"], st, dirn.base_rx)
        d.next_seq = (st["last_out_seq"] + 1) & 0xFFFF
        d.next_ts = (st["last_out_ts"] + (st["last_step"] or stream.samples_per_packet)) & 0xFFFFFFFF
        d.count_sent(dp, do, st["last_out_ts"], max(0.0, time.monotonic() - st["last_rx"]), dirn.clock_rate)
        leg.stats.frames_to_browser += dp
        track = leg.out_track
        if track is not None:
            track.payloads_sent += dp

    # --- taking a direction back ----------------------------------------------------------------
    def _stop_up(self) -> None:
        dirn = self._up
        if dirn is None:
            return
        st = self.reader.clear_rule(dirn.in_sock)
        self._sync_up(st)
        self._up = None
        self.taken_back += 1

    def _stop_down(self) -> None:
        dirn = self._down
        if dirn is None:
            return
        st = self.reader.clear_rule(dirn.in_sock)
        self._sync_down(st)
        self._down = None
        self._down_src = None
        self.taken_back += 1

    def stop(self) -> None:
        """The call's direct audio ends: both directions back to Python, for good."""
        if self.closed:
            return
        self._stop_up()
        self._stop_down()
        self.closed = True
        if self.stream is not None and self.stream.native is self:
            self.stream.native = None
        checker = _CHECKERS.get(self.reader)
        if checker is not None:
            checker.offloads.discard(self)

    @property
    def engaged(self) -> tuple[bool, bool]:
        """(web -> SIP, SIP -> web) carried in C now."""
        return self._up is not None, self._down is not None

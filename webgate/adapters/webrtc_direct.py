"""Direct audio RTP on a connected WebRTC peer connection (the leg's media fast path).

aiortc negotiates the call (ICE, DTLS-SRTP, RTCP, video, data channels), but its audio media
path costs a gateway that only relays or transcodes one voice stream a lot of CPU and delay:
every received packet goes through two asyncio queues and tasks, a jitter buffer that holds
four packets (80 ms) before it releases any, and a decoder thread; every sent packet through a
coroutine per call woken by ``asyncio.sleep`` every 20 ms.  Once DTLS is connected, this class
takes the audio RTP of one call off that path:

- *receive*: the nominated ICE socket's ``datagram_received`` is shadowed on its protocol
  instance.  A datagram that is RTP (RFC 7983: first byte 128..191, not an RTCP packet type)
  with one of the leg's audio payload types is unprotected with aiortc's own SRTP session and
  handed to ``on_rtp`` at once; everything else (STUN, DTLS, RTCP, video, data) goes on to
  aioice and aiortc untouched.  The payload type is in the clear in SRTP, so a packet is
  unprotected exactly once, by one of the two paths.
- *send*: :meth:`send` writes one RTP packet (the sender's SSRC, its own sequence numbers and
  timestamps) SRTP-protected with aiortc's tx session straight to the nominated pair, when the
  payload arrives from SIP: no pacing queue, no added delay.  aiortc's sender keeps sending
  RTCP; its sender-report counters are kept up to date here.

aiortc 1.16 / aioice private internals used (re-checked by tests/test_webrtc_direct.py and the
Chromium tests on an upgrade): ``RTCRtpSender._ssrc`` and ``.transport`` (the
``RTCDtlsTransport``), its ``_tx_srtp`` / ``_rx_srtp`` (``pylibsrtp.Session``) and
``.transport._connection`` (``aioice.Connection``) ``._nominated[1]`` (``CandidatePair``:
``.protocol``, a ``StunProtocol`` with ``.transport``, and ``.remote_addr``), and the sender's
report counters.  :meth:`DirectAudio.start` returns False when any is missing; the leg then
stays on aiortc's path.

The socket hook is shared: :class:`SrtpTap` shadows ``datagram_received`` once per ICE socket
and hands each RTP payload type to whoever took it (this audio, and the caller's video in
:mod:`webgate.adapters.webrtc_video`); when the last one lets go the class's method is back.
"""

from __future__ import annotations

import random
import struct
import weakref
from collections.abc import Callable
from typing import Any

from aiortc import clock
from twisted.logger import Logger

from webgate.adapters import media_loop
from webgate.proto.rtp import parse_payload

__all__ = ["DirectAudio", "SrtpTap", "nominated_path"]

log = Logger()

_HDR = struct.Struct("!BBHII")
_SR_EVERY = 25  # refresh the sender report's NTP/RTP timestamp pair every 25 packets (0.5 s)


#: one tap per ICE socket protocol (aioice ``StunProtocol``): shared by the audio and the video
_TAPS: weakref.WeakKeyDictionary[Any, SrtpTap] = weakref.WeakKeyDictionary()


def nominated_path(dtls: Any) -> tuple[Any, Callable[[bytes, Any], None], Any]:
    """(ICE socket protocol, its ``sendto``, the remote address) of a connected DTLS transport's
    nominated candidate pair. Raises AttributeError/KeyError/TypeError when aiortc/aioice differ.
    With ``[rtp] media_io = "loop"`` the ``sendto`` is the socket's own (media_loop.fast_sendto),
    for the audio here and the video of :mod:`webgate.adapters.webrtc_video` alike."""
    pair = dtls.transport._connection._nominated[1]
    protocol = pair.protocol
    transport = protocol.transport
    return protocol, media_loop.fast_sendto(transport, transport.sendto), pair.remote_addr


class SrtpTap:
    """The RTP of chosen payload types taken off one ICE socket before aioice and aiortc.

    A datagram that is RTP (RFC 7983: first byte 128..191, not an RTCP packet type, RFC 5761)
    with a taken payload type is unprotected once, with the DTLS transport's rx session, and
    given to that payload type's handler (``None``: it failed SRTP authentication); everything
    else goes on to aioice and aiortc untouched."""

    def __init__(self, protocol: Any, unprotect: Callable[[bytes], bytes]) -> None:
        self.protocol = protocol
        self.unprotect = unprotect
        self.routes: dict[int, Callable[[bytes | None], None]] = {}
        original = protocol.datagram_received
        routes = self.routes

        def datagram_received(data: bytes, addr: Any) -> None:
            if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
                route = routes.get(data[1] & 0x7F)
                if route is not None:
                    try:
                        plain = unprotect(data)
                    except Exception:  # noqa: BLE001 - pylibsrtp raises on auth failure / replay
                        route(None)
                        return
                    route(plain)
                    return
            original(data, addr)

        protocol.datagram_received = datagram_received  # asyncio looks it up on the instance
        # [rtp] media_io = "loop": the socket is read by the loop's one MediaReader (drained per
        # wake-up) instead of asyncio's reader, one datagram a wake-up; everything still goes
        # through the hook above
        self._give_back: Callable[[], None] | None = None
        #: the loop reader reading this socket (None: asyncio's own reader)
        self.reader: Any = None
        transport = getattr(protocol, "transport", None)
        reader = media_loop.reader_for(getattr(transport, "_loop", None))
        if reader is not None and transport is not None:
            self._give_back = media_loop.take_asyncio_socket(reader, transport, datagram_received)
            if self._give_back is not None:
                self.reader = reader

    @classmethod
    def take(cls, protocol: Any, unprotect: Callable[[bytes], bytes], payload_types: set[int] | frozenset[int],
             handler: Callable[[bytes | None], None]) -> SrtpTap:
        """Send ``payload_types`` arriving on ``protocol`` to ``handler`` (installs the hook once)."""
        tap = _TAPS.get(protocol)
        if tap is None or tap.protocol is not protocol:
            tap = _TAPS[protocol] = cls(protocol, unprotect)
        for pt in payload_types:
            tap.routes[pt] = handler
        return tap

    def release(self, payload_types: set[int] | frozenset[int]) -> None:
        """Give ``payload_types`` back to aiortc; the last release removes the hook."""
        for pt in payload_types:
            self.routes.pop(pt, None)
        if not self.routes and _TAPS.get(self.protocol) is self:
            del _TAPS[self.protocol]
            if self._give_back is not None:
                self._give_back()
                self._give_back = None
            try:
                del self.protocol.datagram_received  # back to the class's method
            except AttributeError:
                pass


class DirectAudio:
    """Audio RTP of one peer connection sent and received by webgate itself (see module doc)."""

    def __init__(self, sender: Any, payload_types: set[int], on_rtp: Callable[[int, int, int, bool, bytes], None]) -> None:
        self._sender = sender
        self._pts = frozenset(payload_types)
        self._on_rtp = on_rtp
        self._seq = random.randint(0, 0xFFFF)
        self._ts = random.randint(0, 0xFFFFFFFF)
        self._ssrc = 0
        self._tap: SrtpTap | None = None
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._addr: Any = None
        self._protect: Callable[[bytes], bytes] | None = None
        self._unprotect: Callable[[bytes], bytes] | None = None
        self.active = False
        self.packets_sent = 0
        self.packets_received = 0
        self.srtp_errors = 0
        self.send_errors = 0
        self.handler_errors = 0
        self._octets = 0
        #: the nominated pair's socket (the native relay reads and writes it), aiortc's SRTP sessions
        self.ice_sock: Any = None
        self.rx_session: Any = None
        self.tx_session: Any = None
        #: the native relay carrying this audio ([rtp] media_io = "native"), once the leg is bound
        self.offload: Any = None

    def start(self) -> bool:
        """Take the audio over (the peer connection must be connected); False if it cannot."""
        if self.active:
            return True
        try:
            dtls = self._sender.transport
            protocol, self._sendto, self._addr = nominated_path(dtls)
            self._protect = dtls._tx_srtp.protect
            self._unprotect = dtls._rx_srtp.unprotect
            self.tx_session, self.rx_session = dtls._tx_srtp, dtls._rx_srtp
            self.ice_sock = getattr(protocol.transport, "_sock", None)
            self._ssrc = int(self._sender._ssrc)
            sent = int(self._sender._RTCRtpSender__packet_count)
        except (AttributeError, KeyError, TypeError) as e:
            log.warn("WebRTC direct audio unavailable ({error}): staying on aiortc's media path", error=repr(e))
            return False
        if sent:
            # aiortc already sent RTP on this SSRC: a sequence number of our own would jump and
            # could make the browser's SRTP guess the wrong rollover counter; stay on its path
            log.info("WebRTC direct audio not started: aiortc already sent {n} packets", n=sent)
            return False
        assert self._unprotect is not None
        on_rtp = self._on_rtp

        def received(plain: bytes | None) -> None:
            if plain is None:
                self.srtp_errors += 1
                return
            parsed = parse_payload(plain)
            if parsed is not None:
                self.packets_received += 1
                try:
                    on_rtp(*parsed)
                except Exception:  # noqa: BLE001 - one bad packet must not reach the event loop
                    self.handler_errors += 1
                    if self.handler_errors in (1, 100, 10000):
                        log.failure("WebRTC direct audio: packet handling failed ({n} so far)", n=self.handler_errors)

        self._tap = SrtpTap.take(protocol, self._unprotect, self._pts, received)
        self.active = True
        return True

    # --- the native relay ([rtp] media_io = "native", webgate/adapters/native_relay.py) ----------
    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def remote_addr(self) -> Any:
        return self._addr

    @property
    def next_seq(self) -> int:
        return self._seq

    @next_seq.setter
    def next_seq(self, seq: int) -> None:
        self._seq = seq & 0xFFFF

    @property
    def next_ts(self) -> int:
        return self._ts

    @next_ts.setter
    def next_ts(self, ts: int) -> None:
        self._ts = ts & 0xFFFFFFFF

    def count_sent(self, packets: int, octets: int, last_ts: int, age_s: float, clock_rate: int) -> None:
        """Packets the native relay sent for us: aiortc's sender report counters follow (the
        NTP/RTP pair: now, and the last packet's timestamp moved on by its age)."""
        self.packets_sent += packets
        self._octets += octets
        s = self._sender
        s._RTCRtpSender__packet_count = self.packets_sent
        s._RTCRtpSender__octet_count = self._octets
        s._RTCRtpSender__ntp_timestamp = clock.current_ntp_time()
        s._RTCRtpSender__rtp_timestamp = (last_ts + int(age_s * clock_rate)) & 0xFFFFFFFF

    def bind_leg(self, leg: Any) -> None:
        """The leg this audio belongs to: with the native reader, its relayed packets may be
        carried in C (:class:`~webgate.adapters.native_relay.CallOffload`)."""
        tap = self._tap
        if self.offload is not None or not self.active or self.ice_sock is None or tap is None or tap.reader is None:
            return  # the ICE socket is not read by the loop's reader (media_io "twisted")
        reader = tap.reader
        if not hasattr(reader, "set_rule"):
            return  # media_io "loop": the pure-Python reader relays
        from webgate.adapters.native_relay import CallOffload

        self.offload = CallOffload(reader, self, leg)

    def send(self, payload_type: int, payload: bytes, samples: int, marker: bool = False) -> None:
        """Send one payload now; ``samples`` (RTP clock) advances the timestamp after it."""
        if not self.active or self._sendto is None or self._protect is None:
            return
        if self.offload is not None:
            self.offload.yield_web()  # our sequence number and timestamp back from the native path
        pkt = _HDR.pack(0x80, payload_type | (0x80 if marker else 0), self._seq, self._ts, self._ssrc) + payload
        try:
            self._sendto(self._protect(pkt), self._addr)
        except Exception as e:  # noqa: BLE001 - a closed socket or SRTP error must not end the call
            self.send_errors += 1
            if self.send_errors == 1:
                log.warn("WebRTC direct audio: send failed: {error}", error=repr(e))
            return
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets_sent += 1
        self._octets += len(payload)
        s = self._sender
        s._RTCRtpSender__packet_count = self.packets_sent
        s._RTCRtpSender__octet_count = self._octets
        if self.packets_sent % _SR_EVERY == 1:
            s._RTCRtpSender__ntp_timestamp = clock.current_ntp_time()
            s._RTCRtpSender__rtp_timestamp = self._ts
        self._ts = (self._ts + samples) & 0xFFFFFFFF

    def skip(self, samples: int) -> None:
        """Advance the timestamp over a gap (nothing to send for ``samples``)."""
        self._ts = (self._ts + samples) & 0xFFFFFFFF

    def stop(self) -> None:
        if self.offload is not None:
            self.offload.stop()
            self.offload = None
        if self._tap is not None:
            self._tap.release(self._pts)
            self._tap = None
        self.active = False
        self._sendto = None

"""Strict RTP source: which address a stream's RTP and RTCP may come from ("RTP bleed" defence).

Sans-IO: the stream hands in the packet's source address, its SSRC and sequence number, and
``now``; :meth:`SourceGuard.admit` says whether the packet is the far end's. Asterisk's
``strictrtp`` with probation, tightened (docs/security.md, "RTP: strict source"):

*Learning* (a new stream, the SDP's address changed by a re-INVITE/UPDATE, or the locked
source silent for ``relearn_after_s``):

- a packet from the SDP's address locks it at once (the far end is not NATed: what it said
  over SIP is where it sends from), and so does a packet from the address locked before an
  idle relearn;
- otherwise *probation*: :data:`PROBATION` packets in sequence (one SSRC, each sequence number
  the previous one + 1) from one address lock that address (a NATed far end). Until then the
  packets are dropped (counted ``learning``). Candidates are tracked per address (up to
  :data:`MAX_CANDIDATES`; when full, the one silent longest is forgotten), so packets sprayed
  from elsewhere do not reset a real far end's run: pushing it out takes packets from more
  than :data:`MAX_CANDIDATES` addresses between two of its packets (a flood).

*Locked*: only the locked address passes; anything else is dropped (counted ``foreign``). A
lock learned by probation is provisional: one packet from the SDP's address (or the address
locked before an idle relearn) takes over, so whoever sprayed the port before the real far end
spoke cannot keep it. A lock on one of those addresses is final until the next relearn.

The SDP's address ``0.0.0.0`` (RFC 2543 hold) or no address (port 0) learns nothing: every
packet is dropped until a re-INVITE gives an address.

RTCP (:meth:`SourceGuard.admit_rtcp`): accepted from the SDP's RTCP address, from the locked
RTP source's port + 1, or, when the RTP source is not the SDP's address (a NATed far end, whose
NAT may map its RTCP port anywhere), from the first RTCP port of the locked RTP source's host
(then only from that port, until RTP is locked again). RTCP multiplexed on the RTP port (RFC 5761) must come from the
locked RTP source (:meth:`SourceGuard.admit_rtcp_mux`).

``strict=False`` keeps the permissive latching of before: every packet is accepted, and the
address sends go to follows the first source, or a new one once the current has been silent for
:data:`LATCH_IDLE_S`.

The hot path is the caller's: ``source == guard.locked`` (one tuple comparison), then
``guard.last_rx = now``; only other packets come here.
"""

from __future__ import annotations

import ipaddress

__all__ = ["LATCH_IDLE_S", "MAX_CANDIDATES", "PROBATION", "SourceGuard", "normalize_host"]

HostPort = tuple[str, int]

#: packets in sequence from one address that lock it while learning (Asterisk's ``probation``)
PROBATION = 4
#: addresses tracked at once while learning; past it the stalest candidate is forgotten
MAX_CANDIDATES = 64
#: permissive mode (strict=False): a new source is followed after the current one was silent this long
LATCH_IDLE_S = 2.0

_UNSPECIFIED = ("0.0.0.0", "::")


def normalize_host(host: str) -> str:
    """An IP address in the form the socket layer reports it (``::1``, not ``0:0::1``);
    anything else (a name in ``c=``) unchanged."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def _norm(addr: HostPort | None) -> HostPort | None:
    return None if addr is None else (normalize_host(addr[0]), addr[1])


class SourceGuard:
    """The learnt source of one RTP stream (and its RTCP). See the module's docstring."""

    __slots__ = (
        "strict", "relearn_after_s", "locked", "last_rx", "expected", "expected_rtcp", "previous",
        "rtcp_locked", "learning", "provisional", "_candidates", "dropped_foreign",
        "dropped_learning", "rtcp_dropped", "relearns", "locks", "_signalled",
    )

    def __init__(self, strict: bool = True, relearn_after_s: float = 0.0) -> None:
        self.strict = strict
        #: > 0: a locked source silent this long is learnt again (with probation); 0 = never
        self.relearn_after_s = relearn_after_s
        #: the address RTP is accepted from (and sent to); None while learning
        self.locked: HostPort | None = None
        #: when the locked source last sent (the caller refreshes it on the fast path)
        self.last_rx = 0.0
        #: the SDP's RTP and RTCP addresses
        self.expected: HostPort | None = None
        self.expected_rtcp: HostPort | None = None
        #: the source locked before an idle relearn (as trusted as the SDP's address)
        self.previous: HostPort | None = None
        self.rtcp_locked: HostPort | None = None
        self.learning = True
        #: the lock was learnt by probation (a trusted address may take it over)
        self.provisional = False
        #: learning: address -> (ssrc, last sequence number, packets in sequence)
        self._candidates: dict[HostPort, tuple[int, int, int]] = {}
        # counters
        self.dropped_foreign = 0  # RTP from elsewhere while locked (or while no address is signalled)
        self.dropped_learning = 0  # RTP held back while learning (probation, or before negotiation)
        self.rtcp_dropped = 0
        self.relearns = 0  # learning restarted by signalling or idleness (not the first learning)
        self.locks = 0
        self._signalled = False

    # --- signalling -----------------------------------------------------------------------
    def expect(self, rtp: HostPort | None, rtcp: HostPort | None) -> bool:
        """The SDP's RTP/RTCP addresses (on every offer/answer). A changed RTP address starts
        learning again and returns True; the same address keeps what was learnt."""
        rtp, rtcp = _norm(rtp), _norm(rtcp)
        self.expected_rtcp = rtcp
        if self._signalled and rtp == self.expected:
            return False
        if self._signalled:
            self.relearns += 1
        self._signalled = True
        self.expected = rtp
        self.previous = None
        self._learn()
        return True

    @property
    def closed(self) -> bool:
        """No address is signalled (port 0) or the RFC 2543 hold address: nothing is learnt."""
        return self.expected is None or self.expected[0] in _UNSPECIFIED

    def _learn(self) -> None:
        self.locked = None
        self.learning = True
        self.provisional = False
        self.rtcp_locked = None
        self._candidates.clear()

    def _lock(self, source: HostPort, now: float, provisional: bool) -> None:
        self.locked = source
        self.last_rx = now
        self.learning = False
        self.provisional = provisional
        self.rtcp_locked = None
        self._candidates.clear()
        self.locks += 1

    # --- packets ----------------------------------------------------------------------------
    def admit(self, source: HostPort, ssrc: int, seq: int, now: float) -> bool:
        """Whether an RTP packet from ``source`` is the far end's (the slow path: the caller
        has already accepted packets from ``locked``). May lock or relearn."""
        if source == self.locked:
            self.last_rx = now
            return True
        if not self.strict:
            if self.locked is None or now - self.last_rx > LATCH_IDLE_S:
                self._lock(source, now, False)
            return True
        if self.closed:
            self.dropped_foreign += 1
            return False
        trusted = source == self.expected or (source == self.previous and self.previous is not None)
        if not self.learning:
            if trusted and self.provisional:
                self._lock(source, now, False)
                return True
            if self.relearn_after_s > 0 and now - self.last_rx > self.relearn_after_s:
                self.previous = self.locked
                self.relearns += 1
                self._learn()
                trusted = source == self.expected or source == self.previous
            else:
                self.dropped_foreign += 1
                return False
        if trusted:
            self._lock(source, now, False)
            return True
        return self._probation(source, ssrc, seq, now)

    def _probation(self, source: HostPort, ssrc: int, seq: int, now: float) -> bool:
        cands = self._candidates
        cand = cands.get(source)
        if cand is not None and cand[0] == ssrc and (cand[1] + 1) & 0xFFFF == seq:
            run = cand[2] + 1
        else:
            run = 1
            if cand is None and len(cands) >= MAX_CANDIDATES:
                del cands[next(iter(cands))]  # the stalest: kept in order of their last packet
        if run >= PROBATION:
            self._lock(source, now, True)
            return True
        cands.pop(source, None)  # re-insert: most recent last
        cands[source] = (ssrc, seq, run)
        self.dropped_learning += 1
        return False

    def admit_rtcp(self, source: HostPort) -> bool:
        """Whether an RTCP packet that arrived on the RTCP port is the far end's."""
        if source == self.rtcp_locked or not self.strict:
            return True
        if self.closed:
            self.rtcp_dropped += 1
            return False
        locked = self.locked
        if (
            source == self.expected_rtcp
            or (locked is not None and source[0] == locked[0]
                and (source[1] == locked[1] + 1 or (self.rtcp_locked is None and locked != self.expected)))
        ):
            self.rtcp_locked = source
            return True
        self.rtcp_dropped += 1
        return False

    def admit_rtcp_mux(self, source: HostPort) -> bool:
        """Whether an RTCP packet that arrived on the RTP port (RFC 5761) is the far end's."""
        if source == self.locked or not self.strict:
            return True
        self.rtcp_dropped += 1
        return False

    @property
    def state(self) -> str:
        """``learning``, ``locked`` or ``closed`` (``permissive`` when not strict)."""
        if not self.strict:
            return "permissive"
        if self.closed:
            return "closed"
        return "learning" if self.learning else "locked"

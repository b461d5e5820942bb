"""Which remote ICE candidates a WebRTC call may give the gateway, sans-IO.

Every remote candidate becomes a destination of the gateway's ICE connectivity checks (STUN
binding requests, retransmitted for seconds). A client that names ``127.0.0.1:5060`` or
``169.254.169.254:80`` would have the gateway send packets to its own host or link, and one that
names hundreds would make the gateway a packet source toward all of them. So
(``[webrtc] max_remote_candidates`` / ``allow_private_candidates``, docs/security.md):

- **a cap for the call's life**: at most ``limit`` remote candidates per call, the offer's
  ``a=candidate`` lines and trickled ones together, before and after the answer;
- **no candidate that reaches the gateway's own host or link**: loopback, link-local, multicast,
  broadcast and unspecified addresses (``0.0.0.0/8``, ``::``), IPv4-mapped IPv6 forms included,
  and mDNS names (``*.local``: aioice resolves them later and would use whatever address it
  learns, unchecked). Private ranges (RFC 1918, ``fc00::/7``) stay accepted: gateways on a LAN or
  VPN talk to browsers there. ``allow_private`` (tests with every peer on one machine) accepts all.

A candidate the gate refuses never reaches aiortc. Refused and accepted candidates both count
toward the cap, so a flood of refused ones ends the same way as a flood of good ones.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "CANDIDATE_REFUSED",
    "INVALID_CANDIDATE",
    "TOO_MANY_CANDIDATES",
    "CandidateGate",
    "CandidateRefused",
    "address_refusal",
    "candidate_address",
]

#: stable error codes (docs/protocol.md, WebSocket errors)
CANDIDATE_REFUSED = "candidate_refused"
TOO_MANY_CANDIDATES = "too_many_candidates"
INVALID_CANDIDATE = "invalid_candidate"

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # RFC 1122 "this host on this network" (Linux: local)
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_SDP_PREFIX = "a=candidate:"


class CandidateRefused(Exception):
    """A remote candidate the call may not use: ``code`` is one of the codes above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def candidate_address(candidate: str) -> str | None:
    """The connection address of an ICE candidate attribute value (RFC 8839 §5.1:
    ``foundation component transport priority address port typ type ...``, with or without a
    ``candidate:`` prefix), read as aiortc reads it (the fifth field); None when there is none."""
    bits = candidate.strip().removeprefix("candidate:").split()
    return bits[4] if len(bits) >= 8 else None


def address_refusal(address: str) -> str | None:
    """Why ``address`` may not be a remote candidate's address (unless private candidates are
    allowed): ``"loopback"``, ``"link-local"``, ``"multicast"``, ``"broadcast"``,
    ``"unspecified"``, ``"mdns"`` (a ``.local`` name) or ``"hostname"`` (any other name, which aioice
    ignores anyway); None when it may be used."""
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return "mdns" if text.lower().endswith(".local") else "hostname"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip == _BROADCAST:
        return "broadcast"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "unspecified"
    return None


class CandidateGate:
    """The remote candidates of one call: :meth:`check` each one (trickled or from the offer)."""

    def __init__(self, limit: int = 64, allow_private: bool = False) -> None:
        self.limit = limit
        self.allow_private = allow_private
        self.seen = 0  # candidates checked, refused ones included
        self.accepted = 0
        self.refused = 0
        self.unused = 0  # offer lines of sections bundled into another (dropped, not counted)

    def check(self, candidate: str) -> None:
        """Count one remote candidate (its attribute value); raise :class:`CandidateRefused`
        (``too_many_candidates``, ``candidate_refused`` or ``invalid_candidate``) if the call may
        not use it."""
        self.seen += 1
        if self.seen > self.limit:
            self.refused += 1
            raise CandidateRefused(
                TOO_MANY_CANDIDATES,
                f"a call may give at most {self.limit} ICE candidates ([webrtc] max_remote_candidates); this one is ignored",
            )
        address = candidate_address(candidate)
        if address is None:
            self.refused += 1
            raise CandidateRefused(INVALID_CANDIDATE, "not an ICE candidate (foundation component transport priority address port typ type)")
        if not self.allow_private:
            why = address_refusal(address)
            if why is not None:
                self.refused += 1
                shown = address[:64] if why in ("mdns", "hostname") else address.strip("[]")
                raise CandidateRefused(
                    CANDIDATE_REFUSED,
                    f"ICE candidate address {shown} is {why}: refused ([webrtc] allow_private_candidates = false)",
                )
        self.accepted += 1

    def filter_sdp(self, sdp: str) -> tuple[str, list[CandidateRefused]]:
        """The SDP with every ``a=candidate`` line the call may not use removed (each one is
        checked and counted, in order); and why each removed line was refused.

        In a BUNDLE offer only the first bundled section's transport is used (aiortc drops the
        others' ICE transports and their candidates, as RFC 8843 says), and browsers list their
        candidates in every section: the other bundled sections' lines are removed uncounted, so a
        camera + data channel offer costs the cap no more than an audio-only one. Lines are split
        and attributes read as aiortc reads them (``str.splitlines``, the first ``BUNDLE`` group,
        ``a=mid:``)."""
        if _SDP_PREFIX not in sdp:
            return sdp, []
        lines = sdp.splitlines(keepends=True)
        bodies = sdp.splitlines()
        section_of: list[int] = []
        mids: dict[int, str] = {}
        bundle: list[str] | None = None
        section = -1  # the session part
        for body in bodies:
            if body.startswith("m="):
                section += 1
            elif section < 0 and bundle is None and body.startswith("a=group:"):
                bits = body[len("a=group:"):].split()
                if bits and bits[0] == "BUNDLE" and len(bits) > 1:
                    bundle = bits[1:]
            elif section >= 0 and body.startswith("a=mid:"):
                mids[section] = body[len("a=mid:"):]
            section_of.append(section)
        unused: set[int] = set()  # sections bundled into the first one (not the first itself)
        if bundle is not None and bundle[0] in mids.values():
            unused = {sec for sec, mid in mids.items() if mid in bundle[1:] and mid != bundle[0]}
        kept: list[str] = []
        refused: list[CandidateRefused] = []
        for line, sec in zip(lines, section_of):
            if line.startswith(_SDP_PREFIX):
                if sec in unused:
                    self.unused += 1
                    continue
                try:
                    self.check(line[len(_SDP_PREFIX):])
                except CandidateRefused as e:
                    refused.append(e)
                    continue
            kept.append(line)
        return "".join(kept), refused

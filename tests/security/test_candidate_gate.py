"""The sans-IO remote ICE candidate gate (webgate/security/candidates.py, issue 12): which
addresses are refused without ``[webrtc] allow_private_candidates``, how the call's cap counts,
and the offer's ``a=candidate`` lines. Real calls: tests/security/test_webrtc_candidates.py."""

from __future__ import annotations

import pytest

from webgate.security.candidates import (
    CANDIDATE_REFUSED,
    INVALID_CANDIDATE,
    TOO_MANY_CANDIDATES,
    CandidateGate,
    CandidateRefused,
    address_refusal,
    candidate_address,
)


def cand(address: str, port: int = 9, foundation: str = "1") -> str:
    return f"candidate:{foundation} 1 udp 2122260223 {address} {port} typ host generation 0"


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "loopback"),
        ("127.3.2.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("169.254.169.254", "link-local"),  # the cloud metadata address
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("::ffff:169.254.1.1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),  # 0.0.0.0/8: "this host on this network"
        ("::", "unspecified"),
        ("4a7b2c1d-0000-4000-8000-1234567890ab.local", "mdns"),
        ("gateway.example.com", "hostname"),
    ],
)
def test_addresses_of_the_gateways_own_host_or_link_are_refused(address: str, why: str) -> None:
    assert address_refusal(address) == why
    gate = CandidateGate(limit=10, allow_private=False)
    with pytest.raises(CandidateRefused) as e:
        gate.check(cand(address))
    assert e.value.code == CANDIDATE_REFUSED and why in e.value.message and "allow_private_candidates" in e.value.message
    assert (gate.accepted, gate.refused) == (0, 1)
    # allowed with the flag (the test suite's setting)
    ok = CandidateGate(limit=10, allow_private=True)
    ok.check(cand(address))
    assert ok.accepted == 1


@pytest.mark.parametrize("address", ["192.0.2.2", "10.1.2.3", "172.16.0.9", "192.168.1.20", "100.64.0.1", "203.0.113.7", "8.8.8.8", "fd00::2", "2001:db8::1"])
def test_public_and_private_range_addresses_are_accepted(address: str) -> None:
    assert address_refusal(address) is None
    gate = CandidateGate(limit=10, allow_private=False)
    gate.check(cand(address))
    gate.check("a" + cand(address)[1:])  # without the "candidate:" prefix too
    assert gate.accepted == 2


def test_candidate_address_is_read_as_aiortc_reads_it() -> None:
    assert candidate_address("candidate:842163049 1 udp 1677729535 1.2.3.4 46154 typ srflx raddr 127.0.0.1 rport 9") == "1.2.3.4"
    assert candidate_address("842163049 1 udp 1677729535 fd00::2 46154 typ host") == "fd00::2"
    assert candidate_address("candidate:1 1 udp 1 127.0.0.1") is None
    with pytest.raises(CandidateRefused) as e:
        CandidateGate().check("candidate:garbage")
    assert e.value.code == INVALID_CANDIDATE


def test_the_cap_counts_every_candidate_refused_ones_too() -> None:
    gate = CandidateGate(limit=3, allow_private=False)
    gate.check(cand("192.0.2.10"))
    with pytest.raises(CandidateRefused):
        gate.check(cand("127.0.0.1"))
    gate.check(cand("192.0.2.11"))
    for address in ("192.0.2.12", "127.0.0.1"):
        with pytest.raises(CandidateRefused) as e:
            gate.check(cand(address))
        assert e.value.code == TOO_MANY_CANDIDATES and "max_remote_candidates" in e.value.message
    assert (gate.seen, gate.accepted, gate.refused) == (5, 2, 3)


def test_filter_sdp_drops_refused_lines_and_counts_them_against_the_cap() -> None:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n"
        f"a={cand('192.0.2.2', 5000, 'a')}\r\n"
        f"a={cand('127.0.0.1', 5001, 'b')}\r\n"
        f"a={cand('169.254.1.1', 5002, 'c')}\r\n"
        f"a={cand('fd00::2', 5003, 'd')}\r\n"
        f"a={cand('192.0.2.3', 5004, 'e')}\r\n"
        "a=end-of-candidates\r\n"
    )
    out, refused = CandidateGate(limit=4, allow_private=False).filter_sdp(sdp)
    assert [r.code for r in refused] == [CANDIDATE_REFUSED, CANDIDATE_REFUSED, TOO_MANY_CANDIDATES]
    assert "192.0.2.2 5000" in out and "fd00::2 5003" in out
    assert "127.0.0.1" not in out and "169.254.1.1" not in out and "192.0.2.3" not in out
    assert out.endswith("a=end-of-candidates\r\n") and out.count("\r\n") == sdp.count("\r\n") - 3
    # with the flag and room for all, the SDP is unchanged
    assert CandidateGate(limit=10, allow_private=True).filter_sdp(sdp) == (sdp, [])


def test_filter_sdp_counts_only_the_first_bundled_sections_candidates() -> None:
    """Chrome lists its candidates in every section, before ``a=mid``; with BUNDLE only the first
    section's transport is used, so the others' lines are dropped without counting."""
    def section(kind: str, mid: str, port: int) -> str:
        return (
            f"m={kind} {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 192.0.2.2\r\n"
            f"a={cand('192.0.2.2', port, 'a' + mid)}\r\na={cand('fd00::2', port + 1, 'b' + mid)}\r\n"
            f"a=ice-ufrag:abcd\r\na=mid:{mid}\r\n"
        )

    head = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    body = section("audio", "0", 50000) + section("video", "1", 50010) + section("application", "2", 50020)
    gate = CandidateGate(limit=3, allow_private=False)
    out, refused = gate.filter_sdp(head + "a=group:BUNDLE 0 1 2\r\n" + body)
    assert refused == [] and (gate.seen, gate.unused) == (2, 4)
    assert out.count("a=candidate:") == 2 and "192.0.2.2 50000 typ" in out and "fd00::2 50001 typ" in out
    assert out.count("a=mid:") == 3  # nothing else is touched
    # without BUNDLE every section has its own transport: all counted (and the cap applies)
    gate = CandidateGate(limit=3, allow_private=False)
    out, refused = gate.filter_sdp(head + body)
    assert [r.code for r in refused] == [TOO_MANY_CANDIDATES] * 3 and gate.accepted == 3 and gate.unused == 0
    # a BUNDLE group whose first mid is no section: nothing is taken for unused
    gate = CandidateGate(limit=10, allow_private=False)
    gate.filter_sdp(head + "a=group:BUNDLE 9 1 2\r\n" + body)
    assert (gate.seen, gate.unused) == (6, 0)

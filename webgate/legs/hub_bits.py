"""Bitstream peeks the media hub needs (``webgate/legs/hub.py``): a VP8 keyframe's size, a VP8
payload without its RTP descriptor, the SPS in an RTP H.264 payload, and one VP8 frame cut into
RTP payloads (RFC 7741, for video the hub re-encoded). Nothing is decoded."""

from __future__ import annotations

from webgate.proto import h264

__all__ = ["sps_in_rtp", "vp8_keyframe_size", "vp8_payloads", "vp8_strip"]


def vp8_keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """Width and height when ``payload`` (an RTP VP8 payload, RFC 7741) starts a keyframe."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x07:  # S (start of partition) and partition index 0
        return None
    i = _vp8_descriptor_len(payload)
    if i > n:
        return None
    frame = payload[i:]
    if len(frame) < 10 or frame[0] & 0x01:  # P bit set: an interframe
        return None
    if frame[3:6] != b"\x9d\x01\x2a":
        return None
    w = (frame[6] | frame[7] << 8) & 0x3FFF
    h = (frame[8] | frame[9] << 8) & 0x3FFF
    return w, h


def sps_in_rtp(payload: bytes) -> bytes | None:
    """The SPS NAL unit in an RTP H.264 payload (single NAL unit or STAP-A), if there is one."""
    if not payload:
        return None
    t = payload[0] & 0x1F
    if t == h264.NAL_SPS:
        return payload
    if t != h264.STAP_A:
        return None
    i, n = 1, len(payload)
    while i + 2 < n:
        size = int.from_bytes(payload[i : i + 2], "big")
        nal = payload[i + 2 : i + 2 + size]
        if nal and nal[0] & 0x1F == h264.NAL_SPS:
            return nal
        i += 2 + size
    return None


def vp8_strip(payload: bytes) -> bytes:
    """The VP8 bitstream part of an RTP VP8 payload (RFC 7741 descriptor removed)."""
    return payload[_vp8_descriptor_len(payload):] if payload else b""


def _vp8_descriptor_len(payload: bytes) -> int:
    """The length of a non-empty RTP VP8 payload's descriptor (RFC 7741 4.2: X, then I with a
    7- or 15-bit picture ID, L, T/K); it may exceed ``len(payload)`` for a truncated one."""
    if not payload[0] & 0x80 or len(payload) < 2:  # X: no extension byte
        return 1
    x = payload[1]
    i = 2
    if x & 0x80 and len(payload) > i:  # I: picture ID, 7 or 15 bits
        i += 2 if payload[i] & 0x80 else 1
    if x & 0x40:  # L: TL0PICIDX
        i += 1
    if x & 0x30:  # T or K: TID/KEYIDX
        i += 1
    return i


def vp8_payloads(frame: bytes, max_size: int = 1200) -> list[bytes]:
    """One VP8 frame as RTP payloads (RFC 7741): a one-byte descriptor (S on the first, partition
    0, no picture ID) and at most ``max_size`` bytes each; the last takes the marker bit."""
    step = max(1, max_size - 1)
    chunks = [frame[i : i + step] for i in range(0, len(frame), step)] or [b""]
    return [bytes([0x10 if i == 0 else 0x00]) + c for i, c in enumerate(chunks)]

"""Driving the native relay's sans-IO core (``wg_relay_packet``) with bytes: tests and the fuzz target."""

from __future__ import annotations

import socket
import struct
from typing import Any

from pylibsrtp import Policy, Session

from webgate.adapters.native_reader import _stats, set_srtp, sockaddr
from webgate.native._relay import ffi, lib

SRC = ("127.0.0.1", 40000)
IN_FD = 1000  # the core needs no real socket
KEY = bytes(range(30))  # SRTP_AES128_CM_SHA1_80 master key + salt
CAP = 8192 + 256


def srtp_session(outbound: bool, key: bytes = KEY) -> Session:
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND)
    policy.allow_repeat_tx = True
    return Session(policy)


def rtp(seq: int, ts: int, ssrc: int = 0x11223344, pt: int = 0, payload: bytes = b"\xd5" * 160,
        marker: bool = False, csrcs: tuple[int, ...] = (), ext: bytes | None = None, padding: int = 0) -> bytes:
    """An RTP packet (``ext``: the extension's data, a multiple of 4 bytes, profile 0xBEDE)."""
    b0 = 0x80 | len(csrcs) | (0x10 if ext is not None else 0) | (0x20 if padding else 0)
    out = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


class Core:
    """An engine with one rule on :data:`IN_FD`; ``relay(data)`` -> (result, buffer after)."""

    def __init__(self, *, in_pt: int = 0, out_pt: int = 8, out_ssrc: int = 0xCAFEBABE, next_seq: int = 100,
                 next_ts: int = 5000, clock_rate: int = 8000, src: tuple[Any, ...] = SRC,
                 rx: Session | None = None, tx: Session | None = None) -> None:
        self.e = ffi.gc(lib.wg_engine_new(), lib.wg_engine_free)
        self.sessions = (rx, tx)  # alive as long as the rule
        spec = ffi.new("wg_rule_spec *")
        raw = sockaddr(src, socket.AF_INET6 if ":" in src[0] else socket.AF_INET)
        spec.in_fd, spec.in_pt, spec.out_pt, spec.out_ssrc = IN_FD, in_pt, out_pt, out_ssrc
        spec.next_seq, spec.next_ts, spec.clock_rate, spec.out_fd = next_seq, next_ts, clock_rate, -1
        spec.src_len = len(raw)
        ffi.memmove(spec.src, raw, len(raw))
        set_srtp(spec, rx, tx)
        assert lib.wg_rule_set(self.e, spec) == 0
        self.buf = ffi.new("unsigned char[]", CAP + 64)

    def relay(self, data: bytes, *, src: tuple[Any, ...] = SRC, now: float = 0.0, cap: int = CAP,
              fd: int = IN_FD) -> tuple[int, bytes]:
        raw = sockaddr(src, socket.AF_INET6 if ":" in src[0] else socket.AF_INET)
        n = min(len(data), cap)
        ffi.memmove(self.buf, data, n)
        res = lib.wg_relay_packet(self.e, fd, raw, len(raw), self.buf, n, cap, now)
        return res, ffi.buffer(self.buf, max(res, n))[:]

    def stats(self) -> dict[str, Any]:
        st = ffi.new("wg_rule_stats *")
        assert lib.wg_rule_get(self.e, IN_FD, st) == 0
        return _stats(st)

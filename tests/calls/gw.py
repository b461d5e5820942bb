"""Helpers to run the telephony service in-process (under pytest-twisted's reactor)."""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

from webgate.config import parse_config
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.telephony import TelephonyService

reactor: Any = _reactor

def _rtp_span() -> tuple[int, int]:
    """30000-39000, or this pytest-xdist worker's slice of it (tests/interop/peers.py keeps peers' ports
    out of this span)."""
    from tests.interop.peers import _xdist_slice

    lo, hi = _xdist_slice(30000, 39000)
    return lo - lo % 2, hi


_SPAN = _rtp_span()
_next_rtp = [_SPAN[0]]


def rtp_range(n: int = 40) -> tuple[int, int]:
    """A fresh even RTP range per gateway so parallel gateways never collide."""
    while True:
        lo = _next_rtp[0]
        _next_rtp[0] += n
        if _next_rtp[0] > _SPAN[1] - n:
            _next_rtp[0] = _SPAN[0]
        if all(_udp_free(p) for p in range(lo, lo + n)):  # every port, not just the first
            return lo, lo + n - 1


def _udp_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def make_config(extra: dict[str, Any] | None = None, **sip: Any) -> Any:
    lo, hi = rtp_range()
    data: dict[str, Any] = {
        "http": {"listen": ""},
        "rtmp": {"listen": ""},
        "sip": {"udp": "127.0.0.1:0", "tcp": "127.0.0.1:0", "t1_ms": 100, **sip},
        "rtp": {"port_min": lo, "port_max": hi,
                # WEBGATE_TEST_MEDIA_IO=loop / twisted runs the suite's gateways on the Python loop
                # reader / the per-port readers (the relay implementations before the native one);
                # the default is the product's ("native")
                "media_io": os.environ.get("WEBGATE_TEST_MEDIA_IO", "native")},
        # every peer of the suite runs on this machine: Chromium offers loopback candidates
        # (--allow-loopback-in-peer-connection), which the default refuses (docs/security.md)
        "webrtc": {"allow_private_candidates": True},
    }
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k].update(v)
        else:
            data[k] = v
    return parse_config(data, "<test>")


def start_telephony(config: Any) -> TelephonyService:
    svc = TelephonyService(config, reactor)
    svc.startService()
    return svc


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_for(predicate: Any, timeout: float = 5.0, step: float = 0.02) -> bool:
    waited = 0.0
    while waited < timeout:
        if predicate():
            return True
        await sleep(step)
        waited += step
    return bool(predicate())


def assert_tone(pcm: Any, rate: int, hz: float, what: str = "audio", seconds: float = 0.5, min_dbfs: float = -30.0) -> None:
    """The last ``seconds`` of ``pcm`` are a tone of ``hz`` (±20 Hz), louder than ``min_dbfs``."""
    n = int(rate * seconds)
    assert len(pcm) > n, f"{what}: less than {seconds} s of audio ({len(pcm)} samples at {rate} Hz)"
    tail = pcm[-n:]
    f = dominant_frequency(tail, rate)
    assert abs(f - hz) < 20, f"{what}: dominant {f:.1f} Hz, expected {hz} Hz"
    level = rms_dbfs(tail)
    assert level > min_dbfs, f"{what}: too quiet ({level:.1f} dBFS)"


async def process_exit(proc: Any, timeout: float = 20.0) -> int | None:
    """Wait (without blocking the reactor) for a subprocess.Popen to exit; its return code or None."""
    await wait_for(lambda: proc is None or proc.poll() is not None, timeout, 0.05)
    return proc.poll() if proc is not None else None

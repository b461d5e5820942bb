"""Helpers to run the telephony service in-process (under pytest-twisted's reactor)."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

from webgate.config import parse_config
from webgate.telephony import TelephonyService

reactor: Any = _reactor

_next_rtp = [30000]


def rtp_range(n: int = 40) -> tuple[int, int]:
    """A fresh even RTP range per gateway so parallel gateways never collide."""
    while True:
        lo = _next_rtp[0]
        _next_rtp[0] += n
        if _next_rtp[0] > 39000:
            _next_rtp[0] = 30000
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", lo))
            s.close()
        except OSError:
            continue
        return lo, lo + n - 1


def make_config(extra: dict[str, Any] | None = None, **sip: Any) -> Any:
    lo, hi = rtp_range()
    data: dict[str, Any] = {
        "http": {"listen": ""},
        "rtmp": {"listen": ""},
        "sip": {"udp": "127.0.0.1:0", "tcp": "127.0.0.1:0", "t1_ms": 100, **sip},
        "rtp": {"port_min": lo, "port_max": hi},
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

"""Process-wide tallies of protocol errors by kind (``/metrics`` ``webgate_errors``).

Any layer may count an error here (the WebSocket transport, the RTMP adapter, CDRs, the API)
without knowing about Prometheus or Twisted; ``webgate/ops/metrics.py`` reads the tallies at
scrape time. SIP parse errors come from the SIP transport's own counters. The tallies are
process-wide: several gateways in one process share them.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["ERROR_KINDS", "count_error", "error_counts"]

#: error kinds counted by :func:`count_error` (documented in docs/operations.md)
ERROR_KINDS = ("sip_parse", "rtmp_protocol", "rtmp_play_refused", "rtmp_slow_player", "ws_protocol", "cdr", "api")

_errors: Counter[str] = Counter()
_errors_lock = threading.Lock()


def count_error(kind: str, n: int = 1) -> None:
    """Count ``n`` protocol errors of ``kind`` (one of :data:`ERROR_KINDS`). Never raises."""
    with _errors_lock:
        _errors[kind] += n


def error_counts() -> dict[str, int]:
    """A snapshot of the tallies: kind -> errors counted so far."""
    with _errors_lock:
        return dict(_errors)

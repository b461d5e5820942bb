"""Prometheus metrics for one gateway, served at ``/metrics`` (text format, ``prometheus_client``).

Every gateway owns its own :class:`prometheus_client.CollectorRegistry` (never the global
default registry), so several gateways can live in one process (tests). Call metrics come
from a call observer on ``CallManager.observers``; live figures (active calls, RTP of live
calls) are read at scrape time by a custom collector.

Protocol errors are counted by kind with ``webgate.counters.count_error`` (process-wide
tallies any layer may bump); they are read here at scrape time (``webgate_errors``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web import resource
from twisted.web.iweb import IRequest

from webgate.counters import ERROR_KINDS, error_counts

__all__ = ["GatewayMetrics", "MetricsResource", "calls_by_ingress"]


def calls_by_ingress(calls: list[Any]) -> dict[str, int]:
    """Live calls counted by ingress kind (``webrtc``, ``rtmp`` and ``local`` always present)."""
    by_ingress = {"webrtc": 0, "rtmp": 0, "local": 0}
    for c in calls:
        by_ingress[c.ingress_kind] = by_ingress.get(c.ingress_kind, 0) + 1
    return by_ingress


# seconds from INVITE sent to answer (SIP legs on loopback answer in ms; PSTN in seconds)
SETUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)


class GatewayMetrics:
    """The metrics of one gateway. ``telephony`` is the TelephonyService (its manager,
    registry and SIP transport are looked up at scrape time, so this can be built first)."""

    def __init__(self, telephony: Any) -> None:
        self.telephony = telephony
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls_placed = Counter("webgate_calls_placed", "Calls placed (INVITE sent), by ingress", ["ingress"], registry=r)
        self.calls_ended = Counter(
            "webgate_calls", "Finished calls by ingress and result ('answered' or why it never was)", ["ingress", "result"], registry=r
        )
        self.end_causes = Counter("webgate_call_end_causes", "Finished calls by end cause", ["cause"], registry=r)
        self.refusals = Counter("webgate_call_refusals", "Calls refused before an INVITE, by reason code", ["reason", "ingress"], registry=r)
        self.setup_latency = Histogram(
            "webgate_call_setup_seconds", "INVITE sent to answer (200 OK)", ["ingress"], buckets=SETUP_BUCKETS, registry=r
        )
        self.answered_by_path = Counter(
            "webgate_calls_answered", "Answered calls by whether audio is transcoded", ["transcoded"], registry=r
        )
        self.call_jitter = Histogram(
            "webgate_call_rtp_jitter_seconds", "Interarrival jitter of SIP RTP at the end of each call", buckets=JITTER_BUCKETS, registry=r
        )
        # RTP totals of finished calls; live calls are added at scrape time
        self._done = {"sent": 0, "received": 0, "lost": 0}
        # browser video frames decoded by aiortc (finished calls): must stay 0, video is not received
        self._video_decoded = 0
        #: ConnectionLimiters of the stream listeners (http, ws, rtmp; SIP's are found on the
        #: telephony's transport at scrape time): open connections, refusals, deadline closes
        self.limiters: list[Any] = []
        r.register(_LiveCollector(self))

    # -- call observer hooks (CallManager.observers)
    def call_placed(self, call: Any) -> None:
        self.calls_placed.labels(call.ingress_kind).inc()

    def call_answered(self, call: Any) -> None:
        sent = call.times.invite_sent_mono
        if sent is not None:
            self.setup_latency.labels(call.ingress_kind).observe(max(0.0, time.monotonic() - sent))
        self.answered_by_path.labels("true" if call.transcoded() else "false").inc()

    def call_ended(self, call: Any) -> None:
        result = "answered" if call.times.answered is not None else (call.end_cause or "ended")
        self.calls_ended.labels(call.ingress_kind, result).inc()
        self.end_causes.labels(call.end_cause or "ended").inc()
        self._video_decoded += _video_frames_decoded(call)
        stream = call.stream
        if stream is not None:
            self._done["sent"] += stream.stats.packets_sent
            self._done["received"] += stream.stats.packets_received
            self._done["lost"] += max(0, stream.packets_lost)
            if stream.stats.packets_received:
                self.call_jitter.observe(stream.jitter_ms / 1000.0)

    def call_refused(self, code: str, ingress: str, client: str) -> None:
        self.refusals.labels(code, ingress).inc()

    # -- exposition
    def render(self) -> bytes:
        return generate_latest(self.registry)


def _video_frames_decoded(call: Any) -> int:
    """Browser video frames aiortc decoded on a WebRTC call's leg (webgate/adapters/webrtc.py)."""
    stats = getattr(getattr(call, "leg", None), "stats", None)
    return int(getattr(stats, "video_frames_decoded", 0) or 0)


class _LiveCollector:
    """Scrape-time figures: active calls by ingress, RTP counters (finished + live calls),
    jitter of live calls, errors by kind."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: names are fixed, see collect()

    def collect(self) -> Iterator[Metric]:
        tel = self.m.telephony
        registry = getattr(tel, "registry", None)
        calls = list(registry) if registry is not None else []
        active = GaugeMetricFamily("webgate_active_calls", "Live calls by ingress", labels=["ingress"])
        for k, n in sorted(calls_by_ingress(calls).items()):
            active.add_metric([k], n)
        yield active
        sent, received, lost = self.m._done["sent"], self.m._done["received"], self.m._done["lost"]
        jitter_max = 0.0
        for c in calls:
            s = c.stream
            if s is None:
                continue
            sent += s.stats.packets_sent
            received += s.stats.packets_received
            lost += max(0, s.packets_lost)
            jitter_max = max(jitter_max, s.jitter_ms / 1000.0)
        pk = CounterMetricFamily("webgate_rtp_packets", "RTP packets on SIP legs by direction", labels=["direction"])
        pk.add_metric(["sent"], sent)
        pk.add_metric(["received"], received)
        yield pk
        yield CounterMetricFamily("webgate_rtp_packets_lost", "RTP packets from SIP legs that never arrived", value=lost)
        yield GaugeMetricFamily("webgate_rtp_jitter_max_seconds", "Largest interarrival jitter among live calls", value=jitter_max)
        yield CounterMetricFamily(
            "webgate_webrtc_video_frames_decoded",
            "Browser video frames decoded by aiortc (video is answered inactive: stays 0)",
            value=self.m._video_decoded + sum(_video_frames_decoded(c) for c in calls),
        )
        pool = getattr(tel, "rtp_pool", None)
        drops = CounterMetricFamily(
            "webgate_rtp_source_dropped",
            "SIP-side RTP/RTCP packets dropped by the strict source: foreign = from another address than the far end's "
            "learnt source, learning = held back while its source was learnt",
            labels=["kind", "reason"],
        )
        if pool is not None:
            for (kind, reason), n in pool.dropped_by_source().items():
                drops.add_metric([kind, reason], n)
        yield drops
        manager = getattr(tel, "manager", None)
        transcoded = sum(1 for c in calls if c.transcoded()) if manager is not None else 0
        live_path = GaugeMetricFamily("webgate_active_calls_transcoded", "Live calls by whether audio is transcoded", labels=["transcoded"])
        live_path.add_metric(["true"], transcoded)
        live_path.add_metric(["false"], len(calls) - transcoded)
        yield live_path
        errs = error_counts()
        transport = getattr(tel, "transport", None)
        if transport is not None:
            errs["sip_parse"] = errs.get("sip_parse", 0) + int(transport.stats.get("bad", 0))
        fam = CounterMetricFamily("webgate_errors", "Protocol and internal errors by kind", labels=["kind"])
        for kind in sorted(set(ERROR_KINDS) | set(errs)):
            fam.add_metric([kind], errs.get(kind, 0))
        yield fam
        yield from _recordings(getattr(tel, "recordings", None))
        accepting = bool(getattr(manager, "accepting", False)) if manager is not None else False
        yield GaugeMetricFamily("webgate_accepting_calls", "1 while new calls are taken, 0 while shutting down", value=int(accepting))
        yield from self._connections(transport)

    def _connections(self, transport: Any) -> Iterator[Metric]:
        """Connection caps and deadlines (webgate/security/connlimit.py), per listener."""
        limiters = list(self.m.limiters) + list(getattr(transport, "limiters", {}).values())
        live = GaugeMetricFamily("webgate_connections_open", "Open connections by listener", labels=["listener"])
        refused = CounterMetricFamily(
            "webgate_connections_refused", "Connections refused at accept (or WebSocket upgrade) by a cap", labels=["listener", "reason"]
        )
        closed = CounterMetricFamily(
            "webgate_connections_closed", "Connections closed by a deadline (idle, partial, handshake, request_timeout)", labels=["listener", "reason"]
        )
        for lim in limiters:
            live.add_metric([lim.listener], lim.open)
            for reason in sorted({"total", "per_ip"} | set(lim.refused)):
                refused.add_metric([lim.listener, reason], lim.refused[reason])
            for reason, n in sorted(lim.closed.items()):
                closed.add_metric([lim.listener, reason], n)
        yield live
        yield refused
        yield closed


def _recordings(recs: Any) -> Iterator[Metric]:
    """Call recording (webgate/calls/recording.py): events by kind, live recordings."""
    fam = CounterMetricFamily(
        "webgate_recordings",
        "Call recordings by event: started, stopped, failed (disk full, write error: the call went on), "
        "refused_low_space ([recording] min_free_mb), refused_error, deleted, "
        "repaired (left unfinished by a crash, repaired at start)",
        labels=["event"],
    )
    counters = dict(getattr(recs, "counters", {}) or {})
    for event in sorted(counters):
        fam.add_metric([event], counters[event])
    yield fam
    yield GaugeMetricFamily("webgate_recordings_active", "Calls being recorded now", value=len(getattr(recs, "active", {}) or {}))


class MetricsResource(resource.Resource):
    """``GET /metrics``: the registry in Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: GatewayMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render(self, request: IRequest) -> bytes:
        from webgate.web.site import json_body

        if request.postpath not in ([], [b""]):
            return json_body(request, 404, {"error": "not_found", "message": "no such resource"})
        http: Any = request  # zope IRequest: methods lack self for mypy
        if request.method not in (b"GET", b"HEAD"):
            http.setHeader(b"allow", b"GET, HEAD")
            return json_body(request, 405, {"error": "method_not_allowed", "message": "use GET"})
        body = self.metrics.render()
        request.setResponseCode(200)
        http.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        http.setHeader(b"cache-control", b"no-store")
        return body

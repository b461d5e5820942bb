"""/metrics: Prometheus text parsed by prometheus_client's own parser, figures from real calls."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.helpers import http, local_call, start_gateway, wait_for
from webgate.calls.errors import CallRefused
from webgate.legs.local import LocalLeg


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(gw: Any) -> dict[Any, float]:
    status, headers, body = await http("GET", gw.url("/metrics"))
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    return samples(body.decode())


@pytest_twisted.ensureDeferred
async def test_metrics_follow_real_calls() -> None:
    gw = start_gateway()
    other = start_gateway()  # a second gateway in the same process keeps its own registry
    try:
        before = await scrape(gw)
        assert value(before, "webgate_active_calls", ingress="local") == 0
        assert value(before, "webgate_accepting_calls") == 1
        # a refused call (unknown destination) and a broken SIP datagram
        with pytest.raises(CallRefused) as refused:
            gw.manager.place_call(LocalLeg(), "nowhere")
        host, port = gw.svc.bound["udp"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"INVITE sip:x SIP/2.0\r\nVia: broken\r\n\r\n", (host, port))
        assert await wait_for(lambda: gw.svc.transport.stats["bad"] >= 1, 3)

        call, _leg = await local_call(gw, "echo")
        assert await wait_for(lambda: call.stream.stats.packets_received > 50, 5)
        live = await scrape(gw)
        assert value(live, "webgate_active_calls", ingress="local") == 1
        assert value(live, "webgate_active_calls", ingress="webrtc") == 0
        assert value(live, "webgate_calls_placed_total", ingress="local") == 1
        assert value(live, "webgate_call_setup_seconds_count", ingress="local") == 1
        setup = value(live, "webgate_call_setup_seconds_sum", ingress="local")
        assert 0 < setup < 5, setup
        assert value(live, "webgate_calls_answered_total", transcoded="true") == 1
        assert value(live, "webgate_active_calls_transcoded", transcoded="true") == 1
        assert value(live, "webgate_rtp_packets_total", direction="sent") > 50
        assert value(live, "webgate_rtp_packets_total", direction="received") > 50
        assert value(live, "webgate_call_refusals_total", reason=refused.value.code, ingress="local") == 1
        assert value(live, "webgate_errors_total", kind="sip_parse") >= 1
        assert ("webgate_rtp_jitter_max_seconds", ()) in live

        call.hangup()
        assert await wait_for(lambda: call.ended, 5)
        after = await scrape(gw)
        assert value(after, "webgate_active_calls", ingress="local") == 0
        assert value(after, "webgate_calls_total", ingress="local", result="answered") == 1
        assert value(after, "webgate_call_end_causes_total", cause="client_hangup") == 1
        assert value(after, "webgate_call_rtp_jitter_seconds_count") == 1
        # RTP counters never go down when a call ends
        for d in ("sent", "received"):
            assert value(after, "webgate_rtp_packets_total", direction=d) >= value(live, "webgate_rtp_packets_total", direction=d)
        print(
            f"\nmetrics: setup {setup * 1000:.1f} ms, RTP sent {value(after, 'webgate_rtp_packets_total', direction='sent'):.0f}"
            f" received {value(after, 'webgate_rtp_packets_total', direction='received'):.0f}"
            f" lost {value(after, 'webgate_rtp_packets_lost_total'):.0f}"
        )
        # the other gateway saw none of it
        theirs = await scrape(other)
        assert value(theirs, "webgate_calls_placed_total", ingress="local") == 0
        assert value(theirs, "webgate_calls_total", ingress="local", result="answered") == 0
    finally:
        await gw.stop()
        await other.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_can_be_turned_off() -> None:
    gw = start_gateway({"api": {"metrics": False}})
    try:
        status, _h, _b = await http("GET", gw.url("/metrics"))
        assert status == 404
    finally:
        await gw.stop()

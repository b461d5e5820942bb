"""The REST API under /api: auth, calls, hang-up (seen by SIPp as a BYE), stats, and
schemathesis against /api/openapi.json (run in a thread so the in-process gateway keeps
serving; a live call is up while it runs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import threads

from tests.interop import peers
from tests.ops.helpers import ADMIN_KEY, api, http, local_call, start_gateway, wait_for
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.ops.openapi import openapi_document

TRUNK_PASSWORD = "trunk-secret-pw-77"


@pytest_twisted.ensureDeferred
async def test_api_off_without_admin_key() -> None:
    gw = start_gateway({"api": {"admin_key": ""}})
    try:
        for path in ("/api/calls", "/api/stats", "/api/openapi.json"):
            status, body = await api("GET", gw.url(path))
            assert status == 404 and body["error"] == "not found", (path, status, body)
        # /metrics does not depend on the admin key
        status, _h, _b = await http("GET", gw.url("/metrics"))
        assert status == 200
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_auth_is_required_and_checked() -> None:
    gw = start_gateway()
    try:
        for key in (None, "", "wrong-key", ADMIN_KEY + "x", ADMIN_KEY[:-1]):
            status, headers, body = await http("GET", gw.url("/api/calls"), key=key)
            assert status == 401, (key, status)
            assert json.loads(body)["error"] == "unauthorized"
            assert headers.get("www-authenticate", "").startswith("Bearer")
        # another scheme is refused too
        status, _h, _b = await http("GET", gw.url("/api/stats"), headers={"authorization": f"Basic {ADMIN_KEY}"})
        assert status == 401
        # Authorization: Bearer is the only way to send the key (no X-API-Key; docs/decisions.md)
        status, _h, _b = await http("GET", gw.url("/api/stats"), key=None, headers={"x-api-key": ADMIN_KEY})
        assert status == 401
        status, body = await api("GET", gw.url("/api/calls"))
        assert status == 200 and body == {"calls": []}
        # the document needs no key
        status, doc = await api("GET", gw.url("/api/openapi.json"), key=None)
        assert status == 200 and doc["openapi"].startswith("3.1") and doc == json.loads(json.dumps(openapi_document()))
        status, body = await api("POST", gw.url("/api/calls"))
        assert status == 405 and body["error"] == "method_not_allowed"
        status, body = await api("GET", gw.url("/api/nothing"))
        assert status == 404 and body["error"] == "not_found"
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_calls_stats_and_hangup_of_a_live_call() -> None:
    gw = start_gateway(
        {
            "trunk": [{"name": "t", "target": "sip:127.0.0.1:9", "username": "u", "password": TRUNK_PASSWORD}],
            "route": [{"pattern": "9\\d+", "trunk": "t"}],
        }
    )
    seen: list[bytes] = []
    try:
        call, leg = await local_call(gw, "echo")
        sid = call.session_id
        assert await wait_for(lambda: call.stream is not None and call.stream.stats.packets_received > 50, 5)
        status, body = await api("GET", gw.url("/api/calls"))
        assert status == 200 and len(body["calls"]) == 1
        c = body["calls"][0]
        assert c["session_id"] == sid and c["ingress"] == "local" and c["destination"] == "echo"
        assert c["state"] == "answered" and c["sip_call_id"] == call.sip_call_id
        assert c["codecs"]["sip"] == "PCMU" and c["transcoded"] is True and c["media_path"] == "frame"
        assert c["to_sip"]["packets"] > 50 and c["from_sip"]["packets"] > 50, c
        assert c["from_sip"]["lost"] == 0 and c["duration_s"] > 0
        status, one = await api("GET", gw.url(f"/api/calls/{sid}"))
        assert status == 200 and one["session_id"] == sid
        status, stats = await api("GET", gw.url("/api/stats"))
        assert status == 200
        assert stats["calls"]["active"] == 1 and stats["calls"]["by_ingress"]["local"] == 1
        assert stats["calls"]["placed"] >= 1 and stats["rtp_ports"]["in_use"] >= 2  # our leg + the built-in UAS
        assert stats["accepting_calls"] is True and stats["status"] == "ok"
        for path in ("/api/calls", f"/api/calls/{sid}", "/api/stats", "/api/openapi.json"):
            seen.append((await http("GET", gw.url(path), key=ADMIN_KEY))[2])
        # unknown or malformed session IDs
        for bad in ("0000000000", "abc", "1" * 30, "%2e%2e"):
            status, body = await api("GET", gw.url(f"/api/calls/{bad}"))
            assert status == 404 and body["error"] == "no_such_call", (bad, status, body)
        # hang up: BYE toward SIP, the client is told (cause admin_hangup)
        status, body = await api("DELETE", gw.url(f"/api/calls/{sid}"))
        assert status == 200 and body["state"] == "ended" and body["end_cause"] == "admin_hangup"
        assert leg.ended == ("admin_hangup", None)
        assert await wait_for(lambda: not gw.manager.builtin_calls, 5), "the built-in UAS never got the BYE"
        status, body = await api("GET", gw.url(f"/api/calls/{sid}"))
        assert status == 404
        status, body = await api("DELETE", gw.url(f"/api/calls/{sid}"))
        assert status == 404
    finally:
        await gw.stop()
    text = b"".join(seen).decode()
    for secret in (TRUNK_PASSWORD, ADMIN_KEY):
        assert secret not in text


def _run_schemathesis(base: str, live_sid: str) -> list[str]:
    """Blocking (runs in a thread): every operation with generated data, plus the live call."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    schema = schemathesis.openapi.from_url(base + "/api/openapi.json")
    failures: list[str] = []
    ran: list[str] = []
    calls: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        ran.append(op.label)

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            calls.append(case.operation.label)
            case.call_and_validate(base_url=base, headers=auth)

        try:
            check()
        except Exception as e:  # noqa: BLE001 - collected and reported by the test
            failures.append(f"{op.label}: {e}")
        # without a key: the documented 401 (or 200 for the public document)
        try:
            op.Case(path_parameters={"session_id": live_sid} if "{session_id}" in op.path else None).call_and_validate(base_url=base)
        except Exception as e:  # noqa: BLE001
            failures.append(f"{op.label} without key: {e}")
    # the live call, through the schema's own response validation
    live = schema["/api/calls/{session_id}"]["GET"]
    try:
        resp = live.Case(path_parameters={"session_id": live_sid}).call_and_validate(base_url=base, headers=auth)
        assert resp.status_code == 200, resp.status_code
    except Exception as e:  # noqa: BLE001
        failures.append(f"live call: {e}")
    try:
        resp = schema["/api/calls"]["GET"].Case().call_and_validate(base_url=base, headers=auth)
        assert len(resp.json()["calls"]) == 1
    except Exception as e:  # noqa: BLE001
        failures.append(f"live list: {e}")
    # schemathesis leaves out the document's own path; the other operations ran (recording: ops/recordings_api.py)
    assert sorted(ran) == ["DELETE /api/calls/{session_id}", "DELETE /api/recordings/{session_id}", "GET /api/calls",
                           "GET /api/calls/{session_id}", "GET /api/calls/{session_id}/snapshot.jpg", "GET /api/nodes",
                           "GET /api/recordings/{session_id}", "GET /api/recordings/{session_id}/audio",
                           "GET /api/recordings/{session_id}/video", "GET /api/stats",
                           "POST /api/calls/{session_id}/recording"], ran
    print(f"\nschemathesis: {len(calls)} generated requests over {len(ran)} operations, {len(failures)} failures")
    assert len(calls) >= 4 * 5, calls
    return failures


@pytest_twisted.ensureDeferred
async def test_schemathesis_against_openapi_json() -> None:
    gw = start_gateway()
    try:
        call, _leg = await local_call(gw, "echo")
        failures = await threads.deferToThread(_run_schemathesis, gw.base(), call.session_id)
        assert not failures, "\n\n".join(failures)
        assert call.state is CallState.ANSWERED, "schemathesis must not have hung up the live call"
        # the far end's RTCP report on what we send shows up per direction (RTCP every 5 s)
        assert await wait_for(lambda: call.stream.remote_report is not None, 8), "no RTCP report from the far end"
        status, c = await api("GET", gw.url(f"/api/calls/{call.session_id}"))
        assert status == 200 and c["to_sip"]["lost"] == 0 and c["to_sip"]["fraction_lost"] == 0.0, c["to_sip"]
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_api_hangup_sends_bye_that_sipp_sees(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_answer", rtp_echo=True)
    gw = start_gateway(
        {
            "trunk": [{"name": "sipp", "target": f"sip:{sipp.address}", "codecs": ["PCMU"]}],
            "route": [{"pattern": "2000", "trunk": "sipp", "rewrite": "service", "public": True}],
        }
    )
    try:
        leg = LocalLeg(tone_hz=700)
        call = gw.manager.place_call(leg, "2000")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 10), sipp.describe()
        assert await wait_for(lambda: call.stream.stats.packets_received > 25, 5), "no RTP back from SIPp"
        status, body = await api("DELETE", gw.url(f"/api/calls/{call.session_id}"))
        assert status == 200 and body["end_cause"] == "admin_hangup"
        assert await wait_for(lambda: not sipp.running(), 10), sipp.describe()
        assert sipp.proc is not None and sipp.proc.returncode == 0, sipp.describe()
        assert "BYE" in sipp.received_requests(), sipp.describe()
        bye = next(m for m in sipp.received() if m.method == "BYE")
        assert bye.header("Call-ID") == call.sip_call_id
        assert leg.ended == ("admin_hangup", None)
    finally:
        await gw.stop()

"""CDRs: one JSON line per finished call in a file; the webhook POST retried after a failure
(a tiny twisted.web server on loopback that answers 503 first)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.web import resource, server

from tests.calls.gw import reactor
from tests.ops.helpers import local_call, sleep, start_gateway, wait_for

FIELDS = {
    "session_id", "ingress", "direction", "client", "identity", "destination", "sip_call_id", "start", "answer", "end",
    "duration_s", "end_cause", "sip_status", "codecs", "transcoded", "packets_sent", "packets_received",
    "packets_lost", "remote_reported_lost", "dtmf_sent", "dtmf_received",
}


def _time(s: str) -> datetime.datetime:
    t = datetime.datetime.fromisoformat(s)
    assert t.utcoffset() == datetime.timedelta(0), s
    return t


class Hook(resource.Resource):
    isLeaf = True

    def __init__(self, fail_first: int) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.attempts: list[tuple[float, bytes, str]] = []

    def render_POST(self, request: Any) -> bytes:
        body = request.content.read()
        self.attempts.append((reactor.seconds(), body, (request.getHeader(b"content-type") or b"").decode()))
        if len(self.attempts) <= self.fail_first:
            request.setResponseCode(503)
            return b"busy"
        request.setResponseCode(204)
        return b""

    def listen(self) -> tuple[Any, str]:
        """Serve this hook on 127.0.0.1: (the listening port, its base URL)."""
        site = server.Site(self)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        return port, f"http://127.0.0.1:{port.getHost().port}"


@pytest_twisted.ensureDeferred
async def test_cdr_file_and_webhook_with_retry(tmp_path: Path) -> None:
    hook = Hook(fail_first=1)
    port, hook_url = hook.listen()
    cdr_file = tmp_path / "cdr" / "calls.jsonl"
    cdr_file.parent.mkdir()
    gw = start_gateway(
        {
            "cdr": {
                "file": str(cdr_file),
                "webhook_url": f"{hook_url}/cdr?key=hook-secret",
                "webhook_timeout_s": 2,
                "webhook_retries": 3,
            }
        }
    )
    try:
        call, leg = await local_call(gw, "echo")
        call.send_dtmf("12#")
        assert await wait_for(lambda: len(leg.dtmf) == 3, 5), leg.dtmf
        await sleep(0.3)
        call.hangup()
        assert await wait_for(lambda: cdr_file.exists() and cdr_file.read_text().count("\n") == 1, 5)
        lines = cdr_file.read_text().splitlines()
        rec = json.loads(lines[0])
        assert set(rec) == FIELDS, set(rec) ^ FIELDS
        assert rec["session_id"] == call.session_id and rec["ingress"] == "local" and rec["direction"] == "outbound" and rec["destination"] == "echo"
        assert rec["sip_call_id"] == call.sip_call_id and rec["end_cause"] == "client_hangup"
        assert _time(rec["start"]) <= _time(rec["answer"]) <= _time(rec["end"])
        assert rec["duration_s"] > 0.2
        assert rec["codecs"] == {"sip": "PCMU", "ingress": None} and rec["transcoded"] is True
        assert rec["packets_sent"] > 10 and rec["packets_received"] > 10
        assert rec["dtmf_sent"] == 3 and rec["dtmf_received"] == 3
        # the webhook: first attempt 503, the retry about 1 s later delivers the same record
        assert await wait_for(lambda: len(hook.attempts) == 2, 8), hook.attempts
        (t1, b1, ct), (t2, b2, _) = hook.attempts
        assert ct == "application/json" and json.loads(b1) == rec and b1 == b2
        assert 0.8 <= t2 - t1 <= 3.0, t2 - t1
        assert await wait_for(lambda: gw.gw.cdr.delivered == 1 and not gw.gw.cdr.pending, 3)
        print(f"\nCDR webhook: retry after {t2 - t1:.2f} s; record {lines[0][:120]}...")
    finally:
        await gw.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_cdr_write_failure_is_not_fatal(tmp_path: Path) -> None:
    bad = tmp_path / "missing-dir" / "cdr.jsonl"  # the directory does not exist
    gw = start_gateway({"cdr": {"file": str(bad)}})
    try:
        for _ in range(2):
            call, _leg = await local_call(gw, "echo")
            call.hangup()
            assert await wait_for(lambda c=call: c.ended, 5)
        assert gw.gw.cdr.write_errors == 2 and gw.gw.cdr.written == 0
        # the gateway still takes calls
        call, _leg = await local_call(gw, "echo")
        call.hangup()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_cdr_webhook_gives_up_after_the_retries(tmp_path: Path) -> None:
    hook = Hook(fail_first=100)
    port, hook_url = hook.listen()
    gw = start_gateway({"cdr": {"webhook_url": f"{hook_url}/", "webhook_retries": 1, "webhook_timeout_s": 1}})
    try:
        call, _leg = await local_call(gw, "echo")
        call.hangup()
        assert await wait_for(lambda: gw.gw.cdr.delivery_failures == 1, 8)
        assert len(hook.attempts) == 2 and not gw.gw.cdr.pending
    finally:
        await gw.stop()
        await port.stopListening()

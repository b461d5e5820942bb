"""Which calls are recorded: ``[[route]] record``, ``record_on_request`` and the token claim
``record``; the ``[recording]`` keys' validation; a route's recording starting by itself and
ending with the call (sidecar, CDR); ``min_free_mb`` refusing to start (counted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.calls.gw import sleep, wait_for
from tests.interop.peers import free_port
from tests.ops.helpers import http, start_gateway
from tests.recording.helpers import freq_of, read_stereo
from webgate.calls.call import CallState
from webgate.calls.recording import record_mode
from webgate.config import ConfigError, parse_config
from webgate.legs.local import LocalLeg
from webgate.ops.cdr import cdr_of
from webgate.security.tokens import TokenError, grant_from_claims, mint_token

KEY = "k" * 40


def test_record_mode_route_claim_and_on_request() -> None:
    assert record_mode("off", None, False) == "off"
    assert record_mode("audio", None, False) == "audio"
    assert record_mode("audio+video", "audio", False) == "audio"  # less: allowed
    assert record_mode("audio+video", "off", False) == "off"
    assert record_mode("audio", "audio+video", False) == "audio"  # more: not without record_on_request
    assert record_mode("off", "audio", False) == "off"
    assert record_mode("off", "audio+video", True) == "audio+video"  # the route lets the token opt in
    assert record_mode("audio", "off", True) == "off"


def test_token_claim_record_is_checked() -> None:
    assert grant_from_claims({"record": "audio"}).record == "audio"
    assert grant_from_claims({}).record is None
    for bad in ("video", 1, True, ["audio"], ""):
        with pytest.raises(TokenError):
            grant_from_claims({"record": bad})
    with pytest.raises(TokenError):
        mint_token(KEY, dest="1", record="video")


def test_recording_config_is_validated() -> None:
    cfg = parse_config({"recording": {"format": "ogg", "path": "{time}-{session_id}"}}, "<t>")
    assert cfg.recording.format == "ogg" and cfg.recording.flush_s == 1.0 and cfg.recording.min_free_mb == 500
    for bad, where in (
        ({"recording": {"path": "{date}/calls"}}, "recording.path"),
        ({"recording": {"path": "../{session_id}"}}, "recording.path"),
        ({"recording": {"path": "/abs/{session_id}"}}, "recording.path"),
        ({"recording": {"path": "{user}/{session_id}"}}, "recording.path"),
        ({"recording": {"format": "mp3"}}, "recording.format"),
        ({"recording": {"flush_s": 0}}, "recording.flush_s"),
        ({"recording": {"dir": ""}}, "recording.dir"),
        ({"recording": {"loud": True}}, "recording.loud"),
        ({"trunk": [{"name": "t", "target": "sip:127.0.0.1"}], "route": [{"pattern": "1", "trunk": "t", "record": "video"}]},
         "route[0].record"),
    ):
        with pytest.raises(ConfigError) as e:
            parse_config(bad, "<t>")
        assert where in str(e.value), (bad, str(e.value))


def _gateway(tmp_path: Path, **recording: Any) -> Any:
    """A gateway whose route ``rec-...`` goes, over real SIP, to its own built-in tone (440 Hz)."""
    port = free_port()
    extra = {
        "builtin": {"tone_hz": 440},
        "tokens": {"key": KEY},
        "recording": {"dir": str(tmp_path / "rec"), "min_free_mb": 0, "flush_s": 0.2, **recording},
        "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{port}"}],
        "route": [
            {"pattern": "rec-audio", "trunk": "self", "rewrite": "tone", "public": True, "record": "audio"},
            {"pattern": "rec-opt", "trunk": "self", "rewrite": "tone", "record_on_request": True},
        ],
    }
    return start_gateway(extra, udp=f"127.0.0.1:{port}")


async def _call(gw: Any, dest: str, token: str | None = None) -> Any:
    leg = LocalLeg(tone_hz=660)
    call = gw.manager.place_call(leg, dest, token=token)
    leg.start_source(call)
    assert await wait_for(lambda: call.state is CallState.ANSWERED, 10), (call.state, call.end_cause)
    return call


def _token(dest: str, **claims: Any) -> str:
    return mint_token(KEY, dest=dest, **claims)


@pytest_twisted.ensureDeferred
async def test_route_records_by_itself_and_token_can_ask_for_less_or_opt_in(tmp_path: Path) -> None:
    gw = _gateway(tmp_path)
    try:
        call = await _call(gw, "rec-audio")
        assert call.recording is not None
        await sleep(1.2)
        call.hangup()
        await sleep(0.1)
        side = json.loads(Path(call.recording).read_text())
        assert side["state"] == "stopped" and side["mode"] == "audio" and side["end"]
        assert side["channels"]["right"]["destination"] == "rec-audio" and side["sip_call_id"] == call.sip_call_id
        assert cdr_of(call)["recording"] == call.recording
        stereo, rate = read_stereo(side["files"]["audio"])
        assert abs(freq_of(stereo[2000:8000, 0], rate) - 660) < 10 and abs(freq_of(stereo[2000:8000, 1], rate) - 440) < 10
        # recorded from the call's media: the file's length is the call's (answer to hangup) within 100 ms
        assert abs(len(stereo) / rate - side["duration_s"]) < 0.01

        # the token asks for less: not recorded
        call = await _call(gw, "rec-audio", _token("rec-audio", record="off"))
        assert call.recording is None
        call.hangup()
        # a route that records nothing unless asked, and a token that asks
        call = await _call(gw, "rec-opt", _token("rec-opt"))
        assert call.recording is None
        call.hangup()
        call = await _call(gw, "rec-opt", _token("rec-opt", record="audio"))
        assert call.recording is not None
        call.hangup()
        assert gw.svc.recordings.counters["started"] == 2
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_min_free_space_refuses_to_start_and_is_counted(tmp_path: Path) -> None:
    gw = _gateway(tmp_path, min_free_mb=10_000_000)
    try:
        call = await _call(gw, "rec-audio")
        assert call.state is CallState.ANSWERED and call.recording is None
        assert gw.svc.recordings.counters["refused_low_space"] == 1
        _s, _h, metrics = await http("GET", gw.url("/metrics"))
        assert b'webgate_recordings_total{event="refused_low_space"} 1.0' in metrics
        await sleep(0.5)
        assert call.state is CallState.ANSWERED  # the call goes on
        call.hangup()
    finally:
        await gw.stop()

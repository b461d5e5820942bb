"""Recording through the API on a live in-process call (LocalLeg 660 Hz -> built-in tone 440 Hz):
start, pause/resume (silence of the pause's length in both channels), stop, the sidecar, the
audio with HTTP Range (206, 416), /metrics, the CDR's ``recording``, and DELETE (GDPR)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest_twisted

from tests.ops.helpers import ADMIN_KEY, api, http, local_call, sleep, start_gateway
from tests.recording.helpers import freq_of, longest_silence, read_stereo, rms
from webgate.ops.cdr import cdr_of


async def post(gw: object, sid: str, body: object, key: str | None = ADMIN_KEY) -> tuple[int, dict]:
    status, _h, data = await http("POST", gw.url(f"/api/calls/{sid}/recording"), key=key,  # type: ignore[attr-defined]
                                  body=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return status, json.loads(data)


@pytest_twisted.ensureDeferred
async def test_api_start_pause_resume_stop_fetch_and_delete(tmp_path: Path) -> None:
    rec_dir = tmp_path / "rec"
    gw = start_gateway({"builtin": {"tone_hz": 440}, "recording": {"dir": str(rec_dir), "min_free_mb": 0, "flush_s": 0.2}})
    try:
        call, _leg = await local_call(gw, "tone", tone_hz=660)
        sid = call.session_id
        # refusals first
        assert (await post(gw, sid, {"action": "start"}, key=None))[0] == 401
        assert (await post(gw, "99999999", {"action": "start"}))[0] == 404
        status, err = await post(gw, sid, {"action": "rewind"})
        assert status == 400 and err["error"] == "invalid_request"
        status, err = await post(gw, sid, {"action": "pause"})
        assert status == 409 and err["error"] == "not_recording"
        assert (await api("GET", gw.url(f"/api/recordings/{sid}")))[0] == 404

        status, side = await post(gw, sid, {"action": "start"})
        assert status == 200 and side["state"] == "recording", side
        assert side["channels"]["left"]["who"] == "web caller" and side["channels"]["left"]["ingress"] == "local"
        assert side["channels"]["right"]["sip_call_id"] == call.sip_call_id and side["session_id"] == sid
        await sleep(1.5)
        status, side = await post(gw, sid, {"action": "pause"})
        assert status == 200 and side["state"] == "paused"
        await sleep(1.0)
        status, side = await post(gw, sid, {"action": "resume"})
        assert status == 200 and side["state"] == "recording"
        await sleep(1.5)
        status, side = await post(gw, sid, {"action": "stop"})
        assert status == 200 and side["state"] == "stopped" and side["end"], side
        pause = side["pauses"][0]
        assert 0.9 < pause["duration_s"] < 1.3, pause

        wav = Path(side["files"]["audio"])
        assert wav.parent.parent == rec_dir and wav.name == f"{sid}.wav"
        stereo, rate = read_stereo(wav)
        assert rate == 8000
        assert abs(len(stereo) / rate - side["duration_s"]) < 0.01
        assert abs(len(stereo) / rate - 4.0) < 0.4, len(stereo) / rate
        start, length = longest_silence(stereo)
        assert abs(length / rate - pause["duration_s"]) < 0.03, (length / rate, pause)
        assert abs(start / rate - pause["at_s"]) < 0.03, (start / rate, pause)
        for a, b in ((0.5, pause["at_s"] - 0.1), (start / rate + length / rate + 0.1, len(stereo) / rate - 0.1)):
            seg = stereo[int(a * rate):int(b * rate)]
            assert abs(freq_of(seg[:, 0], rate) - 660) < 10 and abs(freq_of(seg[:, 1], rate) - 440) < 10
            assert rms(seg[:, 0]) > 3000 and rms(seg[:, 1]) > 1000

        # the sidecar and the file through the API, with Range
        status, got = await api("GET", gw.url(f"/api/recordings/{sid}"))
        assert status == 200 and got["state"] == "stopped" and got["files"] == side["files"]
        size = wav.stat().st_size
        status, h, body = await http("GET", gw.url(f"/api/recordings/{sid}/audio"), key=ADMIN_KEY)
        assert status == 200 and h["content-type"] == "audio/wav" and body == wav.read_bytes()
        status, h, body = await http("GET", gw.url(f"/api/recordings/{sid}/audio"), key=ADMIN_KEY, headers={"range": "bytes=0-43"})
        assert status == 206 and h["content-range"] == f"bytes 0-43/{size}" and body[:4] == b"RIFF" and len(body) == 44
        status, h, body = await http("GET", gw.url(f"/api/recordings/{sid}/audio"), key=ADMIN_KEY, headers={"range": f"bytes={size + 10}-"})
        assert status == 416
        assert (await http("GET", gw.url(f"/api/recordings/{sid}/audio"), key=None))[0] == 401
        assert (await api("GET", gw.url(f"/api/recordings/{sid}/video")))[0] == 404
        # counted in /metrics
        _s, _h, metrics = await http("GET", gw.url("/metrics"))
        assert b'webgate_recordings_total{event="started"} 1.0' in metrics
        assert b'webgate_recordings_total{event="stopped"} 1.0' in metrics

        # started again: a second recording of the same session ID, the newest one is served
        status, again = await post(gw, sid, {"action": "start"})
        assert status == 200 and again["files"]["audio"].endswith(f"{sid}-2.wav"), again
        await sleep(0.5)
        call.hangup()
        await sleep(0.2)
        assert cdr_of(call)["recording"] == str(Path(again["files"]["audio"]).with_suffix(".json"))
        status, got = await api("GET", gw.url(f"/api/recordings/{sid}"))
        assert status == 200 and got["state"] == "stopped" and got["files"] == again["files"]

        # GDPR erasure: every file of both recordings
        files = sorted(p.name for p in rec_dir.rglob("*") if p.is_file())
        assert files == sorted([f"{sid}.json", f"{sid}.wav", f"{sid}-2.json", f"{sid}-2.wav"]), files
        status, gone = await api("DELETE", gw.url(f"/api/recordings/{sid}"))
        assert status == 200 and gone["deleted_files"] == 4
        assert not [p for p in rec_dir.rglob("*") if p.is_file()]
        assert (await api("GET", gw.url(f"/api/recordings/{sid}")))[0] == 404
        assert (await api("DELETE", gw.url(f"/api/recordings/{sid}")))[0] == 404
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_ogg_opus_recording_is_served_and_decodes_to_both_channels(tmp_path: Path) -> None:
    gw = start_gateway({"builtin": {"tone_hz": 440}, "recording": {"dir": str(tmp_path), "format": "ogg", "min_free_mb": 0, "flush_s": 0.2}})
    try:
        call, _leg = await local_call(gw, "tone", tone_hz=660)
        status, side = await post(gw, call.session_id, {"action": "start"})
        assert status == 200 and side["codecs"]["audio"] == "opus"
        await sleep(2.0)
        call.hangup()
        await sleep(0.2)
        status, h, body = await http("GET", gw.url(f"/api/recordings/{call.session_id}/audio"), key=ADMIN_KEY)
        assert status == 200 and h["content-type"] == "audio/ogg" and body[:4] == b"OggS"
    finally:
        await gw.stop()
    ogg = tmp_path / "x.ogg"
    ogg.write_bytes(body)
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(ogg), "-f", "s16le", "-ac", "2", "-ar", "8000", "-"],  # noqa: ASYNC221 - after the call
                         capture_output=True, check=True).stdout
    s = np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2)
    assert abs(len(s) / 8000 - 2.0) < 0.3, len(s) / 8000
    assert abs(freq_of(s[4000:12000, 0], 8000) - 660) < 10 and abs(freq_of(s[4000:12000, 1], 8000) - 440) < 10

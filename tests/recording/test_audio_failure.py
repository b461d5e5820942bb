"""A full disk stops that call's recording, never the call: a small tmpfs (mounted and
unmounted here) fills up mid-call; the call's audio still flows both ways (measured), the
error is in /metrics and the sidecar, and the WAV up to the failure is readable."""

from __future__ import annotations

import json
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest_twisted

from tests.calls.gw import sleep, wait_for
from tests.ops.helpers import http, local_call, start_gateway
from tests.recording.helpers import freq_of


@pytest_twisted.ensureDeferred
async def test_disk_full_stops_the_recording_not_the_call(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], check=True)  # noqa: ASYNC221 - before the reactor has work
    gw = None
    try:
        gw = start_gateway({"recording": {"dir": str(mnt), "path": "{session_id}", "min_free_mb": 0, "flush_s": 0.2}})
        recs = gw.svc.recordings
        call, leg = await local_call(gw, "echo", tone_hz=660)
        sid = call.session_id
        recs.start(call)  # echo is no route: started as the API does
        # 8 kHz stereo 16-bit = 32 kB/s: the 48 kB disk is full within 2 s
        assert await wait_for(lambda: recs.counters["failed"] == 1, 6), recs.counters
        side = json.loads((mnt / f"{sid}.json").read_text())
        assert side["state"] == "failed" and side["error"] == "disk full" and side["end"], side
        _s, _h, metrics = await http("GET", gw.url("/metrics"))
        assert b'webgate_recordings_total{event="failed"} 1.0' in metrics
        # the call goes on, audio both ways: what the leg hears now is its own 660 Hz, echoed
        n = len(leg.received)
        await sleep(1.0)
        assert call.state.value == "answered"
        heard = np.concatenate(leg.received[n:])
        assert len(heard) >= 6000 and abs(freq_of(heard, 8000) - 660) < 10
        assert np.sqrt(np.mean(heard.astype(float) ** 2)) > 1000
        # what was written before the disk filled is a readable WAV
        with wave.open(str(mnt / f"{sid}.wav")) as w:
            assert w.getnchannels() == 2 and w.getnframes() > 4000
        call.hangup()
    finally:
        if gw is not None:
            await gw.stop()
        subprocess.run(["umount", str(mnt)], check=False)  # noqa: ASYNC221 - cleanup

"""SIGKILL of a real ``twistd -n webgate`` mid-call leaves a WAV that opens as it is (its
header was rewritten at the last flush) and holds the audio up to the kill within 1 s.

The caller is an ffmpeg RTMP publisher (PCMU, 800 Hz); the route ``rec`` goes over real SIP to
the gateway's own built-in tone (440 Hz) and records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import wave
from datetime import datetime
from pathlib import Path

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import ffmpeg
from tests.calls.gw import process_exit
from tests.interop import peers
from tests.ops.helpers import ADMIN_KEY, TWISTD, api, sleep, twistd_env
from tests.recording.helpers import freq_of, read_stereo
from webgate.adapters.recording_store import FileStore
from webgate.calls.recording import Recordings
from webgate.config import RecordingConfig


@pytest.mark.usefixtures("ffmpeg_program")
@pytest_twisted.ensureDeferred
async def test_sigkill_mid_call_leaves_a_readable_wav_up_to_the_kill(tmp_path: Path) -> None:
    http_port, rtmp_port, sip_port = peers.free_port("tcp"), peers.free_port("tcp"), peers.free_port("both")
    rtp = peers.free_port_block(20, "udp", align=2)
    rec = tmp_path / "rec"
    conf = tmp_path / "webgate.toml"
    conf.write_text(f"""
[http]
listen = "127.0.0.1:{http_port}"
[rtmp]
listen = "127.0.0.1:{rtmp_port}"
[sip]
udp = "127.0.0.1:{sip_port}"
[rtp]
port_min = {rtp}
port_max = {rtp + 19}
[api]
admin_key = "{ADMIN_KEY}"
[builtin]
tone_hz = 440
[recording]
dir = "{rec}"
path = "{{session_id}}"
min_free_mb = 0
flush_s = 0.5
[[trunk]]
name = "self"
target = "sip:127.0.0.1:{sip_port}"
codecs = ["PCMU"]
[[route]]
pattern = "rec"
trunk = "self"
rewrite = "tone"
public = true
record = "audio"
""")
    out = open(tmp_path / "twistd.log", "wb")  # noqa: SIM115, ASYNC230 - closed in finally
    proc = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "webgate", "--config", str(conf)],  # noqa: ASYNC220 - the gateway under test
                            cwd=tmp_path, env=twistd_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pub = None
    base = f"http://127.0.0.1:{http_port}"
    try:
        up = False
        for _ in range(300):
            try:
                up = (await api("GET", base + "/api/stats"))[0] == 200
            except Exception:  # noqa: BLE001 - not listening yet
                up = False
            if up or proc.poll() is not None:
                break
            await sleep(0.1)
        assert up, (tmp_path / "twistd.log").read_text()[-3000:]
        pub = ffmpeg("-re", "-f", "lavfi", "-i", "sine=frequency=800:sample_rate=8000:duration=60",
                     "-c:a", "pcm_mulaw", "-ar", "8000", "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/call/rec", timeout=90)
        sidecars: list[Path] = []
        for _ in range(100):
            sidecars = list(rec.glob("*.json"))
            if sidecars:
                break
            await sleep(0.1)
        assert sidecars, (tmp_path / "twistd.log").read_text()[-3000:]
        await sleep(3.0)
        os.killpg(proc.pid, signal.SIGKILL)
        killed_at = time.time()
        assert await process_exit(proc, 10) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await process_exit(proc, 10)
        out.close()
        if pub is not None:
            pub.kill()
    side = json.loads(sidecars[0].read_text())
    assert side["state"] == "recording" and side["end"] is None  # it never ended: killed
    wav = Path(side["files"]["audio"])
    with wave.open(str(wav)) as w:  # opens as it is, no repair
        assert w.getnchannels() == 2 and w.getframerate() == 8000
    stereo, rate = read_stereo(wav)
    started = datetime.fromisoformat(side["start"]).timestamp()
    recorded = len(stereo) / rate
    assert killed_at - started - 1.0 <= recorded <= killed_at - started + 0.1, (recorded, killed_at - started)
    tail = stereo[-int(0.8 * rate):]
    assert abs(freq_of(tail[:, 0], rate) - 800) < 15 and abs(freq_of(tail[:, 1], rate) - 440) < 15
    # the next gateway (what GET /api/recordings/ID does) repairs the header and says what happened
    recs = Recordings(RecordingConfig(dir=str(rec), path="{session_id}", min_free_mb=0), reactor=None, store=FileStore())
    found = recs.newest(side["session_id"])
    assert found is not None and found[1]["state"] == "interrupted" and found[1]["end"], found
    assert json.loads(sidecars[0].read_text())["state"] == "interrupted"
    with wave.open(str(wav)) as w:
        assert w.getnframes() >= len(stereo) and w.getnframes() * 4 + 44 == wav.stat().st_size

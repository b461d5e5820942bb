"""SIGTERM with live calls: a real ``twistd -n webgate`` with three calls from ffmpeg (RTMP
publishers) to a SIPp UAS. On SIGTERM every SIP leg gets a BYE (SIPp answers it and exits 0),
the RTMP clients are told (their publish ends), a CDR is written for every call, and the
process exits within ``[shutdown] timeout_s``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import ffmpeg
from tests.calls.gw import process_exit
from tests.interop import peers
from tests.ops.helpers import ADMIN_KEY, TWISTD, api, sleep, twistd_env, wait_for

CALLS = 3
TIMEOUT_S = 5


def silent_uas(tmp_path: Path) -> Path:
    """uas_answer.xml, except that the BYE is never answered."""
    text = peers.scenario("uas_answer").read_text()
    head, _, _tail = text.partition('<recv request="BYE" timeout="60000"/>')
    path = tmp_path / "uas_silent_bye.xml"
    path.write_text(head + '<recv request="BYE" timeout="60000"/>\n  <timewait milliseconds="20000"/>\n</scenario>\n')
    return path


@pytest.mark.usefixtures("ffmpeg_program")
@pytest.mark.parametrize("far_end", ["answers_bye", "ignores_bye"])
@pytest_twisted.ensureDeferred
async def test_sigterm_byes_every_call_writes_cdrs_and_exits_in_time(
    tmp_path: Path, sipp_factory: Callable[..., peers.Sipp], far_end: str
) -> None:
    scenario = "uas_answer" if far_end == "answers_bye" else silent_uas(tmp_path)
    sipp = sipp_factory(scenario, rtp_echo=True, calls=CALLS)
    http_port, rtmp_port = peers.free_port("tcp"), peers.free_port("tcp")
    sip_port = peers.free_port("both")
    rtp = peers.free_port_block(40, "udp", align=2)
    cdr = tmp_path / "cdr.jsonl"
    conf = tmp_path / "webgate.toml"
    conf.write_text(
        f"""
[http]
listen = "127.0.0.1:{http_port}"
[rtmp]
listen = "127.0.0.1:{rtmp_port}"
[sip]
udp = "127.0.0.1:{sip_port}"
tcp = "127.0.0.1:{sip_port}"
[rtp]
port_min = {rtp}
port_max = {rtp + 39}
[api]
admin_key = "{ADMIN_KEY}"
[cdr]
file = "{cdr}"
[shutdown]
timeout_s = {TIMEOUT_S}
[log]
format = "json"
[[trunk]]
name = "sipp"
target = "sip:{sipp.address}"
codecs = ["PCMU"]
[[route]]
pattern = "2000"
trunk = "sipp"
rewrite = "service"
public = true
"""
    )
    out = open(tmp_path / "twistd.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "webgate", "--config", str(conf)],
        cwd=tmp_path, env=twistd_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    pubs = []
    base = f"http://127.0.0.1:{http_port}"
    try:
        up = False
        for _ in range(300):
            try:
                status, _ = await api("GET", base + "/api/stats")
                up = status == 200
            except Exception:  # noqa: BLE001 - not listening yet
                up = False
            if up or proc.poll() is not None:
                break
            await sleep(0.1)
        assert up, (tmp_path / "twistd.log").read_text()[-3000:]
        for _ in range(CALLS):
            pubs.append(ffmpeg(
                "-re", "-f", "lavfi", "-i", "sine=frequency=600:sample_rate=8000:duration=60",
                "-c:a", "pcm_mulaw", "-ar", "8000", "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/call/2000", timeout=90,
            ))  # fmt: skip

        calls: list[dict] = []

        async def answered() -> bool:
            nonlocal calls
            status, body = await api("GET", base + "/api/calls")
            calls = body["calls"] if status == 200 else []
            return len(calls) == CALLS and all(c["state"] == "answered" and c["from_sip"]["packets"] > 10 for c in calls)

        ok = False
        for _ in range(150):
            if await answered():
                ok = True
                break
            await sleep(0.1)
        assert ok, f"calls: {calls}\n{sipp.describe()}"
        assert not (tmp_path / "cdr.jsonl").exists()

        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = await process_exit(proc, TIMEOUT_S + 10)
        took = time.monotonic() - t0
        log = (tmp_path / "twistd.log").read_text()
        assert rc is not None, f"still running {took:.1f} s after SIGTERM\n{log[-3000:]}"
        print(f"\nSIGTERM with {CALLS} live calls, far end {far_end}: exited in {took:.2f} s (bound {TIMEOUT_S} s), rc {rc}")
        assert rc in (0, -signal.SIGTERM), log[-3000:]
        assert took <= TIMEOUT_S + 1.0, took

        # every SIP leg got a BYE
        if far_end == "answers_bye":
            # SIPp answered them and completed its calls
            assert await wait_for(lambda: not sipp.running(), 10), sipp.describe()
            assert sipp.proc is not None and sipp.proc.returncode == 0, sipp.describe()
        else:
            # the gateway waited for the answers (retransmitting) until the bound, then left
            assert took >= TIMEOUT_S - 1.5, took
        byes = [m for m in sipp.received() if m.method == "BYE"]
        bye_ids = {m.header("Call-ID") for m in byes}
        assert len(bye_ids) == CALLS, sipp.describe()
        assert {c["sip_call_id"] for c in calls} == bye_ids
        if far_end == "ignores_bye":
            assert len(byes) > CALLS, "the unanswered BYEs were never retransmitted"

        # a CDR per call, ended by the shutdown
        records = [json.loads(line) for line in cdr.read_text().splitlines()]
        assert len(records) == CALLS, records
        assert {r["session_id"] for r in records} == {c["session_id"] for c in calls}
        assert {r["sip_call_id"] for r in records} == bye_ids
        assert all(r["end_cause"] == "shutdown" and r["ingress"] == "rtmp" and r["answer"] for r in records), records

        # the RTMP clients were told: their publishes end well before their 60 s tone
        for p in pubs:
            code, _o, _e = await p.wait()
            assert code is not None
        assert time.monotonic() - t0 < 30
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert any("shutting down" in e["message"] for e in events)
    finally:
        for p in pubs:
            p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        out.close()

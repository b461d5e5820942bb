"""The sweep at start (webgate/media/recording/sweep.py, ``Recordings.sweep_at_start``): the
recordings a crash left unfinished under ``[recording] dir`` get their WAV header repaired and
their sidecar marked; bounded (recent date directories, a cap on files), never one that may still
be written; a gateway's start runs it in the background, logs and counts it (``/metrics``)."""

from __future__ import annotations

import json
import os
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest_twisted

from tests.calls.gw import make_config, start_telephony, wait_for
from webgate.media.recording.sweep import sweep
from webgate.media.recording.wav import WavWriter
from webgate.media.tones import ToneGenerator
from webgate.ops.metrics import GatewayMetrics

RATE = 8000


def day(offset: int = 0) -> str:
    return (datetime.now(UTC) - timedelta(days=offset)).strftime("%Y-%m-%d")


def crashed_wav(path: Path, seconds: float = 1.0, unflushed: float = 0.5) -> int:
    """A stereo WAV as a SIGKILL leaves it: ``seconds`` flushed (the header says so), then
    ``unflushed`` more written after the last header rewrite. The frames the file holds."""
    tone = np.asarray(ToneGenerator(440, RATE, 0.3).generate(int(RATE * (seconds + unflushed))), dtype=np.int16)
    stereo = np.stack([tone, tone], axis=1)
    w = WavWriter(path, RATE)
    n = int(RATE * seconds)
    w.write(stereo[:n])
    w.flush()
    w.write(stereo[n:])
    f = w._f
    assert f is not None
    f.flush()
    f.close()  # no header rewrite: the crash
    w._f = None
    return len(stereo)


def recording(root: Path, date: str, sid: str, state: str = "recording", *, crashed: bool = True,
              age_s: float = 60.0) -> tuple[Path, Path]:
    d = root / date
    d.mkdir(parents=True, exist_ok=True)
    wav, side = d / f"{sid}.wav", d / f"{sid}.json"
    if crashed:
        crashed_wav(wav)
    else:
        w = WavWriter(wav, RATE)
        w.write(np.zeros((RATE, 2), dtype=np.int16))
        w.close()
    side.write_text(json.dumps({"session_id": sid, "state": state, "end": None if state == "recording" else "x",
                                "files": {"audio": str(wav)}, "error": None}))
    t = time.time() - age_s
    for p in (wav, side):
        os.utime(p, (t, t))
    return side, wav


def header_frames(wav: Path) -> int:
    with wave.open(str(wav)) as w:
        return w.getnframes()


def test_sweep_repairs_only_what_a_crash_left_and_is_bounded(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    crashed, crashed_w = recording(root, day(0), "1000000001")
    stopped_side, stopped_wav = recording(root, day(0), "1000000002", "stopped", crashed=False)
    short_side, short_wav = recording(root, day(1), "1000000003", "stopped")  # finished, header short
    old_side, old_wav = recording(root, day(5), "1000000004")  # too old: not looked at
    busy_side, busy_wav = recording(root, day(0), "1000000005", age_s=1.0)  # still written (another node)
    new_side, _ = recording(root, day(0), "1000000006", age_s=-30.0)  # written after this start
    bad = root / day(0) / "1000000007.json"
    bad.write_text("{not json")
    os.utime(bad, (time.time() - 60, time.time() - 60))
    before = {p: p.read_bytes() for p in (stopped_side, stopped_wav, old_side, old_wav, busy_side, busy_wav, new_side)}

    result = sweep(root, "{date}/{session_id}", 2, before=time.time())

    assert sorted(p.name for p in result.repaired) == ["1000000001.json", "1000000003.json"]
    assert [p.name for p, _why in result.errors] == ["1000000007.json"] and not result.truncated
    assert result.examined == 6  # today's and yesterday's sidecars, not the 5-day-old one
    for p, data in before.items():
        assert p.read_bytes() == data, p  # untouched
    side = json.loads(crashed.read_text())
    assert side["state"] == "interrupted" and side["end"] and side["repaired"] is True and side["wav_header_fixed"] is True
    assert side["error"] == "the gateway stopped before the recording ended" and side["repaired_at"]
    assert header_frames(crashed_w) == int(1.5 * RATE) == (crashed_w.stat().st_size - 44) // 4
    side = json.loads(short_side.read_text())
    assert side["state"] == "stopped" and side["repaired"] is True and header_frames(short_wav) == int(1.5 * RATE)
    # a second sweep finds nothing to do
    again = sweep(root, "{date}/{session_id}", 2, before=time.time())
    assert again.repaired == [] and again.examined == 6


def test_sweep_caps_and_templates_without_a_date(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    for i in range(5):
        recording(root, day(0), f"20000000{i:02d}")
    capped = sweep(root, "{date}/{session_id}", 1, before=time.time(), max_files=3)
    assert capped.truncated and capped.examined == 3 and len(capped.repaired) == 3
    # path = "{session_id}": no date directories; sidecars modified in the last `days` days
    flat = tmp_path / "flat"
    side, _ = recording(flat, "", "3000000001")
    old, _ = recording(flat, "", "3000000002", age_s=3 * 86400)
    result = sweep(flat, "{session_id}", 2, before=time.time())
    assert result.repaired == [side] and json.loads(old.read_text())["state"] == "recording"
    assert sweep(tmp_path / "missing", "{date}/{session_id}", 2, before=time.time()).examined == 0
    assert sweep(root, "{date}/{session_id}", 0, before=time.time()).examined == 0


@pytest_twisted.ensureDeferred
async def test_gateway_start_repairs_a_crashed_recording(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    side, wav = recording(root, day(0), "4000000001")
    held = header_frames(wav)
    assert held == RATE  # the header says 1 s; the file holds 1.5 s
    svc = start_telephony(make_config({"recording": {"dir": str(root), "min_free_mb": 0}}))
    try:
        metrics = GatewayMetrics(svc)
        assert await wait_for(lambda: svc.recordings.last_sweep is not None, 5)
        sample: Any = metrics.registry.get_sample_value("webgate_recordings_total", {"event": "repaired"})
        assert sample == 1.0
    finally:
        await svc.stopService()
    data = json.loads(side.read_text())
    assert data["state"] == "interrupted" and data["repaired"] is True
    assert header_frames(wav) == int(1.5 * RATE)
    assert svc.recordings.counters["repaired"] == 1


def test_an_unfinished_ogg_recording_is_marked_without_touching_its_file(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    d = root / day(0)
    d.mkdir(parents=True)
    ogg, side = d / "5000000001.ogg", d / "5000000001.json"
    ogg.write_bytes(b"OggS" + bytes(200))
    side.write_text(json.dumps({"session_id": "5000000001", "state": "paused", "end": None, "error": None}))
    t = time.time() - 120
    for p in (ogg, side):
        os.utime(p, (t, t))
    result = sweep(root, "{date}/{session_id}", 2, before=time.time())
    assert result.repaired == [side] and ogg.read_bytes() == b"OggS" + bytes(200)
    data = json.loads(side.read_text())
    assert data["state"] == "interrupted" and data["wav_header_fixed"] is False and data["repaired"] is True
    assert abs(datetime.fromisoformat(data["end"]).timestamp() - t) < 1  # the files' last write


@pytest_twisted.ensureDeferred
async def test_delete_survives_a_sidecar_whose_files_is_not_an_object(tmp_path: Path) -> None:
    """A hand-edited or foreign sidecar (``files`` a list, a string, a number) must not make the
    erasure raise: the sidecar and the recording's own files by name are still removed."""
    root = tmp_path / "rec"
    svc = start_telephony(make_config({"recording": {"dir": str(root), "min_free_mb": 0, "repair_days": 0}}))
    try:
        for k, files in enumerate([["x.wav"], "x.wav", 7, None]):
            sid = f"500000000{k}"
            side, wav = recording(root, day(0), sid, state="stopped", crashed=False)
            data = json.loads(side.read_text())
            data["files"] = files
            side.write_text(json.dumps(data))
            assert svc.recordings.delete(sid) == 2, files
            assert not side.exists() and not wav.exists()
    finally:
        await svc.stopService()

"""The recording's data messages as JSON lines (issue 17), and the hub's tap that feeds them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.recording.helpers import small_tmpfs
from webgate.legs.hub import MediaHub
from webgate.legs.hub_recording import HubRecordingFactory
from webgate.media.recording.data import DataLog


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_lines_are_written_and_flushed_one_by_one(tmp_path: Path) -> None:
    log = DataLog(tmp_path / "d.data.jsonl")
    assert log.exists and log.path.read_text() == ""
    log.write(1.23456, "caller", "alice", "chat", 'hé\n{"t": 0}')
    # flushed: another reader sees the line while the file is still open
    assert _lines(log.path) == [{"t": 1.235, "from": "caller", "sender": "alice", "label": "chat", "text": 'hé\n{"t": 0}'}]
    log.write(2.0, "watcher", None, "bin", b"\x00\x01\xff")
    log.write(-0.5, "watcher", "agent", "chat", "")
    log.close()
    log.close()
    log.write(3.0, "caller", None, "chat", "after close")
    lines = _lines(log.path)
    assert len(log.path.read_text().splitlines()) == 3 and log.lines == 3
    assert lines[1] == {"t": 2.0, "from": "watcher", "sender": None, "label": "bin", "base64": "AAH/"}
    assert lines[2]["t"] == 0.0 and lines[2]["text"] == ""
    assert log.error is None


def test_an_unwritable_place_is_an_error_not_a_crash(tmp_path: Path) -> None:
    log = DataLog(tmp_path / "no" / "such" / "dir.jsonl")
    log.write(0.0, "caller", None, "chat", "x")
    log.close()
    assert log.error is not None and "data write failed" in log.error and not log.exists


def test_a_full_disk_stops_the_file_with_disk_full(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path, "64k") as mnt:
        log = DataLog(mnt / "d.data.jsonl")
        for i in range(200):
            log.write(float(i), "caller", "alice", "chat", "x" * 1000)
            if log.error:
                break
        assert log.error == "disk full" and 40 <= log.lines < 200
        log.write(999.0, "caller", None, "chat", "more")  # stopped: no exception, nothing written
        log.close()


class _Caller:
    def __init__(self) -> None:
        self.counts: list[int] = []
        self.keyframes = 0
        self.to_caller: list[Any] = []

    def watchers_changed(self, count: int) -> None:
        self.counts.append(count)

    def data_to_caller(self, label: str, data: str | bytes, sender: str | None) -> None:
        self.to_caller.append((label, data, sender))

    def request_keyframe(self) -> None:
        self.keyframes += 1

    def limit_bitrate(self, bps: int) -> None:
        pass


class _Watcher:
    wants = "rtp"

    def __init__(self, identity: str | None) -> None:
        self.identity = identity
        self.got: list[Any] = []

    def video_started(self, codec: str | None, width: int | None, height: int | None) -> None:
        pass

    def rtp_video(self, packet: Any) -> None:
        pass

    def flv_video(self, tag: Any) -> None:
        pass

    def data(self, label: str, data: str | bytes) -> None:
        self.got.append((label, data))

    def ended(self, cause: str) -> None:
        pass


class _Call:
    def __init__(self, hub: MediaHub | None) -> None:
        self.hub = hub
        self.session_id = "S1"


def test_the_tap_records_both_directions_and_is_not_a_watcher(tmp_path: Path) -> None:
    now = [100.0]
    caller = _Caller()
    hub = MediaHub("S1", caller, caller_identity="alice", max_watchers=1, clock=lambda: now[0])
    t = [0.0]
    sink = HubRecordingFactory()(_Call(hub), tmp_path / "2026-12-03" / "S1", 8000, lambda: t[0], False)
    assert sink is not None
    assert caller.counts == [] and hub.watchers == [] and hub.recorders == [sink]
    assert caller.keyframes == 1  # asked when the recording starts
    w = _Watcher("agent-7")
    hub.add_watcher(w)  # the cap (1) is the watchers': the recorder takes no place
    assert caller.counts == [1] and hub.snapshot()["video"]["watchers"] == 1
    t[0] = 1.5
    hub.data_from_caller("chat", "hello")
    t[0] = 2.25
    hub.data_from_watcher(w, "chat", b"\x01\x02")
    sink.paused(True)
    hub.data_from_caller("chat", "card number")
    sink.paused(False)
    t[0] = 3.0
    hub.data_from_caller("chat", "bye")
    assert w.got == [("chat", "hello"), ("chat", "card number"), ("chat", "bye")]
    assert caller.to_caller == [("chat", b"\x01\x02", "agent-7")]
    files = sink.files()
    assert set(files) == {"data"} and sink.codecs() == {} and sink.error is None
    sink.close()
    sink.close()
    assert hub.recorders == [] and caller.counts == [1]
    assert _lines(Path(files["data"])) == [
        {"t": 1.5, "from": "caller", "sender": "alice", "label": "chat", "text": "hello"},
        {"t": 2.25, "from": "watcher", "sender": "agent-7", "label": "chat", "base64": "AQI="},
        {"t": 3.0, "from": "caller", "sender": "alice", "label": "chat", "text": "bye"},
    ]


def test_no_hub_no_sink(tmp_path: Path) -> None:
    assert HubRecordingFactory()(_Call(None), tmp_path / "x", 8000, lambda: 0.0, True) is None
    hub = MediaHub("S1", _Caller())
    hub.close("hangup")
    assert HubRecordingFactory()(_Call(hub), tmp_path / "x", 8000, lambda: 0.0, True) is None
    assert not os.listdir(tmp_path)


@pytest.mark.usefixtures("ffmpeg_program")
def test_the_tap_records_the_callers_video_from_the_hub(tmp_path: Path) -> None:
    from tests.recording.video_bytes import ffprobe, video_stream, vp8_frames, vp8_rtp
    from webgate.legs.hub_types import RtpVideo

    caller = _Caller()
    hub = MediaHub("S2", caller)
    t = [0.0]
    sink = HubRecordingFactory()(_Call(hub), tmp_path / "S2", 16000, lambda: t[0], True)
    assert sink is not None and caller.keyframes == 1
    for seq, ts, marker, payload, i in vp8_rtp(vp8_frames((30, 30, 220), 20)):
        t[0] = i / 30
        hub.rtp_from_caller(RtpVideo("VP8", seq, ts, marker, payload))
    sink.audio(__import__("numpy").zeros((16000, 2), "int16"))
    hub.close("hangup")  # the call ends first; the recording closes its files after
    sink.close()
    assert sink.error is None and set(sink.files()) == {"video", "data"}
    assert sink.codecs() == {"video": "VP8", "container": "webm", "video_audio": "opus"}
    assert video_stream(ffprobe(Path(sink.files()["video"])))["codec_name"] == "vp8"

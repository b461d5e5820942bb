"""``adapters/recording_store.py`` ``FileStore``: the file operations ``calls/recording.py`` asks
for through ``calls/interfaces.py`` ``RecordingStore`` (free space, a new base never overwriting,
the audio file, sidecars, finding, removing)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from webgate.adapters.recording_store import FileStore
from webgate.calls.interfaces import RecordingStore
from webgate.media.recording.ogg import OggOpusWriter


def test_file_store_does_what_the_recordings_ask(tmp_path: Path) -> None:
    store: RecordingStore = FileStore()
    root = tmp_path / "rec"
    assert store.free_mb(root) > 0 and root.is_dir()
    base = store.new_base(root / "2026-12-03" / "123", (".json", ".wav"))
    assert base == root / "2026-12-03" / "123" and base.parent.is_dir()
    w = store.open_audio(base.with_name("123.wav"), 8000, "wav")
    w.write(np.ones((800, 2), dtype=np.int16))
    w.flush()
    w.close()
    with wave.open(str(base.with_name("123.wav"))) as f:
        assert f.getnchannels() == 2 and f.getnframes() == 800
    with pytest.raises(FileExistsError):  # never overwrites
        store.open_audio(base.with_name("123.wav"), 8000, "wav")
    ogg = store.open_audio(base.with_name("123.ogg"), 16000, "ogg")
    assert isinstance(ogg, OggOpusWriter)
    ogg.close()
    assert store.new_base(root / "2026-12-03" / "123", (".json", ".wav")) == root / "2026-12-03" / "123-2"
    store.write_json(base.with_name("123.json"), {"session_id": "123", "state": "recording"})
    assert store.read_json(base.with_name("123.json")) == {"session_id": "123", "state": "recording"}
    assert store.exists(base.with_name("123.json")) and not store.exists(base.with_name("124.json"))
    found = store.find(root, ["*/123.json", "*/123-*.json"])
    assert [p for p, _t in found] == [base.with_name("123.json")] and found[0][1] > 0
    assert store.remove(base.with_name("123.json")) and not store.remove(base.with_name("123.json"))
    base.with_name("bad.json").write_text("{")
    with pytest.raises(ValueError):
        store.read_json(base.with_name("bad.json"))

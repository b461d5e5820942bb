"""The files of call recordings: :class:`FileStore` implements
:class:`webgate.calls.interfaces.RecordingStore` on the local filesystem, so that
``calls/recording.py`` (the recordings' policy and life) does no file I/O itself
(docs/architecture.md, docs/recording.md). The audio writers and the crash repair are
``webgate/media/recording/``'s (``wav.py``, ``ogg.py``, ``sweep.py``); this module opens, finds,
writes and removes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from webgate.calls.interfaces import AudioFileWriter
from webgate.media.recording.ogg import OggOpusWriter
from webgate.media.recording.sweep import SweepResult, finish, sweep
from webgate.media.recording.wav import WavWriter

__all__ = ["FileStore"]


class FileStore:
    """Recordings as files under a directory (``[recording] dir``)."""

    def free_mb(self, directory: Path) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(directory).free // (1024 * 1024)

    def new_base(self, base: Path, extensions: tuple[str, ...]) -> Path:
        base.parent.mkdir(parents=True, exist_ok=True)
        n, candidate = 1, base
        while any(candidate.with_name(candidate.name + ext).exists() for ext in extensions):
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        return candidate

    def open_audio(self, path: Path, rate: int, fmt: str) -> AudioFileWriter:
        return OggOpusWriter(path, rate) if fmt == "ogg" else WavWriter(path, rate)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def find(self, directory: Path, patterns: list[str]) -> list[tuple[Path, float]]:
        out: dict[Path, float] = {}
        for pattern in patterns:
            for p in directory.glob(pattern):
                try:
                    out[p] = p.stat().st_mtime
                except OSError:
                    continue
        return list(out.items())

    def remove(self, path: Path) -> bool:
        try:
            os.remove(path)
        except FileNotFoundError:
            return False
        return True

    def repair(self, sidecar: Path, data: dict[str, Any], now: float) -> dict[str, Any]:
        return finish(sidecar, data, now)

    def sweep(self, directory: Path, template: str, days: int, before: float, quiet_s: float) -> SweepResult:
        return sweep(directory, template, days, before=before, quiet_s=quiet_s)

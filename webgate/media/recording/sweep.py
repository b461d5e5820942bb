"""Recordings a crash left unfinished, found and finished: the sweep at the gateway's start and the
repair on the first ``GET`` of one (docs/recording.md "Crash safety").

A recording is unfinished when its sidecar still says ``recording``/``paused`` with no ``end``
(the gateway died before it stopped), or when its WAV's header does not give the file's length
(a crash between a write and the header's rewrite). :func:`finish` makes the WAV's header whole
(:func:`~webgate.media.recording.wav.repair_wav`) and marks the sidecar (``state:
"interrupted"``, ``end`` = its files' last write, ``repaired``); :func:`sweep` does that for the
recent recordings under ``[recording] dir``, bounded: only the date directories of the last
``days`` days (or, if the path template has no ``{date}``, sidecars written in that time), at most
``max_files`` sidecars, at most ``budget_s`` seconds, and never one that may still be written
(written after ``before``, or a file of it touched in the last ``quiet_s`` seconds: a live
recording of this gateway or of another node sharing the directory). Plain file I/O, no Twisted:
the caller runs it in a thread.
"""

from __future__ import annotations

import glob
import json
import os
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from webgate.media.recording.wav import HEADER_BYTES, repair_wav

__all__ = ["SweepResult", "finish", "iso_utc", "recent_sidecars", "sweep", "template_glob", "unfinished"]

#: what an unfinished recording's sidecar says after :func:`finish`
INTERRUPTED_ERROR = "the gateway stopped before the recording ended"


@dataclass
class SweepResult:
    """What one sweep did."""

    examined: int = 0
    #: sidecars marked ``interrupted`` (or WAV headers of finished ones fixed)
    repaired: list[Path] = field(default_factory=list)
    #: sidecars or WAVs that could not be read or fixed (logged by the caller)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    #: the cap on files or on time stopped it before the end
    truncated: bool = False
    seconds: float = 0.0


def iso_utc(t: float | None) -> str | None:
    """A sidecar's time: ``t`` (epoch seconds) as ISO 8601 UTC to the millisecond (None: None)."""
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _stem(sidecar: Path) -> str:
    return sidecar.name[: -len(".json")]


def _files(sidecar: Path) -> list[Path]:
    return [p for p in sidecar.parent.glob(glob.escape(_stem(sidecar)) + ".*") if p.is_file()]


def _wav_short(wav: Path) -> bool:
    """Whether the header's data size is not what the file holds (cheap: the first bytes)."""
    with open(wav, "rb") as f:
        head = f.read(HEADER_BYTES)
        size = os.fstat(f.fileno()).st_size
    if len(head) < HEADER_BYTES or head[:4] != b"RIFF" or head[36:40] != b"data":
        return True  # not our canonical header: let repair_wav decide
    block = int.from_bytes(head[32:34], "little") or 1
    data = int.from_bytes(head[40:44], "little")
    return data != (size - HEADER_BYTES) // block * block


def unfinished(data: dict[str, Any]) -> bool:
    """A sidecar the gateway never finished (it still says recording/paused)."""
    return data.get("state") in ("recording", "paused")


def finish(sidecar: Path, data: dict[str, Any], now: float) -> dict[str, Any]:
    """Repair the WAV of the recording of ``sidecar`` (content ``data``) and, if the gateway never
    finished it, mark it ``interrupted``; the sidecar is rewritten when anything changed. Returns
    the new content. ``OSError``/``ValueError`` if the WAV or the sidecar cannot be fixed."""
    wav = sidecar.with_name(_stem(sidecar) + ".wav")
    fixed = wav.is_file() and repair_wav(wav)
    if not unfinished(data) and not fixed:
        return data
    new = dict(data)
    if unfinished(data):
        end = max((p.stat().st_mtime for p in _files(sidecar)), default=None)
        new.update(state="interrupted", end=data.get("end") or iso_utc(end),
                   error=data.get("error") or INTERRUPTED_ERROR)
    new.update(repaired=True, repaired_at=iso_utc(now), wav_header_fixed=bool(fixed))
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(json.dumps(new, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, sidecar)
    return new


def template_glob(template: str, field: str, value: str) -> str:
    """The glob pattern of the ``[recording] path`` ``template`` with ``{field}`` = ``value``
    (escaped) and every other field a ``*``."""
    return "".join(glob.escape(literal) + ("" if name is None else glob.escape(value) if name == field else "*")
                   for literal, name, _spec, _conv in string.Formatter().parse(template))


def recent_sidecars(root: Path, template: str, days: int, now: float) -> list[Path]:
    """The sidecars under ``root`` made with ``template`` in the last ``days`` days (UTC dates;
    a template without ``{date}``: sidecars modified in that time), newest first."""
    dates = [(datetime.fromtimestamp(now, UTC) - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(days)]
    by_date = any(name == "date" for _l, name, _s, _c in string.Formatter().parse(template))
    found: dict[Path, float] = {}
    for date in dates if by_date else [""]:
        pattern = template_glob(template, "date", date)
        for p in list(root.glob(pattern + ".json")) + list(root.glob(pattern + "-*.json")):
            try:
                mtime = p.stat().st_mtime
            except OSError:
                continue
            if by_date or mtime >= now - days * 86400:
                found[p] = mtime
    return sorted(found, key=lambda p: found[p], reverse=True)


def sweep(root: Path, template: str, days: int, *, before: float, now: float | None = None,
          max_files: int = 500, budget_s: float = 10.0, quiet_s: float = 10.0,
          clock: Callable[[], float] = time.monotonic) -> SweepResult:
    """Finish the recent recordings a crash left unfinished (see the module's docstring)."""
    now = time.time() if now is None else now
    started = clock()
    out = SweepResult()
    try:
        sidecars = recent_sidecars(root, template, days, now) if days > 0 and root.is_dir() else []
    except OSError as e:
        out.errors.append((root, str(e)))
        sidecars = []
    for sidecar in sidecars:
        if out.examined >= max_files or clock() - started > budget_s:
            out.truncated = True
            break
        out.examined += 1
        try:
            files = _files(sidecar)
            last = max((p.stat().st_mtime for p in files), default=0.0)
            if sidecar.stat().st_mtime >= before or last >= now - quiet_s:
                continue  # written since this gateway started, or still being written
            data = json.loads(sidecar.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                out.errors.append((sidecar, "not a JSON object"))
                continue
            wav = sidecar.with_name(_stem(sidecar) + ".wav")
            if not unfinished(data) and not (wav.is_file() and _wav_short(wav)):
                continue
            finish(sidecar, data, now)
            out.repaired.append(sidecar)
        except (OSError, ValueError) as e:
            out.errors.append((sidecar, str(e)))
    out.seconds = clock() - started
    return out

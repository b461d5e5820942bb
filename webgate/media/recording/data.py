"""A recorded call's data messages as JSON lines (issue 17; docs/recording.md "Video and data").

One line per message, in the order the hub relayed them, on the recording's timeline::

    {"t": 12.345, "from": "caller", "sender": "alice", "label": "chat", "text": "hello"}
    {"t": 13.002, "from": "watcher", "sender": "agent-7", "label": "chat", "base64": "AAEC"}

``from`` is ``"caller"`` (the web caller, toward the watchers) or ``"watcher"`` (a watcher, toward
the caller); ``sender`` is the sender's identity (its token's ``sub``) or null; binary messages
are ``base64``, text is ``text``. Each line is flushed as it is written, so a crash loses at most
the line being written. A write that fails (disk full) sets :attr:`DataLog.error` and stops the
file; the call is not affected.
"""

from __future__ import annotations

import base64
import errno
import json
from pathlib import Path
from typing import IO

from webgate.media.recording import write_error

__all__ = ["DataLog"]


class DataLog:
    """The JSON-lines file at ``path`` (created at once, empty until the first message)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None
        self.lines = 0
        self.closed = False
        self._f: IO[str] | None = None
        try:
            self._f = open(path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 - kept open
        except OSError as e:
            self._fail(e)

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def write(self, t: float, origin: str, sender: str | None, label: str, data: str | bytes) -> None:
        """One message at timeline second ``t`` (``origin``: "caller" or "watcher")."""
        if self._f is None or self.closed:
            return
        line: dict[str, object] = {"t": round(max(0.0, t), 3), "from": origin, "sender": sender, "label": label}
        if isinstance(data, str):
            line["text"] = data
        else:
            line["base64"] = base64.b64encode(bytes(data)).decode("ascii")
        try:
            self._f.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._f.flush()
        except (OSError, ValueError) as e:
            self._fail(e)
            return
        self.lines += 1

    def _fail(self, e: BaseException) -> None:
        self.error = write_error(e, "data")
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                self.error = self.error or ("disk full" if e.errno == errno.ENOSPC else f"data write failed: {e}"[:200])

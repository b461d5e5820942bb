"""A WAV writer that stays readable after a crash, and the repair of a truncated WAV header.

The header is written first with the sizes of what is in the file so far and rewritten on
every :meth:`WavWriter.flush`: after a SIGKILL the file plays up to the last flush. A file
whose header was never made whole (a crash between two flushes, another writer) is fixed by
:func:`repair_wav`: the sizes are set from the file's length.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

__all__ = ["WavWriter", "repair_wav", "wav_header"]

HEADER_BYTES = 44


def wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    """The canonical 44-byte PCM (16-bit) WAV header for ``data_bytes`` of samples."""
    block = 2 * channels
    return (
        b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, 36 + data_bytes)) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data" + struct.pack("<I", min(0xFFFFFFFF, data_bytes))
    )


class WavWriter:
    """16-bit PCM WAV, ``channels`` interleaved, appended as it comes. Raises ``OSError``
    (disk full, I/O error) from :meth:`write`/:meth:`flush`; the caller decides."""

    def __init__(self, path: str | os.PathLike[str], rate: int, channels: int = 2) -> None:
        self.path = Path(path)
        self.rate = rate
        self.channels = channels
        self.data_bytes = 0
        self._f: BinaryIO | None = open(self.path, "xb")  # noqa: SIM115 - open for the recording's life; never overwrites
        self._f.write(wav_header(rate, channels, 0))
        self._f.flush()

    @property
    def frames(self) -> int:
        """Samples per channel written so far."""
        return self.data_bytes // (2 * self.channels)

    def write(self, samples: npt.NDArray[np.int16]) -> None:
        """``samples``: int16, shape (n, channels)."""
        if self._f is None or not len(samples):
            return
        data = np.ascontiguousarray(samples, dtype="<i2").tobytes()
        self._f.write(data)
        self.data_bytes += len(data)

    def flush(self) -> None:
        """Push what was written to the OS and make the header say so."""
        f = self._f
        if f is None:
            return
        f.flush()
        end = f.tell()
        f.seek(0)
        f.write(wav_header(self.rate, self.channels, self.data_bytes))
        f.seek(end)
        f.flush()

    def close(self) -> None:
        """Flush and close (idempotent); an error closing is raised after the file is closed."""
        f = self._f
        if f is None:
            return
        try:
            self.flush()
        finally:
            self._f = None
            f.close()


def repair_wav(path: str | os.PathLike[str]) -> bool:
    """Make the header of a PCM WAV file agree with its length (a recording cut short by a
    crash); a trailing partial sample frame is left out of the size. True if it was changed;
    ``ValueError`` if it is not a WAV file this module can fix."""
    p = Path(path)
    with open(p, "r+b") as f:
        head = f.read(HEADER_BYTES * 4)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError("not a RIFF/WAVE file")
        size = os.fstat(f.fileno()).st_size
        pos, block, data_at = 12, 0, -1
        while pos + 8 <= len(head):
            cid, clen = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
            if cid == b"fmt " and pos + 24 <= len(head):
                block = struct.unpack("<H", head[pos + 20:pos + 22])[0]
            if cid == b"data":
                data_at = pos
                break
            pos += 8 + clen + (clen & 1)
        if data_at < 0 or block <= 0:
            raise ValueError("no fmt/data chunk in the first bytes")
        data_bytes = (size - data_at - 8) // block * block
        riff = struct.pack("<I", min(0xFFFFFFFF, data_at + data_bytes))
        data = struct.pack("<I", min(0xFFFFFFFF, data_bytes))
        if head[4:8] == riff and head[data_at + 4:data_at + 8] == data:
            return False
        f.seek(4)
        f.write(riff)
        f.seek(data_at + 4)
        f.write(data)
    return True

"""Stereo Opus in Ogg through PyAV (libopus), written as it goes.

Opus takes 8, 12, 16, 24 or 48 kHz; other rates are resampled to 48 kHz first. Each Ogg page
(about a second) is pushed to the OS as the muxer makes it, so a crash loses about the last
second (and the 20 ms frame being filled).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from webgate.media.audio import Resampler, as_pcm

__all__ = ["OggOpusWriter"]

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
FRAME = 960  # samples per channel per frame handed to the encoder at 48 kHz (20 ms); scaled below


class OggOpusWriter:
    """Stereo int16 in, Opus/Ogg out; raises ``OSError`` (or PyAV's errors, which are
    ``OSError`` subclasses) on a write failure."""

    def __init__(self, path: str | os.PathLike[str], rate: int, bitrate: int = 64000) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(str(self.path))
        self.rate = rate
        self.out_rate = rate if rate in OPUS_RATES else 48000
        self._rs = (Resampler(rate, self.out_rate), Resampler(rate, self.out_rate)) if self.out_rate != rate else None
        self._frame = FRAME * self.out_rate // 48000
        # flush_packets: each Ogg page (about 1 s: the muxer's page_duration) goes to the OS as it is
        # made, not when a 32 kB I/O buffer fills: a crash loses about a second, as with WAV
        self._container: Any = av.open(str(self.path), "w", format="ogg", options={"flush_packets": "1"})
        stream: Any = self._container.add_stream("libopus", rate=self.out_rate, layout="stereo")
        stream.bit_rate = bitrate
        self._stream = stream
        self._pending = np.zeros((0, 2), dtype=np.int16)
        self._pts = 0
        self.frames = 0

    def write(self, samples: npt.NDArray[np.int16]) -> None:
        """``samples``: int16, shape (n, 2)."""
        if self._container is None or not len(samples):
            return
        self.frames += len(samples)
        if self._rs is not None:
            left = self._rs[0].resample(as_pcm(samples[:, 0]))
            right = self._rs[1].resample(as_pcm(samples[:, 1]))
            n = min(len(left), len(right))
            samples = np.stack([left[:n], right[:n]], axis=1)
        self._pending = np.concatenate([self._pending, samples])
        f = self._frame
        while len(self._pending) >= f:
            self._encode(self._pending[:f])
            self._pending = self._pending[f:]

    def _encode(self, block: npt.NDArray[np.int16] | None) -> None:
        if block is None:
            packets = self._stream.encode(None)
        else:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block, dtype=np.int16).reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = self.out_rate
            frame.pts = self._pts
            self._pts += len(block)
            packets = self._stream.encode(frame)
        for p in packets:
            self._container.mux(p)

    def flush(self) -> None:
        """Nothing to do: the muxer pushes each page to the OS as it makes it (flush_packets)."""

    def close(self) -> None:
        """Encode what is left (padded to a whole frame) and finish the file (idempotent)."""
        c = self._container
        if c is None:
            return
        try:
            if len(self._pending):
                pad = np.zeros((self._frame - len(self._pending), 2), dtype=np.int16)
                self._encode(np.concatenate([self._pending, pad]))
                self._pending = self._pending[:0]
            self._encode(None)
        finally:
            self._container = None
            c.close()

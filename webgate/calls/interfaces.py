"""The ports of the call layer: what calls/ uses of the I/O around it, as Protocols that the
adapters implement (calls/ imports no adapter; adapters may import calls).

- :class:`PortAllocator` / :class:`MediaPort`: RTP/RTCP port pairs and the shared media clock
  (``adapters/rtp.py``: ``RtpPortPool``, ``RtpEndpoint``, ``MediaClock``); an allocator with no
  free pair raises :class:`webgate.calls.errors.NoPortsAvailable`;
- :class:`SipSender`: the SIP transport that sends what the user agent queued
  (``adapters/sip.py``: ``SipTransport``);
- :class:`ClusterAdmission`: a cluster node's shared limits and session IDs
  (``cluster/node.py``: ``ClusterNode``), the one asynchronous step of a call's admission;
- :class:`RecordingSink` / :class:`RecordingSinkFactory`: the video and data half of a call's
  recording (``legs/hub_recording.py``), driven by ``calls/recording.py`` (docs/recording.md);
- :class:`RecordingStore` / :class:`AudioFileWriter`: the files of the recordings (free space,
  the audio file, sidecars, erasure, crash repair), ``adapters/recording_store.py``
  ``FileStore``: ``calls/recording.py`` does no file I/O itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pathlib

    import numpy

    from webgate.media.recording.sweep import SweepResult
    from webgate.media.stream import RtpAudioStream

__all__ = [
    "AudioFileWriter",
    "ClusterAdmission",
    "MediaPort",
    "MediaTicker",
    "PortAllocator",
    "RecordingSink",
    "RecordingSinkFactory",
    "RecordingStore",
    "SipSender",
]


class MediaTicker(Protocol):
    """The one shared 20 ms media clock: functions called with ``now`` on every tick."""

    def add_ticker(self, fn: Callable[[float], None]) -> None: ...

    def remove_ticker(self, fn: Callable[[float], None]) -> None: ...


class MediaPort(Protocol):
    """An even/odd UDP port pair bound for one call's RTP and RTCP."""

    @property
    def rtp_port(self) -> int: ...

    @property
    def rtcp_port(self) -> int: ...

    @property
    def stream(self) -> RtpAudioStream | None:
        """The stream made on these ports (None before :meth:`make_stream` and once released)."""
        ...

    def make_stream(self, *, jitter_min_ms: int, jitter_max_ms: int, label: str) -> RtpAudioStream:
        """The RTP audio stream on these ports, ticked by the media clock until released."""
        ...

    def release(self) -> None:
        """Close the stream and free the ports (idempotent)."""
        ...


class PortAllocator(Protocol):
    """Hands out RTP port pairs (released by :meth:`MediaPort.release`)."""

    @property
    def clock(self) -> MediaTicker: ...

    def allocate(self) -> MediaPort:
        """A bound port pair; raises :class:`webgate.calls.errors.NoPortsAvailable`."""
        ...


class SipSender(Protocol):
    """The SIP transport below the user agent."""

    def flush(self) -> None:
        """Send every message the user agent has queued (run after each call into it)."""
        ...


class ClusterAdmission(Protocol):
    """What the call manager asks of the cluster before it places a call (docs/cluster.md):
    each coroutine is one atomic round trip to Redis and raises
    :class:`~webgate.calls.errors.CallRefused` (``rate_limited``, ``too_many_calls_*``,
    ``session_id_in_use``, ``invalid_session_id``, ``cluster_unavailable``)."""

    async def attempt(self, ip: str) -> None:
        """Count one call attempt from ``ip`` across the cluster."""
        ...

    async def reserve(self, ip: str, identity: str | None = None, session_id: str | None = None) -> str:
        """Claim a session ID (``session_id`` or a new one) and one call slot of ``ip`` and
        ``identity`` across the cluster; the session ID."""
        ...

    def release(self, session_id: str) -> None:
        """Give a reservation back (idempotent; the call allocator does it when a call ends)."""
        ...


class RecordingSink(Protocol):
    """The video and data half of one call's recording (R-video's), driven by R-audio's CallRecording."""

    def audio(self, stereo: numpy.ndarray) -> None:
        """int16, shape (n, 2), left = web caller, right = SIP; contiguous from timeline 0."""
        ...

    def paused(self, on: bool) -> None:
        """Pause: drop video/data until resumed."""
        ...

    def files(self) -> dict[str, str]:
        """``{"video": path, "data": path}`` (those that exist)."""
        ...

    def codecs(self) -> dict[str, str]:
        """``{"video": "VP8"/"H264", "container": "webm"/...}``."""
        ...

    @property
    def error(self) -> str | None:
        """Why it stopped, if it failed (disk full ...)."""
        ...

    def close(self) -> None:
        """Finish the files (idempotent)."""
        ...


class RecordingSinkFactory(Protocol):
    """Makes a call's :class:`RecordingSink` when its recording starts.

    ``base``: the path without extension (``{dir}/{date}/{session_id}``); the sink adds
    ``.webm``/``.mkv``/``.mp4`` and ``.data.jsonl``. ``rate``: the sample rate the stereo arrives
    at. ``timeline()``: seconds since the recording's start (monotonic), the clock the audio is
    aligned on. ``video=False`` ("audio" mode): only the data file. None if the call has no hub."""

    def __call__(
        self, call: Any, base: pathlib.Path, rate: int, timeline: Callable[[], float], video: bool
    ) -> RecordingSink | None: ...


class AudioFileWriter(Protocol):
    """A recording's stereo audio file as it is written (WAV or Ogg Opus); ``OSError`` from
    each method when the disk is full or a write fails."""

    def write(self, samples: numpy.ndarray) -> None:
        """int16, shape (n, 2)."""
        ...

    def flush(self) -> None:
        """Push what was written to the file (and make a WAV header whole)."""
        ...

    def close(self) -> None:
        """Finish the file (idempotent)."""
        ...


class RecordingStore(Protocol):
    """The files of call recordings under ``[recording] dir``: what ``calls/recording.py`` asks
    of the disk (``adapters/recording_store.py`` ``FileStore``). Paths are ``pathlib.Path``;
    ``OSError`` means the disk said no (the caller logs, counts, fails the one recording)."""

    def free_mb(self, directory: pathlib.Path) -> int:
        """Create ``directory`` if missing; the free space of its filesystem (MB)."""
        ...

    def new_base(self, base: pathlib.Path, extensions: tuple[str, ...]) -> pathlib.Path:
        """``base``, or ``base-2``, ``base-3``... the first for which no ``base + ext`` exists;
        its directory created."""
        ...

    def open_audio(self, path: pathlib.Path, rate: int, fmt: str) -> AudioFileWriter:
        """A new stereo audio file (``fmt``: ``"wav"`` or ``"ogg"``); never overwrites one."""
        ...

    def exists(self, path: pathlib.Path) -> bool: ...

    def write_json(self, path: pathlib.Path, data: dict[str, Any]) -> None:
        """Write a sidecar in place (a full disk still takes a file no larger than before)."""
        ...

    def read_json(self, path: pathlib.Path) -> Any:
        """A sidecar's content; ``OSError``/``ValueError`` if unreadable."""
        ...

    def find(self, directory: pathlib.Path, patterns: list[str]) -> list[tuple[pathlib.Path, float]]:
        """The files under ``directory`` matching any of the glob ``patterns``, with their mtimes."""
        ...

    def remove(self, path: pathlib.Path) -> bool:
        """Remove a file; False if there was none."""
        ...

    def repair(self, sidecar: pathlib.Path, data: dict[str, Any], now: float) -> dict[str, Any]:
        """Finish a recording a crash left unfinished (WAV header, sidecar marked); its new content."""
        ...

    def sweep(self, directory: pathlib.Path, template: str, days: int, before: float, quiet_s: float) -> SweepResult:
        """Repair the recent unfinished recordings (bounded; may block: run it in a thread)."""
        ...

"""Call recording (docs/recording.md): which calls are recorded, and each recording's life.

:class:`Recordings` (one per call manager, a call observer) holds ``[recording]``, checks the
free space, counts for ``/metrics`` and starts a :class:`CallRecording` when a recorded call's
media is configured (early media and IVR before the answer are recorded) and stops it when the
call ends. Whether a call is recorded: its route's ``record``, lowered (or, with
``record_on_request``, set) by the token claim ``record`` (:func:`record_mode`); the API may
start, stop, pause and resume any call's recording.

A :class:`CallRecording` taps the call's RTP stream in both directions
(:class:`webgate.media.recording.audio.RecordingTap`), writes the stereo every ``flush_s``
(left = the web caller, right = the SIP party), drives the video/data half (a
:class:`~webgate.calls.interfaces.RecordingSink`, if a factory was given) and keeps the
sidecar ``{dir}/{path}.json`` up to date. A write failure (disk full, I/O error) stops that
recording, never the call.

Every file operation goes through a :class:`~webgate.calls.interfaces.RecordingStore`
(``adapters/recording_store.py`` ``FileStore``): this module does no file I/O itself.
"""

from __future__ import annotations

import contextlib
import errno
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from twisted.logger import Logger

from webgate.calls.interfaces import (
    AudioFileWriter,
    RecordingSink,
    RecordingSinkFactory,
    RecordingStore,
)
from webgate.config import RecordingConfig
from webgate.media.recording.audio import RecordingTap
from webgate.media.recording.prompt import PromptPlayer, beep, load_prompt
from webgate.media.recording.sweep import SweepResult, iso_utc, template_glob

__all__ = ["MODES", "CallRecording", "Recordings", "record_mode"]

log = Logger()

#: the record modes, least first
MODES = ("off", "audio", "audio+video")
COUNTERS = ("started", "stopped", "failed", "refused_low_space", "refused_error", "deleted", "repaired")


def record_mode(route_mode: str, claim: str | None, on_request: bool) -> str:
    """A call's record mode: the route's, or the token's claim when it asks for less (or, with
    ``record_on_request``, for anything)."""
    if claim is None or claim not in MODES:
        return route_mode if route_mode in MODES else "off"
    if on_request:
        return claim
    return MODES[min(MODES.index(claim), MODES.index(route_mode) if route_mode in MODES else 0)]


class RecordingError(Exception):
    """A recording could not start (``code``: ``low_disk_space``, ``no_media``, ``error``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallRecording:
    """One call's recording: the files, the tap, the flush timer and the sidecar."""

    def __init__(self, owner: Recordings, call: Any, mode: str, base: Path) -> None:
        self.owner = owner
        self.call = call
        self.mode = mode
        self.base = base
        self.sidecar = base.with_name(base.name + ".json")
        self.state = "recording"  # recording | paused | stopped | failed
        self.error: str | None = None
        self.started = owner.wall_clock()
        self.ended: float | None = None
        self.pauses: list[dict[str, Any]] = []
        stream = call.stream
        codec = stream.codec
        self.rate = int(codec.sample_rate)
        self.codec_name = f"{codec.name}/{codec.rtp_clock_rate}"
        self.tap = RecordingTap(self.rate, lambda: stream.codec)
        self.stream = stream
        fmt = owner.config.format
        self.audio_path = base.with_name(base.name + (".ogg" if fmt == "ogg" else ".wav"))
        self.writer: AudioFileWriter | None = owner.store.open_audio(self.audio_path, self.rate, fmt)
        self.sink: RecordingSink | None = None
        self._timer: Any = None
        self._beep_timer: Any = None
        self.prompt: PromptPlayer | None = None

    # --- life -------------------------------------------------------------------------
    def start(self) -> None:
        factory = self.owner.sink_factory
        if factory is not None:
            try:
                self.sink = factory(self.call, self.base, self.rate, self.timeline, self.mode == "audio+video")
            except Exception:  # noqa: BLE001 - the sink's failure never stops the audio or the call
                log.failure("call {session_id}: recording's video/data part failed to start", session_id=self.call.session_id)
        self.stream.recorder = self.tap
        self.write_sidecar()
        self._schedule()
        announcement = self.owner.announcement(self.rate)
        if announcement is not None:
            self.play(announcement)
        if self.owner.config.record_beep_s:
            self._beep_timer = self.owner.reactor.callLater(self.owner.config.record_beep_s, self._beep)
        log.info("call {session_id}: recording ({mode}) to {path}", session_id=self.call.session_id, mode=self.mode, path=str(self.audio_path))

    def play(self, pcm: Any) -> None:
        """Play ``pcm`` (at the recording's rate) to both parties (``[recording]`` announcement, beep)."""
        codec = getattr(self.stream, "codec", None)
        if codec is None or self.stream.closed:
            return
        if self.prompt is None or self.prompt.info is not codec:
            self.prompt = PromptPlayer(codec)
        self.stream.prompt = self.prompt
        self.prompt.play(pcm)

    def _beep(self) -> None:
        self._beep_timer = None
        if self.state in ("stopped", "failed"):
            return
        if self.state == "recording":
            self.play(beep(self.rate))
        self._beep_timer = self.owner.reactor.callLater(self.owner.config.record_beep_s, self._beep)

    def timeline(self) -> float:
        """Seconds since the recording started (the clock the audio is aligned on)."""
        return self.tap.clock() - self.tap.start

    def _schedule(self) -> None:
        self._timer = self.owner.reactor.callLater(self.owner.config.flush_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.state in ("stopped", "failed"):
            return
        self.flush()
        if self.state not in ("stopped", "failed"):
            self._schedule()

    def flush(self, final: bool = False) -> None:
        """Write what the tap has up to now (less its reorder delay unless ``final``)."""
        if self.writer is None:
            return
        try:
            stereo = self.tap.take(final=final)
            self.writer.write(stereo)
            self.writer.flush()
        except OSError as e:
            self.fail(_why(e))
            return
        except Exception as e:  # noqa: BLE001 - a recording never takes the call down
            log.failure("call {session_id}: recording failed", session_id=self.call.session_id)
            self.fail(f"error: {type(e).__name__}")
            return
        if self.sink is not None and len(stereo):
            try:
                self.sink.audio(stereo)
            except Exception:  # noqa: BLE001 - the sink's failure never stops the audio or the call
                log.failure("call {session_id}: recording's video/data part failed", session_id=self.call.session_id)

    def pause(self) -> bool:
        if self.state != "recording":
            return False
        self.flush()
        self.tap.pause()
        self.state = "paused"
        self.pauses.append({"start": iso_utc(self.owner.wall_clock()), "at_s": round(self.timeline(), 3), "end": None})
        if self.sink is not None:
            with _logged(self, "pause"):
                self.sink.paused(True)
        self.write_sidecar()
        return True

    def resume(self) -> bool:
        if self.state != "paused":
            return False
        self.tap.resume()
        self.state = "recording"
        if self.pauses:
            p = self.pauses[-1]
            p["end"] = iso_utc(self.owner.wall_clock())
            p["duration_s"] = round(self.timeline() - p["at_s"], 3)
        if self.sink is not None:
            with _logged(self, "resume"):
                self.sink.paused(False)
        self.write_sidecar()
        return True

    def stop(self) -> None:
        """Finish the files and the sidecar (idempotent)."""
        if self.state in ("stopped", "failed"):
            return
        if self.state == "paused":
            self.resume()
        self.flush(final=True)
        if self.state == "failed":
            return
        self.state = "stopped"
        self._detach()
        try:
            if self.writer is not None:
                self.writer.close()
        except OSError as e:
            self.state = "recording"
            self.fail(_why(e))
            return
        self.writer = None
        self.ended = self.owner.wall_clock()
        self.owner.counters["stopped"] += 1
        self.write_sidecar()
        log.info("call {session_id}: recording stopped", session_id=self.call.session_id)

    def fail(self, why: str) -> None:
        """Stop recording this call after an error (the call goes on)."""
        if self.state in ("stopped", "failed"):
            return
        self.state = "failed"
        self.error = why
        self._detach()
        w, self.writer = self.writer, None
        if w is not None:
            with contextlib.suppress(Exception):
                w.close()
        self.ended = self.owner.wall_clock()
        self.owner.counters["failed"] += 1
        log.error("call {session_id}: recording stopped: {why} (the call goes on)", session_id=self.call.session_id, why=why)
        self.write_sidecar()

    def _detach(self) -> None:
        for t in (self._timer, self._beep_timer):
            if t is not None and t.active():
                t.cancel()
        self._timer = self._beep_timer = None
        if getattr(self.stream, "recorder", None) is self.tap:
            self.stream.recorder = None
        if self.prompt is not None and getattr(self.stream, "prompt", None) is self.prompt:
            self.stream.prompt = None
        if self.sink is not None:
            with _logged(self, "close"):
                self.sink.close()

    # --- the sidecar --------------------------------------------------------------------
    def files(self) -> dict[str, str]:
        out = {"audio": str(self.audio_path)} if self.owner.store.exists(self.audio_path) else {}
        if self.sink is not None:
            with _logged(self, "files"):
                out.update(self.sink.files())
        return out

    def describe(self) -> dict[str, Any]:
        call = self.call
        codecs: dict[str, Any] = {"sip": self.codec_name, "ingress": call.ingress_codec(),
                                  "audio": "opus" if self.owner.config.format == "ogg" else "pcm_s16le",
                                  "sample_rate": self.rate, "channels": 2}
        sink_error = None
        if self.sink is not None:
            with _logged(self, "codecs"):
                codecs.update(self.sink.codecs())
                sink_error = self.sink.error
        return {
            "session_id": call.session_id,
            "sip_call_id": call.sip_call_id,
            "mode": self.mode,
            "state": self.state,
            "files": self.files(),
            "channels": {
                "left": {"who": "web caller", "identity": call.identity, "ingress": call.ingress_kind, "client": call.client},
                "right": {"who": "SIP", "destination": call.destination, "sip_call_id": call.sip_call_id},
            },
            "start": iso_utc(self.started),
            "end": iso_utc(self.ended),
            "duration_s": round(self.tap.timeline.base / self.rate, 3),
            "pauses": [dict(p) for p in self.pauses],
            "codecs": codecs,
            "error": self.error,
            **({"video_error": sink_error} if sink_error else {}),
        }

    def write_sidecar(self) -> None:
        """Rewritten in place (a full disk still takes a file no larger than before)."""
        try:
            self.owner.store.write_json(self.sidecar, self.describe())
        except OSError as e:
            log.error("call {session_id}: recording sidecar not written: {why}", session_id=self.call.session_id, why=_why(e))


class _logged(contextlib.AbstractContextManager[None]):
    """Log (never raise) a failure of the video/data sink."""

    def __init__(self, rec: CallRecording, what: str) -> None:
        self.rec, self.what = rec, what

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> bool:
        if ev is not None and isinstance(ev, Exception):
            log.failure("call {session_id}: recording sink {what} failed", session_id=self.rec.call.session_id, what=self.what)
            return True
        return False


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "disk full"
    return f"write error: {e.strerror or type(e).__name__}"


class Recordings:
    """Every recording of one call manager (a call observer on ``CallManager.observers``)."""

    def __init__(self, config: RecordingConfig, reactor: Any, sink_factory: RecordingSinkFactory | None = None,
                 wall_clock: Any = time.time, *, store: RecordingStore) -> None:
        self.config = config
        self.reactor = reactor
        #: the files (``adapters/recording_store.py`` ``FileStore``)
        self.store = store
        #: the video/data half (R-video's ``legs/hub_recording.py``), set by the wiring; None: audio only
        self.sink_factory = sink_factory
        self.wall_clock = wall_clock
        self.dir = Path(config.dir)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: live recordings by session ID
        self.active: dict[str, CallRecording] = {}
        self._announcements: dict[int, Any] = {}  # record_announcement by sample rate
        #: what the sweep at start did (None until it is done, or if it is off)
        self.last_sweep: SweepResult | None = None

    def announcement(self, rate: int) -> Any:
        """``record_announcement`` as PCM at ``rate`` (None: none, or unreadable: logged once)."""
        path = self.config.record_announcement
        if not path:
            return None
        if rate not in self._announcements:
            try:
                self._announcements[rate] = load_prompt(path, rate)
            except (OSError, ValueError) as e:
                log.error("record_announcement {path} unreadable: {why}", path=path, why=str(e))
                self._announcements[rate] = None
        return self._announcements[rate]

    # --- policy -----------------------------------------------------------------------
    @staticmethod
    def mode_of(call: Any) -> str:
        route = call.route
        grant = getattr(call, "grant", None)
        return record_mode(getattr(route, "record", "off"), getattr(grant, "record", None), bool(getattr(route, "record_on_request", False)))

    # --- call observer --------------------------------------------------------------------
    def call_progress(self, call: Any, state: Any) -> None:
        if getattr(state, "value", None) == "early_media":
            self._auto(call)

    def call_answered(self, call: Any) -> None:
        self._auto(call)

    def call_ended(self, call: Any) -> None:
        rec = self.active.pop(call.session_id, None)
        if rec is not None and rec.call is call:
            rec.stop()
        elif rec is not None:
            self.active[call.session_id] = rec

    def _auto(self, call: Any) -> None:
        if call.session_id in self.active and self.active[call.session_id].call is call:
            return
        mode = self.mode_of(call)
        if mode == "off" or getattr(call, "recording_refused", False):
            return
        try:
            self.start(call, mode)
        except RecordingError:
            call.recording_refused = True  # logged and counted by start(); not tried again

    # --- control (the API) ----------------------------------------------------------------
    def start(self, call: Any, mode: str | None = None) -> CallRecording:
        """Start recording ``call``; :class:`RecordingError` if it cannot (counted, logged)."""
        live = self.active.get(call.session_id)
        if live is not None and live.call is call and live.state in ("recording", "paused"):
            return live
        stream = call.stream
        if stream is None or getattr(stream, "codec", None) is None:
            raise RecordingError("no_media", "the call has no negotiated audio yet")
        mode = mode or self.mode_of(call)
        if mode == "off":
            mode = "audio"
        try:
            free_mb = self.store.free_mb(self.dir)
        except OSError as e:
            self.counters["refused_error"] += 1
            log.error("recording directory {dir} unusable: {why}", dir=str(self.dir), why=_why(e))
            raise RecordingError("error", "the recording directory is unusable") from None
        if free_mb < self.config.min_free_mb:
            self.counters["refused_low_space"] += 1
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                "call {session_id}: not recorded: {free} MB free in {dir} (min_free_mb {min})",
                     session_id=call.session_id, free=free_mb, dir=str(self.dir), min=self.config.min_free_mb)
            raise RecordingError("low_disk_space", f"less than {self.config.min_free_mb} MB free")
        try:
            base = self._new_base(call.session_id)
            rec = CallRecording(self, call, mode, base)
        except OSError as e:
            self.counters["refused_error"] += 1
            log.error("call {session_id}: recording not started: {why}", session_id=call.session_id, why=_why(e))
            raise RecordingError("error", _why(e)) from None
        self.active[call.session_id] = rec
        call.recording = str(rec.sidecar)
        rec.start()
        self.counters["started"] += 1
        return rec

    def _new_base(self, session_id: str) -> Path:
        """``{dir}/{path}`` for a new recording; ``-2``, ``-3``... if the session ID was reused."""
        now = datetime.fromtimestamp(self.wall_clock(), UTC)
        rel = self.config.path.format(date=now.strftime("%Y-%m-%d"), time=now.strftime("%H%M%S"), session_id=session_id)
        return self.store.new_base(self.dir / rel, (".json", ".wav", ".ogg"))

    # --- retrieval ------------------------------------------------------------------------
    def sidecars(self, session_id: str) -> list[tuple[Path, dict[str, Any]]]:
        """Every sidecar of ``session_id`` under ``dir`` and its content, oldest first (by start time)."""
        pattern = template_glob(self.config.path, "session_id", session_id)
        found: list[tuple[str, float, Path, dict[str, Any]]] = []
        for p, mtime in self.store.find(self.dir, [pattern + ".json", pattern + "-*.json"]):
            try:
                data = self.store.read_json(p)
                start = str(data.get("start") or "")
                if data.get("session_id") != session_id:
                    continue
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(data, dict):
                found.append((start, mtime, p, data))
        return [(p, data) for _s, _m, p, data in sorted(found, key=lambda x: (x[0], x[1]))]

    def newest(self, session_id: str) -> tuple[Path, dict[str, Any]] | None:
        """The newest sidecar of ``session_id`` and its content (None if there is none)."""
        found = self.sidecars(session_id)
        if not found:
            return None
        p, data = found[-1]
        return p, self._recover(session_id, p, data)

    def _recover(self, session_id: str, sidecar: Path, data: dict[str, Any]) -> dict[str, Any]:
        """A sidecar still ``recording``/``paused`` with no live recording of it was cut by a
        crash: make its WAV's header whole and say so in the sidecar (:func:`finish`)."""
        live = self.active.get(session_id)
        if data.get("state") not in ("recording", "paused") or (live is not None and live.sidecar == sidecar):
            return data
        try:
            return self.store.repair(sidecar, data, self.wall_clock())
        except (OSError, ValueError) as e:
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                "recording {path}: not repaired: {why}", path=str(sidecar), why=str(e))
            return data

    # --- the sweep at start ---------------------------------------------------------------
    def sweep_at_start(self) -> None:
        """Finish the recordings a crash left unfinished under ``dir`` (``[recording]
        repair_days``; docs/recording.md "Crash safety"): in a thread, bounded, logged and
        counted (``repaired``); the result is :attr:`last_sweep` when done. The start does not
        wait for it."""
        days = self.config.repair_days
        if days <= 0:
            return
        root, template, before, store = self.dir, self.config.path, self.wall_clock(), self.store
        quiet = max(10.0, 3 * self.config.flush_s)

        def run() -> SweepResult | None:
            try:
                return store.sweep(root, template, days, before, quiet)
            except Exception:  # noqa: BLE001 - a sweep never takes the gateway down
                log.failure("recordings: the sweep for unfinished recordings failed")
                return None

        def in_thread() -> None:
            result = run()
            if result is not None:
                self.reactor.callFromThread(self._swept, result)

        call_in_thread = getattr(self.reactor, "callInThread", None)
        if call_in_thread is not None:
            call_in_thread(in_thread)
            return
        result = run()  # a reactor without threads (a test's fake): here and now
        if result is not None:
            self._swept(result)

    def _swept(self, result: SweepResult) -> None:
        self.last_sweep = result
        self.counters["repaired"] += len(result.repaired)
        for path, why in result.errors:
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                "recording {path}: not repaired: {why}", path=str(path), why=why)
        if result.repaired or result.truncated:
            log.info("recordings: {n} left unfinished by a crash repaired ({examined} examined in {s:.2f} s{more})",
                     n=len(result.repaired), examined=result.examined, s=result.seconds,
                     more="; stopped at the cap, the rest are repaired when fetched" if result.truncated else "")

    def delete(self, session_id: str) -> int:
        """Remove every recording of ``session_id`` (GDPR erasure): stops a live one first. The
        number of files removed."""
        rec = self.active.pop(session_id, None)
        if rec is not None:
            rec.stop()
        removed = 0
        for sidecar, data in self.sidecars(session_id):
            paths = {sidecar}
            stem = sidecar.name[: -len(".json")]
            files = data.get("files")
            for f in files.values() if isinstance(files, dict) else ():  # a foreign sidecar: by name only
                p = Path(str(f))
                if p.parent == sidecar.parent and p.name.startswith(stem + "."):  # only its own files
                    paths.add(p)
            for ext in (".wav", ".ogg", ".webm", ".mkv", ".mp4", ".data.jsonl"):
                paths.add(sidecar.with_name(stem + ext))
            for p in paths:
                if self.store.remove(p):
                    removed += 1
        if removed:
            self.counters["deleted"] += 1
            log.info("recordings of {session_id} deleted ({n} files)", session_id=session_id, n=removed)
        return removed

    def shutdown(self) -> None:
        for sid in list(self.active):
            self.active.pop(sid).stop()

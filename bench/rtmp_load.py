"""RTMP callers for the benchmark: one ffmpeg publisher (+ one ffmpeg player) per call.

    python bench/rtmp_load.py --url rtmp://127.0.0.1:11935 --dest bench --calls N --rate R --hold S
        --codec nellymoser|aac|pcmu --out FILE.jsonl [--start-at MONOTONIC] [--no-play] [--play-codec pcmu]

Once per run an FLV file with the benchmark's caller audio (400 Hz at -20 dBFS, every 500 ms a 20 ms
2 kHz mark at -3 dBFS) is encoded in the chosen codec.  Call k starts at start_at + k/R:

- publisher: ``ffmpeg -re -f flv -i pipe:0 -c copy -t HOLD -tcp_nodelay 1 -f flv URL/call/DEST?session=ID
  -c copy -t HOLD -f flv pipe:1`` (stream copy: no encoding per caller).  It is started ``--prespawn``
  seconds (1.0) ahead and blocks on its stdin; the call starts (``t_request``) when the file is written
  to it, so ffmpeg's own start-up (exec, libraries: 150-500 ms here under load) is not counted as call
  setup.  The file is hold + 5 s long (no loop).  ``--prespawn 0``: ``ffmpeg -re -stream_loop -1 -i FILE``
  at the call time.  The second output is read here to time-stamp when each FLV tag left ffmpeg (kept
  for the first 4 s; later data is read and dropped).
- player (``--play-codec``, default pcmu: the SIP leg's G.711 untouched, so nothing is transcoded on the
  way back and nothing needs decoding here): ``ffmpeg -i URL/session/ID?codec=pcmu -c copy -f flv pipe:1``,
  started 0.3 s after the publisher, retried while the call is not live yet (StreamNotFound).  Its
  tags are time-stamped on arrival and decoded after the run.

Latency is APPROXIMATE: the send time of a mark is the publisher's tag clock (min over tags of
arrival - timestamp, i.e. ffmpeg's ``-re`` pacing) plus the mark's position in the file, corrected by
the codec's own delay (the onset found by decoding the prepared file locally, ``codec_delay_ms``);
the receive time is the player's tag clock (sliding min of arrival - timestamp).  Both clocks include
ffmpeg's pipe hand-off (well under 1 ms on an idle machine, more under load).  Marks repeat every
500 ms, so a round trip > 500 ms is folded (reported modulo 500 ms).  latency_ms = RTT / 2.

One JSON line per call, then a summary line with the CPU of all ffmpeg children.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any, cast

import numpy as np

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
TONE_HZ, TONE_AMP = 400.0, 0.1  # -20 dBFS
MARK_HZ, MARK_AMP = 2000.0, 0.708  # -3 dBFS
MARK_PERIOD = 0.5
MARK_LEN = 0.02
ONSET = 0.35  # |x| threshold: far above the base tone's 0.1
SILENT_DBFS = -45.0
PUB_WINDOW = 4.0  # seconds of publisher tags time-stamped, then its pipe is closed
PLAY_DELAY = 0.3
PLAY_RETRY = 0.25
PLAY_TRIES = 12

CODEC_ARGS = {
    "nellymoser": ["-c:a", "nellymoser", "-ar", "8000"],
    "aac": ["-c:a", "aac", "-b:a", "48k", "-ar", "16000"],
    "pcmu": ["-af", "asetnsamples=n=160", "-c:a", "pcm_mulaw", "-ar", "8000"],  # 20 ms tags
}

FF = shutil.which("ffmpeg") or "ffmpeg"
LIVE: dict[int, Any] = {}  # pid -> subprocess transport, killed on exit
STOPPING = False  # set on SIGTERM/SIGINT: no new ffmpeg


# --- audio ---------------------------------------------------------------------------------------

def caller_signal(seconds: float, rate: int = RATE) -> np.ndarray:
    n = round(seconds * rate)
    t = np.arange(n) / rate
    x = TONE_AMP * np.sin(2 * np.pi * TONE_HZ * t)
    per, ml = int(MARK_PERIOD * rate), int(MARK_LEN * rate)
    mark = MARK_AMP * np.sin(2 * np.pi * MARK_HZ * np.arange(ml) / rate)
    for s in range(0, n - ml, per):
        x[s:s + ml] = mark
    return x


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(x * 32767, -32768, 32767).astype("<i2").tobytes())


def decode_to_pcm(data: bytes | Path, fmt: str = "flv") -> np.ndarray:
    """Any FLV audio -> float mono 8 kHz via ffmpeg."""
    args = [FF, "-nostdin", "-loglevel", "error"]
    if isinstance(data, Path):
        args += ["-i", str(data)]
        inp = None
    else:
        args += ["-f", fmt, "-i", "pipe:0"]
        inp = data
    args += ["-map", "0:a", "-ac", "1", "-ar", str(RATE), "-f", "s16le", "pipe:1"]
    r = subprocess.run(args, input=inp, capture_output=True, timeout=120, check=False)
    return np.frombuffer(r.stdout, dtype="<i2").astype(np.float64) / 32768.0


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.uint8)
    sign = (u & 0x80) != 0
    exp = (u >> 4) & 7
    mant = u & 0x0F
    mag = ((mant.astype(np.int32) << 3) + 0x84) << exp
    v = np.where(sign, 0x84 - mag, mag - 0x84)
    return v.astype(np.float64) / 32768.0


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.uint8) ^ 0x55
    sign = (a & 0x80) != 0
    exp = (a >> 4) & 7
    mant = (a & 0x0F).astype(np.int32)
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp, 1) - 1)
    v = np.where(sign, mag, -mag)
    return v.astype(np.float64) / 32768.0


ULAW, ALAW = _ulaw_table(), _alaw_table()


def onsets(x: np.ndarray, rate: int = RATE) -> list[int]:
    """Sample index of the first |x| > ONSET of each mark (marks are >= 250 ms apart)."""
    idx = np.flatnonzero(np.abs(x) > ONSET)
    out: list[int] = []
    gap = int(0.25 * rate)
    for i in idx:
        if not out or i - out[-1] > gap:
            out.append(int(i))
    return out


def dominant_hz(x: np.ndarray, marks: list[int], rate: int = RATE) -> float | None:
    y = x.copy()
    for m in marks:  # the marks carry more energy than the tone: leave them out
        y[max(0, m - int(0.005 * rate)): m + int(0.03 * rate)] = 0.0
    if len(y) < rate // 4:
        return None
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    k = int(np.argmax(spec[1:])) + 1
    if 1 <= k < len(spec) - 1:  # parabolic peak interpolation
        a, b, c = np.log(spec[k - 1] + 1e-12), np.log(spec[k] + 1e-12), np.log(spec[k + 1] + 1e-12)
        k = k + 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else k
    return float(k * rate / len(y))


# --- FLV -----------------------------------------------------------------------------------------

def flv_tags(buf: bytes) -> list[tuple[int, int, int, int]]:
    """(end, tag_type, timestamp_ms, data_start) of every complete tag; its data is buf[data_start:end - 4]."""
    out = []
    if len(buf) < 13 or buf[:3] != b"FLV":
        return out
    p = int.from_bytes(buf[5:9], "big") + 4
    n = len(buf)
    while p + 11 <= n:
        ttype = buf[p] & 0x1F
        size = int.from_bytes(buf[p + 1:p + 4], "big")
        ts = int.from_bytes(buf[p + 4:p + 7], "big") | (buf[p + 7] << 24)
        end = p + 11 + size + 4
        if end > n:
            break
        out.append((end, ttype, ts, p + 11))
        p = end
    return out


class Timed:
    """Chunks read from a pipe with their arrival time; tags timed by the chunk that completed them."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ends: list[int] = []
        self.times: list[float] = []
        self.size = 0

    def add(self, t: float, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        self.ends.append(self.size)
        self.times.append(t)

    def audio(self) -> tuple[bytes, list[tuple[float, int, bytes]]]:
        """(whole buffer, [(arrival, ts_ms, audio tag data)]) for audio tags with media."""
        buf = b"".join(self.chunks)
        out = []
        for end, ttype, ts, d0 in flv_tags(buf):
            if ttype != 8:
                continue
            data = buf[d0:end - 4]
            if not data:
                continue
            fmt = data[0] >> 4
            if fmt == 10 and (len(data) < 2 or data[1] == 0):  # AAC sequence header
                continue
            i = bisect.bisect_left(self.ends, end)
            out.append((self.times[min(i, len(self.times) - 1)], ts, data))
        return buf, out


class PipeProto(asyncio.SubprocessProtocol):
    def __init__(self, keep_stdout: bool, stop_after: float | None = None) -> None:
        self.out = Timed()
        self.err = bytearray()
        self.keep = keep_stdout
        self.stop_after = stop_after
        self.t0 = time.monotonic()
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            t = time.monotonic()
            if self.keep and (self.stop_after is None or t - self.t0 <= self.stop_after):
                self.out.add(t, data)  # later data is read and dropped (closing the pipe would end ffmpeg)
        elif len(self.err) < 4096:
            self.err += data

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def spawn(args: list[str], keep: bool, stop_after: float | None = None,
                stdin: bool = False) -> tuple[asyncio.SubprocessTransport, PipeProto]:
    if STOPPING:
        raise asyncio.CancelledError
    loop = asyncio.get_running_loop()
    tr, proto = await loop.subprocess_exec(
        lambda: PipeProto(keep, stop_after), *args,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    LIVE[tr.get_pid()] = tr
    return tr, proto  # type: ignore[return-value]


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def finish(tr: asyncio.SubprocessTransport, proto: PipeProto, timeout: float) -> int | None:
    try:
        try:
            await asyncio.wait_for(asyncio.shield(proto.exited), timeout)
        except TimeoutError:
            kill_group(tr.get_pid())
            try:
                await asyncio.wait_for(asyncio.shield(proto.exited), 3)
            except TimeoutError:
                pass
        return tr.get_returncode()
    finally:
        LIVE.pop(tr.get_pid(), None)
        tr.close()


# --- one call ------------------------------------------------------------------------------------

class Call:
    def __init__(self, k: int, bench_id: int) -> None:
        self.k = k
        self.bench_id = bench_id
        self.rec: dict[str, Any] = {"bench_id": bench_id, "ok": False, "error": None}
        self.pub: PipeProto | None = None
        self.play: PipeProto | None = None
        self.play_tries = 0


async def run_call(a: argparse.Namespace, call: Call, flv: Path, flv_bytes: bytes, t_start: float) -> None:
    rec = call.rec
    sid = call.bench_id
    pub_url = f"{a.url}/call/{a.dest}?session={sid}"
    # two outputs of one ffmpeg: every packet goes to webgate, then (same loop turn) to our pipe, where
    # its arrival time-stamps the send.  A failing output ends the whole ffmpeg (the call ended).
    # tcp_nodelay: without it ffmpeg's small RTMP command writes wait for delayed ACKs (Nagle),
    # ~40 ms per command round, 130 ms added to every publish on loopback.
    hold = f"{a.hold:.3f}"
    out = ["-map", "0:a", "-c", "copy", "-t", hold, *(["-tcp_nodelay", "1"] if a.tcp_nodelay else []),
           "-f", "flv", pub_url,
           "-map", "0:a", "-c", "copy", "-t", hold, "-flush_packets", "1", "-f", "flv", "pipe:1"]
    if a.prespawn > 0:
        # ffmpeg started ahead (exec + library loading cost ~150-500 ms of CPU time), blocked reading
        # its stdin; the call starts when the file is written to it, so t_request -> INVITE is not
        # the harness's process start-up
        await asyncio.sleep(max(0.0, t_start - a.prespawn - time.monotonic()))
        rec["t_spawn"] = time.monotonic()
        tr, call.pub = await spawn([FF, "-nostdin", "-loglevel", "error", "-re", "-probesize", "32", "-analyzeduration", "0", "-f", "flv", "-i", "pipe:0", *out],
                                   keep=True, stop_after=PUB_WINDOW, stdin=True)
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        rec["t_request"] = call.pub.t0 = time.monotonic()
        w = cast("asyncio.WriteTransport | None", tr.get_pipe_transport(0))
        if w is not None and not call.pub.exited.done():
            w.write(flv_bytes)
            w.write_eof()
    else:
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        rec["t_request"] = time.monotonic()
        tr, call.pub = await spawn([FF, "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                                    "-i", str(flv), *out], keep=True, stop_after=PUB_WINDOW)
    pub_wait = asyncio.ensure_future(finish(tr, call.pub, a.hold + 20))
    if not a.no_play:
        await asyncio.sleep(PLAY_DELAY)
        play_url = f"{a.url}/session/{sid}?codec={a.play_codec}"
        play_args = [FF, "-nostdin", "-loglevel", "error", "-fflags", "nobuffer", "-analyzeduration", "0",
                     "-probesize", "32", "-i", play_url, "-map", "0:a", "-c", "copy", "-flush_packets", "1",
                     "-f", "flv", "pipe:1"]
        deadline = rec["t_request"] + a.hold + 25
        while True:
            call.play_tries += 1
            rec["t_play_start"] = time.monotonic()
            ptr, proto = await spawn(play_args, keep=True)
            call.play = proto
            rc = await finish(ptr, proto, max(1.0, deadline - time.monotonic()))
            rec["player_rc"] = rc
            if rc == 0 or proto.out.size > 13 or call.play_tries >= PLAY_TRIES or pub_wait.done() or STOPPING:
                break
            await asyncio.sleep(PLAY_RETRY)
    rec["publisher_rc"] = await pub_wait
    rec["t_end"] = time.monotonic()


def analyse(a: argparse.Namespace, call: Call, codec_delay: float) -> None:
    rec = call.rec
    rec["codec"] = a.codec
    rec["play_tries"] = call.play_tries
    errs = []
    pub_err = _last_line(call.pub.err if call.pub else b"", skip="Slave muxer #1 failed")
    # publisher clock: when a tag with timestamp ts left ffmpeg = pub_off + ts
    pub_off = None
    if call.pub is not None:
        _, tags = call.pub.out.audio()
        if tags:
            pub_off = min(t - ts / 1000.0 for t, ts, _ in tags)
            rec["t_first_sent"] = round(tags[0][0], 6)  # first audio tag written (publish accepted)
    dur = (rec.get("t_end") or 0) - (rec.get("t_request") or 0)
    if rec.get("publisher_rc") != 0:
        errs.append(f"publisher exit {rec.get('publisher_rc')}: {pub_err}")
    elif dur < a.hold - 0.5:
        errs.append(f"publisher ended after {dur:.1f} s")
    if not a.no_play:
        proto = call.play
        heard = 0.0
        if proto is None or proto.out.size <= 13:
            errs.append(f"player exit {rec.get('player_rc')}: {_last_line(proto.err if proto else b'') or 'nothing heard'}")
        else:
            buf, tags = proto.out.audio()
            x, stamps = _decode_played(buf, tags)
            heard = len(x) / RATE
            rec["t_first_heard"] = round(tags[0][0], 6) if tags else None
            _quality(a, rec, x, tags, stamps, pub_off, codec_delay)
        rec["heard_s"] = round(heard, 3)
        expect = a.hold - PLAY_DELAY - 1.0
        if heard < 0.5 * expect:
            errs.append(f"heard only {heard:.1f} s")
    if STOPPING and errs:
        errs.insert(0, "interrupted")
    rec["error"] = "; ".join(errs) or None
    rec["ok"] = not errs


def _last_line(err: bytes | bytearray, skip: str = "") -> str:
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip() and not (skip and skip in ln)]
    server = [ln for ln in lines if "Server error" in ln]  # webgate's refusal, e.g. destination_not_allowed
    return (server or lines or [""])[-1].strip()[:200]


def _decode_played(buf: bytes, tags: list[tuple[float, int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """PCM at 8 kHz and, per sample, its stream time (ms, from the tag timestamps)."""
    if not tags:
        return np.zeros(0), np.zeros(0)
    fmt = tags[0][2][0] >> 4
    if fmt in (7, 8) and all((d[0] >> 4) == fmt for _, _, d in tags):
        table = ULAW if fmt == 8 else ALAW
        parts, st = [], []
        for _, ts, d in tags:
            p = np.frombuffer(d, dtype=np.uint8, offset=1)
            parts.append(table[p])
            st.append(ts + np.arange(len(p)) * (1000.0 / RATE))
        return np.concatenate(parts), np.concatenate(st)
    x = decode_to_pcm(buf)
    return x, tags[0][1] + np.arange(len(x)) * (1000.0 / RATE)


def _quality(a: argparse.Namespace, rec: dict[str, Any], x: np.ndarray, tags: list[tuple[float, int, bytes]],
             stamps: np.ndarray, pub_off: float | None, codec_delay: float) -> None:
    if len(x) < FRAME:
        return
    # steady part: from 1 s after the first audio to 0.5 s before the end
    s0, s1 = RATE, max(RATE, len(x) - RATE // 2)
    steady = x[s0:s1]
    nf = len(steady) // FRAME
    if nf:
        fr = steady[:nf * FRAME].reshape(nf, FRAME)
        rms = np.sqrt(np.mean(fr * fr, axis=1)) + 1e-12
        rec["silent_frac"] = round(float(np.mean(20 * np.log10(rms) < SILENT_DBFS)), 4)
    marks = onsets(x)
    rec["marks_heard"] = len(marks)
    hz = dominant_hz(steady, [m - s0 for m in marks if s0 <= m < s1])
    rec["dominant_hz"] = round(hz, 1) if hz is not None else None
    # latency: player clock = sliding min of (arrival - ts) within +-1 s of the mark's tag
    lat: list[float] = []
    if pub_off is not None and tags:
        arr = np.array([t for t, _, _ in tags])
        tts = np.array([ts for _, ts, _ in tags], dtype=np.float64)
        off = arr - tts / 1000.0
        for m in marks:
            ms = stamps[m]
            lo, hi = np.searchsorted(tts, ms - 1000.0), np.searchsorted(tts, ms + 1000.0)
            if hi <= lo:
                continue
            t_rx = float(off[lo:hi].min()) + ms / 1000.0
            # the mark k whose onset was decodable from the published stream last before t_rx
            k = math.floor((t_rx - pub_off - codec_delay) / MARK_PERIOD)
            if k < 0:
                continue
            rtt = t_rx - (pub_off + codec_delay + k * MARK_PERIOD)
            lat.append(round(rtt * 500.0, 2))
    rec["latency_ms"] = lat


# --- main ----------------------------------------------------------------------------------------

def prepare(a: argparse.Namespace, tmp: Path) -> tuple[Path, float]:
    seconds = max(20.0, math.ceil(a.hold + 5.0))
    rate = 44100 if a.codec == "aac" else RATE
    wav = tmp / "caller.wav"
    write_wav(wav, caller_signal(seconds, rate), rate)
    flv = tmp / f"caller-{a.codec}.flv"
    subprocess.run([FF, "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "1", *CODEC_ARGS[a.codec],
                    "-f", "flv", str(flv)], check=True, timeout=300)
    # the codec's own delay: where the marks' onsets come out when the file is decoded here
    x = decode_to_pcm(flv)
    got = onsets(x[: 10 * RATE])
    d = [(m - round(m / (MARK_PERIOD * RATE)) * MARK_PERIOD * RATE) / RATE for m in got]
    delay = float(np.median(d)) if d else 0.0
    return flv, delay


def write_records(a: argparse.Namespace, calls: list[Call], children: float, codec_delay: float,
                  interrupted: bool) -> int:
    """Analyse every call's recordings, append its record and the summary to --out; the number ok."""
    n_ok = 0
    with open(a.out, "a") as f:
        for c in calls:
            if "t_request" not in c.rec:
                continue
            if c.rec["error"] is None:
                try:
                    analyse(a, c, codec_delay)
                except Exception as e:  # noqa: BLE001 - one bad recording must not lose the others
                    c.rec["error"] = f"analysis: {e!r}"
                    c.rec["ok"] = False
            n_ok += bool(c.rec["ok"])
            c.rec.setdefault("codec", a.codec)
            f.write(json.dumps(c.rec) + "\n")
        lat = sorted(v for c in calls for v in c.rec.get("latency_ms") or [])
        me = resource.getrusage(resource.RUSAGE_SELF)
        summary = {
            "summary": True, "calls": a.calls, "ok": n_ok, "codec": a.codec, "play_codec": None if a.no_play else a.play_codec,
            "hold_s": a.hold, "children_cpu_s": round(children, 3),
            "children_cpu_s_per_call": round(children / max(1, a.calls), 3),
            "self_cpu_s": round(me.ru_utime + me.ru_stime, 3),
            "codec_delay_ms": round(codec_delay * 1000, 2),
            "latency_ms_p50": lat[len(lat) // 2] if lat else None,
            "latency_ms_p99": lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] if lat else None,
            "latency_note": "approximate: ffmpeg -re send clock and player arrival clock; RTT/2; folded mod 500 ms",
            "interrupted": interrupted,
        }
        f.write(json.dumps(summary) + "\n")
    return n_ok


async def amain(a: argparse.Namespace) -> int:
    global STOPPING
    tmp = Path(tempfile.mkdtemp(prefix="rtmp_load-"))
    try:
        flv, codec_delay = prepare(a, tmp)
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start_at = a.start_at if a.start_at is not None else time.monotonic() + 0.5 + a.prespawn
        rnd = random.SystemRandom()
        ids: set[int] = set()
        calls = []
        for k in range(a.calls):
            b = rnd.randint(1000000000, 9999999999)
            while b in ids:
                b = rnd.randint(1000000000, 9999999999)
            ids.add(b)
            calls.append(Call(k, b))
        data = flv.read_bytes()
        tasks = [asyncio.ensure_future(run_call(a, c, flv, data, start_at + c.k / a.rate)) for c in calls]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        waiter = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([asyncio.gather(*tasks, return_exceptions=True), waiter],
                                     return_when=asyncio.FIRST_COMPLETED)
        interrupted = waiter in done
        if interrupted:
            STOPPING = True
            for pid in list(LIVE):
                kill_group(pid)
            await asyncio.wait(tasks, timeout=5)
            for t in tasks:
                t.cancel()
        waiter.cancel()
        for t, c in zip(tasks, calls):
            if t.done() and not t.cancelled() and t.exception() is not None:
                c.rec["error"] = repr(t.exception())
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        children = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        n_ok = write_records(a, calls, children, codec_delay, interrupted)
        print(f"rtmp_load: {n_ok}/{a.calls} ok, ffmpeg children {children:.2f} s CPU", file=sys.stderr)
        return 0 if not interrupted else 1
    finally:
        for pid, tr in list(LIVE.items()):
            kill_group(pid)
            tr.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="rtmp://127.0.0.1:11935")
    ap.add_argument("--dest", default="bench")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--rate", type=float, default=5.0, help="calls started per second")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds each publisher runs")
    ap.add_argument("--codec", choices=sorted(CODEC_ARGS), default="nellymoser")
    ap.add_argument("--play-codec", default="pcmu", help="codec= of the played session stream (pcmu: G.711 untouched)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--start-at", type=float, default=None, help="time.monotonic() of the first call")
    ap.add_argument("--prespawn", type=float, default=1.0,
                    help="start each publisher this many seconds early, blocked on stdin (0: ffmpeg -i FILE at the call time)")
    ap.add_argument("--no-tcp-nodelay", dest="tcp_nodelay", action="store_false",
                    help="leave Nagle on for the publishers' RTMP sockets (ffmpeg's default)")
    ap.add_argument("--no-play", action="store_true", help="publishers only (no player, no audio analysis)")
    a = ap.parse_args()
    if hasattr(asyncio, "PidfdChildWatcher") and hasattr(os, "pidfd_open"):
        import warnings
        with warnings.catch_warnings():  # one pidfd per child instead of a waiting thread per child
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    try:
        return asyncio.run(amain(a))
    finally:
        for pid in list(LIVE):
            kill_group(pid)


if __name__ == "__main__":
    sys.exit(main())

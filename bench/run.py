"""webgate benchmark: one command, everything on 127.0.0.1, a table at the end.

    python bench/run.py                 # the full run (about 55 min): ramps, 3 repetitions, Janus beside it,
                                        # the Chromium cross-check
    python bench/run.py --quick         # a smoke run (about 7 min): small steps, one repetition
    python bench/run.py --sync          # synchronised (burst) callers instead of spread ones

The WebRTC callers are spread by default (issue 18): each call sends on its own phase of the 20 ms
period, with Chromium's header extensions and RTCP for the answer it got; ``--sync`` makes every call
send in the same instant (the bench before issue 18, with ``--plain-rtp`` also its RTP/RTCP).

What it starts (and stops again, whatever happens):
  * webgate (``twistd -n webgate``) pinned to CPU 0, routing destination ``bench`` to
  * the far end (``bench/farend.py``: a lean SIP UAS echoing RTP) on CPU 1,
  * load generators on CPU 1: ``bench/loadgen.py`` workers (WebRTC callers: aiortc for ICE/DTLS,
    then raw SRTP with timing marks) and ``bench/rtmp_load.py`` (ffmpeg publishers and players),
  * Janus 1.1.2 with its SIP plugin (``bench/janus_proc.py``), pinned to CPU 0 while webgate idles,
    under the same WebRTC G.711 load against the same far end,
  * for the cross-check, 10 real headless Chromium callers (``bench/chromium_callers.py``) against
    each gateway, beside a step of 10 synthetic callers; and each gateway idle (CPU with 0 calls) and
    webgate's media clock alone (``bench/clock_cost.py``): the fixed cost, which per-call figures
    are also given net of.

Each scenario is ramped (``--steps``) until quality breaks (mean loss >= 1 %, median jitter
>= 20 ms, or more than 1 % of the calls failing); each step is measured in a steady window where
every call of the step is up.  Figures are medians over ``--runs`` repetitions.  Results go to
``--out`` (JSON) and a table to stdout.  Nothing here is a test: no figure is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import (
    median,
    percentile,
    pinned,
    port_free,
    proc_cpu_s,
    proc_rss_mb,
    read_jsonl,
    stop,
    system_cpu_s,
    versions,
    wait_http,
)

PY = sys.executable
GATEWAY_CPU = 0
LOAD_CPU = 1
WS_URL = "ws://127.0.0.1:18080/ws"
RTMP_URL = "rtmp://127.0.0.1:11935"
JANUS_WS = "ws://127.0.0.1:18188/"
FAREND_URI = "sip:bench@127.0.0.1:25060"
WATCH_CONFIG = """\
[tokens]
key = "{key}"
"""   # appended for the watched-video scenario only: watching needs a token with a ``watch`` claim
CALLS_PER_WORKER = 50
CHROMIUM_START_S = 3.0   # seconds to start one headless Chromium on the callers' (busy) CPU
# Janus (libnice) gathers no candidate on a loopback interface, so its WebRTC calls need a host
# address.  The run makes its own network namespace for that (``ip netns``): loopback plus a veth
# pair holding NETNS_ADDR (RFC 2544's benchmarking range), which exists only inside it.  Every
# process of the run lives in that namespace; no packet reaches a real interface.
NETNS_ADDR = "198.18.0.1"

CONFIG = """\
[http]
listen = "127.0.0.1:18080"
max_connections = 0
max_connections_per_ip = 0
[webrtc]
max_connections = 0
max_connections_per_ip = 0
allow_private_candidates = true   # the callers are on this machine (loopback candidates)
[rtmp]
listen = "127.0.0.1:11935"
max_connections_per_ip = 10000
max_connections = 0
[sip]
udp = "127.0.0.1:15060"
tcp = ""
[rtp]
port_min = 20000
port_max = 21999
{rtp_extra}
[limits]
max_calls = 2000
max_calls_per_ip = 0
max_calls_per_identity = 0
max_attempts_per_ip_per_minute = 0
[log]
level = "{log_level}"
[[trunk]]
name = "farend"
target = "sip:127.0.0.1:25060"
codecs = ["PCMU", "PCMA", "G722", "opus"]
[[route]]
pattern = "bench"
trunk = "farend"
public = true
"""


@dataclass
class Scenario:
    key: str
    label: str
    kind: str  # webrtc | rtmp | chromium (the cross-check's real browsers)
    target: str  # webgate | janus
    codec: str  # pcmu | opus | nellymoser | aac
    steps: list[int]
    rtp: str = ""  # a line for webgate's [rtp] table for this scenario only ("g711py": media_io = "loop")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="webgate-bench-"))
        self.procs: list[subprocess.Popen[Any]] = []
        self.webgate: subprocess.Popen[Any] | None = None
        self.farend: subprocess.Popen[Any] | None = None
        self.janus: subprocess.Popen[Any] | None = None
        self.farend_out = self.work / "farend.jsonl"
        self.step_no = 0
        self.starts = 0
        self.rss_fresh = 0.0  # the gateway's RSS just after it started (before any call)
        self.fixed: dict[str, dict[str, Any]] = {}   # per target: its CPU with 0 calls
        self.clock_pct = 0.0   # webgate's media clock ticking with nothing to do, % of a core

    # -- processes ------------------------------------------------------------------------
    def start_farend(self) -> None:
        cmd = pinned([PY, str(HERE / "farend.py"), "--sip", "127.0.0.1:25060", "--rtp", "23000-24999",
                      "--out", str(self.farend_out)], LOAD_CPU)
        self.farend = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=_errfile(self.work / "farend.err"),
                                       text=True, start_new_session=True)
        self.procs.append(self.farend)
        line = self.farend.stdout.readline() if self.farend.stdout else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"far end did not start: {line!r}; see {self.work / 'farend.err'}")

    def start_webgate(self, extra: str = "", rtp: str = "") -> None:
        """A fresh webgate for each scenario: memory per call is measured from its RSS at start.
        ``extra``: TOML appended to the generated config (the watched-video scenario's token key);
        ``rtp``: a line for its [rtp] table (a scenario's own, e.g. the Python relay's media_io)."""
        self.starts += 1
        cfg = self.work / "webgate.toml"
        lines = [*self.args.webgate_rtp, *([rtp] if rtp else [])]
        cfg.write_text(CONFIG.format(log_level=self.args.log_level, rtp_extra="\n".join(lines)) + extra)
        cmd = pinned([PY, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                      "-l", str(self.work / f"webgate-{self.starts}.log"), "webgate", "--config", str(cfg)], GATEWAY_CPU)
        self.webgate = subprocess.Popen(cmd, cwd=self.work, stdout=subprocess.DEVNULL,
                                        stderr=_errfile(self.work / f"webgate-{self.starts}.err"), start_new_session=True)
        self.procs.append(self.webgate)
        wait_http("http://127.0.0.1:18080/health")
        time.sleep(1.0)
        self.rss_fresh = proc_rss_mb(self.webgate.pid)

    def start_janus(self) -> None:
        from janus_proc import start_janus

        self.janus = start_janus(self.work / "janus", cpu=GATEWAY_CPU)
        self.procs.append(self.janus)
        time.sleep(1.0)
        self.rss_fresh = proc_rss_mb(self.janus.pid)

    def stop_gateway(self, which: str) -> None:
        p = self.janus if which == "janus" else self.webgate
        if p is not None:
            stop(p)
            if p in self.procs:
                self.procs.remove(p)
        if which == "janus":
            self.janus = None
        else:
            self.webgate = None

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            stop(p)
        self.procs.clear()

    # -- one step ---------------------------------------------------------------------------
    def run_step(self, scn: Scenario, n: int, rate: float, window: float) -> dict[str, Any]:
        """``n`` concurrent calls of ``scn``; measures the gateway over a window where all are up."""
        gw = self.janus if scn.target == "janus" else self.webgate
        assert gw is not None and gw.poll() is None, f"{scn.target} is not running"
        self.step_no += 1
        tag = f"s{self.step_no:03d}-{scn.key}-{n}"
        if scn.kind == "chromium":   # each browser's offer and answer are Selenium round trips
            rate = min(rate, 5.0)
        ramp = n / rate
        settle = 3.0
        hold = ramp + settle + window + 1.0
        nw = max(1, math.ceil(n / (CALLS_PER_WORKER if scn.kind == "webrtc" else 10**6)))
        # lead time before the first call: a worker imports aiortc/PyAV (about 1 s), the RTMP driver
        # prespawns its ffmpegs (2.5 s), a Janus worker registers its SIP accounts first: Janus's
        # SIP plugin handles requests one at a time and sleeps 100 ms after each REGISTER, so all
        # workers' registrations take about 0.12 s each, one after another
        lead = 3.0 if scn.kind == "rtmp" else 2.0
        if scn.kind == "chromium":   # (the browsers start first; the step's clock starts when they are up)
            lead = 1.0
        if scn.target == "janus":
            lead += 1.5 + 0.12 * n
        start_at = time.monotonic() + lead
        t_w0, t_w1 = start_at + ramp + settle, start_at + ramp + settle + window
        rss_idle = self.rss_fresh
        outs: list[Path] = []
        workers: list[subprocess.Popen[Any]] = []
        for w in range(nw):
            calls = n // nw + (1 if w < n % nw else 0)
            if calls == 0:
                continue
            out = self.work / f"{tag}-w{w}.jsonl"
            outs.append(out)
            common = ["--calls", str(calls), "--rate", f"{rate / nw:.4f}", "--hold", f"{hold:.2f}",
                      "--codec", scn.codec, "--out", str(out)]
            if scn.kind != "chromium":   # the browsers say when they are up (READY), the step starts then
                common += ["--start-at", f"{start_at + w / rate:.4f}"]
            else:                        # ... and when all calls are up (UP), the window starts then
                common += ["--hold-after-up", f"{settle + window + 1.0:.2f}"]
            if scn.kind == "rtmp":
                cmd = [PY, str(HERE / "rtmp_load.py"), "--url", RTMP_URL, "--dest", "bench", *common]
            elif scn.kind == "chromium":
                cmd = [PY, str(HERE / "chromium_callers.py"), "--target", scn.target, "--url",
                       JANUS_WS if scn.target == "janus" else WS_URL, "--uri", FAREND_URI, "--dest", "bench", *common]
            elif scn.target == "janus":
                cmd = [PY, str(HERE / "loadgen.py"), "--target", "janus", "--url", JANUS_WS, "--uri", FAREND_URI,
                       "--ice-host", self.args.ice_host, *common, *self.shape_args()]
            else:
                cmd = [PY, str(HERE / "loadgen.py"), "--target", "webgate", "--url", WS_URL, "--dest", "bench",
                       "--ice-host", "127.0.0.1", *common, *self.shape_args()]
            p = subprocess.Popen(pinned(cmd, LOAD_CPU),
                                 stdout=subprocess.PIPE if scn.kind == "chromium" else subprocess.DEVNULL, text=True,
                                 stderr=_errfile(self.work / f"{tag}-w{w}.err"), start_new_session=True)
            workers.append(p)
            self.procs.append(p)
            if scn.kind == "chromium":
                line = _readline(p, CHROMIUM_START_S * 4 * n + 60)
                if not line.startswith("READY"):
                    raise RuntimeError(f"Chromium callers did not start: {line!r}; see {self.work / f'{tag}-w{w}.err'}")
                line = _readline(p, ramp + 120)
                if not line.startswith("UP"):
                    raise RuntimeError(f"Chromium calls did not come up: {line!r}; see {self.work / f'{tag}-w{w}.err'}")
                t_w0 = time.monotonic() + settle
                t_w1 = t_w0 + window
        # the steady window: every call of the step is up
        self._sleep_until(t_w0)
        cpu0, load0, wall0 = proc_cpu_s(gw.pid), system_cpu_s(LOAD_CPU), time.monotonic()
        rss_peak = proc_rss_mb(gw.pid)
        while time.monotonic() < t_w1:
            time.sleep(min(1.0, max(0.0, t_w1 - time.monotonic())))
            rss_peak = max(rss_peak, proc_rss_mb(gw.pid))
        cpu1, load1, wall1 = proc_cpu_s(gw.pid), system_cpu_s(LOAD_CPU), time.monotonic()
        deadline = time.monotonic() + hold + (90 if scn.kind == "chromium" else 60)
        for p in workers:
            try:
                p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop(p)
            self.procs.remove(p)
        time.sleep(1.5)  # the far end writes its records at BYE
        fig = self._figures(scn, n, outs, cpu1 - cpu0, wall1 - wall0, rss_idle, rss_peak, (load1 - load0) / (wall1 - wall0))
        fig["callers_cpu_pct"] = _callers_cpu_pct(outs, wall0, wall1)
        # calls with media up, averaged over the window (a browser that started late or failed is
        # not a call the gateway carried): the cross-check's CPU per call is per call up
        up = _calls_up(outs, wall0, wall1)
        fig["calls_up"] = up
        if up:
            fig["cpu_s_per_call_up_min"] = fig["cpu_s"] / (up * fig["window_s"] / 60)
        fig["load_shape"] = "chromium" if scn.kind == "chromium" else self.load_shape()
        fixed = self.fixed.get(scn.target)
        if fixed and n:
            # net of the gateway's fixed cost: its idle CPU and (webgate) the media clock's own ticks
            base = fixed.get("idle_cpu_pct", 0.0) + (self.clock_pct if scn.target == "webgate" else 0.0)
            fig["fixed_cpu_pct"] = base
            fig["cpu_s_per_call_min_net"] = max(0.0, fig["cpu_s"] - base / 100 * fig["window_s"]) / (n * fig["window_s"] / 60)
            if up:
                fig["cpu_s_per_call_up_min_net"] = max(0.0, fig["cpu_s"] - base / 100 * fig["window_s"]) / (up * fig["window_s"] / 60)
        return fig

    def load_shape(self) -> str:
        return "sync" if self.args.sync else "spread"

    def watch_step(self, n: int, key: str, idle_window: float = 0.0) -> dict[str, Any]:
        """The watched-video scenario at ``n`` (``bench/watch_load.py``, on the callers' CPU): n
        audio-only calls to ``echo``, then n calls with 1 Mbit/s VP8 video and a watcher each, the
        gateway's CPU measured over a window in each phase. Returns watch_load's JSON."""
        gw = self.webgate
        assert gw is not None and gw.poll() is None, "webgate is not running"
        self.step_no += 1
        tag = f"s{self.step_no:03d}-watch-{n}"
        cmd = [PY, str(HERE / "watch_load.py"), "--url", WS_URL, "--dest", "echo", "--calls", str(n),
               "--gateway-pid", str(gw.pid), "--window", f"{self.args.window:.2f}",
               "--rate", f"{min(self.args.rate, 10.0):.2f}", "--idle-window", f"{idle_window:.1f}",
               "--out", str(self.work / f"{tag}.jsonl")]
        err = self.work / f"{tag}.err"
        budget = 60 + idle_window + 2 * (n / min(self.args.rate, 10.0) + 40 + 2 * self.args.window)
        try:
            r = subprocess.run(pinned(cmd, LOAD_CPU), capture_output=True, text=True, timeout=budget, check=False,
                               env={**os.environ, "WEBGATE_TOKEN_KEY": key})
        except subprocess.TimeoutExpired:
            return {"calls": n, "error": f"watch_load did not finish within {budget:.0f} s"}
        err.write_text(r.stderr)
        try:
            out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"calls": n, "error": (r.stderr or r.stdout)[-300:]}
        out["load_shape"] = self.load_shape()
        return out

    def shape_args(self) -> list[str]:
        return ((["--sync"] if self.args.sync else []) + (["--plain-rtp"] if self.args.plain_rtp else [])
                + ["--slot-ms", str(self.args.slot_ms)])

    def measure_idle(self, target: str) -> dict[str, Any]:
        """The gateway's CPU with 0 calls, over a window (a fresh process, after its start-up settled)."""
        gw = self.janus if target == "janus" else self.webgate
        assert gw is not None
        time.sleep(2.0)
        c0, t0 = proc_cpu_s(gw.pid), time.monotonic()
        time.sleep(self.args.idle_window)
        c1, t1 = proc_cpu_s(gw.pid), time.monotonic()
        f = {"target": target, "idle_cpu_pct": 100 * (c1 - c0) / (t1 - t0), "window_s": t1 - t0}
        self.fixed[target] = f
        return f

    def measure_clock(self) -> dict[str, Any]:
        """webgate's media clock (``MediaClock``: one LoopingCall on the asyncio reactor) ticking with
        nothing to do, against the same reactor idle, pinned where the gateway runs: µs per tick."""
        cmd = pinned([PY, str(HERE / "clock_cost.py"), "--seconds", str(self.args.idle_window)], GATEWAY_CPU)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=4 * self.args.idle_window + 60, check=False)
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": (r.stderr or r.stdout)[-300:]}
        self.clock_pct = out.get("clock_cpu_pct", 0.0)
        return out

    def _figures(self, scn: Scenario, n: int, outs: list[Path], cpu: float, wall: float, rss_idle: float,
                 rss_peak: float, load_busy: float) -> dict[str, Any]:
        calls = [r for o in outs for r in read_jsonl(o) if not r.get("summary")]
        far = {r.get("bench_id"): r for r in read_jsonl(self.farend_out) if r.get("bench_id")}
        ok = [c for c in calls if c.get("ok")]
        invite = [far[c["bench_id"]]["t_invite"] - c["t_request"] for c in ok if c.get("bench_id") in far and c.get("t_request")]
        first_audio = [c["t_first_audio"] - far[c["bench_id"]]["t_200"] for c in ok
                       if c.get("bench_id") in far and c.get("t_first_audio") and far[c["bench_id"]].get("t_200")]
        lat = [x for c in ok for x in (c.get("latency_ms") or [])]
        if scn.kind in ("webrtc", "chromium"):
            loss = [c.get("loss") for c in ok if c.get("loss") is not None]
            jitter = [c.get("jitter_ms") for c in ok if c.get("jitter_ms") is not None]
        else:  # RTMP: the player's silent frames, and the far end's view of the stream to SIP
            loss = [c.get("silent_frac") for c in ok if c.get("silent_frac") is not None]
            jitter = [far[c["bench_id"]].get("rx_jitter_ms") for c in ok if c.get("bench_id") in far]
        far_loss = [far[c["bench_id"]]["rx_lost"] / max(1, far[c["bench_id"]]["rx_packets"] + far[c["bench_id"]]["rx_lost"])
                    for c in ok if c.get("bench_id") in far and far[c["bench_id"]].get("rx_packets") is not None]
        fig: dict[str, Any] = {
            "scenario": scn.key, "calls": n, "ok": len(ok), "failed": len(calls) - len(ok) + max(0, n - len(calls)),
            "errors": sorted({str(c.get("error"))[:80] for c in calls if not c.get("ok")})[:5],
            "cpu_s": cpu, "window_s": wall, "cpu_pct": 100 * cpu / wall,
            "cpu_s_per_call_min": (cpu / (n * wall / 60)) if n else None,
            "rss_start_mb": rss_idle, "rss_peak_mb": rss_peak,
            "mem_per_call_mb": (rss_peak - rss_idle) / n if n else None,
            "loss_mean": (sum(loss) / len(loss)) if loss else None, "loss_max": max(loss) if loss else None,
            "farend_loss_mean": (sum(far_loss) / len(far_loss)) if far_loss else None,
            "jitter_p50_ms": median(jitter), "jitter_p99_ms": percentile(jitter, 99),
            "invite_p50_ms": _ms(median(invite)), "invite_p99_ms": _ms(percentile(invite, 99)),
            "first_audio_p50_ms": _ms(median(first_audio)), "first_audio_p99_ms": _ms(percentile(first_audio, 99)),
            "latency_p50_ms": median(lat), "latency_p99_ms": percentile(lat, 99),
            "load_cpu_busy": load_busy,
            "target": scn.target, "callers": "chromium" if scn.kind == "chromium" else "synthetic",
            # RTCP packets per call-minute: the callers' steady rate where they measured one (Chromium),
            # else over the whole call
            "rtcp_per_call_min": median(c["rtcp_per_min"] if c.get("rtcp_per_min") is not None else 60 * c["rtcp_tx"] / c["seconds"]
                                        for c in ok if c.get("rtcp_per_min") is not None
                                        or (c.get("rtcp_tx") is not None and c.get("seconds"))),
            "rtp_header_bytes": median(c.get("rtp_header_bytes") for c in ok),
            "answer_shape": next((c.get("answer_shape") for c in ok if c.get("answer_shape")), None),
        }
        fig["load_limited"] = load_busy > 0.9  # the callers' CPU, not the gateway, is the limit
        fig["held"] = (
            fig["failed"] <= 0.01 * n
            and (fig["loss_mean"] is None or fig["loss_mean"] < 0.01)
            and (fig["jitter_p50_ms"] is None or fig["jitter_p50_ms"] < 20)
        )
        return fig

    def setup_rate(self, target: str, n: int) -> dict[str, Any]:
        """Calls set up per second: ``n`` calls requested as fast as the caller can, held 2 s."""
        self.step_no += 1
        out = self.work / f"s{self.step_no:03d}-rate-{target}.jsonl"
        url, dest = ((JANUS_WS, ["--uri", FAREND_URI, "--ice-host", self.args.ice_host]) if target == "janus"
                     else (WS_URL, ["--dest", "bench", "--ice-host", "127.0.0.1"]))
        cmd = [PY, str(HERE / "loadgen.py"), "--target", target, "--url", url, *dest, "--calls", str(n), "--rate", "200",
               "--hold", "2", "--codec", "pcmu", "--out", str(out)]
        p = subprocess.Popen(pinned(cmd, LOAD_CPU), stdout=subprocess.DEVNULL,
                             stderr=_errfile(self.work / f"rate-{target}.err"), start_new_session=True)
        self.procs.append(p)
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            stop(p)
        self.procs.remove(p)
        recs = [r for r in read_jsonl(out) if not r.get("summary")]
        ok = [r for r in recs if r.get("ok") and r.get("t_answered")]
        if len(ok) < 2:
            return {"target": target, "calls": n, "ok": len(ok), "calls_per_s": None}
        span = max(r["t_answered"] for r in ok) - min(r["t_request"] for r in ok)
        return {"target": target, "calls": n, "ok": len(ok), "calls_per_s": len(ok) / span if span > 0 else None}

    @staticmethod
    def _sleep_until(t: float) -> None:
        while (d := t - time.monotonic()) > 0:
            time.sleep(min(d, 0.5))


def _errfile(path: Path) -> Any:
    """A child's stderr file (the child writes it; closed when this process exits)."""
    return open(path, "w")


def _readline(p: subprocess.Popen[Any], timeout: float) -> str:
    """One line of ``p``'s stdout within ``timeout`` s ('' on time-out or EOF)."""
    import selectors

    assert p.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return p.stdout.readline()


def _calls_up(outs: list[Path], t0: float, t1: float) -> float | None:
    """Calls whose media was up, averaged over [t0, t1] (from each call's t_media_up and seconds)."""
    if t1 <= t0:
        return None
    total = 0.0
    for o in outs:
        for r in read_jsonl(o):
            if r.get("summary") or not r.get("t_media_up") or not r.get("seconds"):
                continue
            a, b = r["t_media_up"], r["t_media_up"] + r["seconds"]
            total += max(0.0, min(b, t1) - max(a, t0))
    return total / (t1 - t0)


def _callers_cpu_pct(outs: list[Path], t0: float, t1: float) -> float | None:
    """The WebRTC callers' own CPU over [t0, t1] (% of a core), from each loadgen's once-a-second trace."""
    total, seen = 0.0, False
    for o in outs:
        for r in read_jsonl(o):
            tr = r.get("cpu_trace") if r.get("summary") else None
            if not tr or len(tr) < 2:
                continue

            def at(t: float, tr: list[list[float]] = tr) -> float:
                for a, b in itertools.pairwise(tr):
                    if a[0] <= t <= b[0]:
                        return a[1] + (b[1] - a[1]) * (t - a[0]) / max(1e-9, b[0] - a[0])
                return tr[0][1] if t < tr[0][0] else tr[-1][1]

            total += at(t1) - at(t0)
            seen = True
    return 100 * total / (t1 - t0) if seen and t1 > t0 else None


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    def steps(s: str) -> list[int]:
        return [int(x) for x in s.split(",") if x]

    out = [
        Scenario("g711", "WebRTC G.711 pass-through (webgate)", "webrtc", "webgate", "pcmu", steps(args.steps)),
        Scenario("janus", "WebRTC G.711 relay (Janus)", "webrtc", "janus", "pcmu", steps(args.steps)),
        Scenario("g711py", "WebRTC G.711 pass-through (webgate, media_io = \"loop\": the relay in Python)", "webrtc",
                 "webgate", "pcmu", steps(args.steps), rtp='media_io = "loop"'),
        Scenario("g711h2", "WebRTC G.711 pass-through (webgate, read_interval_ms = 2)", "webrtc", "webgate", "pcmu",
                 steps(args.steps), rtp="read_interval_ms = 2"),
        Scenario("g711h5", "WebRTC G.711 pass-through (webgate, read_interval_ms = 5)", "webrtc", "webgate", "pcmu",
                 steps(args.steps), rtp="read_interval_ms = 5"),
        Scenario("opus", "WebRTC Opus<->G.711 (webgate)", "webrtc", "webgate", "opus", steps(args.opus_steps)),
        Scenario("nelly", "RTMP Nellymoser<->G.711 (webgate)", "rtmp", "webgate", "nellymoser", steps(args.rtmp_steps)),
        Scenario("aac", "RTMP AAC<->G.711 (webgate)", "rtmp", "webgate", "aac", steps(args.rtmp_steps)),
    ]
    only = set(args.only.split(",")) if args.only else None
    named = {"g711py", "g711h2", "g711h5"}  # run only when named in --only
    return [s for s in out if (s.key in only if only is not None else s.key not in named)
            and not (s.target == "janus" and args.no_janus)]


def xcheck_scenarios(args: argparse.Namespace) -> list[tuple[Scenario, Scenario]]:
    """The Chromium cross-check: per gateway, N synthetic callers and N real Chromium callers (G.711)."""
    if args.no_chromium or (args.only and "xcheck" not in args.only.split(",")):
        return []
    n = [args.xcheck_calls]
    out = [(Scenario("x-syn-webgate", "synthetic callers -> webgate", "webrtc", "webgate", "pcmu", n),
            Scenario("x-chr-webgate", "Chromium callers -> webgate", "chromium", "webgate", "pcmu", n))]
    if not args.no_janus:
        out.append((Scenario("x-syn-janus", "synthetic callers -> Janus", "webrtc", "janus", "pcmu", n),
                    Scenario("x-chr-janus", "Chromium callers -> Janus", "chromium", "janus", "pcmu", n)))
    return out


def codec_costs() -> dict[str, Any]:
    """PyAV's own encode and decode cost per 20 ms frame (µs), and from it the physical floor of
    each transcoded scenario in CPU seconds per call-minute (3000 frames a minute each way)."""
    sys.path.insert(0, str(ROOT))
    from codec_cost import codec_cost, resample_cost

    us: dict[str, float] = {}
    rows = []
    for name, rate in (("PCMU", None), ("G722", None), ("opus", None), ("nellymoser", 8000), ("aac", 16000)):
        try:
            e, d = codec_cost(name, rate, 500)
        except Exception:  # noqa: BLE001, S112 - a codec this build lacks
            continue
        us[f"{name} enc"], us[f"{name} dec"] = e, d
        rows.append((f"{name}" + (f"/{rate}" if rate else ""), e, d))
    for src, dst in ((48000, 8000), (8000, 48000), (16000, 8000)):
        us[f"rs {src}>{dst}"] = resample_cost(src, dst, 500)
        rows.append((f"resample {src // 1000}k->{dst // 1000}k", us[f"rs {src}>{dst}"], 0.0))
    paths = {
        # browser Opus 48k -> G.711 8k, and back
        "opus": ["opus dec", "rs 48000>8000", "PCMU enc", "PCMU dec", "rs 8000>48000", "opus enc"],
        # Flash Nellymoser 8k -> G.711; the player takes the G.711 stream untouched (?codec=pcmu)
        "nelly": ["nellymoser dec", "PCMU enc"],
        # encoder AAC 16k -> G.711 8k; the player as above
        "aac": ["aac dec", "rs 16000>8000", "PCMU enc"],
    }
    floor = {k: sum(us[x] for x in v) * 3000 / 1e6 for k, v in paths.items() if all(x in us for x in v)}
    return {"rows": rows, "floor_cpu_s_per_call_min": floor, "paths": paths}


def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def report(results: dict[str, Any], scns: list[Scenario]) -> str:
    lines = []
    runs = results["runs"]
    shape = ("synchronised (burst) callers: every call sends in the same instant" if results["args"].get("sync")
             else "spread callers: each call's send phase uniform over the 20 ms period")
    lines.append(f"webgate benchmark  {results['when']}  runs={len(runs)}  window={results['args']['window']} s")
    lines.append(f"load shape: {shape}; RTCP: "
                 + ("aiortc's (SR+SDES every 0.5-1.5 s), no RTP header extensions" if results["args"].get("plain_rtp")
                    else "as Chromium (SR+RR+SDES CNAME about every 5 s, transport-cc if negotiated), header extensions as negotiated"))
    lines.append("  " + "  ".join(f"{k}={v}" for k, v in results["versions"].items()))
    lines.append("")
    hdr = (f"{'scenario':<10}{'calls':>6}{'ok':>6}{'cpu%':>7}{'cpu s/call-min':>15}{'net':>7}{'MB/call':>9}{'loss%':>7}"
           f"{'jit50':>7}{'req>INV p50/p99':>17}{'200>audio p50/p99':>19}{'lat p50/p99':>13}{'load%':>7}{'callers%':>9}")
    lines.append(hdr)
    best: dict[str, list[int]] = {}
    for s in scns:
        for n in sorted({f["calls"] for r in runs for f in r["steps"] if f["scenario"] == s.key}):
            fs = [f for r in runs for f in r["steps"] if f["scenario"] == s.key and f["calls"] == n]
            m = {k: median(f.get(k) for f in fs) for k in fs[0] if isinstance(fs[0].get(k), (int, float)) and not isinstance(fs[0].get(k), bool)}
            lines.append(
                f"{s.key:<10}{n:>6}{_f(m.get('ok'), '{:.0f}'):>6}{_f(m.get('cpu_pct')):>7}{_f(m.get('cpu_s_per_call_min'), '{:.3f}'):>15}"
                f"{_f(m.get('cpu_s_per_call_min_net'), '{:.3f}'):>7}"
                f"{_f(m.get('mem_per_call_mb'), '{:.2f}'):>9}{_f(None if m.get('loss_mean') is None else 100 * m['loss_mean'], '{:.2f}'):>7}"
                f"{_f(m.get('jitter_p50_ms')):>7}{_f(m.get('invite_p50_ms')) + '/' + _f(m.get('invite_p99_ms')):>17}"
                f"{_f(m.get('first_audio_p50_ms')) + '/' + _f(m.get('first_audio_p99_ms')):>19}"
                f"{_f(m.get('latency_p50_ms')) + '/' + _f(m.get('latency_p99_ms')):>13}{_f(100 * m['load_cpu_busy'] if m.get('load_cpu_busy') is not None else None, '{:.0f}'):>7}"
                f"{_f(m.get('callers_cpu_pct'), '{:.0f}'):>9}"
            )
        for r in runs:
            held = [f["calls"] for f in r["steps"] if f["scenario"] == s.key and f["held"]]
            best.setdefault(s.key, []).append(max(held) if held else 0)
    lines.append("")
    lines.append("most calls held (< 1 % loss, < 20 ms jitter), median over runs (a ramp that never broke says '>= N'):")
    for s in scns:
        if s.key in best:
            broke = any(not f["held"] for r in runs for f in r["steps"] if f["scenario"] == s.key)
            limited = any(f.get("load_limited") for r in runs for f in r["steps"] if f["scenario"] == s.key)
            lines.append(f"  {s.label:<40} {'' if broke else '>= '}{median(best[s.key]):.0f}"
                         f"{'  (ramp stopped: the load generators saturated their CPU)' if limited and not broke else ''}")
    rate = results.get("setup_rate") or []
    if rate:
        lines.append("calls set up per second (median over runs):")
        for t in ("webgate", "janus"):
            xs = [x["calls_per_s"] for x in rate if x["target"] == t and x.get("calls_per_s")]
            if xs:
                lines.append(f"  {t:<10} {median(xs):.1f}")
    # ratios webgate / Janus at the largest step both held
    g = {f["calls"]: f for r in runs for f in r["steps"] if f["scenario"] == "g711"}
    j = {f["calls"]: f for r in runs for f in r["steps"] if f["scenario"] == "janus"}
    if g and j:
        lines.append("")
        lines.append("webgate / Janus (WebRTC G.711, same load, same far end), median over common steps:")
        common = sorted(n for n in set(g) & set(j) if g[n]["held"] and j[n]["held"])

        def ratio(key: str) -> float | None:
            rs = []
            for n in common:
                a = median(f[key] for r in runs for f in r["steps"] if f["scenario"] == "g711" and f["calls"] == n and f.get(key))
                b = median(f[key] for r in runs for f in r["steps"] if f["scenario"] == "janus" and f["calls"] == n and f.get(key))
                if a and b:
                    rs.append(a / b)
            return median(rs)

        lines.append(f"  (steps both held: {', '.join(map(str, common)) or 'none'})")
        lines.append(f"  CPU per call            {_f(ratio('cpu_s_per_call_min'), '{:.2f}')} x")
        lines.append(f"  memory per call         {_f(ratio('mem_per_call_mb'), '{:.2f}')} x")
        lines.append(f"  setup request->INVITE   {_f(ratio('invite_p50_ms'), '{:.2f}')} x (p50)")
        if best.get("g711") and best.get("janus"):
            bj = median(best["janus"]) or 0
            lines.append(f"  most calls held         {median(best['g711']):.0f} vs {bj:.0f}")
    lines.extend(_report_fixed(results))
    lines.extend(_report_xcheck(results))
    lines.extend(_report_watch(results))
    cc = results.get("codec_cost")
    if cc:
        lines.append("")
        lines.append("PyAV codec cost per 20 ms frame (µs): encode / decode (resample: one direction)")
        for name, e, d in cc["rows"]:
            lines.append(f"  {name:<18} {e:7.1f} / {d:7.1f}")
        lines.append("transcoding: the codecs' own cost (floor) vs webgate's, CPU s per call-minute "
                     "(webgate: median of the held steps)")
        for k, fl in cc["floor_cpu_s_per_call_min"].items():
            got = median(f["cpu_s_per_call_min"] for r in runs for f in r["steps"]
                         if f["scenario"] == k and f["held"] and f.get("cpu_s_per_call_min"))
            lines.append(f"  {k:<8} floor {fl:.3f}   webgate {_f(got, '{:.3f}')}   "
                         f"({' + '.join(cc['paths'][k])})")
    return "\n".join(lines)


def _report_fixed(results: dict[str, Any]) -> list[str]:
    fixed = results.get("fixed") or []
    clock = results.get("clock") or {}
    if not fixed and not clock:
        return []
    out = ["", "fixed cost per gateway (median over runs; 'net' above = the gateway's CPU minus this, per call):"]
    for t in ("webgate", "janus"):
        xs = [f["idle_cpu_pct"] for f in fixed if f["target"] == t]
        if xs:
            out.append(f"  {t:<8} CPU with 0 calls   {median(xs):6.2f} % of a core")
    if clock.get("us_per_tick") is not None:
        out.append(f"  webgate media clock: {clock['us_per_tick']:.1f} µs per 20 ms tick with no stream "
                   f"({clock['clock_cpu_pct']:.2f} % of a core while any call is up; a bare asyncio timer: "
                   f"{_f(clock.get('plain_asyncio_timer_us_per_tick'))} µs)")
    elif clock.get("error"):
        out.append(f"  webgate media clock: not measured ({clock['error'][:80]})")
    return out


def _report_xcheck(results: dict[str, Any]) -> list[str]:
    xs = results.get("xcheck") or []
    if not xs:
        return []
    out = ["", ("Chromium cross-check: the gateway's CPU per call, real Chromium callers vs synthetic (G.711, "
                "medians over runs):"),
           "  (calls: calls with media up, averaged over the window; CPU per call is per such call)",
           (f"  {'target':<8}{'callers':<11}{'calls':>6}{'ok':>4}{'cpu%':>7}{'cpu s/call-min':>15}{'net':>7}"
            f"{'loss%':>7}{'jit50':>7}{'RTCP/call-min':>14}{'RTP hdr B':>10}")]
    for t in ("webgate", "janus"):
        net = {}
        for kind in ("synthetic", "chromium"):
            fs = [f for f in xs if f["target"] == t and f["callers"] == kind]
            if not fs:
                continue

            def m(k: str, fs: list[dict[str, Any]] = fs) -> float | None:
                return median(f.get(k) for f in fs)

            net[kind] = m("cpu_s_per_call_up_min_net") or m("cpu_s_per_call_up_min")
            loss = m("loss_mean")
            out.append(f"  {t:<8}{kind:<11}{_f(m('calls_up'), '{:.1f}'):>6}{_f(m('ok'), '{:.0f}'):>4}{_f(m('cpu_pct')):>7}"
                       f"{_f(m('cpu_s_per_call_up_min'), '{:.3f}'):>15}{_f(m('cpu_s_per_call_up_min_net'), '{:.3f}'):>7}"
                       f"{_f(None if loss is None else 100 * loss, '{:.2f}'):>7}{_f(m('jitter_p50_ms')):>7}"
                       f"{_f(m('rtcp_per_call_min')):>14}{_f(m('rtp_header_bytes')):>10}")
        if net.get("synthetic") and net.get("chromium"):
            out.append(f"  {t:<8}Chromium / synthetic, CPU per call (net): {net['chromium'] / net['synthetic']:.2f} x")
    return out


def _report_watch(results: dict[str, Any]) -> list[str]:
    ws = [w for w in results.get("watch") or [] if not w.get("error")]
    errs = [w for w in results.get("watch") or [] if w.get("error")]
    if not ws and not errs:
        return []
    out = ["", ("Watched video (issue 14): N calls to echo, audio only vs with 1 Mbit/s VP8 video and one watcher each "
                "(medians over runs):"),
           (f"  {'calls':>5}{'cpu% audio':>11}{'cpu% watched':>13}{'per call: audio':>16}{'watched':>9}"
            f"{'video fwd':>10}{'fwd loss%':>10}{'seq loss%':>10}{'watch>frame p50/p99 ms':>24}{'watchers ok':>12}")]
    for n in sorted({w["calls"] for w in ws}):
        fs = [w for w in ws if w["calls"] == n]

        def m(*path: str, fs: list[dict[str, Any]] = fs) -> float | None:
            vals = []
            for f in fs:
                v: Any = f
                for k in path:
                    v = v.get(k) if isinstance(v, dict) else None
                vals.append(v)
            return median(vals)

        out.append(f"  {n:>5}{_f(m('gateway_cpu_pct', 'audio_only')):>11}{_f(m('gateway_cpu_pct', 'watched')):>13}"
                   f"{_f(m('gateway_cpu_pct', 'per_audio_call'), '{:.3f}'):>16}{_f(m('gateway_cpu_pct', 'per_watched_call'), '{:.3f}'):>9}"
                   f"{_f(m('gateway_cpu_pct', 'video_forward_per_call'), '{:.3f}'):>10}"
                   f"{_f(m('forwarded_loss', 'loss_pct'), '{:.3f}'):>10}{_f(m('forwarded_loss', 'seq_loss_pct'), '{:.3f}'):>10}"
                   f"{_f(m('watch_to_first_frame_ms', 'p50')) + '/' + _f(m('watch_to_first_frame_ms', 'p99')):>24}"
                   f"{_f(m('ok', 'watchers'), '{:.0f}'):>12}")
    out.append("  (cpu: % of one core; 'video fwd' = (watched - audio) / calls: one video to one watcher)")
    for w in errs:
        out.append(f"  {w['calls']} calls: {w['error'][:120]}")
    return out


def in_own_netns(argv: list[str]) -> int:
    """Re-run this command inside a network namespace made for it; remove the namespace after."""
    name = f"webgate-bench-{os.getpid()}"
    setup = [
        ["ip", "netns", "add", name],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "link", "add", "wgb0", "type", "veth", "peer", "name", "wgb1"],
        ["ip", "-n", name, "addr", "add", f"{NETNS_ADDR}/24", "dev", "wgb0"],
        ["ip", "-n", name, "link", "set", "wgb0", "up"],
        ["ip", "-n", name, "link", "set", "wgb1", "up"],
    ]
    try:
        for c in setup:
            subprocess.run(c, check=True, capture_output=True, text=True)
        return subprocess.call(["ip", "netns", "exec", name, PY, *argv, "--in-netns", NETNS_ADDR])
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small steps, one run, short windows")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", default="10,20,40,60,100,200,300,400", help="WebRTC G.711 steps (webgate and Janus)")
    ap.add_argument("--opus-steps", default="20,40,60,80")
    ap.add_argument("--rtmp-steps", default="20,40,60")
    ap.add_argument("--rate", type=float, default=25.0, help="new calls per second during a ramp step")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured with every call up")
    ap.add_argument("--watch-steps", default="10,50",
                    help="calls of the watched-video scenario (--only watch): audio-only, then with video and a "
                         "watcher each, at each step")
    ap.add_argument("--only", default="", help="comma list of scenario keys: g711,janus,opus,nelly,aac,xcheck,watch,g711py "
                                               "(xcheck: the Chromium cross-check; watch: the watched-video "
                                               "scenario, g711py: the relay in Python (media_io = \"loop\"), g711h2/g711h5: "
                                               "read_interval_ms = 2/5, "
                                               "only when named here)")
    ap.add_argument("--no-janus", action="store_true")
    ap.add_argument("--no-setup-rate", action="store_true")
    ap.add_argument("--sync", action="store_true",
                    help="synchronised (burst) callers: every call sends in the same instant (the bench before issue 18). "
                         "Default: spread, each call's send phase uniform over the 20 ms period")
    ap.add_argument("--slot-ms", type=float, default=1.0,
                    help="resolution of the spread callers' send phases (loadgen --slot-ms)")
    ap.add_argument("--plain-rtp", action="store_true",
                    help="the callers' RTP/RTCP as before issue 18 (aiortc's RTCP, no header extensions)")
    ap.add_argument("--idle-window", type=float, default=20.0,
                    help="seconds over which each fresh gateway's CPU with 0 calls is measured (0: skip)")
    ap.add_argument("--no-chromium", action="store_true", help="skip the Chromium cross-check")
    ap.add_argument("--xcheck-calls", type=int, default=10, help="calls in each cross-check step")
    ap.add_argument("--xcheck-runs", type=int, default=None, help="cross-check repetitions (default: --runs)")
    ap.add_argument("--xcheck-window", type=float, default=20.0,
                    help="the cross-check's measured window (s; at least --window): long enough for several "
                         "RTCP intervals")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, records)")
    ap.add_argument("--webgate-rtp", action="append", default=[], metavar="KEY = VALUE",
                    help="a line for webgate's [rtp] table, e.g. 'read_interval_ms = 2' (repeatable)")
    ap.add_argument("--no-load-stop", action="store_true",
                    help="go on ramping when the callers' CPU is saturated (a machine shared with other work: "
                         "CPU 1's load is not the callers'; the step is still marked load-limited)")
    ap.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    ap.add_argument("--in-netns", default="", help=argparse.SUPPRESS)  # set by the re-run in the namespace
    args = ap.parse_args()
    args.ice_host = args.in_netns or "127.0.0.1"
    if args.quick:
        args.runs = 1
        args.steps, args.opus_steps, args.rtmp_steps = "10,40", "10,20", "5"
        args.window = 5.0
        args.idle_window = min(args.idle_window, 5.0)
    if args.xcheck_runs is None:
        args.xcheck_runs = args.runs
    if not args.no_chromium:
        try:
            import selenium  # noqa: F401
        except ImportError:
            print("selenium is not installed (.venv/bin/pip install selenium): no Chromium cross-check", file=sys.stderr)
            args.no_chromium = True
        if not (shutil.which("chromedriver") and (shutil.which("chromium") or os.path.exists("/usr/lib/chromium/chromium"))):
            print("chromium / chromedriver missing (apt-get install chromium chromium-driver): no Chromium cross-check",
                  file=sys.stderr)
            args.no_chromium = True
    if args.no_janus is False and shutil.which("janus") is None:
        print("janus is not installed (apt-get install janus): running without it", file=sys.stderr)
        args.no_janus = True
    if not args.no_janus and not args.in_netns and (args.only == "" or {"janus", "xcheck"} & set(args.only.split(","))):
        if os.geteuid() != 0 or shutil.which("ip") is None:
            print("Janus needs the run's own network namespace (root and iproute2): running without it",
                  file=sys.stderr)
            args.no_janus = True
        else:
            return in_own_netns(sys.argv)
    busy = [p for p in (18080, 11935, 18088, 18188) if not port_free(p)]
    if busy:
        print(f"ports in use: {busy}; is another benchmark running?", file=sys.stderr)
        return 2
    scns = scenarios(args)
    xscns = xcheck_scenarios(args)
    b = Bench(args)
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args), "versions": versions(),
                               "runs": [], "setup_rate": [], "fixed": [], "xcheck": [],
                               "load_shape": b.load_shape()}

    def fresh(target: str, rtp: str = "") -> None:
        """Start a gateway; measure its CPU with 0 calls first (once per run and target)."""
        if target == "janus":
            b.start_janus()
        else:
            b.start_webgate(rtp=rtp)
        if args.idle_window > 0 and not any(f["target"] == target and f["run"] == run for f in results["fixed"]):
            f = b.measure_idle(target)
            f["run"] = run
            results["fixed"].append(f)
            print(f"[run {run + 1}] {target} with 0 calls: {f['idle_cpu_pct']:.2f} % of a core over {f['window_s']:.0f} s",
                  flush=True)

    run = 0
    try:
        if args.idle_window > 0:
            results["clock"] = b.measure_clock()
            print(f"webgate media clock: {results['clock']}", flush=True)
        b.start_farend()
        for run in range(args.runs):
            steps: list[dict[str, Any]] = []
            results["runs"].append({"steps": steps})
            for s in scns:
                fresh(s.target, s.rtp)
                for n in s.steps:
                    f = b.run_step(s, n, args.rate, args.window)
                    steps.append(f)
                    print(f"[run {run + 1}] {s.key:<6} {n:>4} calls: ok {f['ok']}, cpu {f['cpu_pct']:.0f}%, "
                          f"loss {_f(None if f['loss_mean'] is None else 100 * f['loss_mean'], '{:.2f}')}%, "
                          f"jitter p50 {_f(f['jitter_p50_ms'])} ms, latency p99 {_f(f['latency_p99_ms'])} ms, "
                          f"load cpu {100 * f['load_cpu_busy']:.0f}%{'' if f['held'] else '  <- quality broke'}",
                          flush=True)
                    if not f["held"]:
                        break
                    if f["load_limited"] and not args.no_load_stop:
                        print(f"[run {run + 1}] the load generators' CPU is saturated: ramp stopped", flush=True)
                        break
                if s.target == "janus" and not args.no_setup_rate:
                    results["setup_rate"].append(b.setup_rate("janus", 60))
                b.stop_gateway(s.target)
            if not args.no_setup_rate:
                b.start_webgate()
                results["setup_rate"].append(b.setup_rate("webgate", 60))
                b.stop_gateway("webgate")
        if args.only and "watch" in args.only.split(","):   # the watched-video scenario (issue 14): named only
            import secrets

            results["watch"] = []
            key = secrets.token_hex(24)
            for run in range(args.runs):
                b.start_webgate(WATCH_CONFIG.format(key=key))
                for i, n in enumerate(int(x) for x in args.watch_steps.split(",") if x):
                    w = b.watch_step(n, key, args.idle_window if i == 0 else 0.0)   # idle: the gateway's fixed cost
                    w["run"] = run
                    results["watch"].append(w)
                    print(f"[run {run + 1}] watch  {n:>4} calls: {json.dumps(w)}", flush=True)
                b.stop_gateway("webgate")
        for xr in range(args.xcheck_runs if xscns else 0):
            run = xr
            for pair in xscns:
                fresh(pair[0].target)
                for s in (pair if xr % 2 == 0 else pair[::-1]):   # alternate which goes first
                    try:
                        f = b.run_step(s, args.xcheck_calls, args.rate, max(args.window, args.xcheck_window))
                    except RuntimeError as e:   # the browsers did not start / come up: say so, go on
                        print(f"[cross-check {xr + 1}] {s.label}: {e}", flush=True)
                        for p in [p for p in b.procs if p not in (b.farend, b.webgate, b.janus)]:
                            stop(p)
                            b.procs.remove(p)
                        continue
                    f["xrun"] = xr
                    results["xcheck"].append(f)
                    print(f"[cross-check {xr + 1}] {s.label}: ok {f['ok']}, cpu {f['cpu_pct']:.1f}%, "
                          f"calls up {_f(f.get('calls_up'))}, {_f(f.get('cpu_s_per_call_up_min_net'), '{:.3f}')} CPU-s/call-min net, "
                          f"RTCP/call-min {_f(f.get('rtcp_per_call_min'))}, RTP header {_f(f.get('rtp_header_bytes'))} B, "
                          f"errors {f['errors']}", flush=True)
                b.stop_gateway(pair[0].target)
        results["codec_cost"] = codec_costs()
    finally:
        b.stop_all()
        if args.keep:
            print(f"work directory kept: {b.work}", file=sys.stderr)
        else:
            shutil.rmtree(b.work, ignore_errors=True)
    text = report(results, scns)
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

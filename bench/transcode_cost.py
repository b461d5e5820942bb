"""Print the CPU cost of the issue-14 extras that do decode: ``[video] transcode`` (an RTMP
caller's Sorenson H.263 re-encoded to VP8 for WebRTC watchers, ``media/transcode.py``) and
supervisor audio (the call's two directions decoded and mixed, ``legs/monitor.py``).

    python bench/transcode_cost.py [--seconds S]

Transcode: ffmpeg makes S seconds of a moving test pattern as Sorenson FLV (25 fps, at 320x240
and 640x360); every tag is fed to ``FlvToVp8`` and the process CPU time per frame is reported with
the share of one core at 25 fps. Supervisor audio: a ``CallMonitor`` on a PCMU call fed G.711
payloads both ways, ticked every 20 ms of audio; CPU per 20 ms and the share of one core.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webgate.legs.monitor import CallMonitor
from webgate.media.codecs import get_codec, ulaw_encode
from webgate.media.tones import ToneGenerator
from webgate.media.transcode import FlvToVp8
from webgate.proto.flv import TAG_VIDEO, read_flv

FPS = 25


def sorenson(size: str, seconds: float) -> list[tuple[int, bytes]]:
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    data = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={FPS}",
         "-t", str(seconds), "-c:v", "flv1", "-b:v", "800k", "-g", str(FPS), "-f", "flv", "-"],
        check=True, capture_output=True, timeout=120,
    ).stdout
    _, tags = read_flv(data)
    return [(t.timestamp, t.data) for t in tags if t.tag_type == TAG_VIDEO]


def transcode_cost(size: str, seconds: float) -> tuple[int, float]:
    tags = sorenson(size, seconds)
    coder = FlvToVp8(800_000)
    t0 = time.process_time()
    out = sum(len(coder.feed(body, ts)) for ts, body in tags)
    cpu = time.process_time() - t0
    return out, cpu / max(1, out)


def monitor_cost(seconds: float) -> float:
    class Clock:
        def add_ticker(self, fn: Any) -> None: ...
        def remove_ticker(self, fn: Any) -> None: ...

    call = SimpleNamespace(session_id="0", monitor=None, stream=SimpleNamespace(codec=get_codec("PCMU")),
                           manager=SimpleNamespace(rtp_pool=SimpleNamespace(clock=Clock())))
    mon = CallMonitor(call, lambda pcm, rate: None)
    mon.start()
    a, b = ToneGenerator(660.0, 8000, 0.3), ToneGenerator(1000.0, 8000, 0.3)
    frames = int(seconds * 50)
    payloads = [(ulaw_encode(a.frame(20)), ulaw_encode(b.frame(20))) for _ in range(frames)]
    t0 = time.process_time()
    for i, (x, y) in enumerate(payloads):
        mon.web_payload(x)
        mon.sip_payload(y)
        mon.tick(i * 0.02)
    return (time.process_time() - t0) / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    for size in ("320x240", "640x360"):
        n, per = transcode_cost(size, args.seconds)
        print(f"transcode Sorenson->VP8 {size}: {n} frames, {per * 1e3:.2f} ms CPU/frame = {per * FPS * 100:.1f} % of a core at {FPS} fps")
    per = monitor_cost(args.seconds)
    print(f"supervisor audio (PCMU both ways, decode + 16 kHz mix): {per * 1e6:.0f} us CPU per 20 ms = {per * 50 * 100:.2f} % of a core")


if __name__ == "__main__":
    main()

"""What recording a G.711 call costs (issue 17; docs/performance.md "Call recording").

A small in-process scenario on the real code, no network: one packet-path PCMU call's
``RtpAudioStream`` relaying 50 packets/s each way (the far end's packets handed to
``on_payload``, the web caller's sent with ``send_payload``), with and without a recording
(``RecordingTap`` on the stream and a ``WavWriter`` flushed every second, as
``calls/recording.py`` does). Measured on this process, pinned to one CPU:

- the forwarding path: CPU time per relayed packet, both directions, recorded vs not (the tap
  only appends, after the send), and the relay's latency itself: a packet's entry into the
  stream to its relay (``on_payload`` / the RTP send), median and p99, recorded vs not;
- the flush: CPU time per second of call to decode, align and write it (off the forwarding path);
- CPU per recorded call: (per-packet extra x 100 packets/s + flush per second) as % of one core.

    .venv/bin/python bench/recording_cost.py [--seconds 60] [--calls 20] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from webgate.media.codecs.g711 import ulaw_encode
from webgate.media.recording.audio import RecordingTap
from webgate.media.recording.wav import WavWriter
from webgate.media.stream import RtpAudioStream
from webgate.media.tones import ToneGenerator
from webgate.proto.sdp import Codec, NegotiatedMedia

FAR = ("127.0.0.1", 40000)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Latency:
    """Entry into the stream -> the relay's send, per packet (perf_counter)."""

    def __init__(self) -> None:
        self.t_in = 0.0
        self.samples: list[float] = []

    def out(self, *_a: object) -> None:
        self.samples.append(time.perf_counter() - self.t_in)


def make_stream(lat: Latency | None = None) -> RtpAudioStream:
    out = lat.out if lat is not None else (lambda d, a: None)
    s = RtpAudioStream(out, lambda d, a: None, strict_source=False)
    s.configure(NegotiatedMedia(remote_address=FAR[0], remote_port=FAR[1], remote_rtcp_address=FAR[0], remote_rtcp_port=FAR[1] + 1,
                                codec=Codec("PCMU", 8000, payload_type=0), telephone_event=None, ptime=20,
                                direction="sendrecv", on_hold=False))
    # the relay toward the web side (its own cost is not ours)
    s.on_payload = (lambda payload, samples, pkt: lat.out()) if lat is not None else (lambda payload, samples, pkt: None)
    return s


def run(calls: int, seconds: int, record: bool, workdir: Path) -> dict[str, float]:
    gen = ToneGenerator(440, 8000, 0.3)
    payload = ulaw_encode(gen.frame())
    streams, taps, writers = [], [], []
    clock = Clock()
    lat = Latency()
    for i in range(calls):
        s = make_stream(lat if i == 0 else None)
        streams.append(s)
        if record:
            tap = RecordingTap(8000, lambda s=s: s.codec, clock=clock)
            s.recorder = tap
            taps.append(tap)
            writers.append(WavWriter(workdir / f"{i}-{time.monotonic_ns()}.wav", 8000))
    relay_cpu = 0.0
    flush_cpu = 0.0
    packets = 0
    for sec in range(seconds):
        t0 = time.process_time()
        for k in range(50):
            clock.t += 0.02
            seq = sec * 50 + k
            data = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 0x1234) + payload
            for s in streams:
                lat.t_in = time.perf_counter()
                s.datagram_received(data, FAR, clock.t)  # from SIP -> on_payload (the relay)
                lat.t_in = time.perf_counter()
                s.send_payload(payload, 160)  # from the web side -> toward SIP
                packets += 2
        relay_cpu += time.process_time() - t0
        if record:
            t1 = time.process_time()
            for tap, w in zip(taps, writers, strict=True):
                w.write(tap.take())
                w.flush()
            flush_cpu += time.process_time() - t1
    for w in writers:
        w.close()
    lat.samples.sort()
    return {
        "latency_us_median": 1e6 * lat.samples[len(lat.samples) // 2],
        "latency_us_p99": 1e6 * lat.samples[int(len(lat.samples) * 0.99)],
        "packets": packets,
        "relay_us_per_packet": 1e6 * relay_cpu / packets,
        "flush_ms_per_call_second": 1e3 * flush_cpu / (calls * seconds) if record else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60, help="seconds of call simulated")
    ap.add_argument("--calls", type=int, default=20, help="calls at once")
    ap.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: do not pin)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.cpu})
    with tempfile.TemporaryDirectory(prefix="webgate-rec-bench-") as d:
        run(2, 2, True, Path(d))  # warm-up (numpy, imports)
        off = run(a.calls, a.seconds, False, Path(d))
        on = run(a.calls, a.seconds, True, Path(d))
    extra_us = on["relay_us_per_packet"] - off["relay_us_per_packet"]
    per_call_pct = (extra_us * 100 / 1e6 + on["flush_ms_per_call_second"] / 1e3) * 100
    result = {
        "load": f"{a.calls} packet-path PCMU calls x {a.seconds} s simulated, 50 packets/s each way per call, one CPU",
        "relay_us_per_packet_unrecorded": round(off["relay_us_per_packet"], 2),
        "relay_us_per_packet_recorded": round(on["relay_us_per_packet"], 2),
        "relay_added_us_per_packet": round(extra_us, 2),
        "relay_latency_us_median_unrecorded": round(off["latency_us_median"], 2),
        "relay_latency_us_median_recorded": round(on["latency_us_median"], 2),
        "relay_latency_us_p99_unrecorded": round(off["latency_us_p99"], 2),
        "relay_latency_us_p99_recorded": round(on["latency_us_p99"], 2),
        "flush_ms_per_call_second": round(on["flush_ms_per_call_second"], 3),
        "cpu_percent_of_one_core_per_recorded_call": round(per_call_pct, 3),
    }
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

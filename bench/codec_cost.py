"""Print the CPU cost of the media frame path: µs per 20 ms frame.

    python bench/codec_cost.py [--frames N]

For each codec that can encode and decode: encode one 20 ms frame of a 1 kHz
tone and decode the resulting packet(s) (codecs with other frames, G.729's 10 ms
and G.723.1's 30 ms, are averaged per 20 ms of audio), and conceal one lost
20 ms packet (the codec's own concealment where it has one: G.729, AMR, Opus
with libopus; repeat-and-fade or silence otherwise).  AMR is measured with both
coder backends (the system libraries, the default, and PyAV's opencore).  Then the resampler
for the usual rate pairs.  Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webgate.media.audio import Resampler
from webgate.media.codecs import (
    Decoder,
    Encoder,
    available_codecs,
    create_decoder,
    create_encoder,
    get_codec,
)
from webgate.media.codecs.amr import AmrDecoder, AmrEncoder
from webgate.media.tones import ToneGenerator


def codec_cost(name: str, rate: int | None, frames: int, backend: str | None = None) -> tuple[float, float, float]:
    """(encode, decode, conceal) µs per 20 ms of audio."""
    info = get_codec(name, rate)
    if backend is not None:
        enc: Encoder = AmrEncoder(info, backend=backend)  # type: ignore[arg-type]
        dec: Decoder = AmrDecoder(info, backend=backend)  # type: ignore[arg-type]
    else:
        enc, dec = create_encoder(info), create_decoder(info)
    gen = ToneGenerator(1000.0, info.sample_rate, 0.4)
    pcm = [gen.frame() for _ in range(frames)]
    for f in pcm[:10]:  # warm up
        for p in enc.encode(f):
            dec.decode(p)
    t_enc = 0.0
    t_dec = 0.0
    for f in pcm:
        t0 = time.perf_counter()
        packets = enc.encode(f)
        t1 = time.perf_counter()
        for p in packets:
            dec.decode(p)
        t2 = time.perf_counter()
        t_enc += t1 - t0
        t_dec += t2 - t1
    n = info.sample_rate // 50
    t0 = time.perf_counter()
    lost = max(1, frames // 10)
    for _ in range(lost):
        dec.conceal(n)
    t_conceal = (time.perf_counter() - t0) / lost
    return t_enc / frames * 1e6, t_dec / frames * 1e6, t_conceal * 1e6


def resample_cost(src: int, dst: int, frames: int) -> float:
    r = Resampler(src, dst)
    frame = ToneGenerator(1000.0, src, 0.4).frame()
    for _ in range(10):
        r.resample(frame)
    t0 = time.perf_counter()
    for _ in range(frames):
        r.resample(frame)
    return (time.perf_counter() - t0) / frames * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    args = parser.parse_args()
    print(
        f"{'codec':<18}{'rate':>7}{'enc µs':>10}{'dec µs':>10}{'total µs':>10}{'PLC µs':>10}   per 20 ms frame"
    )
    rows: list[tuple[str, str, int | None, str | None]] = [
        (info.name, info.name, None, None) for info in available_codecs()
    ]
    rows += [("AMR (PyAV)", "AMR", None, "av"), ("AMR-WB (PyAV dec)", "AMR-WB", None, "av")]
    for label, name, rate, backend in rows:
        info = get_codec(name, rate)
        if not (info.can_encode and info.can_decode):
            print(f"{label:<18}{info.sample_rate:>7}   (decode-only here, skipped)")
            continue
        enc_us, dec_us, plc_us = codec_cost(name, rate, args.frames, backend)
        print(
            f"{label:<18}{info.sample_rate:>7}{enc_us:>10.1f}{dec_us:>10.1f}{enc_us + dec_us:>10.1f}{plc_us:>10.1f}"
        )
    print()
    print(f"{'resample':<21}{'µs/frame':>10}")
    for src, dst in (
        (8000, 48000),
        (48000, 8000),
        (16000, 48000),
        (48000, 16000),
        (8000, 16000),
        (16000, 8000),
        (44100, 48000),
    ):
        print(f"{src:>6} -> {dst:<11}{resample_cost(src, dst, args.frames):>10.1f}")


if __name__ == "__main__":
    main()

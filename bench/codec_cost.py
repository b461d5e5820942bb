"""Print the CPU cost of the media frame path: µs per 20 ms frame.

    python bench/codec_cost.py [--frames N]

For each codec that can encode and decode: encode one 20 ms frame of a 1 kHz
tone and decode the resulting packet(s).  Then the resampler for the usual
rate pairs.  Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webgate.media.audio import Resampler
from webgate.media.codecs import (
    available_codecs,
    create_decoder,
    create_encoder,
    get_codec,
)
from webgate.media.tones import ToneGenerator


def codec_cost(name: str, rate: int | None, frames: int) -> tuple[float, float]:
    info = get_codec(name, rate)
    enc = create_encoder(info)
    dec = create_decoder(info)
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
    return t_enc / frames * 1e6, t_dec / frames * 1e6


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
        f"{'codec':<14}{'rate':>7}{'enc µs':>10}{'dec µs':>10}{'total µs':>10}   per 20 ms frame"
    )
    for info in available_codecs():
        if not (info.can_encode and info.can_decode):
            print(f"{info.name:<14}{info.sample_rate:>7}   (decode-only here, skipped)")
            continue
        enc_us, dec_us = codec_cost(info.name, None, args.frames)
        print(
            f"{info.name:<14}{info.sample_rate:>7}{enc_us:>10.1f}{dec_us:>10.1f}{enc_us + dec_us:>10.1f}"
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

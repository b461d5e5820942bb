"""A small deterministic mutation loop (no coverage feedback): the engine of the in-suite short
run (tests/fuzz/test_fuzz_short.py) and the fallback when atheris is not installed.

Inputs come from the seed corpus, mutated libFuzzer-style (bit flips, interesting bytes and
integers, erase/insert/duplicate ranges, splices with another seed, tokens of the target's
format). The same seed number gives the same sequence of inputs on every machine."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x0D, 0x0A, 0x3A, 0x3B, 0x22, 0x5C, 0x25, 0x00]
INTERESTING_INTS = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
TOKENS = [
    b"\r\n", b"\r\n\r\n", b"Content-Length: ", b"Via: SIP/2.0/UDP ", b";received=", b";rport", b";maddr=", b"<sip:", b">;tag=",
    b"%", b"%00", b"%7F", b'"', b"\\", b"\t", b" ", b",", b";", b"=", b"[", b"]", b"::1", b"a=", b"m=audio ", b"c=IN IP4 ",
    b"a=rtpmap:", b"a=fmtp:", b"a=candidate:", b"{", b"}", b'"type":', b'"call"', b"[]", b"null", b"1e999", b"-0",
    b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x21\x12\xa4\x42", b"\x80", b"\xc8", b"\x11", b"\x0a", b"\x09",
    b"[[route]]", b"[sip]", b'= "', b"= 99999999999999999999", b"eyJ", b".",
]


@dataclass
class Result:
    target: str
    runs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    crashes: list[tuple[bytes, BaseException]] = field(default_factory=list)


def mutate(rng: random.Random, data: bytes, corpus: Sequence[bytes], max_len: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(9)
        n = len(b)
        if op == 0 and n:
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2 and n:
            i = rng.randrange(n)
            del b[i : i + rng.randint(1, 1 + min(64, n - i))]
        elif op == 3:
            i = rng.randrange(n + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4 and n:
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 256))
            k = rng.randrange(n + 1)
            b[k:k] = b[i:j] * rng.randint(1, 4)
        elif op == 5 and corpus:
            other = rng.choice(corpus)
            if other:
                i, j = rng.randrange(n + 1), rng.randrange(len(other))
                b[i:] = other[j:]
        elif op == 6:
            i = rng.randrange(n + 1)
            b[i:i] = rng.choice(TOKENS)
        elif op == 7 and n >= 4:
            i = rng.randrange(n - 3)
            size = rng.choice((1, 2, 4))
            v = rng.choice(INTERESTING_INTS) & ((1 << (8 * size)) - 1)
            b[i : i + size] = v.to_bytes(size, rng.choice(("big", "little")))
        elif op == 8 and n:
            i = rng.randrange(n)
            b[i] = ord(rng.choice("0123456789"))
    return bytes(b[:max_len])


def load_corpus(*dirs: Path) -> list[bytes]:
    out: list[bytes] = []
    for d in dirs:
        if d.is_dir():
            out += [p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()]
    return out or [b""]


def run(
    name: str,
    target: Callable[[bytes], None],
    corpus: Sequence[bytes],
    runs: int,
    seed: int = 0,
    max_len: int = 8192,
    time_bound: float = 5.0,
    crash_dir: Path | None = None,
    stop_on_crash: bool = True,
) -> Result:
    """Run ``runs`` inputs (the seeds first, then mutations). An exception from ``target`` is a
    crash; an input slower than ``time_bound`` seconds counts as one too."""
    rng = random.Random(seed)
    res = Result(name)
    pool = list(corpus)
    t_start = time.perf_counter()
    for i in range(runs):
        data = pool[i] if i < len(pool) else mutate(rng, rng.choice(pool), pool, max_len)
        t0 = time.perf_counter()
        try:
            target(data)
            took = time.perf_counter() - t0
            if took > time_bound:
                raise TimeoutError(f"one input took {took:.2f} s (bound {time_bound} s)")
        except Exception as e:  # noqa: BLE001 - every escape is a finding
            res.crashes.append((data, e))
            if crash_dir is not None:
                crash_dir.mkdir(parents=True, exist_ok=True)
                (crash_dir / f"crash-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
            if stop_on_crash:
                res.runs = i + 1
                break
        else:
            res.slowest = max(res.slowest, took)
            # keep a few mutants as new parents (no coverage signal: a small bounded sample)
            if i >= len(corpus) and rng.random() < 0.01 and len(pool) < 4 * len(corpus) + 64:
                pool.append(data)
        res.runs = i + 1
    res.seconds = time.perf_counter() - t_start
    return res

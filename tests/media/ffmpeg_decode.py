"""Decode RTP payloads with Debian's ffmpeg (/usr/bin/ffmpeg, not PyAV's bundled FFmpeg), so an
encoder bug cannot hide behind webgate's own decoder: the payloads are written as the raw file
format ffmpeg reads (G.729, G.726, G.723.1 raw streams; AMR/AMR-WB RFC 4867 §5 storage files)
by the code here, which shares nothing with webgate's packers.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tests import require

FFMPEG = "/usr/bin/ffmpeg"

NB_BITS = (95, 103, 118, 134, 148, 159, 204, 244, 39)
WB_BITS = (132, 177, 253, 285, 317, 365, 397, 461, 477, 40)


def need_ffmpeg() -> str:
    """The path of Debian's ffmpeg (skips, or fails under WEBGATE_REQUIRE_PEERS, without it)."""
    require.require_program("ffmpeg", "ffmpeg")
    exe = FFMPEG if Path(FFMPEG).is_file() else shutil.which("ffmpeg")
    assert exe is not None
    return exe


def amr_storage(payloads: Iterable[bytes], *, wideband: bool, octet_align: bool) -> bytes:
    """RFC 4867 RTP payloads -> an RFC 4867 §5 storage file (magic, then each frame with its
    header octet). Written from the RFC's figures, independently of webgate.media.codecs.amr."""
    table = WB_BITS if wideband else NB_BITS
    out = bytearray(b"#!AMR-WB\n" if wideband else b"#!AMR\n")
    for p in payloads:
        bits = "".join(f"{b:08b}" for b in p)
        pos = 4 if not octet_align else 8  # CMR (+ 4 reserved bits when octet-aligned)
        toc = []
        while True:
            # F(1) FT(4) Q(1), padded to an octet when octet-aligned
            f, ft, q = bits[pos] == "1", int(bits[pos + 1 : pos + 5], 2), bits[pos + 5]
            pos += 8 if octet_align else 6
            toc.append((ft, q))
            if not f:
                break
        for ft, q in toc:
            n = table[ft] if ft < len(table) else 0
            speech = bits[pos : pos + n]
            pos += n
            if octet_align:
                pos += -n % 8
            speech += "0" * (-len(speech) % 8)
            out.append((ft << 3) | (4 if q == "1" else 0))
            out += bytes(int(speech[i : i + 8], 2) for i in range(0, len(speech), 8))
    return bytes(out)


def ffmpeg_decode(data: bytes, fmt: list[str], rate: int, workdir: Path, name: str = "in") -> np.ndarray:
    """Run Debian's ffmpeg on ``data`` (input options ``fmt``) and return mono int16 at ``rate``."""
    exe = need_ffmpeg()
    src = workdir / f"{name}.bin"
    dst = workdir / f"{name}.raw"
    src.write_bytes(data)
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-y", *fmt, "-i", str(src),
           "-f", "s16le", "-acodec", "pcm_s16le", "-ac", "1", "-ar", str(rate), str(dst)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"ffmpeg failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}"
    return np.frombuffer(dst.read_bytes(), dtype="<i2").astype(np.int16)


def decode_payloads(codec: str, payloads: list[bytes], workdir: Path, fmtp: str | None = None) -> tuple[np.ndarray, int]:
    """Payloads of ``codec`` (SDP name) decoded by Debian's ffmpeg -> (PCM, rate)."""
    name = codec.upper()
    octet = "octet-align=1" in (fmtp or "").replace(" ", "")
    if name == "G729":
        return ffmpeg_decode(b"".join(payloads), ["-f", "g729", "-c:a", "g729"], 8000, workdir, "g729"), 8000
    if name == "G726-32":  # RFC 3551: first codeword in the low nibble = FFmpeg's g726le
        fmt = ["-f", "g726le", "-code_size", "4", "-sample_rate", "8000", "-c:a", "g726le"]
        return ffmpeg_decode(b"".join(payloads), fmt, 8000, workdir, "g726le"), 8000
    if name == "AAL2-G726-32":  # I.366.2: first codeword in the high nibble = FFmpeg's g726
        fmt = ["-f", "g726", "-code_size", "4", "-sample_rate", "8000", "-c:a", "g726"]
        return ffmpeg_decode(b"".join(payloads), fmt, 8000, workdir, "g726"), 8000
    if name == "G723":
        return ffmpeg_decode(b"".join(payloads), ["-f", "g723_1", "-c:a", "g723_1"], 8000, workdir, "g723"), 8000
    if name == "AMR":
        data = amr_storage(payloads, wideband=False, octet_align=octet)
        return ffmpeg_decode(data, ["-f", "amr", "-c:a", "amrnb"], 8000, workdir, "amrnb"), 8000
    if name == "AMR-WB":
        data = amr_storage(payloads, wideband=True, octet_align=octet)
        return ffmpeg_decode(data, ["-f", "amr", "-c:a", "amrwb"], 16000, workdir, "amrwb"), 16000
    raise ValueError(f"no ffmpeg recipe for {codec}")

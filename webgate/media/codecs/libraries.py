"""The system codec libraries webgate loads at run time through ctypes (never vendored, never
linked at build time): where each is looked for (``[codecs]`` ``*_library`` keys, a soname or a
path), whether it loads, and the Debian package that provides it.

:func:`set_library_paths` is called once at start-up with the configuration's values;
:func:`load` returns the loaded library (cached) or None. A library that is absent (or whose
configured path is wrong) makes the codecs needing it unavailable: the registry reports them as
unable to encode, the call layer does not offer them and ``check-config`` names the package
(:func:`missing_message`).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LIBRARIES",
    "Library",
    "available",
    "library_path",
    "load",
    "missing_message",
    "probe",
    "set_library_paths",
]


@dataclass(frozen=True)
class Library:
    """One system library: its configuration key, default soname, Debian package and the
    symbols that must be there for webgate to use it."""

    key: str
    name: str  # as in messages: "libbcg729"
    soname: str
    package: str
    symbols: tuple[str, ...]


LIBRARIES: dict[str, Library] = {
    lib.key: lib
    for lib in (
        Library(
            "bcg729",
            "libbcg729",
            "libbcg729.so.0",
            "libbcg729-0",
            (
                "initBcg729EncoderChannel",
                "closeBcg729EncoderChannel",
                "bcg729Encoder",
                "initBcg729DecoderChannel",
                "closeBcg729DecoderChannel",
                "bcg729Decoder",
            ),
        ),
        Library(
            "amrnb",
            "libopencore-amrnb",
            "libopencore-amrnb.so.0",
            "libopencore-amrnb0",
            (
                "Encoder_Interface_init",
                "Encoder_Interface_exit",
                "Encoder_Interface_Encode",
                "Decoder_Interface_init",
                "Decoder_Interface_exit",
                "Decoder_Interface_Decode",
            ),
        ),
        Library(
            "amrwb",
            "libopencore-amrwb",
            "libopencore-amrwb.so.0",
            "libopencore-amrwb0",
            ("D_IF_init", "D_IF_exit", "D_IF_decode"),
        ),
        Library(
            "amrwbenc",
            "libvo-amrwbenc",
            "libvo-amrwbenc.so.0",
            "libvo-amrwbenc0",
            ("E_IF_init", "E_IF_exit", "E_IF_encode"),
        ),
        Library(
            "spandsp",
            "libspandsp",
            "libspandsp.so.2",
            "libspandsp2",
            ("g726_init", "g726_free", "g726_encode"),
        ),
        Library(
            "opus",
            "libopus",
            "libopus.so.0",
            "libopus0",
            ("opus_decoder_create", "opus_decoder_destroy", "opus_decode"),
        ),
    )
}

_lock = threading.Lock()
_paths: dict[str, str] = {}
_loaded: dict[str, ctypes.CDLL | None] = {}


def set_library_paths(paths: Mapping[str, str]) -> None:
    """Where to look for each library (``{"bcg729": "/opt/lib/libbcg729.so.0"}``); keys not
    given keep their default soname, ``""`` disables the library. Forgets what was loaded."""
    unknown = set(paths) - set(LIBRARIES)
    if unknown:
        raise ValueError(f"unknown codec libraries: {', '.join(sorted(unknown))}")
    with _lock:
        _paths.clear()
        _paths.update(paths)
        _loaded.clear()


def library_path(key: str) -> str:
    """The soname or path the library ``key`` is looked for at."""
    return _paths.get(key, LIBRARIES[key].soname)


def probe(key: str, path: str | None = None) -> ctypes.CDLL | None:
    """Load the library ``key`` from ``path`` (default: its configured one), checking its
    symbols; None if it is absent, disabled (``""``) or not the expected library."""
    lib = LIBRARIES[key]
    where = library_path(key) if path is None else path
    if not where:
        return None
    try:
        handle = ctypes.CDLL(where)
    except OSError:
        return None
    for symbol in lib.symbols:
        if not hasattr(handle, symbol):
            return None
    return handle


def load(key: str) -> ctypes.CDLL | None:
    """The library ``key`` from its configured path, loaded once (None if it cannot be)."""
    with _lock:
        if key in _loaded:
            return _loaded[key]
    handle = probe(key)
    with _lock:
        _loaded.setdefault(key, handle)
        return _loaded[key]


def available(key: str) -> bool:
    """True if the library ``key`` loads from its configured path."""
    return load(key) is not None


def missing_message(codec: str, key: str) -> str:
    """``codec G729 needs libbcg729 (apt install libbcg729-0)``."""
    lib = LIBRARIES[key]
    return f"codec {codec} needs {lib.name} (apt install {lib.package})"

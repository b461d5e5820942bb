"""The cffi builder of :mod:`webgate.native._relay` (out-of-line API mode).

Built by ``pip install .`` / ``pip install -e .`` through setup.py's ``cffi_modules``; by hand::

    python webgate/native/_build_relay.py      # writes webgate/native/_relay*.so in place
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _cdef() -> str:
    """relay.h without its preprocessor lines (cffi's cdef takes plain declarations)."""
    text = (HERE / "relay.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    consts = re.findall(r"#define (WG_\w+) (\d+)", (HERE / "relay.h").read_text())
    return "\n".join(lines) + "\n" + "\n".join(f"#define {name} {value}" for name, value in consts) + "\n"


def _rel(p: Path) -> str:
    """A path relative to the working directory when under it (setuptools wants relative sources)."""
    try:
        return os.path.relpath(p)
    except ValueError:  # another drive
        return str(p)


def _set_source(ffi: FFI, absolute: bool) -> None:
    ffi.set_source(
        "webgate.native._relay",
        '#include "relay.h"',
        sources=[str(HERE / "relay.c") if absolute else _rel(HERE / "relay.c")],
        include_dirs=[str(HERE)],
        extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        libraries=["m"],
        # without a compiler (or Python.h) pip install goes on without the module: available() is False
        optional=True,
    )


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
_set_source(ffibuilder, absolute=False)

if __name__ == "__main__":  # the same file as pip install -e leaves (cffi modules use the limited API)
    import shutil
    import tempfile

    ffibuilder = FFI()
    ffibuilder.cdef(_cdef())
    _set_source(ffibuilder, absolute=True)
    with tempfile.TemporaryDirectory() as tmp:
        built = ffibuilder.compile(tmpdir=tmp, verbose=False)
        for old in HERE.glob("_relay*.so"):
            old.unlink()
        shutil.copy(built, HERE / "_relay.abi3.so")

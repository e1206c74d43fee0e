"""cffi build script (API mode) for turso_dbapi's native core.

Each ``*.h`` below is both a real C header (included by its ``.c``) and the cdef: the
text between ``/* cdef-begin */`` and ``/* cdef-end */`` is handed to cffi verbatim, so
the declarations Python sees can never drift from the ones the C compiler sees.

No SQLite headers are needed: the VFS declares the few SQLite structs it uses itself,
and the built module links only libc.
"""

from __future__ import annotations

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

# Order matters only for readability; each header is self-contained.
MODULES = ["native", "checksum", "wal", "wal_index", "pagestore", "vfs", "frames", "txn"]

_CDEF_RE = re.compile(r"/\* cdef-begin \*/(.*?)/\* cdef-end \*/", re.S)


def cdef_of(header_text: str) -> str:
    """Return the cffi declarations embedded in a header (pure function, tested)."""
    parts = _CDEF_RE.findall(header_text)
    if not parts:
        raise ValueError("header has no /* cdef-begin */ ... /* cdef-end */ block")
    return "\n".join(parts)


def _read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def _relpath(name: str) -> str:
    # setuptools wants source paths relative to the project root (the cwd of setup.py).
    return os.path.relpath(os.path.join(HERE, name))


ffi = FFI()
ffi.cdef("\n".join(cdef_of(_read(m + ".h")) for m in MODULES))
ffi.set_source(
    "turso_dbapi._native._tdb_native",
    "\n".join(f'#include "{m}.h"' for m in MODULES),
    sources=[_relpath(m + ".c") for m in MODULES],
    depends=[_relpath(m + ".h") for m in MODULES],  # a header change must rebuild
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-std=gnu99", "-fvisibility=hidden", "-Wall"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)

"""Loader of the compiled core (``_tdb_native``), built by ``_ffi_build.py``.

``lib``/``ffi`` are None when the extension is not built (e.g. a source checkout
without a compiler); callers then use the pure-Python reference in ``_reference``.
"""

from __future__ import annotations

from typing import Any

NATIVE_VERSION = 12  # must equal TDB_NATIVE_VERSION in native.h

ffi: Any = None
lib: Any = None
import_error: Exception | None = None

try:
    from ._tdb_native import ffi, lib  # type: ignore[no-redef]  # noqa: F401 - re-exported
except ImportError as exc:  # pragma: no cover - exercised only without a build
    import_error = exc
else:
    if lib.tdb_native_version() != NATIVE_VERSION:
        raise ImportError(
            f"turso_dbapi native core is stale: built version {lib.tdb_native_version()}, "
            f"expected {NATIVE_VERSION}; rebuild with 'pip install .'"
        )

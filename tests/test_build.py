"""The build knobs: cdef extraction from headers, and the stale-build version check."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from turso_dbapi import _native
from turso_dbapi._native import _ffi_build

NATIVE_DIR = Path(_native.__file__).parent


def test_cdef_of_extracts_only_the_marked_block() -> None:
    header = "#include <x.h>\n/* cdef-begin */\nint f(void);\n/* cdef-end */\nstatic int g;\n"
    assert _ffi_build.cdef_of(header).strip() == "int f(void);"


def test_cdef_of_joins_several_blocks() -> None:
    header = "/* cdef-begin */int a;/* cdef-end */ junk /* cdef-begin */int b;/* cdef-end */"
    assert _ffi_build.cdef_of(header) == "int a;\nint b;"


def test_cdef_of_rejects_a_header_without_markers() -> None:
    with pytest.raises(ValueError, match="no /\\* cdef-begin \\*/"):
        _ffi_build.cdef_of("int f(void);")


@pytest.mark.parametrize("module", _ffi_build.MODULES)
def test_every_module_has_header_source_and_spec(module: str) -> None:
    header = (NATIVE_DIR / f"{module}.h").read_text()
    source = (NATIVE_DIR / f"{module}.c").read_text()
    assert _ffi_build.cdef_of(header).strip()
    assert header.startswith("/*")  # the header comment is the spec
    assert f'#include "{module}.h"' in source


def test_the_native_core_is_built() -> None:
    # The tests run against an installed package: a missing core is a failure, not a skip.
    assert _native.lib is not None, f"native core not built: {_native.import_error}"


def test_every_declared_function_is_in_the_built_module() -> None:
    assert _native.lib is not None, f"native core not built: {_native.import_error}"
    for module in _ffi_build.MODULES:
        cdef = _ffi_build.cdef_of((NATIVE_DIR / f"{module}.h").read_text())
        for name in re.findall(r"\b(tdb_\w+)\s*\(", cdef):
            assert hasattr(_native.lib, name), f"{module}.h declares {name}, the build lacks it"


def test_python_and_c_versions_agree() -> None:
    header = (NATIVE_DIR / "native.h").read_text()
    c_version = int(re.search(r"#define TDB_NATIVE_VERSION (\d+)", header).group(1))
    assert c_version == _native.NATIVE_VERSION
    if _native.lib is not None:
        assert _native.lib.tdb_native_version() == c_version


def _fake_package(tmp_path: Path, name: str, built_version: int | None) -> None:
    """A copy of _native/__init__.py next to a stand-in _tdb_native (or none: not built)."""
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text((NATIVE_DIR / "__init__.py").read_text())
    if built_version is not None:
        (pkg / "_tdb_native.py").write_text(
            "class _Lib:\n"
            f"    def tdb_native_version(self):\n        return {built_version}\n"
            "lib = _Lib()\nffi = object()\n"
        )


def _import(tmp_path: Path, name: str):
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
        sys.modules.pop(name + "._tdb_native", None)


def test_stale_build_fails_loudly(tmp_path: Path) -> None:
    _fake_package(tmp_path, "tdb_stale_pkg", _native.NATIVE_VERSION + 1)
    with pytest.raises(ImportError, match="stale"):
        _import(tmp_path, "tdb_stale_pkg")


def test_current_build_loads(tmp_path: Path) -> None:
    _fake_package(tmp_path, "tdb_current_pkg", _native.NATIVE_VERSION)
    mod = _import(tmp_path, "tdb_current_pkg")
    assert mod.lib is not None and mod.import_error is None


def test_missing_build_leaves_lib_none(tmp_path: Path) -> None:
    _fake_package(tmp_path, "tdb_unbuilt_pkg", None)
    mod = _import(tmp_path, "tdb_unbuilt_pkg")
    assert mod.lib is None and mod.ffi is None and isinstance(mod.import_error, ImportError)

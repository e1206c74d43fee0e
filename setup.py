# cffi_modules is a setup() keyword, so it cannot live in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["turso_dbapi/_native/_ffi_build.py:ffi"])

# cffi_modules is a setup() keyword, so it cannot live in pyproject.toml.
from setuptools import setup
from setuptools.command.build_ext import build_ext


class build_ext_and_place_in_checkout(build_ext):
    """Also put the compiled core beside its sources when building from a checkout.

    `python -m turso_dbapi.demo` run at the root of a clone imports the checkout (the
    current directory comes first on sys.path), not the installed copy; without the
    compiled core there, `pip install .` would succeed and the next command fail. Copying
    it back (what `build_ext --inplace` does) makes the checkout importable too. Best
    effort: a read-only source tree (an sdist unpacked by pip, say) keeps working without.
    """

    def run(self) -> None:
        super().run()
        if self.inplace:
            return
        try:
            self.copy_extensions_to_source()
        except OSError as exc:  # e.g. a read-only checkout
            self.announce(f"not copying the compiled core into the source tree: {exc}", level=2)


setup(
    cffi_modules=["turso_dbapi/_native/_ffi_build.py:ffi"],
    cmdclass={"build_ext": build_ext_and_place_in_checkout},
)

"""Only the compiled part of the build; everything else is in pyproject.toml.

The extensions are optional: each one that cannot be built (no C compiler, a missing header) is
skipped with one line saying so, and the engine runs its pure Python stand-in instead
(``core/fallback/``, chosen by ``core/compiled.py``).
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FLAGS = ["-O3", "-std=c11"]
HEADERS = ["core/arrow.h", "core/column.h", "core/pool.h"]  # a change to any rebuilds the modules


class OptionalBuildExt(build_ext):
    """``build_ext`` that skips an extension it cannot compile or link, instead of failing the install."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self._failed: set[str] = set()

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001  (no usable compiler at all fails here, before any extension)
            self._skipped("the compiled modules", exc)
            self.extensions = []  # nothing to copy in place or to list as built

    def build_extensions(self) -> None:
        super().build_extensions()
        # What comes after (copying in place, an editable install's list of outputs) sees only what was built.
        self.extensions = [ext for ext in self.extensions if ext.name not in self._failed]

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001  (CompileError, LinkError, a missing compiler: all alike)
            self._failed.add(ext.name)
            self._skipped(ext.name, exc)

    @staticmethod
    def _skipped(what: str, exc: Exception) -> None:
        # One line: the compiler's command line, which the error message repeats, is in the output above it.
        detail = str(exc).strip()
        reason = type(exc).__name__ + (f": {detail}" if detail and len(detail) < 100 and "\n" not in detail else "")
        print(f"warning: {what} not built ({reason}): the engine will use its pure Python path, "
              f"which is slower", file=sys.stderr)


setup(
    cmdclass={"build_ext": OptionalBuildExt},
    ext_modules=[
        Extension("core._scan", ["core/_scan.c"], depends=HEADERS, extra_compile_args=FLAGS),
        Extension("core._tally", ["core/_tally.c"], depends=HEADERS, extra_compile_args=FLAGS),
        Extension("core._count", ["core/_count.c"], depends=HEADERS, extra_compile_args=FLAGS),
    ],
)

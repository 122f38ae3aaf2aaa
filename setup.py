"""Only the compiled part of the build; everything else is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O3", "-std=c11"]

setup(ext_modules=[
    Extension("core._scan", ["core/_scan.c"], depends=["core/arrow.h"], extra_compile_args=FLAGS),
    Extension("core._tally", ["core/_tally.c"], depends=["core/arrow.h"], extra_compile_args=FLAGS),
])

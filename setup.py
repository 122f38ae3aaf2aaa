"""Only the compiled part of the build; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("core._scan", ["core/_scan.c"], extra_compile_args=["-O3", "-std=c11"])])

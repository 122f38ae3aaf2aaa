"""Pure Python stand-ins for the compiled modules: the same functions with the same results, slower.

``core.compiled.load`` picks ``core.fallback.<name>`` when ``core.<name>`` (built from
``core/<name>.c``) is not built, is a stale build, or ``OMP_NO_COMPILED=1`` is set. Each stand-in
has the ``VERSION`` of the C code it follows, and does the work with Polars and numpy, a batch at
a time; ``tests/test_fallback.py`` checks both give the same results on any input.
"""

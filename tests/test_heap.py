"""Giving glibc's free heap back to the system near the memory cap (``core.budget.HeapTrimmer``)."""

from __future__ import annotations

import ctypes

import pytest

from core import budget

MIB = budget.MIB
BLOCK = 128 * 1024  # below the mmap threshold (256 KiB): from the heap

pytestmark = pytest.mark.skipif(budget._malloc_trim() is None, reason="not glibc: there is nothing to trim")


@pytest.fixture
def fragmented_heap():
    """200 MB of heap made resident and freed, but for a last block that keeps the heap from shrinking."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    budget.return_freed_buffers(4 * MIB)  # as a pipeline sets it
    blocks = [libc.malloc(BLOCK) for _ in range(1600)]
    assert all(blocks)
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)
    for block in blocks[:-1]:
        libc.free(block)
    yield
    libc.free(blocks[-1])


def test_below_its_threshold_the_trimmer_leaves_the_heap_alone(fragmented_heap):
    before = budget.resident_bytes()
    trimmer = budget.HeapTrimmer(trim_above=before + 1024 * MIB)
    trimmer.check()
    assert trimmer.trims == 0
    assert budget.resident_bytes() > before - 32 * MIB


def test_past_its_threshold_the_trimmer_gives_the_free_heap_back_then_waits_for_growth(fragmented_heap):
    before = budget.resident_bytes()
    trimmer = budget.HeapTrimmer(trim_above=before - 100 * MIB)
    trimmer.check()
    after = budget.resident_bytes()
    assert trimmer.trims == 1
    assert after < before - 150 * MIB, (before >> 20, after >> 20)
    trimmer.check()  # nothing grew since: no second trim
    assert trimmer.trims == 1


def test_the_trimming_threshold_follows_the_cap_between_the_base_process_and_half_of_it():
    # Runs of every length peak alike only if the free heap is given back before the cap nears
    # (docs/scaling.md): past the base process, under half the cap, at any cap.
    for cap in (400, 500, 2000):
        above = budget.HeapTrimmer.for_cap(cap).trim_above
        assert budget.BASE_MB * MIB < above <= cap * MIB // 2, (cap, above >> 20)
    assert budget.HeapTrimmer.for_cap(1000).trim_above == 2 * budget.HeapTrimmer.for_cap(500).trim_above
    # A small cap trims from the base process on, not below it (where every check would trim).
    assert budget.HeapTrimmer.for_cap(200).trim_above == budget.BASE_MB * MIB

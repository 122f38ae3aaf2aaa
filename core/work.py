"""Chunk work: a chunk of input in, a partial state out.

``chunk_work`` is a plain function of plain values. It reads nothing of the engine's mutable
state, so an executor (``core.executor``) may run it on a thread, or elsewhere once its inputs
travel there; the committer (``core.committer``) merges what it returns, in read order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from core import guard
from core.parse import SAMPLE_CHARS, Batch, Chunk, combine, parse_chunk
from core.redact import Redactor
from core.rules import Rule
from core.state import RunState
from core.stats import FileStats


@dataclass(frozen=True)
class WorkSpec:
    """What chunk work needs besides its chunks: the rules as configured (each gives a fresh
    partial, ``Rule.empty``), the ones failed so far (skipped), and how lines are parsed."""

    rules: tuple[Rule, ...]
    failed: frozenset[str]
    columns: frozenset[str]
    max_line_bytes: int
    malformed_samples: int
    redactor: Redactor
    #: "Now" for ``max_future`` (microseconds since the epoch): taken once per pass, where the work
    #: is planned, so that every chunk of it is judged by the same clock.
    now: int


@dataclass
class ChunkOutcome:
    """What chunk work hands back: its partial state (with its rule failures) and the line counts
    of each of its chunks, in their order."""

    partial: RunState
    stats: list[FileStats]


def chunk_work(spec: WorkSpec, chunks: list[tuple[Chunk, bool]]) -> ChunkOutcome:
    """Parse the chunks (one file's, or several small files') and fold their records into a fresh partial state.

    Each chunk comes with whether its file still wants malformed lines as samples. The rules
    that take several files at once (``Rule.many_files``) get one batch of all of them; the
    others one batch per file.
    """
    started = time.perf_counter()
    parsed = [_parse(spec, chunk, samples) for chunk, samples in chunks]
    where = chunks[0][0].path + (f" and {len(chunks) - 1} more" if len(chunks) > 1 else "")
    outcome = ChunkOutcome(RunState.empty(list(spec.rules), spec.failed, where), [stats for _, stats in parsed])
    batches = [batch for batch, stats in parsed if stats.lines]
    if batches:
        batch, partial = combine(batches), outcome.partial
        for rule in partial.rules.values():
            if rule.name in spec.failed:
                continue
            for one in ((batch,) if rule.many_files else batch.per_file()):
                guard.call_rule(partial.failures, rule, "update", one.path or where, rule.update, one)
    seconds = (time.perf_counter() - started) / len(chunks)
    for stats in outcome.stats:
        stats.seconds = seconds
    return outcome


def _parse(spec: WorkSpec, chunk: Chunk, samples: bool) -> tuple[Batch, FileStats]:
    batch, stats = parse_chunk(chunk, spec.max_line_bytes, spec.malformed_samples, spec.columns, samples, spec.now)
    if stats.samples:  # masked before they are kept anywhere, the checkpoint included
        stats.samples = [replace(s, text=spec.redactor.redact(s.text, cut=len(s.text) >= SAMPLE_CHARS))
                         for s in stats.samples]
    return batch, stats

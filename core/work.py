"""Chunk work: a chunk of input in, a partial state out.

Two plain functions of plain values, which read nothing of the engine's mutable state:

- ``chunk_work`` takes chunks the pipeline has read (threads of this process: the bytes are
  at hand, and reading them ahead keeps the disk busy);
- ``range_work`` takes only the description of a byte range of an input (``RangeTask``) and
  reads it itself: what a worker in another process or on another machine is sent. It numbers
  the lines of a range that does not start its file from 1 (it cannot know how many came
  before); the committer moves them to the file's numbers, in read order (``Rule.shift_lines``).

An executor (``core.executor``) runs either; the committer (``core.committer``) merges what they
return, in read order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from core import guard
from core.parse import SAMPLE_CHARS, Batch, Chunk, combine, first_lines, parse_chunk
from core.reader import ChunkReader
from core.redact import Redactor
from core.rules import Rule
from core.sources import Source
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
    #: Records further than this (microseconds) from the lines around them have stray clocks
    #: (``core.parse.stray_rows``); None: none has.
    stray_us: int | None = None


@dataclass(frozen=True)
class RangeTask:
    """A byte range of one input, as a worker reads it itself: with a ``WorkSpec``, all it needs.

    The range holds the lines that start in bytes ``start`` to ``end`` (None: to the input's
    end), so that ranges cut anywhere share every line out once. ``first_line`` is the number
    of its first line where the planner knows it (a file's first range), None where it does not.
    """

    name: str
    path: str
    source: Source
    start: int
    end: int | None
    first_line: int | None
    chunk_bytes: int
    #: Count a last line without a newline (a batch run); otherwise it waits for its newline.
    final: bool
    #: The first range of a file whose last counted line had no newline: pass over what was added to it.
    skip_partial: bool = False
    #: Whether the file still wants malformed lines as samples.
    samples: bool = True


@dataclass(frozen=True)
class RangeEnd:
    """Where a range's reading stopped, for the ledger: the offset after its last line, whether that
    line has no newline, and the hash of the bytes before it (None: the ledger reads them)."""

    end: int
    open_tail: bool
    before: str | None


@dataclass
class ChunkOutcome:
    """What chunk work hands back: its partial state (with its rule failures) and the line counts
    of each of its chunks, in their order.

    Range work also says where each range ended (``ends``; None where it read no line), whether
    its line numbers are relative to the range (``relative``), and why the input could not be
    read to the range's end (``error``: its lines before that are in the partial).
    """

    partial: RunState
    stats: list[FileStats]
    ends: list[RangeEnd | None] | None = None
    relative: bool = False
    error: str | None = None
    errno: int | None = field(default=None, repr=False)


def chunk_work(spec: WorkSpec, chunks: list[tuple[Chunk, bool]]) -> ChunkOutcome:
    """Parse the chunks (one file's, or several small files') and fold their records into a fresh partial state.

    Each chunk comes with whether its file still wants malformed lines as samples. The rules
    that take several files at once (``Rule.many_files``) get one batch of all of them; the
    others one batch per file.
    """
    started = time.perf_counter()
    where = chunks[0][0].path + (f" and {len(chunks) - 1} more" if len(chunks) > 1 else "")
    parsed = []
    for index, (chunk, samples) in enumerate(chunks):
        parsed.append(_parse(spec, chunk, samples))
        # Parsed, its bytes are not needed: the list is the one the executor holds until the
        # chunk is merged (a seal included), so it lets go of them here.
        chunks[index] = (chunk.place(), samples)
    del chunk
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


def range_work(spec: WorkSpec, task: RangeTask) -> ChunkOutcome:
    """Read a byte range of an input (``task``) and fold its records into a fresh partial state.

    It opens the input itself, through its source, so it may run where the pipeline is not.
    The range is parsed a chunk (``task.chunk_bytes``) at a time, each chunk folded in before
    the next is read. A read that fails ends the range: the lines before it are kept, and
    ``error`` says why.
    """
    started = time.perf_counter()
    outcome = ChunkOutcome(RunState.empty(list(spec.rules), spec.failed, task.name),
                           [FileStats(task.name, spec.malformed_samples)], ends=[None],
                           relative=task.first_line is None)
    stats = outcome.stats[0]
    reading = _range_chunks(task, spec.max_line_bytes)
    try:
        for chunk in reading:
            batch, part = _parse(spec, chunk, task.samples)
            if outcome.relative:
                batch = replace(batch, relative=True)
            stats.merge(part)
            if part.lines:
                for rule in outcome.partial.rules.values():
                    if rule.name not in spec.failed:
                        guard.call_rule(outcome.partial.failures, rule, "update", task.name, rule.update, batch)
            outcome.ends[0] = RangeEnd(chunk.end, chunk.open_tail, chunk.before)
    except OSError as exc:
        stopped = outcome.ends[0].end if outcome.ends[0] is not None else task.start
        outcome.error = f"cannot read {task.path}: {exc.strerror or exc}"
        if stopped > task.start:
            outcome.error += f" (stopped at byte {stopped}; the lines before it are counted)"
        outcome.errno = exc.errno
    stats.seconds = time.perf_counter() - started
    return outcome


def _range_chunks(task: RangeTask, max_line_bytes: int) -> Iterator[Chunk]:
    """The chunks of the lines that start in the range, numbered from ``task.first_line`` (or 1)."""
    start = task.start
    if task.first_line is None and start > 0:
        start = _line_start(task)
        if start is None or (task.end is not None and start >= task.end):
            return  # a line from the range before covers the whole range
    reader = ChunkReader(task.path, task.chunk_bytes, max_line_bytes, start=start,
                         first_line=task.first_line or 1, final=task.final, skip_partial=task.skip_partial,
                         source=task.source)
    for chunk in reader:
        chunk = Chunk(task.name, chunk.data, chunk.first_line, chunk.start, chunk.end, chunk.overlong, chunk.before,
                      chunk.context, chunk.after)
        if task.end is None or chunk.end <= task.end:
            yield chunk
            continue
        if chunk.start < task.end:  # the line holding byte end - 1 is this range's last
            cut = chunk.data.find(b"\n", task.end - 1 - chunk.start, chunk.size) if chunk.size else -1
            if 0 <= cut < chunk.size - 1:
                after = first_lines(bytes(chunk.data[cut + 1:chunk.size]) + chunk.after)  # the next range's
                chunk = Chunk(task.name, chunk.data, chunk.first_line, chunk.start, chunk.start + cut + 1,
                              chunk.overlong, chunk.before, chunk.context, after)
            yield chunk
        return


def _line_start(task: RangeTask) -> int | None:
    """Where the first line that starts at or after ``task.start`` starts; None past the input's end."""
    with task.source.open(task.path, task.start - 1) as handle:
        offset = task.start - 1
        while block := handle.read(64 * 1024):
            newline = block.find(b"\n")
            if newline >= 0:
                return offset + newline + 1
            offset += len(block)
    return None


def _parse(spec: WorkSpec, chunk: Chunk, samples: bool) -> tuple[Batch, FileStats]:
    batch, stats = parse_chunk(chunk, spec.max_line_bytes, spec.malformed_samples, spec.columns, samples, spec.now,
                               spec.stray_us)
    if stats.samples:  # masked before they are kept anywhere, the checkpoint included
        stats.samples = [replace(s, text=spec.redactor.redact(s.text, cut=len(s.text) >= SAMPLE_CHARS))
                         for s in stats.samples]
    return batch, stats
